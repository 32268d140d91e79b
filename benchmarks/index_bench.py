"""Index-mode benchmark: conversion cost and read throughput against same-run baselines.

Scene sources (``data`` float32 (N, 4096, 9) + ``label`` uint8 (N, 4096)) in two layouts,
contiguous and 16-row chunks with gzip 4 + shuffle, written once into the work directory.

1. Conversion, each a whole ``hdf5-to-records convert`` command in a fresh process,
   alternating over ``--rounds`` rounds (after a warm-up round); per layout:
   ``index`` (``--mode index``: CRC32C of every referenced byte range, read once) and
   ``copy`` of the 5N-row source (1.5 GB), ``none`` (``--mode index --checksums none``:
   metadata only) of the N- and 5N-row sources, and with ``--rev REV`` ``index@rev``
   (``--mode index`` as committed at REV) of the 5N-row source.
   Targets: index <= 0.5x copy; none 5N/N <= 1.2x; output <= 1% of the source.
2. Reading, ``--read-rows`` (default 5N) rows, every pipeline in its own fresh process
   (``read_pipelines.py run``: a warm-up pass, then a timed pass), alternating over
   ``--rounds`` rounds:
   contiguous: ``I`` (``reader.load`` of the index-mode output), ``C`` (of the
   copy-mode output) and ``D`` (in memory; the ceiling); gzip: ``I``, ``C``, ``H``
   (h5py's own single-threaded read of the whole source into memory) and ``Hn`` (the
   same on the N-row source); with ``--rev``, ``I@rev`` in both: REV's reader on REV's
   index-mode output.
   Targets: contiguous I >= 1.5x C and >= 0.6x D; gzip I >= 1.5x H; I >= 0.9x I@rev.

    .venv/bin/python benchmarks/index_bench.py [--rows 2000] [--rounds 3] [--rev REV]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

import measure
from convert_bench import converter_env, ensure_source, git, git_revision, log
from read_bench import Run, order, run_worker, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "read_pipelines.py")
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
LAYOUTS = ("contiguous", "gzip")
# Hn: H on the N-row source. H reads 5N rows (1.5 GB) into fresh memory, which this VM
# makes pay ~1.6 s/GB of page faults; Hn's 300 MB mostly escape that.
READS = {"contiguous": ("I", "C", "D"), "gzip": ("I", "C", "H", "Hn")}
REV_READ = "I@rev"
BATCH = 32
TARGETS = (  # layout, pipeline, over, at least
    ("contiguous", "I", "C", 1.5),
    ("contiguous", "I", "D", 0.6),
    ("gzip", "I", "H", 1.5),
    ("gzip", "I", "Hn", 1.5),
    ("contiguous", "I", REV_READ, 0.9),
    ("gzip", "I", REV_READ, 0.9),
)
# Conversion variants: the command's options, and whether it runs REV's converter.
VARIANTS = {
    "index": (["--mode", "index"], False),
    "copy": (["--mode", "copy"], False),
    "none": (["--mode", "index", "--checksums", "none"], False),
    "index@rev": (["--mode", "index"], True),
}


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
    parser.add_argument(
        "--only", help="Comma list of the read pipelines to run (e.g. I,I@rev); default all."
    )
    parser.add_argument(
        "--rev",
        help="Also measure the converter and reader as committed at this git revision "
        "(index@rev, I@rev), exported into WORKDIR/code-REV: the before of a change.",
    )
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    return args


def convert(source: str, out: str, options: list[str], env=None) -> measure.Measurement:
    shutil.rmtree(out, ignore_errors=True)
    argv = [CLI, "convert", source, "-o", out, *options, "--overwrite"]
    m = measure.run(argv, use_time=False, env=env, cwd="/")  # "/": see convert_bench
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {m.returncode}:\n{m.stderr[-2000:]}")
    return m


def output_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


def bench_convert(args, sources: dict[tuple[str, int], str], envs: dict) -> dict:
    big = 5 * args.rows
    keys = [(layout, variant, big) for layout in LAYOUTS for variant in VARIANTS]
    keys += [(layout, "none", args.rows) for layout in LAYOUTS]
    keys = [k for k in keys if args.rev or k[1] != "index@rev"]
    results: dict[tuple, list[float]] = {key: [] for key in keys}
    sizes = {}
    for round_ in range(args.rounds + 1):  # round 0 is a warm-up
        for key in order(tuple(keys), round_):
            layout, variant, rows = key
            options, rev = VARIANTS[variant]
            out = os.path.join(args.workdir, f"index_convert_{layout}_{variant}_{rows}")
            m = convert(sources[(layout, rows)], out, options, envs[rev])
            log(f"round {round_} {layout} {variant} {rows}: {m.seconds:.2f} s")
            if round_:
                results[key].append(m.seconds)
            sizes[key] = output_bytes(out)
            shutil.rmtree(out, ignore_errors=True)
    table = {}
    print(
        f"\n{'layout':<11} {'variant':<10} {'rows':>6} {'median s':>9} {'runs':<22} "
        f"{'output':>9} {'of source':>10}"
    )
    for key in keys:
        layout, variant, rows = key
        median = statistics.median(results[key])
        fraction = sizes[key] / os.path.getsize(sources[(layout, rows)])
        table[key] = {"median": median, "fraction": fraction, "runs": results[key]}
        runs = ", ".join(f"{s:.2f}" for s in results[key])
        print(
            f"{layout:<11} {variant:<10} {rows:>6} {median:>9.2f} {runs:<22} "
            f"{sizes[key] / 1e3:>7.0f}kB {fraction * 100:>9.3f}%"
        )
    for layout in LAYOUTS:
        index, copy = table[(layout, "index", big)], table[(layout, "copy", big)]
        small, large = table[(layout, "none", args.rows)], table[(layout, "none", big)]
        ratio, scaling = index["median"] / copy["median"], large["median"] / small["median"]
        worst = max(v["fraction"] for k, v in table.items() if k[0] == layout and k[1] != "copy")
        print(
            f"  {layout}: index (checksums) took {ratio:.2f}x copy's time (target <= 0.5: "
            f"{_verdict(ratio <= 0.5)}); --checksums none: 5x rows took {scaling:.2f}x the "
            f"time (target <= 1.2: {_verdict(scaling <= 1.2)}); index output at most "
            f"{worst * 100:.3f}% of the source (target <= 1%: {_verdict(worst <= 0.01)})"
        )
        if args.rev:
            before = table[(layout, "index@rev", big)]["median"]
            print(f"  {layout}: index took {index['median'] / before:.2f}x index@rev's time")
    return {"_".join(map(str, k)): v for k, v in table.items()}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run_read(layout: str, name: str, round_: int, paths: dict, rows: int, envs: dict) -> Run:
    pipeline = {"I": "C", REV_READ: "C", "C": "C", "D": "D", "H": "H", "Hn": "H"}[name]
    records = {"I": paths.get("index"), REV_READ: paths.get("index@rev")}.get(name)
    records = records or paths.get("copy", "")
    source = paths["source_n"] if name == "Hn" else paths["source"]
    argv = [sys.executable, WORKER, "run", "scene", pipeline, "--source", source]
    argv += ["--records", records, "--batch", str(BATCH)]
    count = paths["rows_n"] if name == "Hn" else rows
    return run_worker(argv, layout, name, round_, count, env=envs[name == REV_READ])


def bench_read(args, sources: dict[tuple[str, int], str], envs: dict) -> dict:
    reads = {k: v + ((REV_READ,) if args.rev else ()) for k, v in READS.items()}
    if args.only:
        chosen = set(args.only.split(","))
        reads = {k: tuple(n for n in v if n in chosen) for k, v in reads.items()}
    paths = {}
    for layout in LAYOUTS:
        source = sources[(layout, args.read_rows)]
        out = {"source": source, "source_n": sources[(layout, args.rows)], "rows_n": args.rows}
        variants = {"I": "index", REV_READ: "index@rev"}
        needed = {variants.get(n, "copy") for n in reads[layout]}
        for variant in [v for v in ("copy", "index", "index@rev") if v in needed]:
            options, rev = VARIANTS[variant]
            out[variant] = os.path.join(
                args.workdir, f"index_read_{layout}_{args.read_rows}_{variant}"
            )
            log(f"converting {os.path.basename(source)} ({variant}) ...")
            convert(source, out[variant], options, envs[rev])
        paths[layout] = out
    runs: list[Run] = []
    for round_ in range(args.rounds):
        for layout in LAYOUTS:
            for name in order(reads[layout], round_):
                run = run_read(layout, name, round_, paths[layout], args.read_rows, envs)
                log(f"round {round_ + 1} {layout} {name}: {run.rate:,.0f} examples/s")
                runs.append(run)
    tables = {layout: summarize(runs, layout, reads[layout]) for layout in LAYOUTS}
    print(
        f"\n{'layout':<11} {'pipeline':<6} {'examples/s':>11} {'rounds':<36} "
        f"{'CPU us/ex':>10} {'cores':>6} {'others':>7}"
    )
    for layout, table in tables.items():
        for name, row in table.items():
            rounds = ", ".join(f"{r:,.0f}" for r in row["rates"])
            print(
                f"{layout:<11} {name:<6} {row['rate']:>11,.0f} {rounds:<36} "
                f"{row['cpu_us']:>10.0f} {row['cores']:>6.2f} {row['others']:>7.2f}"
            )
    for layout, name, over, least in TARGETS:
        if over not in tables[layout]:
            continue
        ratio = tables[layout][name]["rate"] / tables[layout][over]["rate"]
        print(
            f"  {layout}: {name}/{over} = {ratio:.2f}x (target >= {least}: "
            f"{_verdict(ratio >= least)})"
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
    if args.rev is not None:  # resolved once: the branch may move while this runs
        args.rev = git("rev-parse", "--verify", f"{args.rev}^{{commit}}")
    envs = {False: converter_env(args.workdir, None), True: converter_env(args.workdir, args.rev)}
    baseline = f"; baseline (@rev): {git_revision(args.rev)}" if args.rev else ""
    print(f"converter and reader: {git_revision(None)}{baseline}")
    results = {}
    if not args.skip_convert:
        results["convert"] = bench_convert(args, sources, envs)
    results["read"] = bench_read(args, sources, envs)
    measure.save_results(os.path.join(args.workdir, "index_results.json"), args, [], results)


if __name__ == "__main__":
    main()
