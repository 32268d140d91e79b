"""``hdf5-to-records info DIR`` (and ``python -m hdf5_to_records.summary DIR``): what a
converted dataset holds, readable at a glance, from its manifest alone."""

from __future__ import annotations

import datetime
import sys

from .errors import ManifestError
from .manifest import read_manifest

_SETTINGS = (
    "mode",
    "rows",
    "groups",
    "transform",
    "shuffle",
    "seed",
    "num_shards",
    "shard_size",
    "compression",
    "rows_per_record",
)


def describe(directory: str) -> list[str]:
    """Lines describing a converted dataset.

    Raises:
        ManifestError: no readable manifest.
    """
    manifest = read_manifest(directory)
    try:
        return _describe(directory, manifest)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ManifestError(f"manifest in {directory} is malformed: {exc!r}") from None


def _describe(directory: str, manifest: dict) -> list[str]:
    records = manifest["records"]
    storage = (
        "index (references into the HDF5 sources)"
        if any(f.get("storage") == "reference" for f in manifest["features"])
        else "copy"
    )
    lines = [
        f"{manifest['name']} ({directory}): format v{manifest['format_version']}, written by "
        f"hdf5-to-records {manifest.get('tool_version', '?')}",
        f"  storage {storage}, compression {manifest['compression']}, up to "
        f"{records['rows_per_record']} example(s) per record, {manifest['mode']} as examples",
        "splits:",
    ]
    total_examples = total_bytes = 0
    for split, info in manifest["splits"].items():
        total_examples += info["num_examples"]
        total_bytes += info["num_bytes"]
        lines.append(
            f"  {split:<10} {info['num_examples']:>12,} examples  {len(info['shards']):>5} "
            f"shard(s)  {info['num_records']:>9,} records  {_size(info['num_bytes']):>9}"
        )
    lines.append(f"  {'total':<10} {total_examples:>12,} examples  {_size(total_bytes):>41}")
    lines.append("features:")
    for feature in manifest["features"]:
        shape = "(" + ", ".join("?" if d is None else str(d) for d in feature["shape"]) + ")"
        how = "referenced" if feature.get("storage") == "reference" else "copied"
        extra = "  enum " + ",".join(feature["enum"]) if feature.get("enum") else ""
        lines.append(
            f"  {feature['name']:<16} {feature['dtype']:<10} {shape:<16} {how:<10} "
            f"from {feature['source']} ({feature['source_dtype']}){extra}"
        )
    lines.append(f"sources ({len(manifest['sources'])}):")
    for source in manifest["sources"][:20]:
        when = datetime.datetime.fromtimestamp(source["mtime"], datetime.timezone.utc)
        selected = source.get("selection", {}).get("num_selected", "?")
        lines.append(
            f"  {source['path']}  {_size(source['size'])}, modified {when:%Y-%m-%d %H:%M} UTC, "
            f"{selected} of {source['num_items']} selected"
        )
    if len(manifest["sources"]) > 20:
        lines.append(f"  ... and {len(manifest['sources']) - 20} more")
    config = manifest.get("config", {})
    settings = ", ".join(
        f"{key}={config[key]}" for key in _SETTINGS if config.get(key) not in (None, False)
    )
    splits = ", ".join(f"{k}={v}" for k, v in config.get("splits", {}).items())
    lines.append(f"settings: {settings}; splits {splits}")
    return lines


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


if __name__ == "__main__":
    from .errors import Hdf5ToRecordsError

    try:
        print("\n".join(describe(sys.argv[1])))
    except Hdf5ToRecordsError as exc:
        sys.exit(f"Error: {exc}")
