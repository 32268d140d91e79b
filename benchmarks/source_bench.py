"""Random-access benchmark (issue 16): ``reader.data_source`` against h5py's own random
row reads, over random rows of the 16-row gzip scene source.

Pipelines, each in its own fresh process, alternated over ``--rounds``, medians:

- H: h5py, ``f["data"][i]`` and ``f["label"][i]`` for each key (h5py's default chunk
  cache; a 16-row gzip chunk of scene rows is 2.4 MB, so each row inflates its chunk).
- C: ``reader.data_source`` over a copy-mode conversion (one positioned read per row).
- I: ``reader.data_source`` over an index-mode conversion (one chunk read and inflated
  per row not in its cache of decoded chunks).

Each process reads ``--keys`` random rows (seed 1) untimed, then another ``--keys``
(seed 0) timed. Nothing here imports TensorFlow.

    .venv/bin/python benchmarks/source_bench.py [--rounds 3] [--rows 3600] [--keys 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from convert_bench import ensure_source

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
TARGETS = (("C", 2.0), ("I", 1.0))  # at least this many times H's rows/s

PASS = r"""
import json, sys, time
import numpy as np
kind, path, rows, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "H":
    import h5py
    f = h5py.File(path, "r")
    data, label = f["data"], f["label"]
    def get(i):
        return data[i], label[i]
else:
    import reader
    src = reader.data_source(path)
    def get(i):
        return src[i]
for i in np.random.default_rng(1).integers(0, rows, keys):
    get(int(i))
started = time.perf_counter()
for i in np.random.default_rng(0).integers(0, rows, keys):
    get(int(i))
seconds = time.perf_counter() - started
print(json.dumps({"rate": keys / seconds, "tf": "tensorflow" in sys.modules}))
"""


def convert(source: str, out: str, *extra: str) -> str:
    if not os.path.exists(os.path.join(out, "manifest.json")):
        subprocess.run([CLI, "convert", source, "--output", out, "--overwrite", *extra],
                       check=True, capture_output=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3600)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    source = ensure_source(workdir, args.rows, "gzip")
    base = os.path.join(workdir, f"source_{args.rows}")
    paths = {
        "H": source,
        "C": convert(source, base + "-copy"),
        "I": convert(source, base + "-index", "--mode", "index"),
    }
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for kind in list(paths) if r % 2 == 0 else list(paths)[::-1]:
            argv = [sys.executable, "-c", PASS, kind, paths[kind], str(args.rows), str(args.keys)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            got = json.loads(done.stdout.strip().splitlines()[-1])
            if got["tf"]:
                raise SystemExit(f"{kind}: TensorFlow was imported")
            rates[kind].append(got["rate"])
            print(f"round {r + 1} {kind}: {got['rate']:,.0f} rows/s", flush=True)
    h = statistics.median(rates["H"])
    print(f"\nrandom rows of {source} ({args.keys} keys per pass, {args.rounds} rounds)")
    labels = {"H": "h5py random rows", "C": "data_source, copy", "I": "data_source, index"}
    for kind, label in labels.items():
        med = statistics.median(rates[kind])
        per_round = " ".join(f"{x / hr:.2f}" for x, hr in zip(rates[kind], rates["H"]))
        print(f"{label:<20} {med:>10,.0f} rows/s  {med / h:6.2f}x h5py  per round: {per_round}")
    for kind, least in TARGETS:
        ratio = statistics.median(rates[kind]) / h
        print(
            f"target {kind} >= {least}x h5py: {ratio:.2f}x {'PASS' if ratio >= least else 'MISS'}"
        )


if __name__ == "__main__":
    main()
