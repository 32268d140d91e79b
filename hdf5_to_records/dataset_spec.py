"""What the reader needs from a manifest, parsed and checked once."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from .errors import ManifestError, UnknownName
from .manifest import SOURCE_ROOTS_KEY, manifest_dir, read_manifest
from .references import FILE_KEY, REF_SUFFIX, TAKE_SUFFIX


@dataclass(frozen=True)
class FeatureInfo:
    """One stored feature: dtype name, per-example shape (None = varies), encoding."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    encoding: str
    ragged: bool
    storage: str = "copy"  # "reference": read from the HDF5 source (index mode)

    @property
    def variable(self) -> bool:
        return None in self.shape


@dataclass(frozen=True)
class ShardInfo:
    path: str
    num_examples: int
    num_bytes: int
    sha256: str
    num_records: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    """A converted dataset: where it is, its record layout, features and splits."""

    directory: str
    name: str
    compression: str
    rows_per_record: int
    count_key: str
    shape_suffix: str
    features: tuple[FeatureInfo, ...]
    splits: dict[str, tuple[ShardInfo, ...]]
    sources: tuple[dict, ...] = ()  # the manifest's source entries (index mode reads them)
    source_roots: tuple[str, ...] = ()
    file_key: str = FILE_KEY
    ref_suffix: str = REF_SUFFIX
    take_suffix: str = TAKE_SUFFIX

    def split(self, name: str) -> tuple[ShardInfo, ...]:
        """The shards of a split.

        Raises:
            UnknownName: naming the splits that exist.
        """
        if name not in self.splits:
            raise UnknownName(
                f"split {name!r} not in {self.directory}; it has {sorted(self.splits)}"
            )
        return self.splits[name]

    def select(self, names: list[str] | tuple[str, ...] | None) -> tuple[FeatureInfo, ...]:
        """The features to decode, in manifest order unless names are given.

        Raises:
            UnknownName: naming the features that exist.
        """
        if names is None:
            return self.features
        by_name = {f.name: f for f in self.features}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UnknownName(
                f"feature {missing[0]!r} not in {self.directory}; it has {sorted(by_name)}"
            )
        return tuple(by_name[n] for n in dict.fromkeys(names))


def load_spec(path: str) -> DatasetSpec:
    """Read and check the manifest of a converted dataset directory.

    Raises:
        ManifestError: missing, unreadable, unknown version, or inconsistent.
    """
    manifest = read_manifest(path)
    directory = manifest_dir(path)
    try:
        return _parse(manifest, directory.rstrip("/") or "/")
    except ManifestError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ManifestError(f"manifest in {directory} is malformed: {exc!r}") from None


def _parse(manifest: dict[str, Any], directory: str) -> DatasetSpec:
    records = manifest["records"]
    if records.get("byte_order") != "little":
        raise ManifestError(f"manifest in {directory}: unknown byte order {records!r}")
    features = tuple(
        FeatureInfo(
            _text(f["name"]),
            _dtype(f["dtype"]),
            tuple(None if d is None else _count(d) for d in f["shape"]),
            _choice(f["encoding"], ("raw", "bytes")),
            bool(f["ragged"]),
            _storage(f, directory),
        )
        for f in manifest["features"]
    )
    if not features:
        raise ValueError("no features")
    splits = {}
    for name, info in manifest["splits"].items():
        shards = []
        for shard in info["shards"]:
            file = _text(shard["file"])
            if "/" in file or file.startswith("."):
                raise ManifestError(f"manifest in {directory}: bad shard name {file!r}")
            shards.append(
                ShardInfo(
                    _join(directory, file),
                    _count(shard["num_examples"]),
                    _count(shard["num_bytes"]),
                    _text(shard["sha256"]),
                    _count(shard.get("num_records", 0)),
                )
            )
        splits[name] = tuple(shards)
    return DatasetSpec(
        directory,
        manifest["name"],
        manifest["compression"],
        max(1, _count(records["rows_per_record"])),
        _text(records["count_key"]),
        _text(records["shape_suffix"]),
        features,
        splits,
        tuple(manifest.get("sources", ())),
        tuple(str(r) for r in manifest.get(SOURCE_ROOTS_KEY, ())),
        records.get("file_key", FILE_KEY),
        records.get("ref_suffix", REF_SUFFIX),
        records.get("take_suffix", TAKE_SUFFIX),
    )


_MAX_COUNT = 1 << 53  # any count or size beyond this is not from a real conversion
_DTYPES = {
    "bool",
    "string",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
}


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        raise ValueError(f"{value!r} is not a count")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _dtype(value: Any) -> str:
    if value not in _DTYPES:
        raise ValueError(f"unknown dtype {value!r}")
    return value


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {allowed}")
    return value


def _storage(feature: dict[str, Any], directory: str) -> str:
    storage = feature.get("storage", "copy")
    if storage not in ("copy", "reference"):
        raise ManifestError(f"manifest in {directory}: feature storage {storage!r} is unknown")
    if storage == "reference" and (feature["encoding"] != "raw" or feature["ragged"]):
        raise ManifestError(
            f"manifest in {directory}: feature {feature['name']!r} cannot be referenced"
        )
    return storage


def _join(directory: str, file: str) -> str:
    return posixpath.join(directory, file) if "://" in directory else f"{directory}/{file}"
