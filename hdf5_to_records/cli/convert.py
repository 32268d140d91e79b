"""``convert`` (local, task arrays, Beam) and ``finalize``: the plan, its progress bar
and its summary."""

from __future__ import annotations

import sys
import time

import click

from .app import debug_option, main, reported_errors, sigterm_as_interrupt


@main.command()
@click.argument("sources", nargs=-1)
@click.option("-o", "--output", help="Output directory (or any tf.io.gfile URL).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML file with any of these options; flags override it.",
)
@click.option(
    "--generator",
    metavar="MODULE:FACTORY",
    help="Convert your own generator instead of SOURCES: FACTORY(shard_index, num_shards) "
    "returns an iterable of examples (dicts or tuples of arrays), called in each worker.",
)
@click.option(
    "--num-examples",
    type=int,
    metavar="N",
    help="--generator: examples to write, shared among the shards (each takes the first "
    "of its iterable). Default: all they yield (they must end).",
)
@click.option(
    "--names",
    metavar="X,Y,...",
    help="--generator: feature names of a tuple example's items (a pair defaults to x,y).",
)
@click.option(
    "--feature",
    "feature",
    multiple=True,
    metavar="NAME=/PATH",
    help="Dataset to store as feature NAME (repeatable). Default: every root "
    "dataset sharing the common axis-0 length.",
)
@click.option(
    "--sparse-shape",
    "sparse_shape",
    multiple=True,
    metavar="NAME=ROWS,COLS",
    help="Shape of feature NAME's CSR matrix group (data/indices/indptr) when it has no "
    "shape attribute (repeatable).",
)
@click.option(
    "--rows",
    metavar="SPEC",
    help="Rows per file: slices (100:5000, ::10, comma lists), @rows.npy, "
    "@rows.txt or @/index_or_mask_dataset.",
)
@click.option(
    "--groups",
    metavar="PATTERN",
    help="Treat each group matching PATTERN (e.g. /scenes/*) as one example.",
)
@click.option(
    "--transform",
    metavar="MODULE:FUNCTION",
    help="Function applied to each example (dict of arrays) in the workers.",
)
@click.option(
    "--split",
    "split",
    multiple=True,
    metavar="NAME=FRACTION",
    help="Random split of the examples, seeded by --seed (repeatable). "
    "Default: everything in 'train'.",
)
@click.option(
    "--shuffle/--no-shuffle", default=None, help="Write examples in a seeded global random order."
)
@click.option("--seed", type=int, help="Seed for --split and --shuffle (default 0).")
@click.option("--num-shards", type=int, help="Shards per split.")
@click.option(
    "--shard-size",
    metavar="SIZE",
    help="Target shard size, e.g. 256MB (default 128MiB, and at least one shard per worker).",
)
@click.option("--name", help="Dataset name in shard file names (default: output dir name).")
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip"]),
    help="TFRecord compression (default none).",
)
@click.option(
    "--mode",
    type=click.Choice(["copy", "index", "auto"]),
    help="copy: store values (default). index: store references to the HDF5 bytes "
    "(error if a feature cannot be referenced). auto: reference what can be, copy the rest.",
)
@click.option(
    "--checksums",
    type=click.Choice(["crc32c", "none"]),
    help="Index mode: record the CRC32C of every referenced byte range, reading it once "
    "(default crc32c; the reader and verify check it). none: metadata only, for sources "
    "too large to read; then any change of a source's size or mtime is refused.",
)
@click.option(
    "--rows-per-record",
    type=int,
    metavar="K",
    help="Examples per record (default: about 1 MiB per record).",
)
@click.option("--workers", type=int, help="Worker processes (default: CPU count).")
@click.option(
    "--overwrite", is_flag=True, default=None, help="Replace the output directory's contents."
)
@click.option(
    "--resume",
    is_flag=True,
    default=None,
    help="Finish an interrupted run: keep complete shards that match the plan.",
)
@click.option(
    "--num-tasks",
    type=int,
    metavar="N",
    help="Task arrays: the plan is split into N parts; convert only --task-index's part "
    "(then run `finalize`).",
)
@click.option(
    "--task-index",
    type=int,
    metavar="I",
    help="Which part of --num-tasks to convert, 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID).",
)
@click.option(
    "--runner",
    type=click.Choice(["local", "beam"]),
    default="local",
    show_default=True,
    help="local: worker processes here. beam: an Apache Beam pipeline (needs the [beam] extra).",
)
@click.option(
    "--beam-option",
    "beam_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Beam pipeline option (repeatable), e.g. runner=DataflowRunner, project=P, "
    "direct_num_workers=2. Default runner: DirectRunner.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@debug_option
@click.pass_context
def convert(
    ctx: click.Context,
    config_file: str | None,
    dry_run: bool,
    debug: bool,
    num_tasks: int | None,
    task_index: int | None,
    runner: str,
    beam_options: tuple[str, ...],
    **options,
) -> None:
    """Convert SOURCES (HDF5 files or globs), or the examples of --generator, into
    sharded TFRecord files in --output."""
    from click.core import ParameterSource

    given = {
        k: v
        for k, v in options.items()
        if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)
    }
    if "sources" in given and not given["sources"]:
        del given["sources"]
    hint = "rerun with --resume to continue"
    if runner == "beam":
        hint = "rerun with --overwrite"
    elif num_tasks is not None:
        hint = "rerun this task (--resume keeps a complete one)"
    with reported_errors(debug, interrupted_hint=hint):
        if not dry_run and runner == "local":
            from ..writing.forkserver import prestart

            # Before the converter's imports, which the forkserver's then overlap. Where
            # a YAML file sets --workers 1, the forkserver just goes unused.
            prestart(given.get("output"), given.get("workers"), preload_main=True)
        from ..converter import convert as run_convert
        from ..planning.config import build_config
        from ..writing.memory import keep_freed_memory

        keep_freed_memory()  # the CLI's process is ours (--workers 1 writes here)

        config = build_config(given, yaml_path=config_file)
        task = _task(num_tasks, task_index)
        if beam_options and runner != "beam":
            raise click.UsageError("--beam-option needs --runner beam")
        if runner == "beam" and task is not None:
            raise click.UsageError("--runner beam and --num-tasks are alternatives; pick one")
        bar = _ProgressBar()
        started = time.perf_counter()
        try:
            with sigterm_as_interrupt():
                if runner == "beam" and not dry_run:
                    from ..scale_out.beam_runner import convert_on_beam

                    result = convert_on_beam(config, beam_options=beam_options)
                else:
                    result = run_convert(
                        config, dry_run=dry_run, on_start=bar.start, progress=bar.advance, task=task
                    )
        finally:
            bar.close()
        if dry_run:
            _print_plan(result.plan.summary())
            return
        if task is not None:
            _print_task(result, task, config.output, time.perf_counter() - started)
            return
        _print_result(
            result.manifest, config.output, time.perf_counter() - started, result.skipped_shards
        )


