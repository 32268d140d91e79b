"""The manifest of a finished conversion, from its config, plan and shard results.

Writing it (:func:`format.manifest.write_manifest`) is the commit point; every executor
(local processes, task arrays' ``finalize``, Beam) builds it here, so a resumed, task or
Beam run's manifest equals an uninterrupted local one's.
"""

from __future__ import annotations

import os
from typing import Any

from .. import fs
from .._version import __version__
from ..format.manifest import (
    CONVENTIONS_FORMAT_VERSION,
    FORMAT_VERSION,
    FRAMING_FORMAT_VERSION,
    INDEX_FORMAT_VERSION,
    Manifest,
    ShardEntry,
    SplitEntry,
)
from ..format.manifest_entries import FeatureEntry, RecordLayout, SourceEntry
from ..index.fingerprint import fingerprint
from ..planning.config import ConvertConfig
from ..planning.plan import Plan
from ..planning.schema import merge_shapes
from .writer import ShardResult

RUN_FLAGS = ("overwrite", "resume")  # how a run went, not what it made


def build_manifest(config: ConvertConfig, plan: Plan, results: list[ShardResult]) -> Manifest:
    """The manifest for a finished conversion (shards in split and index order)."""
    by_name = {r.filename: r for r in results}
    referenced = [f.name for f in plan.features if f.storage == "reference"]
    roots: list[str] = []
    if referenced:
        # Relative to the output, like the paths, so output and sources can move together.
        dirs = {os.path.dirname(os.path.abspath(f.path)) for f in plan.sources.files}
        roots = sorted(_reference_path(root, config.output) for root in dirs)
    return Manifest(
        name=plan.name,
        mode=plan.sources.mode,
        compression=plan.compression,
        records=RecordLayout(
            plan.rows_per_record,
            references=bool(referenced),
            checksums=config.checksums if referenced else "none",
        ),
        features=tuple(_feature_entry(feature, plan, by_name) for feature in plan.features),
        splits={split: _split_entry(plan, split, by_name) for split in plan.split_names},
        sources=tuple(_source_entry(config, f, referenced) for f in plan.sources.files),
        source_roots=tuple(roots),
        config=config_record(config),
        tool_version=__version__,
        format_version=_format_version(plan, referenced, results),
    )


def _format_version(plan: Plan, referenced: list[str], results: list[ShardResult]) -> int:
    """The oldest format that holds what this dataset uses (older readers refuse it)."""
    if any(r.framing_sha256 for r in results):
        return FRAMING_FORMAT_VERSION
    fields = any(
        not isinstance(f.refs.get(name), str) and f.refs[name].element_bytes
        for f in plan.sources.files
        for name in referenced
    )
    if fields or any(feature.sparse for feature in plan.features):
        return CONVENTIONS_FORMAT_VERSION
    return INDEX_FORMAT_VERSION if referenced else FORMAT_VERSION


def _feature_entry(feature, plan: Plan, by_name: dict[str, ShardResult]) -> FeatureEntry:
    """One feature; a ragged one's shape is what its shards saw (None where it varied)."""
    shape = tuple(feature.shape)
    if feature.ragged:
        observed = [by_name[s.filename].shapes.get(feature.name) for s in plan.shards]
        observed = [tuple(o) for o in observed if o is not None]
        shape = tuple(merge_shapes(observed)) if observed else shape
    return FeatureEntry(
        feature.name,
        feature.stored.dtype,
        shape,
        feature.stored.encoding,
        feature.ragged,
        feature.source,
        feature.source_dtype,
        feature.storage,
        dict(feature.enum) if feature.enum else None,
        feature.sparse,
    )


def shard_entry(result: ShardResult, fingerprint: str | None) -> ShardEntry:
    """One shard as the manifest lists it."""
    return ShardEntry(
        result.filename,
        result.num_examples,
        result.num_records,
        result.num_bytes,
        result.sha256,
        result.shapes,
        fingerprint,
        result.index_sha256,
        tuple(tuple(run) for run in result.record_examples),
        result.framing_sha256,
    )


def shard_state(split: str, index: int, entry: ShardEntry) -> dict[str, Any]:
    """A manifest's shard entry back as a completed shard (a ShardResult's fields and
    its fingerprint), as ``--resume`` keeps it."""
    return {
        "split": split,
        "index": index,
        "filename": entry.file,
        "num_examples": entry.num_examples,
        "num_records": entry.num_records,
        "num_bytes": entry.num_bytes,
        "sha256": entry.sha256,
        "shapes": entry.shapes,
        "index_sha256": entry.index_sha256,
        "record_examples": [list(run) for run in entry.record_examples],
        "framing_sha256": entry.framing_sha256,
        "fingerprint": entry.fingerprint,
    }


def _split_entry(plan: Plan, split: str, by_name: dict[str, ShardResult]) -> SplitEntry:
    specs = plan.split_shards(split)
    return SplitEntry.of([shard_entry(by_name[s.filename], s.fingerprint) for s in specs])


def _source_entry(config: ConvertConfig, f, referenced: list[str]) -> SourceEntry:
    """One source file; in index mode with where its rows are (relative paths)."""
    selection = {"rows": config.rows, "groups": config.groups, "num_selected": int(f.rows.size)}
    if not referenced:
        return SourceEntry(f.path, f.size, f.mtime, f.num_items, selection)
    return SourceEntry(
        _reference_path(f.path, config.output),
        f.size,
        f.mtime,
        f.num_items,
        selection,
        fingerprint(f.path),
        {name: f.refs[name].to_json() for name in referenced},
        indexed=True,
    )


def config_record(config: ConvertConfig) -> dict[str, Any]:
    """How the output was made, as the manifest records it: a resumed, task-array or
    Beam run's manifest equals an uninterrupted local one's. Run flags (--overwrite,
    --resume) are left out, and --workers unless it set the shard count (by default a
    multiple of it; --num-shards or --shard-size fix the count instead)."""
    skip = RUN_FLAGS
    if config.num_shards is not None or config.shard_size is not None:
        skip += ("workers",)
    return {k: v for k, v in config.to_json().items() if k not in skip}


def _reference_path(path: str, output: str) -> str:
    """A source path as index-mode manifests store it: relative to the output directory
    (so the two can move together), absolute when the output is a URL."""
    if fs.is_url(output):
        return os.path.realpath(path)
    # Real paths on both sides: the reader resolves symlinks in the output path too.
    return os.path.relpath(os.path.realpath(path), os.path.realpath(output))
