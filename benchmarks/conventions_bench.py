"""Ecosystem-convention benchmark: a PyTables table and an AnnData CSR matrix, each read
by ``reader.load`` against the Python generator a user writes today, in the same run.

Sources (written once into the work directory, by the libraries themselves):

- ``table``: a PyTables ``Table`` of ``--table-rows`` rows (16 float32 columns, an
  int64 id and a uint8 label: 73-byte records), zlib 5 + shuffle, as PyTables writes.
- ``cells``: an AnnData ``.h5ad`` of ``--cells`` cells x 2,000 genes, CSR float32 at
  density 0.1 (``write_h5ad`` defaults).

Pipelines, each in its own fresh process (a warm-up pass, then a timed pass), the order
alternating over ``--rounds`` rounds; batch 256:

- table ``I``: ``reader.load`` of the ``--mode auto`` output (every numeric field
  referenced: the reader reads and inflates whole records and takes each field with a
  strided view); ``C``: of the copy-mode output; ``G``: ``from_generator`` over an
  h5py generator that reads the table in 4,096-row blocks and yields rows (the
  classic answer), timed over its first 80 batches (its rate is steady; a whole pass
  would take minutes).
- cells ``S``: ``reader.load`` (``tf.SparseTensor`` batches); ``Sd``: ``sparse="dense"``;
  ``G``: ``from_generator`` over an h5py generator that reads ``indptr`` once, then each
  row's ``data``/``indices`` slice, and yields dense rows.

Conversion: each source converted by ``hdf5-to-records convert`` in copy and auto mode
(a fresh process each, alternating), seconds.

    .venv/bin/python benchmarks/conventions_bench.py [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
BATCH = 256
G_BATCHES = 80  # the generator's passes stop here: at ~2k rows/s a whole pass takes minutes
GENES = 2000
READS = {"table": ("I", "C", "G"), "cells": ("S", "Sd", "G")}
CONVERSIONS = {"table": ("copy", "auto"), "cells": ("copy", "auto")}


def write_sources(workdir: str, table_rows: int, cells: int) -> dict[str, str]:
    """The two sources, written once (kept between runs of the same sizes)."""
    os.makedirs(workdir, exist_ok=True)
    table = os.path.join(workdir, f"table-{table_rows}.h5")
    if not os.path.exists(table):
        import tables

        rng = np.random.default_rng(0)
        columns = {f"f{i:02d}": tables.Float32Col(pos=i) for i in range(16)}
        columns.update(id=tables.Int64Col(pos=16), label=tables.UInt8Col(pos=17))
        with tables.open_file(table + ".tmp", "w") as h5:
            t = h5.create_table(
                "/",
                "table",
                columns,
                filters=tables.Filters(5, "zlib", shuffle=True),
                expectedrows=table_rows,
            )
            for start in range(0, table_rows, 1 << 18):
                n = min(1 << 18, table_rows - start)
                rows = np.zeros(n, t.dtype)
                for i in range(16):
                    rows[f"f{i:02d}"] = rng.standard_normal(n)
                rows["id"] = np.arange(start, start + n)
                rows["label"] = rng.integers(0, 10, n)
                t.append(rows)
        os.replace(table + ".tmp", table)
    cells_path = os.path.join(workdir, f"cells-{cells}.h5ad")
    if not os.path.exists(cells_path):
        import anndata
        import scipy.sparse as sp

        matrix = sp.random(
            cells, GENES, density=0.1, format="csr", dtype=np.float32, rng=np.random.default_rng(1)
        )
        anndata.AnnData(X=matrix).write_h5ad(cells_path + ".tmp.h5ad")
        os.replace(cells_path + ".tmp.h5ad", cells_path)
    return {"table": table, "cells": cells_path}


def convert_argv(workload: str, source: str, mode: str, out: str) -> list[str]:
    feature = "t=/table" if workload == "table" else "X=/X"
    return [CLI, "convert", source, "-o", out, "--feature", feature, "--mode", mode, "--overwrite"]


# -- the worker: one pipeline in this fresh process ------------------------------------


def generator_table(source: str):
    import h5py

    def rows():
        with h5py.File(source, "r") as h5:
            table = h5["table"]
            for start in range(0, table.shape[0], 4096):
                block = table[start : start + 4096]
                for row in block:
                    yield {name: row[name] for name in block.dtype.names}

    return rows


def generator_cells(source: str):
    import h5py

    def rows():
        with h5py.File(source, "r") as h5:
            group = h5["X"]
            indptr = group["indptr"][()]
            data, indices = group["data"], group["indices"]
            for r in range(indptr.size - 1):
                dense = np.zeros(GENES, np.float32)
                a, b = indptr[r], indptr[r + 1]
                dense[indices[a:b]] = data[a:b]
                yield {"X": dense}

    return rows


def build(workload: str, pipeline: str, source: str, records: dict[str, str]):
    import tensorflow as tf

    import reader

    if pipeline == "G":
        make = generator_table(source) if workload == "table" else generator_cells(source)
        first = next(make())
        signature = {
            k: tf.TensorSpec(np.shape(v), tf.as_dtype(np.asarray(v).dtype))
            for k, v in first.items()
        }
        ds = tf.data.Dataset.from_generator(make, output_signature=signature)
        return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE).take(G_BATCHES)
    if workload == "table":
        return reader.load(records["auto" if pipeline == "I" else "copy"], batch_size=BATCH)
    dense = "dense" if pipeline == "Sd" else "sparse"
    return reader.load(records["copy"], batch_size=BATCH, sparse=dense)


def drain(ds) -> int:
    import tensorflow as tf

    examples = 0
    for batch in ds:
        first = next(iter(batch.values()))
        examples += int(
            first.dense_shape[0] if isinstance(first, tf.SparseTensor) else first.shape[0]
        )
    return examples


def worker(args: argparse.Namespace) -> None:
    records = json.loads(args.records)
    ds = build(args.workload, args.pipeline, args.source, records)
    warm = drain(ds)
    started = time.perf_counter()
    examples = drain(ds)
    seconds = time.perf_counter() - started
    assert examples == warm, (examples, warm)
    print(json.dumps({"examples": examples, "seconds": seconds}))


# -- the driver ------------------------------------------------------------------------


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def run_read(workload: str, pipeline: str, source: str, records: dict[str, str]) -> float:
    argv = [sys.executable, HERE, "worker", workload, pipeline, source, json.dumps(records)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["examples"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    for name in ("workload", "pipeline", "source", "records"):
        w.add_argument(name)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table-rows", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(HERE), ".bench"))
    args = parser.parse_args()
    if args.command == "worker":
        return worker(args)
    sources = write_sources(args.workdir, args.table_rows, args.cells)
    records = {w: {} for w in sources}
    converted: dict[tuple[str, str], list[float]] = {}
    reads: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up; its figures are dropped
        for workload, source in sources.items():
            modes = CONVERSIONS[workload][:: 1 if round_ % 2 else -1]
            for mode in modes:
                out = os.path.join(args.workdir, f"out-{workload}-{mode}")
                records[workload][mode] = out
                seconds = timed(convert_argv(workload, source, mode, out))
                if round_:
                    converted.setdefault((workload, mode), []).append(seconds)
            names = (
                READS[workload][round_ % len(READS[workload]) :]
                + READS[workload][: round_ % len(READS[workload])]
            )
            for pipeline in names:
                rate = run_read(workload, pipeline, source, records[workload])
                if round_:
                    reads.setdefault((workload, pipeline), []).append(rate)
        print(f"round {round_} done", file=sys.stderr, flush=True)
    report(sources, converted, reads)
    for workload in sources:
        for mode in CONVERSIONS[workload]:
            shutil.rmtree(os.path.join(args.workdir, f"out-{workload}-{mode}"), ignore_errors=True)


def report(sources, converted, reads) -> None:
    median = {k: statistics.median(v) for k, v in {**converted, **reads}.items()}
    for workload, source in sources.items():
        size = os.path.getsize(source) / 1e6
        print(f"{workload}: {os.path.basename(source)} ({size:.0f} MB)")
        copy, auto = median[(workload, "copy")], median[(workload, "auto")]
        print(f"  convert: copy {copy:.2f} s, auto {auto:.2f} s ({auto / copy:.2f}x copy)")
        baseline = median[(workload, "G")]
        for pipeline in READS[workload]:
            rate = median[(workload, pipeline)]
            values = ", ".join(f"{v:,.0f}" for v in reads[(workload, pipeline)])
            print(
                f"  read {pipeline:<3} {rate:>10,.0f} ex/s  {rate / baseline:5.1f}x G   ({values})"
            )


if __name__ == "__main__":
    main()
