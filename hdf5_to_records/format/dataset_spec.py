"""What the reader needs from a manifest: its parsed :class:`Manifest`, with shard paths
joined to the dataset directory."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..errors import UnknownName
from .manifest import Manifest, load_manifest, manifest_dir
from .manifest_entries import FeatureEntry, SourceEntry
from .naming import index_name
from .record_keys import FILE_KEY, REF_SUFFIX, TAKE_SUFFIX

FeatureInfo = FeatureEntry  # the name the reader has always used


@dataclass(frozen=True)
class ShardInfo:
    path: str
    num_examples: int
    num_bytes: int
    sha256: str | None  # older manifests: the whole file's
    num_records: int = 0
    index_sha256: str | None = None  # the record index PATH.idx, if the shard has one
    record_examples: tuple[tuple[int, int], ...] = ()  # examples per record, as runs
    framing_sha256: str | None = None  # format 5: see shard_digest.py

    @property
    def index_path(self) -> str:
        return index_name(self.path)


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
    sources: tuple[SourceEntry, ...] = ()  # index mode reads them
    source_roots: tuple[str, ...] = ()
    file_key: str = FILE_KEY
    ref_suffix: str = REF_SUFFIX
    take_suffix: str = TAKE_SUFFIX
    checksums: bool = False  # index mode: every byte range carries its CRC32C

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
    return spec_of(load_manifest(path), manifest_dir(path).rstrip("/") or "/")


def spec_of(manifest: Manifest, directory: str) -> DatasetSpec:
    """The reader's view of a parsed manifest of ``directory``."""
    records = manifest.records
    return DatasetSpec(
        directory,
        manifest.name,
        manifest.compression,
        max(1, records.rows_per_record),
        records.count_key,
        records.shape_suffix,
        manifest.features,
        {
            name: tuple(
                ShardInfo(
                    _join(directory, s.file),
                    s.num_examples,
                    s.num_bytes,
                    s.sha256,
                    s.num_records,
                    s.index_sha256,
                    s.record_examples,
                    s.framing_sha256,
                )  # fmt: skip
                for s in split.shards
            )
            for name, split in manifest.splits.items()
        },
        manifest.sources,
        manifest.source_roots,
        records.file_key,
        records.ref_suffix,
        records.take_suffix,
        records.checksums == "crc32c",
    )


def _join(directory: str, file: str) -> str:
    return posixpath.join(directory, file) if "://" in directory else f"{directory}/{file}"
