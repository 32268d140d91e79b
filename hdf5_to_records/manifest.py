"""The manifest: ``DIR/manifest.json``, written last, the contract readers rely on.

Writing it is the commit point of a conversion: a directory without a manifest is
incomplete, whatever shards it holds.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import fs
from ._version import __version__
from .config import ConvertConfig
from .encode import COUNT_KEY, SHAPE_SUFFIX
from .errors import ManifestError
from .fingerprint import fingerprint
from .plan import Plan
from .references import FILE_KEY, REF_SUFFIX, TAKE_SUFFIX
from .schema import merge_shapes
from .writer import ShardResult

FORMAT = "hdf5-to-records"
FORMAT_VERSION = 1
RUN_FLAGS = ("overwrite", "resume")  # how a run went, not what it made
INDEX_FORMAT_VERSION = 2  # adds referenced features; copy-only datasets stay version 1
MANIFEST_NAME = "manifest.json"
SOURCE_ROOTS_KEY = "source_roots"  # index mode: directories the sources may lie under


def build_manifest(config: ConvertConfig, plan: Plan, results: list[ShardResult]) -> dict[str, Any]:
    """The manifest for a finished conversion (shards in split and index order)."""
    by_name = {r.filename: r for r in results}
    referenced = [f.name for f in plan.features if f.storage == "reference"]
    extra: dict[str, Any] = {}
    if referenced:
        # Relative to the output, like the paths, so output and sources can move together.
        roots = {os.path.dirname(os.path.abspath(f.path)) for f in plan.sources.files}
        extra[SOURCE_ROOTS_KEY] = sorted(_reference_path(root, config.output) for root in roots)
    return {
        "format": FORMAT,
        "format_version": INDEX_FORMAT_VERSION if referenced else FORMAT_VERSION,
        "name": plan.name,
        "tool_version": __version__,
        "mode": plan.sources.mode,
        "compression": plan.compression,
        "records": _records_entry(plan, referenced),
        "features": [_feature_entry(feature, plan, by_name) for feature in plan.features],
        "splits": {split: _split_entry(plan, split, by_name) for split in plan.split_names},
        "sources": [_source_entry(config, f, referenced) for f in plan.sources.files],
        **extra,
        "config": config_record(config),
    }


def _records_entry(plan: Plan, referenced: list[str]) -> dict[str, Any]:
    return {
        "rows_per_record": plan.rows_per_record,
        "count_key": COUNT_KEY,
        "shape_suffix": SHAPE_SUFFIX,
        "byte_order": "little",
        **(
            {"file_key": FILE_KEY, "ref_suffix": REF_SUFFIX, "take_suffix": TAKE_SUFFIX}
            if referenced
            else {}
        ),
    }


def _feature_entry(feature, plan: Plan, by_name: dict[str, ShardResult]) -> dict[str, Any]:
    """One feature; a ragged one's shape is what its shards saw (None where it varied)."""
    shape = list(feature.shape)
    if feature.ragged:
        observed = [by_name[s.filename].shapes.get(feature.name) for s in plan.shards]
        observed = [tuple(o) for o in observed if o is not None]
        shape = list(merge_shapes(observed)) if observed else shape
    return {
        "name": feature.name,
        "dtype": feature.stored.dtype,
        "shape": shape,
        "encoding": feature.stored.encoding,
        "ragged": feature.ragged,
        "source": feature.source,
        "source_dtype": feature.source_dtype,
        "storage": feature.storage,
        **({"enum": dict(feature.enum)} if feature.enum else {}),
    }


def shard_entry(result: ShardResult, fingerprint: str) -> dict[str, Any]:
    """One shard as the manifest lists it."""
    return {
        "file": result.filename,
        "num_examples": result.num_examples,
        "num_records": result.num_records,
        "num_bytes": result.num_bytes,
        "sha256": result.sha256,
        "shapes": result.shapes,
        "fingerprint": fingerprint,
    }


def shard_state(split: str, index: int, entry: dict[str, Any]) -> dict[str, Any]:
    """A manifest's shard entry back as a completed shard (a ShardResult's fields and
    its fingerprint), as ``--resume`` keeps it."""
    return {
        "split": split,
        "index": index,
        "filename": entry["file"],
        "num_examples": entry["num_examples"],
        "num_records": entry["num_records"],
        "num_bytes": entry["num_bytes"],
        "sha256": entry["sha256"],
        "shapes": entry.get("shapes", {}),
        "fingerprint": entry["fingerprint"],
    }


def _split_entry(plan: Plan, split: str, by_name: dict[str, ShardResult]) -> dict[str, Any]:
    specs = plan.split_shards(split)
    shards = [by_name[s.filename] for s in specs]
    return {
        "num_examples": sum(r.num_examples for r in shards),
        "num_records": sum(r.num_records for r in shards),
        "num_bytes": sum(r.num_bytes for r in shards),
        "shards": [shard_entry(r, s.fingerprint) for r, s in zip(shards, specs)],
    }


def _source_entry(config: ConvertConfig, f, referenced: list[str]) -> dict[str, Any]:
    """One source file; in index mode with where its rows are (relative paths)."""
    source = {
        "path": f.path,
        "size": f.size,
        "mtime": f.mtime,
        "num_items": f.num_items,
        "selection": {
            "rows": config.rows,
            "groups": config.groups,
            "num_selected": int(f.rows.size),
        },
    }
    if referenced:
        source["path"] = _reference_path(f.path, config.output)
        source["fingerprint"] = fingerprint(f.path)
        source["references"] = {name: f.refs[name].to_json() for name in referenced}
    return source


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


def write_manifest(output: str, manifest: dict[str, Any]) -> str:
    """Write the manifest atomically (temp file + rename); return its path."""
    data = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
    return fs.commit_file(output, MANIFEST_NAME, data)


def read_manifest(directory: str) -> dict[str, Any]:
    """Load and check a manifest.

    Raises:
        ManifestError: missing, not JSON, or of an unknown format or version.
    """
    path = directory if directory.endswith(".json") else fs.join(directory, MANIFEST_NAME)
    try:
        with fs.open_read(path) as handle:
            data = json.loads(handle.read())
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(
            f"no manifest at {path}: not a converted dataset, or the conversion did not finish"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ManifestError(f"cannot read manifest {path}: {detail}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{path} is not an hdf5-to-records manifest")
    if data.get("format_version") not in (FORMAT_VERSION, INDEX_FORMAT_VERSION):
        raise ManifestError(
            f"{path} has format version {data.get('format_version')}; this "
            f"tool reads versions {FORMAT_VERSION} and {INDEX_FORMAT_VERSION}"
        )
    return data


def manifest_dir(path: str) -> str:
    return os.path.dirname(path) if path.endswith(".json") else path
