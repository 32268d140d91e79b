"""The library entry point: ``convert(config)`` runs every stage of a conversion.

config → selection (:mod:`schema`) → plan → read → encode → write shard → manifest.
Nothing here prints; progress goes to the caller's callbacks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import fs
from .errors import NotReferenceable, OutputError
from .format.manifest import write_manifest
from .format.reference import Reference
from .planning.config import ConvertConfig
from .planning.generator import first_schema, load_factory
from .planning.generator_plan import build_generator_plan, probe_shards
from .planning.limits import DEFAULT_LIMITS, Limits
from .planning.plan import Plan, ShardSpec, build_plan
from .planning.schema import FeatureSchema, SourceSet, scan_sources
from .planning.transform import apply_transform, example_for_transform, load_transform, schema_of
from .scale_out.tasks import TaskSlice, prepare_task_output, sweep_task, write_part
from .scale_out.tasks import finalize as finalize_parts
from .writing.commit import build_manifest
from .writing.executor import execute
from .writing.forkserver import prestart
from .writing.output import prepare_output
from .writing.reading import ShardReader
from .writing.staging import needs_staging, stage
from .writing.writer import Job, ShardResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion did: its plan, and the manifest (``None`` for a dry run)."""

    plan: Plan
    manifest: dict[str, Any] | None
    manifest_path: str | None
    skipped_shards: int = 0
    written: tuple[ShardResult, ...] = ()  # a task-array task: the shards it wrote


def convert(
    config: ConvertConfig,
    *,
    dry_run: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    task: TaskSlice | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ConvertResult:
    """Convert the selected HDF5 data into sharded TFRecord files and a manifest.

    ``on_start(examples, bytes)`` is called once with the work to do; ``progress(examples,
    bytes)`` as records are written. With ``dry_run`` only the plan is built. With
    ``task``, only that task's part of the plan is written, and no manifest:
    :func:`finalize` writes it once every task is done. ``limits`` bound reads and
    records (the defaults suit any real data; tests pass small ones).

    Raises:
        Hdf5ToRecordsError: any bad input or output, with the file, dataset or option.
    """
    if not dry_run:
        prestart(config.output, config.workers)
    plan = plan_conversion(config, limits=limits)
    if dry_run:
        return ConvertResult(plan, None, None)
    staging = _staging(config, plan)
    if task is not None:
        return _convert_task(config, plan, task, staging, on_start, progress)
    staging_bytes = plan.sources.num_examples * plan.sources.example_bytes if staging else 0
    if not config.resume:
        check_space(config, plan.shards, extra=staging_bytes)
    state = prepare_output(config.output_options, plan)
    done = state.completed()
    done_names = {r.filename for r in done}
    todo = [s for s in plan.shards if s.filename not in done_names]
    if config.resume:
        log.info("resuming: %d of %d shards already complete", len(done), len(plan.shards))
        check_space(config, todo, extra=staging_bytes)
    if on_start is not None:
        on_start(sum(s.num_examples for s in todo), sum(s.est_bytes for s in todo))
    try:
        results = done + run_shards(
            config, plan, todo, staging=staging, progress=progress, on_result=state.record
        )
    except BaseException:
        state.sweep()
        raise
    manifest = build_manifest(config, plan, results)
    path = write_manifest(config.output, manifest)
    state.finish()
    return ConvertResult(plan, manifest.to_json(), path, skipped_shards=len(done))


def _convert_task(config, plan, task, staging, on_start, progress) -> ConvertResult:
    todo, complete = prepare_task_output(config, plan, task)
    if complete:
        return ConvertResult(plan, None, None, skipped_shards=len(task.shards(plan)))
    check_space(config, todo)
    if on_start is not None:
        on_start(sum(s.num_examples for s in todo), sum(s.est_bytes for s in todo))
    try:
        results = run_shards(config, plan, todo, staging=staging, progress=progress)
    except BaseException:
        sweep_task(config, todo)
        raise
    path = write_part(config, plan, task, results)
    return ConvertResult(plan, None, path, written=tuple(results))


def finalize(directory: str) -> ConvertResult:
    """Write the manifest of a task-array conversion (see :mod:`tasks`).

    Raises:
        OutputError: parts or shards missing or disagreeing, each one named.
    """
    done = finalize_parts(directory, plan_for=plan_conversion)
    return ConvertResult(done.plan, done.manifest, done.manifest_path)


def plan_conversion(config: ConvertConfig, *, limits: Limits = DEFAULT_LIMITS) -> Plan:
    """Scan the sources and build the plan: the same plan for every executor (local,
    task array, Beam), since it depends only on the config and the sources.

    Raises:
        Hdf5ToRecordsError: bad sources, selections or options.
    """
    if config.generator is not None:
        return _plan_generator(config, limits)
    sources = scan_sources(config.source_options)
    sources = choose_storage(config, sources)
    _warn_shuffled_chunks(config, sources)
    features = _output_schema(config, sources)
    return build_plan(config.plan_options, sources, features, limits=limits)


def _plan_generator(config: ConvertConfig, limits: Limits) -> Plan:
    """The plan of a ``--generator`` conversion; the factory runs here once, for the
    schema (its first example)."""
    options = config.plan_options
    factory = load_factory(config.generator)
    probe = probe_shards(options, config.num_examples) or 1
    features = first_schema(factory, config.generator, config.names, probe)
    return build_generator_plan(
        options, config.generator, config.names, config.num_examples, features, limits=limits
    )


def make_job(config: ConvertConfig, plan: Plan, read_sources: SourceSet | None = None) -> Job:
    """What every shard writer needs: output, sources, schema and record layout.

    ``read_sources`` replaces the plan's sources for reading (a staged scratch copy).
    """
    referenced = {f.name for f in plan.features if f.storage == "reference"}
    read = read_sources or plan.sources.without_selections()
    return Job(
        config.output,
        read,
        tuple(f for f in read.features if f.name not in referenced),
        plan.features,
        plan.rows_per_record,
        config.compression,
        config.transform,
        refs=tuple({n: f.refs[n] for n in referenced} for f in plan.sources.files),
        checksum_paths=(
            tuple(f.path for f in plan.sources.files)
            if referenced and config.checksums == "crc32c"
            else ()
        ),
        record_target=plan.record_target,
        limits=plan.limits,
        generator=config.generator,
        names=config.names,
    )


def run_shards(
    config: ConvertConfig,
    plan: Plan,
    todo: list[ShardSpec],
    *,
    staging: bool,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[ShardResult], None] | None = None,
) -> list[ShardResult]:
    """Write the shards ``todo`` of ``plan`` with ``config.workers`` processes.

    With ``staging``, the rows these shards read are first copied to scratch (see
    :mod:`staging`); only those rows, so each task of a task array stages its own part.
    """
    staged = None
    try:
        read_sources = None
        if todo and staging:
            staged = stage(_rows_of(plan.sources, todo), config.output, plan.limits)
            read_sources = staged.sources.without_selections()
            todo = [staged.remap(spec) for spec in todo]
        job = make_job(config, plan, read_sources)
        return execute(job, todo, workers=config.workers, progress=progress, on_result=on_result)
    finally:
        if staged is not None:
            staged.cleanup()


