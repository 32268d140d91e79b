"""``hdf5-to-records info DIR`` (and ``python -m hdf5_to_records.checks.summary DIR``): what a
converted dataset holds, readable at a glance, from its manifest alone."""

from __future__ import annotations

import datetime
import sys

from ..format.manifest import load_manifest

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
        ManifestError: no readable manifest, or a malformed one.
    """
    manifest = load_manifest(directory)
    storage = "copy"
    if manifest.referenced:
        storage = "index (references into the HDF5 sources, " + (
            "each byte range with its CRC32C, checked on every read)"
            if manifest.records.checksums == "crc32c"
            else "no checksums: bytes changed in place go unnoticed)"
        )
    examples = f"{manifest.mode} as examples"
    if manifest.mode == "generator":
        examples = f"examples of --generator {manifest.config.get('generator')}"
    lines = [
        f"{manifest.name} ({directory}): format v{manifest.format_version}, written by "
        f"hdf5-to-records {manifest.tool_version or '?'}",
        f"  storage {storage}, compression {manifest.compression}, up to "
        f"{manifest.records.rows_per_record} example(s) per record, {examples}",
        "splits:",
    ]
    total_examples = total_bytes = 0
    for split, info in manifest.splits.items():
        total_examples += info.num_examples
        total_bytes += info.num_bytes
        lines.append(
            f"  {split:<10} {info.num_examples:>12,} examples  {len(info.shards):>5} "
            f"shard(s)  {info.num_records:>9,} records  {_size(info.num_bytes):>9}"
        )
    lines.append(f"  {'total':<10} {total_examples:>12,} examples  {_size(total_bytes):>41}")
    lines.append("features:")
    for feature in manifest.features:
        shape = "(" + ", ".join("?" if d is None else str(d) for d in feature.shape) + ")"
        how = "referenced" if feature.storage == "reference" else "copied"
        extra = "  enum " + ",".join(feature.enum) if feature.enum else ""
        if feature.sparse:
            extra += f"  sparse CSR rows, dense shape {shape}"
        lines.append(
            f"  {feature.name:<16} {feature.dtype:<10} {shape:<16} {how:<10} "
            f"from {feature.source} ({feature.source_dtype}){extra}"
        )
    if manifest.mode != "generator":
        lines.append(f"sources ({len(manifest.sources)}):")
    for source in manifest.sources[:20]:
        when = datetime.datetime.fromtimestamp(source.mtime, datetime.timezone.utc)
        selected = "?" if source.num_selected is None else source.num_selected
        lines.append(
            f"  {source.path}  {_size(source.size)}, modified {when:%Y-%m-%d %H:%M} UTC, "
            f"{selected} of {source.num_items} selected"
        )
    if len(manifest.sources) > 20:
        lines.append(f"  ... and {len(manifest.sources) - 20} more")
    lines.append(_settings(manifest.config))
    return lines


def _settings(config: dict) -> str:
    settings = ", ".join(
        f"{key}={config[key]}" for key in _SETTINGS if config.get(key) not in (None, False)
    )
    splits = config.get("splits")
    fractions = ", ".join(f"{k}={v}" for k, v in splits.items()) if isinstance(splits, dict) else ""
    return f"settings: {settings}; splits {fractions}"


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


if __name__ == "__main__":
    from ..errors import Hdf5ToRecordsError

    try:
        print("\n".join(describe(sys.argv[1])))
    except Hdf5ToRecordsError as exc:
        sys.exit(f"Error: {exc}")
