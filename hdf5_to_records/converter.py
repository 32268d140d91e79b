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

from . import fs
from .config import ConvertConfig
from .errors import NotReferenceable, OutputError
from .executor import execute, prestart
from .manifest import build_manifest, write_manifest
from .output import prepare_output
from .plan import Plan, build_plan
from .reading import ShardReader
from .references import Reference
from .schema import FeatureSchema, SourceSet, scan_sources
from .staging import needs_staging, stage
from .transform import apply_transform, example_for_transform, load_transform, schema_of
from .writer import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion did: its plan, and the manifest (``None`` for a dry run)."""

    plan: Plan
    manifest: dict[str, Any] | None
    manifest_path: str | None
    skipped_shards: int = 0


def convert(
    config: ConvertConfig,
    *,
    dry_run: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert the selected HDF5 data into sharded TFRecord files and a manifest.

    ``on_start(examples, bytes)`` is called once with the work to do; ``progress(examples,
    bytes)`` as records are written. With ``dry_run`` only the plan is built.

    Raises:
        Hdf5ToRecordsError: any bad input or output, with the file, dataset or option.
    """
    if not dry_run:
        prestart(config.output, config.workers)
    sources = scan_sources(config)
    sources = choose_storage(config, sources)
    _warn_shuffled_chunks(config, sources)
    features = _output_schema(config, sources)
    plan = build_plan(config, sources, features)
    if dry_run:
        return ConvertResult(plan, None, None)
    referenced = {f.name for f in features if f.storage == "reference"}
    # Staging remaps rows to scratch positions, which references cannot use.
    staging = not referenced and needs_staging(config.shuffle, sources)
    staging_bytes = sources.num_examples * sources.example_bytes if staging else 0
    if not config.resume:
        _check_space(config, plan.shards, extra=staging_bytes)
    state = prepare_output(config, plan)
    done = state.completed()
    done_names = {r.filename for r in done}
    todo = [s for s in plan.shards if s.filename not in done_names]
    if config.resume:
        log.info("resuming: %d of %d shards already complete", len(done), len(plan.shards))
        _check_space(config, todo, extra=staging_bytes)
    if on_start is not None:
        on_start(sum(s.num_examples for s in todo), sum(s.est_bytes for s in todo))
    staged = None
    read_sources = sources.without_selections()
    try:
        if todo and staging:
            staged = stage(sources, config.output)
            read_sources = staged.sources.without_selections()
            todo = [staged.remap(spec) for spec in todo]
        job = Job(
            config.output,
            read_sources,
            tuple(f for f in read_sources.features if f.name not in referenced),
            features,
            plan.rows_per_record,
            config.compression,
            config.transform,
            refs=tuple({n: f.refs[n] for n in referenced} for f in sources.files),
            record_target=plan.record_target,
        )
        results = done + execute(
            job, todo, workers=config.workers, progress=progress, on_result=state.record
        )
    except BaseException:
        state.sweep()
        raise
    finally:
        if staged is not None:
            staged.cleanup()
    manifest = build_manifest(config, plan, results)
    path = write_manifest(config.output, manifest)
    state.finish()
    return ConvertResult(plan, manifest, path, skipped_shards=len(done))


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


def _check_space(config: ConvertConfig, todo, *, extra: int = 0) -> None:
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
