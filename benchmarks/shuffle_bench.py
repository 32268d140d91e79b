"""Shuffle benchmark (issue 15): how well ``reader.load(shuffle=True)`` mixes, how big its
checkpoint is, and its peak RSS, against the streaming reader (the shards read as
streams through a record shuffle buffer, as datasets without a record index still are).

Two workloads, converted once under ``--workdir``:

- small: 200,000 rows of ``id`` int64 + ``x`` float32 (16,), batch 256, copy and index
  mode. Mixing: |Spearman(source row, output position)| and the median number of the
  split's 100 1%-blocks a batch draws from (a uniform shuffle: about 92).
- scene: ``data`` float32 (4096, 9) + ``label`` (151 KB rows; ``--scene-rows``, default
  10,000 = 1.5 GB), batch 32: the same measures (uniform: about 27.5 blocks of 100),
  the peak RSS of one shuffled pass, and the checkpoint size after 5 batches.

Each measurement runs in its own fresh process; rounds alternate the pipelines and
medians are printed.

    .venv/bin/python benchmarks/shuffle_bench.py [--rounds 3] [--scene-rows 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import h5py
import numpy as np
from convert_bench import ensure_source

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
SMALL_ROWS = 200_000

PASS = r"""
import json, os, resource, sys, tempfile, time
import numpy as np
import reader
from hdf5_to_records._tf import import_tensorflow
tf = import_tensorflow()
path, key, batch, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
ds = reader.load(path, "train", batch_size=batch, shuffle=True, seed=0)
ids = []
started = time.perf_counter()
it = iter(ds)
for i, b in enumerate(it):
    ids.append(b[key].numpy().reshape(len(b[key]), -1)[:, 0].copy())
    if i == 4:
        d = tempfile.mkdtemp()
        try:
            tf.train.Checkpoint(iterator=it).write(os.path.join(d, "c"))
            ckpt = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        except tf.errors.OpError as exc:
            ckpt = type(exc).__name__