def _staging(config: ConvertConfig, plan: Plan) -> bool:
    # Staging remaps rows to scratch positions, which references cannot use.
    referenced = any(f.storage == "reference" for f in plan.features)
    return not referenced and needs_staging(config.shuffle, plan.sources, plan.limits)


def _rows_of(sources: SourceSet, specs: list[ShardSpec]) -> SourceSet:
    """``sources`` with each file's selection cut down to the rows ``specs`` read."""
    files = []
    for file_id, source in enumerate(sources.files):
        rows = [s.rows[s.file_ids == file_id] for s in specs]
        wanted = np.unique(np.concatenate(rows)) if rows else np.empty(0, np.int64)
        files.append(dataclasses.replace(source, rows=wanted))
    return dataclasses.replace(sources, files=tuple(files))


def choose_storage(config: ConvertConfig, sources: SourceSet) -> SourceSet:
    """Mark the features that ``--mode index|auto`` stores as references.

    A feature is referenced when its dataset can be referenced in every source file.

    Raises:
        NotReferenceable: ``--mode index`` and some feature cannot be, naming each one
            with the first file and reason.
    """
    if config.mode == "copy":
        return sources
    why: dict[str, str] = {}
    for feature in sources.features:
        if config.transform is not None:
            why[feature.name] = "--transform outputs are stored by value"
        elif sources.mode == "groups":
            why[feature.name] = "--groups examples are stored by value"
        else:
            for source in sources.files:
                ref = source.refs.get(feature.name)
                if not isinstance(ref, Reference):
                    name = os.path.basename(source.path)
                    why[feature.name] = f"{ref or 'not probed'} ({feature.source} in {name})"
                    break
    if why and config.mode == "index":
        detail = "; ".join(f"{name!r}: {reason}" for name, reason in why.items())
        raise NotReferenceable(
            f"--mode index: cannot reference feature(s) {detail}; use --mode auto to copy them"
        )
    for name, reason in why.items():
        log.warning("--mode auto: copying feature %r: %s", name, reason)
    features = tuple(
        f if f.name in why else dataclasses.replace(f, storage="reference")
        for f in sources.features
    )
    return dataclasses.replace(sources, features=features)


def _warn_shuffled_chunks(config: ConvertConfig, sources: SourceSet) -> None:
    referenced = {f.name for f in sources.features if f.storage == "reference"}
    chunked = max(
        (
            ref.chunk_rows
            for f in sources.files
            for name, ref in f.refs.items()
            if name in referenced and isinstance(ref, Reference)
        ),
        default=0,
    )
    if config.shuffle and chunked > 1:
        log.warning(
            "--shuffle with referenced chunked data: reading decodes a whole chunk (up to "
            "%d rows) per example; shuffle in reader.load instead for full speed",
            chunked,
        )


def _output_schema(config: ConvertConfig, sources: SourceSet) -> tuple[FeatureSchema, ...]:
    """The stored schema: the sources' features, or what the transform returns."""
    if config.transform is None:
        return sources.features
    func = load_transform(config.transform)
    reader = ShardReader(sources, sources.features)
    try:
        first = sources.files[0]
        window = next(reader.windows(first.rows[:1] * 0, first.rows[:1]))
    finally:
        reader.close()
    example = example_for_transform(window.columns, 0, sources.features)
    item = f"group {first.groups[first.rows[0]]}" if first.groups else f"row {first.rows[0]}"
    where = f"the first example ({os.path.basename(first.path)} {item})"
    return schema_of(apply_transform(func, config.transform, example, where), config.transform)


def check_space(config: ConvertConfig, todo, *, extra: int = 0) -> None:
    """Refuse up front when an uncompressed output (plus ``extra`` scratch bytes for a
    staged shuffle) clearly cannot fit."""
    free = fs.free_bytes(config.output)
    need = sum(s.est_bytes for s in todo) + extra
    # 0 free is what /proc and some FUSE mounts report: let the real write error speak.
    if free and config.compression == "none" and need > free:
        raise OutputError(
            f"--output {config.output}: needs about {need / 1e6:.0f} MB but only "
            f"{free / 1e6:.0f} MB is free"
        )
