"""``inspect``, ``bench``, ``verify`` and ``info``: looking at sources and outputs."""

from __future__ import annotations

import json
import sys

import click

from .app import debug_option, main, reported_errors


@main.command()
@click.argument("file")
@debug_option
def inspect(file: str, debug: bool) -> None:
    """Print FILE's groups and datasets: shape, dtype, chunks, filters and layout."""
    with reported_errors(debug):
        from ..checks.inspect import describe_file

        for line in describe_file(file):
            click.echo(line)


@main.command()
@click.argument("directory")
@click.option("--split", default="train", show_default=True, help="Split to read.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch size.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Passes to time.")
@debug_option
def bench(directory: str, split: str, batch_size: int, epochs: int, debug: bool) -> None:
    """Measure reader.load on DIRECTORY: examples/s, MB/s and batches/s.

    Compare the examples/s with your training step's to see whether the input pipeline
    keeps up. The clock starts after the first batch.
    """
    if batch_size < 1 or epochs < 1:
        raise click.UsageError("--batch-size and --epochs must be >= 1")
    with reported_errors(debug):
        from tqdm import tqdm

        from hdf5_to_records.format.dataset_spec import load_spec
        from reader.throughput import measure

        total = sum(s.num_examples for s in load_spec(directory).split(split)) * epochs
        with tqdm(
            total=total, unit="ex", unit_scale=True, desc="reading", disable=None, file=sys.stderr
        ) as bar:
            result = measure(
                directory, split, batch_size=batch_size, epochs=epochs, progress=bar.update
            )
        click.echo(
            f"{directory} [{split}], batch {batch_size}, {epochs} epoch(s): "
            f"{result.examples_per_s:,.0f} examples/s, {result.mb_per_s:,.1f} MB/s, "
            f"{result.batches_per_s:,.1f} batches/s "
            f"({result.cpu_seconds / max(result.examples, 1) * 1e6:.1f} CPU-us per example)"
        )


@main.command()
@click.argument("directory")
@click.option("--deep", is_flag=True, help="Also compare every value with the HDF5 sources.")
@click.option(
    "--sample",
    type=float,
    metavar="FRACTION",
    help="Compare the values of this seeded random fraction of the records with the "
    "sources; in index mode, read and check only their byte ranges (default: all).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of --sample's random choice."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@debug_option
def verify(
    directory: str, deep: bool, sample: float | None, seed: int, as_json: bool, debug: bool
) -> None:
    """Check DIRECTORY: manifest, shards (size, record CRCs, framing digest, counts, decoding) and,
    in index mode, the sources; exit 0 if all holds, 1 if anything is wrong."""
    if deep and sample is not None:
        raise click.UsageError("--deep and --sample are mutually exclusive")
    if sample is not None and not 0.0 < sample <= 1.0:
        raise click.UsageError(f"--sample must be in (0, 1], got {sample}")
    with reported_errors(debug):
        from tqdm import tqdm

        from ..checks.verify import verify as run_verify

        with tqdm(
            unit="B", unit_scale=True, desc="verifying", disable=None, file=sys.stderr
        ) as bar:
            report = run_verify(directory, deep=deep, sample=sample, seed=seed, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"PROBLEM {problem}")
        for note in report.notes:
            click.echo(f"NOTE {note}")
        for warning in report.warnings:
            click.echo(f"WARNING {warning}", err=True)
        compared = f", values of {report.compared} record(s) compared" if deep or sample else ""
        sources = (
            f" + {report.source_bytes / 1e6:,.1f} MB of referenced source data"
            if report.source_bytes
            else ""
        )
        if report.checked_ranges:
            sources += f" ({report.checked_ranges:,} byte ranges checked against CRC32C)"
        click.echo(
            f"{'OK' if report.ok else 'FAILED'}: {directory}: {report.shards} shard(s), "
            f"{report.records} records, {report.examples} examples, "
            f"{report.bytes / 1e6:,.1f} MB{sources} in {report.seconds:.1f} s "
            f"({report.total_mb_per_s:,.0f} MB/s){compared}"
            + (f"; {len(report.problems)} problem(s)" if report.problems else "")
        )
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("directory")
@debug_option
def info(directory: str, debug: bool) -> None:
    """Describe DIRECTORY: splits, counts, sizes, features, sources and settings."""
    with reported_errors(debug):
        from ..checks.summary import describe

        for line in describe(directory):
            click.echo(line)