seconds = time.perf_counter() - started
print(json.dumps({"ids": np.concatenate(ids).tolist(), "ckpt": ckpt, "seconds": seconds,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def mixing(order: np.ndarray, batch: int) -> tuple[float, float]:
    """(|Spearman(source row, position)|, median 1%-blocks per batch)."""
    n = len(order)
    ranks = np.argsort(np.argsort(order))
    rho = abs(float(np.corrcoef(ranks, np.arange(n))[0, 1]))
    blocks = [
        len(np.unique(order[i : i + batch] * 100 // n)) for i in range(0, n - batch + 1, batch)
    ]
    return rho, float(np.median(blocks))


def convert(source: str, out: str, *extra: str) -> str:
    if not os.path.exists(os.path.join(out, "manifest.json")):
        subprocess.run([CLI, "convert", source, "--output", out, "--overwrite", *extra], check=True,
                       capture_output=True)  # fmt: skip
    return out


def streaming_copy(directory: str) -> str:
    """The same shards with a manifest that lists no record index: the streaming reader."""
    out = directory + "-stream"
    os.makedirs(out, exist_ok=True)
    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            shard.pop("index_sha256", None), shard.pop("record_examples", None)
            target = os.path.join(out, shard["file"])
            if not os.path.exists(target):
                os.link(os.path.join(directory, shard["file"]), target)
    with open(os.path.join(out, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)
    return out


def small_source(workdir: str) -> str:
    path = os.path.join(workdir, f"small_ids_{SMALL_ROWS}.h5")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        with h5py.File(path + ".partial", "w") as h5:
            h5["id"] = np.arange(SMALL_ROWS, dtype=np.int64)
            h5["x"] = rng.standard_normal((SMALL_ROWS, 16), dtype=np.float32)
        os.replace(path + ".partial", path)
    return path


def one_pass(path: str, key: str, batch: int, rows_of) -> dict:
    done = subprocess.run([sys.executable, "-c", PASS, path, key, str(batch), "0"],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    got = json.loads(done.stdout.strip().splitlines()[-1])
    rho, blocks = mixing(rows_of(np.asarray(got["ids"])), batch)
    return {"rho": rho, "blocks": blocks, "ckpt": got["ckpt"], "rss_mb": got["rss"] / 2**20,
            "rate": len(got["ids"]) / got["seconds"]}  # fmt: skip


def mixing_report(workdir: str, rounds: int, scene_rows: int) -> list[str]:
    """The table's lines: each pipeline's medians over ``rounds`` alternated rounds."""
    os.makedirs(workdir, exist_ok=True)
    small = small_source(workdir)
    scene = ensure_source(workdir, scene_rows, "contiguous")
    work = os.path.join(workdir, f"shuffle_{scene_rows}")
    cases = {
        "small copy": (convert(small, os.path.join(work, "small")), "id", 256, None),
        "small index": (
            convert(small, os.path.join(work, "small-i"), "--mode", "index"), "id", 256, None
        ),
        "scene copy": (convert(scene, os.path.join(work, "scene")), "label", 32, "scene"),
        "scene index": (
            convert(scene, os.path.join(work, "scene-i"), "--mode", "index"), "label", 32, "scene"
        ),
    }  # fmt: skip
    for name in list(cases):
        path, key, batch, kind = cases[name]
        cases[name + " (streaming)"] = (streaming_copy(path), key, batch, kind)
    with h5py.File(scene) as h5:  # a scene's first point identifies it: find its source row
        first = np.ascontiguousarray(h5["data"][:, 0, :2])
    lookup = {row.tobytes(): i for i, row in enumerate(first)}
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for r in range(rounds):
        names = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in names:
            path, key, batch, kind = cases[name]
            if kind is None:
                results[name].append(one_pass(path, key, batch, lambda ids: ids))
            else:
                results[name].append(_scene_pass(path, batch, lookup))
    lines = [
        f"shuffled passes (seed 0): small {SMALL_ROWS} rows, batch 256 (uniform: ~92 blocks); "
        f"scene {scene_rows} rows, batch 32 (uniform: ~27.5 blocks)",
        f"{'pipeline':<26} {'|rho|':>6} {'blocks':>7} {'checkpoint':>24} "
        f"{'peak RSS':>9} {'ex/s':>9}",
    ]
    for name, runs in results.items():
        med = {
            k: statistics.median(x[k] for x in runs) for k in ("rho", "blocks", "rss_mb", "rate")
        }
        ckpt = runs[0]["ckpt"]
        ckpt = f"{ckpt / 1024:.1f} KiB" if isinstance(ckpt, (int, float)) else f"refused ({ckpt})"
        lines.append(
            f"{name:<26} {med['rho']:6.3f} {med['blocks']:7.1f} {ckpt:>24} "
            f"{med['rss_mb']:7.0f}MB {med['rate']:9.0f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scene-rows", type=int, default=10_000)
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    args = parser.parse_args()
    print("\n".join(mixing_report(os.path.abspath(args.workdir), args.rounds, args.scene_rows)))


SCENE_PASS = PASS.replace(
    "ids.append(b[key].numpy().reshape(len(b[key]), -1)[:, 0].copy())",
    'ids.append(np.ascontiguousarray(b["data"].numpy()[:, 0, :2]))',
)


def _scene_pass(path: str, batch: int, lookup: dict) -> dict:
    script = SCENE_PASS.replace(
        '"ids": np.concatenate(ids).tolist()', '"ids": np.concatenate(ids).tobytes().hex()'
    )
    done = subprocess.run([sys.executable, "-c", script, path, "label", str(batch), "0"],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    got = json.loads(done.stdout.strip().splitlines()[-1])
    raw = bytes.fromhex(got["ids"])
    rows = np.array([lookup[raw[i : i + 8]] for i in range(0, len(raw), 8)])
    rho, blocks = mixing(rows, batch)
    return {"rho": rho, "blocks": blocks, "ckpt": got["ckpt"], "rss_mb": got["rss"] / 2**20,
            "rate": len(rows) / got["seconds"]}  # fmt: skip


if __name__ == "__main__":
    main()