def _task(num_tasks: int | None, task_index: int | None):
    if num_tasks is None and task_index is None:
        return None
    if num_tasks is None or task_index is None:
        raise click.UsageError("--num-tasks and --task-index go together")
    from ..scale_out.tasks import TaskSlice

    return TaskSlice(task_index, num_tasks)


def _print_task(result, task, output: str, seconds: float) -> None:
    if result.manifest_path is None:
        click.echo(f"task {task.index} of {task.count}: already complete in {output}")
        return
    examples = sum(r.num_examples for r in result.written)
    nbytes = sum(r.num_bytes for r in result.written)
    click.echo(
        f"task {task.index} of {task.count}: wrote {examples} examples, {nbytes / 1e6:.1f} MB "
        f"in {len(result.written)} shard(s) to {output} in {seconds:.1f} s; run "
        f"`hdf5-to-records finalize {output}` once all {task.count} tasks are done"
    )


class _ProgressBar:
    """One tqdm bar in the parent: examples, with MB/s across all workers."""

    def __init__(self):
        self._bar = None
        self._bytes = 0
        self._t0 = time.perf_counter()
        self._last = 0.0

    def start(self, examples: int, nbytes: int) -> None:
        from tqdm import tqdm

        self._t0 = time.perf_counter()
        self._bar = tqdm(
            total=examples or None,  # 0: unknown (a generator without --num-examples)
            unit="ex",
            unit_scale=True,
            dynamic_ncols=True,
            desc="converting",
            disable=None,
            file=sys.stderr,
        )

    def advance(self, examples: int, nbytes: int) -> None:
        if self._bar is None:
            return
        self._bytes += nbytes
        self._bar.update(examples)
        now = time.perf_counter()
        if now - self._last > 0.5:
            self._last = now
            self._bar.set_postfix_str(
                f"{self._bytes / 1e6 / max(now - self._t0, 1e-9):.0f} MB/s", refresh=False
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_plan(summary: dict) -> None:
    origin = f"{summary['sources']} source file(s)"
    if summary["generator"]:
        origin = f"examples of --generator {summary['generator']}"
    click.echo(
        f"plan for {summary['name']}: {origin}, {summary['rows_per_record']} example(s) per record"
    )
    for name, feature in summary["features"].items():
        click.echo(f"  feature {name}: {feature['dtype']} {tuple(feature['shape'])}")
    for split, info in summary["splits"].items():
        if info["examples"] is None:  # a generator without --num-examples
            click.echo(f"  split {split}: all the factory yields, {info['shards']} shard(s)")
        else:
            click.echo(
                f"  split {split}: {info['examples']} examples, {info['shards']} shard(s), "
                f"{info['records']} records, ~{info['est_bytes'] / 1e6:.1f} MB"
            )
        for filename in info["files"][:3]:
            click.echo(f"    {filename}")
        if len(info["files"]) > 3:
            click.echo(f"    ... ({len(info['files']) - 3} more)")


def _print_result(manifest: dict, output: str, seconds: float, skipped: int) -> None:
    total = sum(s["num_bytes"] for s in manifest["splits"].values())
    examples = sum(s["num_examples"] for s in manifest["splits"].values())
    referenced = [f for f in manifest["features"] if f.get("storage") == "reference"]
    if referenced:
        names = ", ".join(f["name"] for f in referenced)
        click.echo(
            f"wrote {examples} examples, {total / 1e6:.1f} MB to {output} in {seconds:.1f} s; "
            f"{names} referenced in the HDF5 sources, not copied"
            + (f"; {skipped} shard(s) were already complete" if skipped else "")
        )
    else:
        click.echo(
            f"wrote {examples} examples, {total / 1e6:.1f} MB to {output} in {seconds:.1f} s "
            f"({total / 1e6 / max(seconds, 1e-9):.0f} MB/s)"
            + (f"; {skipped} shard(s) were already complete" if skipped else "")
        )
    _print_splits(manifest)


def _print_splits(manifest: dict) -> None:
    for split, info in manifest["splits"].items():
        click.echo(f"  {split}: {info['num_examples']} examples in {len(info['shards'])} shard(s)")


@main.command()
@click.argument("directory")
@debug_option
def finalize(directory: str, debug: bool) -> None:
    """Write DIRECTORY's manifest once every task of a `convert --num-tasks N` is done.

    Refuses, naming them, when tasks or shards are missing."""
    with reported_errors(debug):
        from ..converter import finalize as run_finalize

        result = run_finalize(directory)
    manifest = result.manifest
    total = sum(s["num_bytes"] for s in manifest["splits"].values())
    examples = sum(s["num_examples"] for s in manifest["splits"].values())
    click.echo(
        f"finalized {directory}: {examples} examples, {total / 1e6:.1f} MB, "
        f"manifest written; run `hdf5-to-records verify {directory}` to check the shards"
    )
    _print_splits(manifest)
