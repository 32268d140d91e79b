"""The ``hdf5-to-records`` command line: a thin layer over the library.

Each command parses options, builds a config, calls one library function, and turns
the project's errors into one line on stderr: exit 2 for usage errors, 1 otherwise.
``--debug`` shows the traceback instead. The library is imported inside the commands,
so ``--help`` stays as fast as importing click.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time

import click

from ._version import __version__

log = logging.getLogger("hdf5_to_records")
SERVER_STOP_TIMEOUT_S = 5.0


class _Main(click.Group):
    """Prints click's own usage errors as one line too, for scripts and CI logs."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class _Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM: exit 128 + the signal number, the shell convention."""

    exit_code = 130

    @classmethod
    def of(cls, exc: KeyboardInterrupt, message: str) -> _Interrupted:
        """The exit for ``exc``: 143 for SIGTERM (:class:`Terminated`), else 130."""
        from .errors import Terminated

        interrupted = cls(message)
        interrupted.exit_code = 143 if isinstance(exc, Terminated) else 130
        return interrupted


def _debug_option(func):
    return click.option("--debug", is_flag=True, help="Show tracebacks for errors.")(func)


@contextlib.contextmanager
def _errors(debug: bool, *, interrupted_hint: str | None = None):
    """Turn library errors into click errors: one line, no traceback."""
    from .errors import Hdf5ToRecordsError, UsageError, first_line

    try:
        yield
    except Hdf5ToRecordsError as exc:
        if debug:
            raise
        message = " | ".join(line for line in str(exc).splitlines() if line.strip())
        if isinstance(exc, UsageError):
            raise click.UsageError(message) from None
        raise click.ClickException(message) from None
    except KeyboardInterrupt as exc:
        if debug:
            raise
        hint = f"interrupted; {interrupted_hint}" if interrupted_hint else "interrupted"
        raise _Interrupted.of(exc, hint) from None
    except (click.ClickException, click.exceptions.Exit):
        raise
    except Exception as exc:
        if debug:
            raise
        named = _named_shard_error(exc)
        if named is not None:  # a corrupt shard met while reading: bad input, not a bug
            raise click.ClickException(named) from None
        detail = first_line(exc, default="")
        raise click.ClickException(
            f"internal error: {type(exc).__name__}: {detail} (rerun with --debug for the traceback)"
        ) from None


def _named_shard_error(exc: Exception) -> str | None:
    """The reader's message naming a corrupt shard, from TensorFlow's error around it."""
    if not type(exc).__module__.startswith("tensorflow"):
        return None
    from reader.records import shard_error_message

    return shard_error_message(str(exc))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hdf5-to-records")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Convert selected HDF5 data into sharded TFRecord files for fast tf.data input."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=level, handlers=[handler])


class _LogFormat(logging.Formatter):
    """Ours as ``hdf5-to-records: message``; another library's (Beam, Dask) under its
    logger's name, so that nobody takes an engine's line for ours."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.name.partition(".")[0] == "hdf5_to_records":
            return f"hdf5-to-records: {message}"
        return f"{record.name}: {message}"


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
    "--feature",
    "feature",
    multiple=True,
    metavar="NAME=/PATH",
    help="Dataset to store as feature NAME (repeatable). Default: every root "
    "dataset sharing the common axis-0 length.",
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
@_debug_option
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
    """Convert SOURCES (HDF5 files or globs) into sharded TFRecord files in --output."""
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
    with _errors(debug, interrupted_hint=hint):
        from .config import build_config
        from .converter import convert as run_convert

        config = build_config(given, yaml_path=config_file)
        task = _task(num_tasks, task_index)
        if beam_options and runner != "beam":
            raise click.UsageError("--beam-option needs --runner beam")
        if runner == "beam" and task is not None:
            raise click.UsageError("--runner beam and --num-tasks are alternatives; pick one")
        bar = _ProgressBar()
        started = time.perf_counter()
        try:
            with _sigterm_as_interrupt():
                if runner == "beam" and not dry_run:
                    from .beam_runner import convert_on_beam

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
    from .tasks import TaskSlice

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


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a job scheduler's kill) cleans up like Ctrl-C: workers stopped, temp
    files removed, the resume state saved."""

    def interrupt(signum, frame):
        from .errors import Terminated

        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
            total=examples,
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
    click.echo(
        f"plan for {summary['name']}: {summary['sources']} source file(s), "
        f"{summary['rows_per_record']} example(s) per record"
    )
    for name, feature in summary["features"].items():
        click.echo(f"  feature {name}: {feature['dtype']} {tuple(feature['shape'])}")
    for split, info in summary["splits"].items():
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
@_debug_option
def finalize(directory: str, debug: bool) -> None:
    """Write DIRECTORY's manifest once every task of a `convert --num-tasks N` is done.

    Refuses, naming them, when tasks or shards are missing."""
    with _errors(debug):
        from .converter import finalize as run_finalize

        result = run_finalize(directory)
    manifest = result.manifest
    total = sum(s["num_bytes"] for s in manifest["splits"].values())
    examples = sum(s["num_examples"] for s in manifest["splits"].values())
    click.echo(
        f"finalized {directory}: {examples} examples, {total / 1e6:.1f} MB, "
        f"manifest written; run `hdf5-to-records verify {directory}` to check the shards"
    )
    _print_splits(manifest)


