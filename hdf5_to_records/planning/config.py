"""Conversion config: a frozen dataclass that validates itself, and its parsers.

Every option of ``hdf5-to-records convert`` is a field here; a YAML file (``--config``)
sets the same keys, and command-line flags override it. Each input kind has its own
``parse_*`` function so errors name the option at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import UsageError
from ..format.naming import check_name
from .generator import check_generator_options
from .option_parsers import (
    as_int,
    as_pairs,
    load_yaml,
    parse_feature,
    parse_names,
    parse_sparse_shape,
    parse_split,
    resolve_path,
)
from .sharding import parse_size
from .stage_options import (
    Checksums,
    Compression,
    FeatureSpec,
    Mode,
    OutputOptions,
    PlanOptions,
    SourceOptions,
    SplitSpec,
)


def default_workers() -> int:
    """CPUs this process may use (container limits included), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ConvertConfig:
    """Everything that determines a conversion. Invalid configs cannot be constructed."""

    sources: tuple[str, ...]
    output: str
    # --generator MODULE:FACTORY: examples come from FACTORY(shard_index, num_shards),
    # not from SOURCES; --num-examples caps them, --names names a tuple's items.
    generator: str | None = None
    num_examples: int | None = None
    names: tuple[str, ...] = ()
    features: tuple[FeatureSpec, ...] = ()
    rows: str | None = None
    groups: str | None = None
    transform: str | None = None
    splits: tuple[SplitSpec, ...] = (SplitSpec("train", 1.0),)
    shuffle: bool = False
    seed: int = 0
    num_shards: int | None = None
    shard_size: int | None = None
    name: str | None = None
    compression: Compression = "none"
    mode: Mode = "copy"
    checksums: Checksums = "crc32c"
    rows_per_record: int | None = None
    workers: int = field(default_factory=lambda: default_workers())
    overwrite: bool = False
    resume: bool = False
    # --sparse-shape: (feature, (rows, columns) or (columns,)) for CSR groups without
    # a shape attribute
    sparse_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.generator is not None:
            check_generator_options(self)
        elif not self.sources:
            raise UsageError("no SOURCES given: name at least one HDF5 file or glob pattern")
        elif self.num_examples is not None or self.names:
            option = "--num-examples" if self.num_examples is not None else "--names"
            raise UsageError(f"{option} needs --generator")
        if not self.output:
            raise UsageError("--output is required")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"--feature {duplicates[0]!r} is given more than once")
        split_names = [s.name for s in self.splits]
        if len(set(split_names)) != len(split_names):
            raise UsageError(f"--split names must be unique, got {split_names}")
        total = sum(s.fraction for s in self.splits)
        if not self.splits or total > 1.0 + 1e-9:
            raise UsageError(f"--split fractions must sum to at most 1, got {total:g}")
        if self.num_shards is not None and self.shard_size is not None:
            raise UsageError("--num-shards and --shard-size are mutually exclusive")
        if self.num_shards is not None and self.num_shards < 1:
            raise UsageError(f"--num-shards must be >= 1, got {self.num_shards}")
        if self.shard_size is not None and self.shard_size < 1:
            raise UsageError(f"--shard-size must be positive, got {self.shard_size}")
        if self.rows_per_record is not None and self.rows_per_record < 1:
            raise UsageError(f"--rows-per-record must be >= 1, got {self.rows_per_record}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.compression not in ("none", "gzip"):
            raise UsageError(f"--compression must be none or gzip, got {self.compression!r}")
        if self.mode not in ("copy", "index", "auto"):
            raise UsageError(f"--mode must be copy, index or auto, got {self.mode!r}")
        if self.checksums not in ("crc32c", "none"):
            raise UsageError(f"--checksums must be crc32c or none, got {self.checksums!r}")
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume are mutually exclusive")
        if self.groups is not None and not self.groups.startswith("/"):
            raise UsageError(f"--groups {self.groups!r}: pattern must start with '/'")
        if self.groups is None and any(not f.path.startswith("/") for f in self.features):
            bad = next(f for f in self.features if not f.path.startswith("/"))
            raise UsageError(
                f"--feature {bad.name}={bad.path}: path must be absolute (start with '/') "
                "unless --groups is given"
            )
        if self.transform is not None and ":" not in self.transform:
            raise UsageError(f"--transform {self.transform!r}: expected module:function")
        if self.name is not None:
            check_name(self.name, what="dataset")

    @property
    def source_options(self) -> SourceOptions:
        """What the selection stage reads (``schema.scan_sources``)."""
        return SourceOptions(
            self.sources,
            self.features,
            self.rows,
            self.groups,
            self.mode,
            dict(self.sparse_shapes),
        )

    @property
    def plan_options(self) -> PlanOptions:
        """How the plan cuts the selection into splits, shards and records."""
        return PlanOptions(
            self.dataset_name,
            self.splits,
            self.shuffle,
            self.seed,
            self.num_shards,
            self.shard_size,
            self.workers,
            self.rows_per_record,
            self.compression,
            self.transform,
            self.checksums,
        )

    @property
    def output_options(self) -> OutputOptions:
        """Where the shards go, and what to do with what is there."""
        return OutputOptions(self.output, self.overwrite, self.resume)

    @property
    def dataset_name(self) -> str:
        """The ``--name`` used in shard file names (default: the output directory's name)."""
        if self.name is not None:
            return self.name
        base = os.path.basename(self.output.rstrip("/")) or "records"
        cleaned = re.sub(r"[^A-Za-z0-9_.]", "_", base).lstrip("._") or "records"
        return cleaned

    def to_json(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data (recorded in the manifest)."""
        data = asdict(self)
        data["features"] = {f.name: f.path for f in self.features}
        data["splits"] = {s.name: s.fraction for s in self.splits}
        data["sources"] = list(self.sources)
        data["name"] = self.dataset_name
        data["sparse_shapes"] = {n: ",".join(map(str, d)) for n, d in self.sparse_shapes}
        if self.generator is None:  # manifests of file conversions keep their keys
            for key in ("generator", "num_examples", "names"):
                del data[key]
        else:
            data["names"] = list(self.names)
        return data


_KEYS = {f.name for f in fields(ConvertConfig)}


_ALIASES = {
    "feature": "features",
    "split": "splits",
    "source": "sources",
    "sparse_shape": "sparse_shapes",
}


def _canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    """Option names as config keys: dashes to underscores, singular aliases to plurals."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        out[_ALIASES.get(key, key)] = value
    return out


def build_config(options: Mapping[str, Any], *, yaml_path: str | None = None) -> ConvertConfig:
    """Merge a YAML config file (if any) with command-line ``options`` into a config.

    ``options`` holds only the flags the user actually gave; each replaces the file's
    value for that key. Relative paths in the file are resolved against its directory.

    Raises:
        UsageError: unknown keys, malformed values, contradictory options.
    """
    from_yaml = _canonical(load_yaml(yaml_path)) if yaml_path is not None else {}
    given = {k: v for k, v in _canonical(options).items() if v is not None}
    base_dir = os.path.dirname(os.path.abspath(yaml_path)) if yaml_path else None
    from_file = set(from_yaml) - set(given)
    merged = {**from_yaml, **given}

    def path_of(key: str, value: str) -> str:
        return resolve_path(value, base_dir) if key in from_file else value

    kwargs: dict[str, Any] = {}
    sources = merged.pop("sources", None) or ()
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, (list, tuple)):
        raise UsageError(
            f"config key 'sources': expected a path or a list of paths, got {sources!r}"
        )
    kwargs["sources"] = tuple(path_of("sources", str(s)) for s in sources)
    kwargs["output"] = path_of("output", str(merged.pop("output", "") or ""))
    features = merged.pop("features", None) or ()
    kwargs["features"] = tuple(parse_feature(p) for p in as_pairs(features, key="features"))
    shapes = merged.pop("sparse_shapes", None) or ()
    pairs = as_pairs(shapes, key="sparse_shapes")
    kwargs["sparse_shapes"] = tuple(parse_sparse_shape(p) for p in pairs)
    splits = merged.pop("splits", None)
    if splits:
        kwargs["splits"] = tuple(parse_split(p) for p in as_pairs(splits, key="splits"))
    if "rows" in merged:
        rows = str(merged.pop("rows"))
        is_file = rows.startswith("@") and rows.endswith((".npy", ".txt"))
        kwargs["rows"] = "@" + path_of("rows", rows[1:]) if is_file else rows
    if "shard_size" in merged:
        try:
            kwargs["shard_size"] = parse_size(merged.pop("shard_size"))
        except ValueError as exc:
            raise UsageError(f"--shard-size: {exc}") from None
    if "names" in merged:
        kwargs["names"] = parse_names(merged.pop("names"))
    for int_key in ("seed", "num_shards", "rows_per_record", "workers", "num_examples"):
        if int_key in merged:
            kwargs[int_key] = as_int(merged.pop(int_key), int_key)
    for bool_key in ("shuffle", "overwrite", "resume"):
        if bool_key in merged:
            value = merged.pop(bool_key)
            if not isinstance(value, bool):
                raise UsageError(f"config key {bool_key!r}: expected true or false")
            kwargs[bool_key] = value
    for str_key in ("generator", "groups", "transform", "name", "compression", "mode", "checksums"):
        if str_key in merged:
            kwargs[str_key] = str(merged.pop(str_key))
    if merged:
        unknown = sorted(merged)[0]
        where = f" in {yaml_path}" if yaml_path else ""
        raise UsageError(f"unknown config key {unknown!r}{where}; known keys: {sorted(_KEYS)}")
    return ConvertConfig(**kwargs)
