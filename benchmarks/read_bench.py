"""Read benchmark: ``reader.load`` against the classic pipelines and an in-memory ceiling.

Two workloads, each pipeline in its own fresh process (``read_pipelines.py run``):
pipelines that run one after another in one process disturb each other (a reader fell
from 12.5k to 4k examples/s after a ``from_generator`` pipeline had run in the same
process). Each process drains its pipeline once untimed, then once timed. The pipelines
alternate over ``--rounds`` rounds (a different order each round) and medians are quoted,
with ratios against the baselines measured in the same run.

- scene: ``data`` float32 (4096, 9) + ``label`` uint8 (4096), batch 32:
  A (``from_generator`` over h5py rows), C (``reader.load``), D (in memory).
- small: ``x`` float32 (16,) + ``label`` int64, batch 256:
  B (one ``tf.train.Example`` per row), C, D.

``--variants`` instead runs the reader's pipeline rebuilt inline with other settings
(``Cx`` in ``read_pipelines.py``), next to ``reader.load`` itself.

    .venv/bin/python benchmarks/read_bench.py [--rounds 3] [--variants]

See benchmarks/README.md for what is measured and the caveats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import h5py
import measure
import numpy as np
from convert_bench import ensure_source, log
from shuffle_bench import mixing_report

from hdf5_to_records.errors import Hdf5ToRecordsError
from hdf5_to_records.format.manifest import read_manifest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "read_pipelines.py")
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")

DEFAULT_SCENE_ROWS = 2000  # 303 MB of data + label
DEFAULT_SCENE_LAYOUT = "chunked"  # A reads rows without decompressing: kinder to A than gzip
DEFAULT_SMALL_ROWS = 300_000
DEFAULT_MIXING_ROWS = 10_000  # the 1.5 GB scene set, for the shuffle report
DEFAULT_NAIVE_SHARDS = 4  # B interleaves 4 files, like C's shard count on 2-4 workers
SMALL_FEATURES = 16
BATCH = {"scene": 32, "small": 256}
BASELINE = {"scene": "A", "small": "B"}
PIPELINES = {"scene": ("A", "C", "D"), "small": ("B", "C", "D")}
TARGETS = (  # workload, pipeline, over, at least
    ("scene", "C", "A", 5.0),
    ("scene", "C", "D", 0.4),
    ("small", "C", "B", 20.0),
    ("small", "C", "D", 1.0),
)
LABELS = {
    "A": "A from_generator",
    "B": "B naive TFRecord",
    "C": "C reader.load",
    "D": "D in memory",
}

# --variants: name -> Cx knobs (read_pipelines.CX_DEFAULTS); "C" is reader.load itself.
_AT0 = {"autotune": "0"}  # AUTOTUNE values kept (they become the core count), autotuner off
_ONE = {"records": "single"}  # decode each record alone: no batch of records, no pad mask
VARIANTS: dict[str, dict[str, dict[str, str]]] = {
    "scene": {
        "Cx": {},
        "at0": _AT0,
        "1rec": _ONE,
        "at0+1rec": {**_AT0, **_ONE},
        "at0+buf256k": {**_AT0, "read_buffer": str(256 << 10)},
        "at0+dec32M": {**_AT0, "decode_bytes": str(32 << 20)},
        "at0+unbatch": {**_AT0, "batching": "unbatch"},
        "at0+calls1": {**_AT0, "calls": "1"},
        "at0+reads1": {**_AT0, "reads": "1", "cycle": "1"},
        "at0+buf1M": {**_AT0, "read_buffer": str(1 << 20)},
        "at0+buf1M+checked": {**_AT0, "read_buffer": str(1 << 20), "checked": "1"},
    },
    "small": {
        "Cx": {},
        "at0": _AT0,
        "1rec": _ONE,
        "at0+1rec": {**_AT0, **_ONE},
        "at0+buf256k": {**_AT0, "read_buffer": str(256 << 10)},
        "at0+dec1M": {**_AT0, "decode_bytes": str(1 << 20)},
        "at0+dec16M": {**_AT0, "decode_bytes": str(16 << 20)},
        "at0+calls1": {**_AT0, "calls": "1"},
        "at0+buf1M": {**_AT0, "read_buffer": str(1 << 20)},
        "at0+buf1M+checked": {**_AT0, "read_buffer": str(1 << 20), "checked": "1"},
    },
}


@dataclass(frozen=True)
class Run:
    """One timed pass of one pipeline in its own process."""

    workload: str
    pipeline: str  # A B C D, or a variant name
    round: int
    examples: int
    seconds: float  # the timed (second) pass
    cpu_s: float  # the process's CPU seconds over the timed pass (user + system)
    sys_s: float  # of which system
    others_cores: float | None  # other processes' CPU use over the timed pass, in cores
    warmup_s: float
    process_s: float  # the whole process: import, build, warm-up, timed pass
    peak_rss_bytes: int

    @property
    def rate(self) -> float:
        return self.examples / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.examples * 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds (default 3).")
    parser.add_argument("--scene-rows", type=int, default=DEFAULT_SCENE_ROWS)
    parser.add_argument(
        "--scene-layout",
        default=DEFAULT_SCENE_LAYOUT,
        choices=("contiguous", "chunked", "gzip"),
        help=f"Layout of the scene source (default {DEFAULT_SCENE_LAYOUT}).",
    )
    parser.add_argument("--small-rows", type=int, default=DEFAULT_SMALL_ROWS)
    parser.add_argument(
        "--mixing-rows",
        type=int,
        default=DEFAULT_MIXING_ROWS,
        help="Scene rows of the shuffle report (mixing, checkpoint, RSS); 0 skips it.",
    )
    parser.add_argument("--naive-shards", type=int, default=DEFAULT_NAIVE_SHARDS)
    parser.add_argument("--workloads", default="scene,small", help="Comma list of scene, small.")
    parser.add_argument(
        "--loop",
        choices=("python", "graph"),
        default="python",
        help="Drain with a Python for loop (default) or one ds.reduce op.",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="Run the inline variants of the reader's pipeline instead of A/B/C/D.",
    )
    parser.add_argument(
        "--only", default="", help="Comma list of pipelines/variants to run (default all)."
    )
    parser.add_argument(
        "--workdir",
        default=os.path.join(HERE, "_work"),
        help="Sources, converted outputs and naive shards (kept and reused).",
    )
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    args.workloads = tuple(x.strip() for x in args.workloads.split(",") if x.strip())
    args.only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    if not set(args.workloads) <= set(BATCH):
        parser.error(f"--workloads: unknown workload in {args.workloads}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def small_is_valid(path: str, rows: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            x, label = f["x"], f["label"]
            return (x.shape, x.dtype, label.shape, label.dtype) == (
                (rows, SMALL_FEATURES),
                np.float32,
                (rows,),
                np.int64,
            )
    except (OSError, KeyError):
        return False


def ensure_small(workdir: str, rows: int) -> str:
    """``x`` float32 (N, 16) and ``label`` int64 (N,), contiguous, written once."""
    path = os.path.join(workdir, f"small_{rows}.h5")
    if small_is_valid(path, rows):
        return path
    log(f"writing {path} ({rows} rows) ...")
    rng = np.random.default_rng(0)
    with h5py.File(path + ".partial", "w") as f:
        f["x"] = rng.standard_normal((rows, SMALL_FEATURES), dtype=np.float32)
        f["label"] = rng.integers(0, 1000, rows, dtype=np.int64)
    os.replace(path + ".partial", path)
    return path


def ensure_records(source: str, out: str, rows: int) -> str:
    """Convert with the converter's defaults (once; again when the source is newer)."""
    manifest_path = os.path.join(out, "manifest.json")
    try:
        fresh = os.path.getmtime(manifest_path) > os.path.getmtime(source)
        fresh = fresh and read_manifest(out)["splits"]["train"]["num_examples"] == rows
    except (OSError, KeyError, ValueError, Hdf5ToRecordsError):
        fresh = False
    if not fresh:
        log(f"converting {source} -> {out} ...")
        subprocess.run(
            [CLI, "convert", source, "-o", out, "--overwrite"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def ensure_naive(source: str, out: str, rows: int, shards: int) -> str:
    """B's one-Example-per-row shards, written once by the worker (it needs TensorFlow)."""
    marker = os.path.join(out, "naive.json")
    want = {"rows": rows, "shards": shards, "source_mtime": os.path.getmtime(source)}
    try:
        with open(marker) as handle:
            if json.load(handle) == want:
                return out
    except (OSError, ValueError):
        pass
    log(f"writing naive TFRecords ({rows} rows, {shards} shards) into {out} ...")
    subprocess.run(
        [sys.executable, WORKER, "write-naive", source, out, "--shards", str(shards)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(marker, "w") as handle:
        json.dump(want, handle)
    return out


def worker_argv(args, workload: str, name: str, paths: dict[str, str]) -> list[str]:
    pipeline = name if name in ("A", "B", "C", "D") else "Cx"
    argv = [
        sys.executable,
        WORKER,
        "run",
        workload,
        pipeline,
        "--source",
        paths["source"],
        "--records",
        paths["records"],
        "--batch",
        str(BATCH[workload]),
        "--loop",
        args.loop,
    ]
    if "naive" in paths:
        argv += ["--naive", paths["naive"]]
    if pipeline == "Cx":
        for key, value in VARIANTS[workload][name].items():
            argv += ["--set", f"{key}={value}"]
    return argv


def run_one(args, workload: str, name: str, round_: int, paths: dict[str, str], rows: int) -> Run:
    return run_worker(worker_argv(args, workload, name, paths), workload, name, round_, rows)


def run_worker(argv: list[str], workload: str, name: str, round_: int, rows: int, env=None) -> Run:
    """Run one ``read_pipelines.py run`` process (in ``env``) and parse its report."""
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "3"}
    m = measure.run(argv, env=env, use_time=False)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {m.returncode}:\n{m.stderr[-3000:]}")
    report = json.loads(m.stdout.strip().splitlines()[-1])
    if report["examples"] != rows:
        raise SystemExit(f"{workload} {name}: {report['examples']} examples, not {rows}")
    others = None
    if report["machine_busy_s"] is not None:
        others = max(0.0, report["machine_busy_s"] - report["cpu_s"]) / report["seconds"]
    return Run(
        workload,
        name,
        round_,
        report["examples"],
        report["seconds"],
        report["cpu_s"],
        report["sys_s"],
        others,
        report["warmup_s"],
        m.seconds,
        m.peak_rss_bytes,
    )


def order(names: tuple[str, ...], round_: int) -> list[str]:
    """Round r: rotated by r, and reversed every other round, so that over rounds each
    pipeline runs early and late and after different neighbours."""
    shift = round_ % len(names)
    rotated = list(names[shift:] + names[:shift])
    return rotated[::-1] if round_ % 2 else rotated


def summarize(runs: list[Run], workload: str, names: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for name in names:
        mine = [r for r in runs if r.workload == workload and r.pipeline == name]
        others = [r.others_cores for r in mine if r.others_cores is not None]
        out[name] = {
            "rate": statistics.median(r.rate for r in mine),
            "rates": [r.rate for r in mine],
            "cpu_us": statistics.median(r.cpu_us for r in mine),
            "sys_us": statistics.median(r.sys_s / r.examples * 1e6 for r in mine),
            "cores": statistics.median(r.cpu_s / r.seconds for r in mine),
            "others": statistics.median(others) if others else float("nan"),
            "peak_rss": max(r.peak_rss_bytes for r in mine),
            "warmup_s": statistics.median(r.warmup_s for r in mine),
        }
    return out


def print_table(tables: dict[str, dict[str, dict]], variants: bool) -> None:
    print(
        f"{'workload':<8} {'pipeline':<18} {'examples/s':>11} {'CPU us/ex':>10} {'sys us':>7} "
        f"{'cores':>6} {'x base':>7} {'x D':>6} {'x C':>6} {'others':>7} {'RSS MB':>7}  "
        "per round (examples/s)"
    )
    for workload, table in tables.items():
        base = table.get(BASELINE[workload])
        ceiling = table.get("D")
        c = table.get("C")
        for name, row in table.items():
            rounds = " ".join(f"{x:,.0f}" for x in row["rates"])
            x_base = f"{row['rate'] / base['rate']:.1f}" if base else ""
            x_d = f"{row['rate'] / ceiling['rate']:.2f}" if ceiling else ""
            x_c = f"{row['rate'] / c['rate']:.2f}" if c else ""
            print(
                f"{workload:<8} {LABELS.get(name, 'Cx ' + name):<18} {row['rate']:>11,.0f} "
                f"{row['cpu_us']:>10.1f} {row['sys_us']:>7.1f} {row['cores']:>6.2f} "
                f"{x_base:>7} {x_d:>6} {x_c:>6} {row['others']:>7.2f} "
                f"{row['peak_rss'] / 1e6:>7.0f}  {rounds}"
            )
    print()
    print(
        "examples/s: median over rounds of (examples / wall seconds of the timed second pass).\n"
        "CPU us/ex: the process's CPU time (every thread, user + system) over that pass / "
        "examples; sys us: its system part.\ncores: CPU seconds / wall seconds. x base: over A "
        "(scene) or B (small); x D: over the in-memory ceiling; x C: over reader.load.\n"
        "others: CPU cores other processes used during the pass. RSS: peak of the process "
        "(max over rounds)."
    )
    if variants:
        print(
            "Variants (Cx): the reader's pipeline rebuilt inline in read_pipelines.py; "
            "their knobs are VARIANTS in read_bench.py."
        )


def print_targets(tables: dict[str, dict[str, dict]]) -> None:
    print("targets")
    for workload, pipeline, over, at_least in TARGETS:
        table = tables.get(workload, {})
        if pipeline not in table or over not in table:
            continue
        ratio = table[pipeline]["rate"] / table[over]["rate"]
        per_round = " ".join(
            f"{a / b:.2f}" for a, b in zip(table[pipeline]["rates"], table[over]["rates"])
        )
        text = f"{workload}: {pipeline} >= {at_least:g}x {over} (examples/s)"
        verdict = "PASS" if ratio >= at_least else "MISS"
        print(f"  {text:<44} {ratio:>8.2f}x  {verdict}   per round: {per_round}")


def reader_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "reader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"working tree at {head}" + ("; reader/ has uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    os.makedirs(args.workdir, exist_ok=True)
    measure.become_subreaper()
    log(f"reader: {reader_revision()}")

    rows = {"scene": args.scene_rows, "small": args.small_rows}
    paths: dict[str, dict[str, str]] = {}
    if "scene" in args.workloads:
        source = ensure_source(args.workdir, args.scene_rows, args.scene_layout)
        records = os.path.join(args.workdir, f"read_scene_{args.scene_layout}_{args.scene_rows}")
        paths["scene"] = {
            "source": source,
            "records": ensure_records(source, records, args.scene_rows),
        }
    if "small" in args.workloads:
        source = ensure_small(args.workdir, args.small_rows)
        records = os.path.join(args.workdir, f"read_small_{args.small_rows}")
        naive = os.path.join(args.workdir, f"read_small_{args.small_rows}_naive")
        paths["small"] = {
            "source": source,
            "records": ensure_records(source, records, args.small_rows),
            "naive": ensure_naive(source, naive, args.small_rows, args.naive_shards),
        }
    os.sync()

    names = {}
    for workload in args.workloads:
        every = ("C", *VARIANTS[workload]) if args.variants else PIPELINES[workload]
        names[workload] = tuple(n for n in every if not args.only or n in args.only)

    runs: list[Run] = []
    for round_ in range(1, args.rounds + 1):
        workloads = list(args.workloads) if round_ % 2 else list(args.workloads)[::-1]
        for workload in workloads:
            for name in order(names[workload], round_):
                run = run_one(args, workload, name, round_, paths[workload], rows[workload])
                runs.append(run)
                log(
                    f"round {round_}/{args.rounds} {workload:<6} {name:<8} "
                    f"{run.rate:>11,.0f} ex/s  {run.cpu_us:8.1f} CPU us/ex  "
                    f"pass {run.seconds:6.3f} s  warm-up {run.warmup_s:6.2f} s  "
                    f"process {run.process_s:5.1f} s  others {run.others_cores or 0:.2f}"
                )

    tables = {w: summarize(runs, w, names[w]) for w in args.workloads}
    print()
    print(f"reader: {reader_revision()}; loop: {args.loop}; rounds: {args.rounds}")
    for workload in args.workloads:
        print(
            f"{workload}: {rows[workload]} rows, batch {BATCH[workload]}, "
            f"source {paths[workload]['source']}"
        )
    print()
    print_table(tables, args.variants)
    if not args.variants:
        print()
        print_targets(tables)
    if args.mixing_rows and not args.variants:
        # Beside the rates: how the shuffle mixes, the checkpoint size, peak RSS (issue 15).
        print()
        print("\n".join(mixing_report(args.workdir, args.rounds, args.mixing_rows)))
    print()
    print(f"total benchmark time: {time.perf_counter() - started:.0f} s")
    name = "read_variants.json" if args.variants else "read_results.json"
    path = os.path.join(args.workdir, name)
    measure.save_results(path, args, runs, tables)


if __name__ == "__main__":
    main()