@main.group("data-service")
def data_service() -> None:
    """Run tf.data service servers for `reader.load(..., service="grpc://HOST:PORT")`."""


@data_service.command()
@click.option("--port", type=int, default=5050, show_default=True, help="Port (0: any free).")
@click.option("--work-dir", help="Where the dispatcher keeps its state (with --fault-tolerant).")
@click.option(
    "--fault-tolerant", is_flag=True, help="Journal state in --work-dir to survive restarts."
)
@_debug_option
def dispatcher(port: int, work_dir: str | None, fault_tolerant: bool, debug: bool) -> None:
    """Start a tf.data service dispatcher and serve until stopped (Ctrl-C, SIGTERM)."""
    with _errors(debug):
        from .data_service import start_dispatcher

        server = start_dispatcher(port=port, work_dir=work_dir, fault_tolerant=fault_tolerant)
        _serve(server, f"dispatcher serving at {server.target}")


@data_service.command()
@click.option("--dispatcher", "dispatcher_address", required=True, metavar="HOST:PORT")
@click.option("--port", type=int, default=0, show_default=True, help="Port (0: any free).")
@click.option(
    "--worker-address",
    metavar="HOST:PORT",
    help="How clients reach this worker (default localhost:PORT; use HOSTNAME:%port%).",
)
@_debug_option
def worker(dispatcher_address: str, port: int, worker_address: str | None, debug: bool) -> None:
    """Start a tf.data service worker for the dispatcher at HOST:PORT; serve until stopped."""
    with _errors(debug):
        from .data_service import served_address, start_worker

        server = start_worker(
            dispatcher=dispatcher_address, port=port, worker_address=worker_address
        )
        _serve(
            server,
            f"worker serving at {served_address(server)} for dispatcher {dispatcher_address}",
        )


def _serve(server, ready: str) -> None:
    """Say ``ready``, block until Ctrl-C or SIGTERM (``join()`` would not see either),
    then stop. The SIGTERM handler is in place before ``ready`` is printed, so whoever
    waits for that line may stop the server at once."""
    try:
        with _sigterm_as_interrupt():
            click.echo(ready, err=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt as exc:
        # A worker whose dispatcher is already gone can block in stop(): give it a
        # few seconds, then exit anyway (the process holds nothing else).
        stopping = threading.Thread(target=server.stop, daemon=True)
        stopping.start()
        stopping.join(timeout=SERVER_STOP_TIMEOUT_S)
        raise _Interrupted.of(exc, "stopped") from None


@main.command()
@click.argument("file")
@_debug_option
def inspect(file: str, debug: bool) -> None:
    """Print FILE's groups and datasets: shape, dtype, chunks, filters and layout."""
    with _errors(debug):
        from .inspect import describe_file

        for line in describe_file(file):
            click.echo(line)


@main.command()
@click.argument("directory")
@click.option("--split", default="train", show_default=True, help="Split to read.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch size.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Passes to time.")
@_debug_option
def bench(directory: str, split: str, batch_size: int, epochs: int, debug: bool) -> None:
    """Measure reader.load on DIRECTORY: examples/s, MB/s and batches/s.

    Compare the examples/s with your training step's to see whether the input pipeline
    keeps up. The clock starts after the first batch.
    """
    if batch_size < 1 or epochs < 1:
        raise click.UsageError("--batch-size and --epochs must be >= 1")
    with _errors(debug):
        from tqdm import tqdm

        from hdf5_to_records.dataset_spec import load_spec
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
    help="Compare the values of this random fraction of the records with the sources.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_debug_option
def verify(directory: str, deep: bool, sample: float | None, as_json: bool, debug: bool) -> None:
    """Check DIRECTORY: manifest, shards (size, sha256, framing, counts, decoding) and,
    in index mode, the sources; exit 0 if all holds, 1 if anything is wrong."""
    if deep and sample is not None:
        raise click.UsageError("--deep and --sample are mutually exclusive")
    if sample is not None and not 0.0 < sample <= 1.0:
        raise click.UsageError(f"--sample must be in (0, 1], got {sample}")
    with _errors(debug):
        from tqdm import tqdm

        from .verify import verify as run_verify

        with tqdm(
            unit="B", unit_scale=True, desc="verifying", disable=None, file=sys.stderr
        ) as bar:
            report = run_verify(directory, deep=deep, sample=sample, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"PROBLEM {problem}")
        for note in report.notes:
            click.echo(f"NOTE {note}")
        compared = f", values of {report.compared} record(s) compared" if deep or sample else ""
        sources = (
            f" + {report.source_bytes / 1e6:,.1f} MB of referenced source data"
            if report.source_bytes
            else ""
        )
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
@_debug_option
def info(directory: str, debug: bool) -> None:
    """Describe DIRECTORY: splits, counts, sizes, features, sources and settings."""
    with _errors(debug):
        from .summary import describe

        for line in describe(directory):
            click.echo(line)
