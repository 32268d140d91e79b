"""Index-mode benchmark: conversion cost and read throughput against same-run baselines.

Scene sources (``data`` float32 (N, 4096, 9) + ``label`` uint8 (N, 4096)) in two layouts,
contiguous and 16-row chunks with gzip 4 + shuffle, written once into the work directory.

1. Conversion: ``hdf5-to-records convert SRC --mode index`` as a whole command in a
   fresh process, for N and 5N rows (separate source files); reports the median
   seconds, the 5N/N time ratio (target <= 1.2) and the output size as a fraction of
   the source (target <= 1%).
2. Reading, ``--read-rows`` (default 5N) rows, every pipeline in its own fresh process
   (``read_pipelines.py run``: a warm-up pass, then a timed pass), alternating over
   ``--rounds`` rounds:
   contiguous: ``I`` (``reader.load`` of the index-mode output), ``C`` (of the
   copy-mode output) and ``D`` (in memory; the ceiling); gzip: ``I``, ``C``, ``H``
   (h5py's own single-threaded read of the whole source into memory) and ``Hn`` (the
   same on the N-row source).
   Targets: contiguous I >= 1.5x C and >= 0.6x D; gzip I >= 1.5x H.

    .venv/bin/python benchmarks/index_bench.py [--rows 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

import measure
from convert_bench import ensure_source, log
from read_bench import Run, order, run_worker, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "read_pipelines.py")
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
LAYOUTS = ("contiguous", "gzip")
# Hn: H on the N-row source. H reads 5N rows (1.5 GB) into fresh memory, which this VM
# makes pay ~1.6 s/GB of page faults; Hn's 300 MB mostly escape that.
READS = {"contiguous": ("I", "C", "D"), "gzip": ("I", "C", "H", "Hn")}
BATCH = 32
TARGETS = (  # layout, pipeline, over, at least
    ("contiguous", "I", "C", 1.5),
    ("contiguous", "I", "D", 0.6),
    ("gzip", "I", "H", 1.5),
    ("gzip", "I", "Hn", 1.5),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="N (default 2000 rows).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--read-rows",
        type=int,
        help="Rows of the read part (default 5N: a timed pass of 2000 rows lasts 0.1 s).",
    )
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    parser.add_argument("--skip-convert", action="store_true", help="Only the read part.")
    return parser.parse_args(argv)


def convert(source: str, out: str, mode: str) -> measure.Measurement:
    shutil.rmtree(out, ignore_errors=True)
    argv = [CLI, "convert", source, "-o", out, "--mode", mode, "--overwrite"]
    m = measure.run(argv, use_time=False)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {m.returncode}:\n{m.stderr[-2000:]}")
    return m


def output_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


def bench_convert(args, sources: dict[tuple[str, int], str]) -> dict:
    results: dict[tuple[str, int], list[float]] = {key: [] for key in sources}
    sizes = {}
    keys = list(sources)
    for round_ in range(args.rounds + 1):  # round 0 is a warm-up
        for key in order(tuple(keys), round_):
            out = os.path.join(args.workdir, f"index_convert_{key[0]}_{key[1]}")
            m = convert(sources[key], out, "index")
            if round_:
                results[key].append(m.seconds)
            sizes[key] = output_bytes(out)
            shutil.rmtree(out, ignore_errors=True)
    table = {}
    print(
        f"\n{'layout':<11} {'rows':>6} {'median s':>9} {'runs':<22} {'output':>9} {'of source':>10}"
    )
    for key in keys:
        median = statistics.median(results[key])
        fraction = sizes[key] / os.path.getsize(sources[key])
        table[key] = {"median": median, "fraction": fraction}
        runs = ", ".join(f"{s:.2f}" for s in results[key])
        print(
            f"{key[0]:<11} {key[1]:>6} {median:>9.2f} {runs:<22} "
            f"{sizes[key] / 1e3:>7.0f}kB {fraction * 100:>9.3f}%"
        )
    for layout in LAYOUTS:
        small, big = table[(layout, args.rows)], table[(layout, 5 * args.rows)]
        ratio = big["median"] / small["median"]
        worst = max(small["fraction"], big["fraction"])
        print(
            f"  {layout}: 5x rows took {ratio:.2f}x the time (target <= 1.2: "
            f"{'PASS' if ratio <= 1.2 else 'MISS'}); output {worst * 100:.3f}% of the source "
            f"(target <= 1%: {'PASS' if worst <= 0.01 else 'MISS'})"
        )
    return {f"{k[0]}_{k[1]}": v for k, v in table.items()}


def run_read(layout: str, name: str, round_: int, paths: dict[str, str], rows: int) -> Run:
    pipeline = {"I": "C", "C": "C", "D": "D", "H": "H", "Hn": "H"}[name]
    records = paths["index"] if name == "I" else paths["copy"]
    source = paths["source_n"] if name == "Hn" else paths["source"]
    argv = [sys.executable, WORKER, "run", "scene", pipeline, "--source", source]
    argv += ["--records", records, "--batch", str(BATCH)]
    return run_worker(argv, layout, name, round_, paths["rows_n"] if name == "Hn" else rows)


def bench_read(args, sources: dict[tuple[str, int], str]) -> dict:
    paths = {}
    for layout in LAYOUTS:
        source = sources[(layout, args.read_rows)]
        out = {"source": source, "source_n": sources[(layout, args.rows)], "rows_n": args.rows}
        for mode in ("copy", "index"):
            out[mode] = os.path.join(args.workdir, f"index_read_{layout}_{args.read_rows}_{mode}")
            log(f"converting {os.path.basename(source)} --mode {mode} ...")
            convert(source, out[mode], mode)
        paths[layout] = out
    runs: list[Run] = []
    for round_ in range(args.rounds):
        for layout in LAYOUTS:
            for name in order(READS[layout], round_):
                run = run_read(layout, name, round_, paths[layout], args.read_rows)
                log(f"round {round_ + 1} {layout} {name}: {run.rate:,.0f} examples/s")
                runs.append(run)
    tables = {layout: summarize(runs, layout, READS[layout]) for layout in LAYOUTS}
    print(
        f"\n{'layout':<11} {'pipeline':<4} {'examples/s':>11} {'rounds':<28} "
        f"{'CPU us/ex':>10} {'cores':>6} {'others':>7}"
    )
    for layout, table in tables.items():
        for name, row in table.items():
            rounds = ", ".join(f"{r:,.0f}" for r in row["rates"])
            print(
                f"{layout:<11} {name:<4} {row['rate']:>11,.0f} {rounds:<28} "
                f"{row['cpu_us']:>10.0f} {row['cores']:>6.2f} {row['others']:>7.2f}"
            )
    for layout, name, over, least in TARGETS:
        ratio = tables[layout][name]["rate"] / tables[layout][over]["rate"]
        print(
            f"  {layout}: {name}/{over} = {ratio:.2f}x (target >= {least}: "
            f"{'PASS' if ratio >= least else 'MISS'})"
        )
    return {"runs": [r.__dict__ for r in runs], "tables": tables}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    measure.become_subreaper()
    args.read_rows = args.read_rows or 5 * args.rows
    sizes = {args.read_rows, args.rows} | (set() if args.skip_convert else {5 * args.rows})
    sources = {
        (layout, rows): ensure_source(args.workdir, rows, layout)
        for layout in LAYOUTS
        for rows in sizes
    }
    subprocess.run(["sync"], check=False)
    results = {}
    if not args.skip_convert:
        results["convert"] = bench_convert(args, sources)
    results["read"] = bench_read(args, sources)
    measure.save_results(os.path.join(args.workdir, "index_results.json"), args, [], results)


if __name__ == "__main__":
    main()
