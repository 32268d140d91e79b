"""Run the conversion plan as an Apache Beam pipeline (``convert --runner beam``).

The same plan and the same shard writer as a local run: one shard per element, spread
over the runner's workers (Dataflow, Flink, Spark, or the DirectRunner here), then one
last step, once every shard is done, writes the manifest with the local run's code. The
output is byte-identical to a local conversion.

    shard indices -> Reshuffle -> write shard (one per element) -> ToList -> manifest

Beam retries failed work itself, so ``--resume`` does not apply; a failed pipeline
leaves no manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence

from .. import errors
from ..converter import ConvertResult, check_space, make_job, plan_conversion
from ..errors import Hdf5ToRecordsError, OutputError, Terminated, UsageError
from ..format.manifest import read_manifest, write_manifest
from ..planning.config import ConvertConfig
from ..planning.limits import DEFAULT_LIMITS, Limits
from ..planning.plan import Plan
from ..writing.commit import build_manifest
from ..writing.output import prepare_output
from ..writing.writer import ShardResult, open_inputs, write_shard
from .beam_options import beam, engine_logs, import_beam, parse_beam_options
from .tasks import plan_id

log = logging.getLogger(__name__)


def convert_on_beam(
    config: ConvertConfig,
    *,
    beam_options: Sequence[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> ConvertResult:
    """Convert with an Apache Beam pipeline; ``beam_options`` as ``KEY=VALUE`` strings
    (``limits`` as for :func:`converter.convert`).

    Raises:
        UsageError: Beam missing, unknown Beam options, ``--resume``.
        Hdf5ToRecordsError: as a local conversion; errors inside the pipeline surface as
            the runner reports them.
    """
    import_beam()
    if config.resume:
        raise UsageError(
            "--resume with --runner beam: Beam retries failed work itself; rerun with --overwrite"
        )
    flags = parse_beam_options(beam_options)
    plan = plan_conversion(config, limits=limits)
    expected = plan_id(plan)
    _PLANS[expected] = plan  # the DirectRunner's in-process workers need not plan again
    check_space(config, plan.shards)
    state = prepare_output(config.output_options, plan)
    if config.shuffle and any(f.chunk_rows > 1 for f in plan.sources.files):
        log.info("--runner beam reads shuffled rows straight from the chunks (no staging)")
    options = beam.options.pipeline_options.PipelineOptions(flags)
    # Beam's in-process workers print the traceback of a failed step to stderr before
    # the error reaches us; we report it in one line (with -v, everything shows).
    quiet = logging.getLogger().getEffectiveLevel() >= logging.WARNING
    chatter = contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Shards" >> beam.Create(range(len(plan.shards)))
        | "Spread" >> beam.Reshuffle()
        | "Write" >> beam.ParDo(_WriteShard(config, expected, limits))
        | "Gather" >> beam.combiners.ToList()
        | "Manifest" >> beam.Map(_finalize, config=config, expected=expected, limits=limits)
    )
    try:
        with chatter, engine_logs():
            result = pipeline.run()
            try:
                result.wait_until_finish()
            finally:
                _close_client(result)
    except BaseException as exc:
        state.sweep()
        state.finish()  # no --resume on Beam: no state file to mislead one
        ours = _surface(exc)
        if ours is None or ours is exc:
            raise
        raise ours from None
    finally:
        _PLANS.pop(expected, None)
    state.finish()
    return ConvertResult(plan, read_manifest(config.output), config.output)


def _close_client(result) -> None:
    """Close the connection a runner opened (the DaskRunner's ``distributed.Client``),
    so that it does not linger and log about lost workers at exit."""
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        with contextlib.suppress(Exception):  # best effort: the conversion's outcome stands
            client.close()


_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]")
_OURS = re.compile(r"hdf5_to_records\.errors\.(\w+): (.+)")


def _surface(exc: BaseException) -> BaseException | None:
    """The error to report for a failed pipeline, as one line.

    Runners wrap what a step raised: in the same process, a copy with "[while running
    'STEP']" appended; across threads or processes, a RuntimeError holding the remote
    traceback as text. Find ours (or an interrupt) in either; else summarise.
    """
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, (Hdf5ToRecordsError, KeyboardInterrupt)):
            return link
        link = link.__cause__ or link.__context__
    text = str(exc)
    if "hdf5_to_records.errors.Terminated" in text:
        return Terminated()
    if "KeyboardInterrupt" in text:
        return KeyboardInterrupt()
    found = _OURS.findall(text)
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, Hdf5ToRecordsError)
        if not (isinstance(kind, type) and issubclass(kind, Hdf5ToRecordsError)):
            kind = Hdf5ToRecordsError
        return kind(_WHILE_RUNNING.sub("", message).strip())
    if not isinstance(exc, Exception):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = _WHILE_RUNNING.sub("", lines[-1]) if lines else type(exc).__name__
    return Hdf5ToRecordsError(f"the Beam pipeline failed: {detail}")


# Plans by plan_id, per process. The pipeline carries only the config and the plan's id:
# the plan holds every selected example's row and file index (~12 bytes each), too much
# for a job graph (Dataflow refuses graphs over ~10 MB); each worker process rebuilds it
# from the sources, as each task of a task array does, and checks it is the same plan.
_PLANS: dict[str, Plan] = {}


def _plan_for(config: ConvertConfig, expected: str, limits: Limits) -> Plan:
    plan = _PLANS.get(expected)
    if plan is None:
        plan = plan_conversion(config, limits=limits)
        if plan_id(plan) != expected:
            raise OutputError(
                f"--output {config.output}: a Beam worker planned differently from the "
                "launcher (did the sources change during the run, or does the worker see "
                "other files at these paths?)"
            )
        _PLANS[expected] = plan
    return plan


class _WriteShard(beam.DoFn if beam is not None else object):
    """Writes one shard per element; each worker opens its own HDF5 files."""

    def __init__(self, config: ConvertConfig, expected: str, limits: Limits):
        super().__init__()
        self._config, self._expected, self._limits = config, expected, limits
        self._plan = self._job = self._reader = self._transform = None

    def setup(self) -> None:
        self._plan = _plan_for(self._config, self._expected, self._limits)
        self._job = make_job(self._config, self._plan)
        self._reader, self._transform = open_inputs(self._job)

    def process(self, index: int):
        spec = self._plan.shards[index]
        yield write_shard(self._job, spec, self._reader, transform=self._transform)

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _finalize(
    results: list[ShardResult], *, config: ConvertConfig, expected: str, limits: Limits
) -> str:
    """The pipeline's last step: every shard is written, so commit the manifest."""
    plan = _plan_for(config, expected, limits)
    return write_manifest(config.output, build_manifest(config, plan, results))
