"""The frozen pieces of a :class:`config.ConvertConfig` that each stage gets.

The selection stage gets :class:`SourceOptions`, the plan :class:`PlanOptions`, the
output directory :class:`OutputOptions`: each only what it uses. ``ConvertConfig``
validates every option once, then hands these out.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from ..format.naming import check_name

Compression = Literal["none", "gzip"]
Mode = Literal["copy", "index", "auto"]
Checksums = Literal["crc32c", "none"]  # index mode: what each referenced byte range carries
_FEATURE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class FeatureSpec:
    """One output feature: its name and the dataset path it is read from."""

    name: str
    path: str

    def __post_init__(self) -> None:
        check_feature_name(self.name, option="--feature")
        if not self.path:
            raise UsageError(f"--feature {self.name}=: empty dataset path")


@dataclass(frozen=True)
class SplitSpec:
    """One output split and the fraction of the selected examples it receives."""

    name: str
    fraction: float

    def __post_init__(self) -> None:
        check_name(self.name, what="split")
        if not 0.0 < self.fraction <= 1.0:
            raise UsageError(f"--split {self.name}={self.fraction}: fraction must be in (0, 1]")


def check_feature_name(name: str, *, option: str) -> str:
    """Feature names are identifiers, so ``name/shape`` and ``__rows__`` stay reserved."""
    if not _FEATURE_NAME_RE.match(name):
        raise UsageError(
            f"{option} {name!r}: feature names must start with a letter and contain only "
            "letters, digits and '_'"
        )
    return name


@dataclass(frozen=True)
class SourceOptions:
    """What to read: the source files (globs), features, and the row or group selection."""

    sources: tuple[str, ...]
    features: tuple[FeatureSpec, ...]
    rows: str | None
    groups: str | None
    mode: Mode
    # feature -> (rows, columns) or (columns,): CSR groups without a shape attribute
    sparse_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class PlanOptions:
    """How the selected examples become splits, shards and records."""

    name: str  # the dataset name in shard file names
    splits: tuple[SplitSpec, ...]
    shuffle: bool
    seed: int
    num_shards: int | None
    shard_size: int | None  # bytes
    workers: int  # the default shard count is a multiple of it
    rows_per_record: int | None
    compression: Compression
    transform: str | None  # module:function; its source is part of the plan's fingerprint
    checksums: Checksums = "crc32c"  # index mode: CRC32C of every referenced byte range


@dataclass(frozen=True)
class OutputOptions:
    """The output directory, and whether to replace or finish what it holds."""

    path: str
    overwrite: bool
    resume: bool
