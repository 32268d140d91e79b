"""The manifest: ``DIR/manifest.json``, written last, the contract readers rely on.

Writing it is the commit point of a conversion: a directory without a manifest is
incomplete, whatever shards it holds. :class:`Manifest` parses and checks the JSON once
(:func:`load_manifest`) and writes it back (:meth:`Manifest.to_json`); the converter,
the reader, ``verify``, ``info``, task arrays and Beam all go through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .. import fs
from ..errors import ManifestError
from . import manifest_fields as check
from .manifest_entries import FeatureEntry, RecordLayout, SourceEntry
from .manifest_fields import Malformed

FORMAT = "hdf5-to-records"
FORMAT_VERSION = 1
# Version 2 added referenced features (index mode); 3 the CRC32C of every referenced
# byte range (records.checksums). Copy-only datasets stay version 1; 2 is still read.
INDEX_FORMAT_VERSION = 3
# Version 4 added references into fields of compound datasets (a reference's
# element_bytes) and sparse (CSR) features; only datasets that hold them are version 4.
CONVENTIONS_FORMAT_VERSION = 4
# Version 5: shards carry framing_sha256 (shard_digest.py) instead of a whole-file
# sha256. Every dataset written since is version 5; 1-4 are still read.
FRAMING_FORMAT_VERSION = 5
READABLE_VERSIONS = (
    FORMAT_VERSION, 2, INDEX_FORMAT_VERSION, CONVENTIONS_FORMAT_VERSION, FRAMING_FORMAT_VERSION,
)  # fmt: skip
MANIFEST_NAME = "manifest.json"
SOURCE_ROOTS_KEY = "source_roots"  # index mode: directories the sources may lie under
_TOTALS = ("num_examples", "num_records", "num_bytes")


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its file name (in the dataset's directory), counts and digest, the
    shapes its ragged features took, and the plan fingerprint ``--resume`` compares.

    The digest is ``framing_sha256`` (format 5, see ``shard_digest.py``) or, in older
    manifests, ``sha256``: the sha256 of the whole file.
    """

    file: str
    num_examples: int
    num_records: int
    num_bytes: int
    sha256: str | None
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    fingerprint: str | None = None
    # The record index ``FILE.idx`` (format/record_index.py): its sha256, and the
    # examples of each record as [[count, times], ...]. None: no index (gzip, or older).
    index_sha256: str | None = None
    record_examples: tuple[tuple[int, int], ...] = ()
    framing_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "file": self.file,
            "num_examples": self.num_examples,
            "num_records": self.num_records,
            "num_bytes": self.num_bytes,
            **({"sha256": self.sha256} if self.sha256 is not None else {}),
            **({"framing_sha256": self.framing_sha256} if self.framing_sha256 else {}),
            "shapes": self.shapes,
        }
        if self.index_sha256 is not None:
            out["index_sha256"] = self.index_sha256
            out["record_examples"] = [list(run) for run in self.record_examples]
        return out if self.fingerprint is None else {**out, "fingerprint": self.fingerprint}

    @classmethod
    def parse(cls, data: Any, where: str) -> ShardEntry:
        data = check.obj(data, where)
        file = check.text(check.field(data, "file", where), f"{where}.file")
        if "/" in file or file.startswith("."):
            raise ManifestError(f"bad shard name {file!r}")
        shapes = check.obj(data.get("shapes", {}), f"{where}.shapes")
        index_sha256 = check.optional_text(data.get("index_sha256"), f"{where}.index_sha256")
        runs = _record_runs(data.get("record_examples", []), f"{where}.record_examples")
        num_examples = check.count(
            check.field(data, "num_examples", where), f"{where}.num_examples"
        )
        num_records = check.count(data.get("num_records", 0), f"{where}.num_records")
        sha256 = check.optional_text(data.get("sha256"), f"{where}.sha256")
        framing = check.optional_text(data.get("framing_sha256"), f"{where}.framing_sha256")
        if sha256 is None and framing is None:
            raise Malformed(f"{where}: no framing_sha256 (or sha256) for the shard")
        if index_sha256 is not None and (
            sum(c * t for c, t in runs) != num_examples or sum(t for _, t in runs) != num_records
        ):
            raise Malformed(
                f"{where}.record_examples: its runs do not add up to {num_examples} examples "
                f"in {num_records} records"
            )
        return cls(
            file,
            num_examples,
            num_records,
            check.count(check.field(data, "num_bytes", where), f"{where}.num_bytes"),
            sha256,
            {k: list(check.shape(v, f"{where}.shapes")) for k, v in shapes.items()},
            check.optional_text(data.get("fingerprint"), f"{where}.fingerprint"),
            index_sha256,
            runs if index_sha256 is not None else (),
            framing,
        )


def _record_runs(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    runs = []
    for i, run in enumerate(check.array(value, where)):
        run = check.array(run, f"{where}[{i}]")
        if len(run) != 2:
            raise Malformed(f"{where}[{i}]: expected [count, times], got {run!r}")
        runs.append((check.count(run[0], f"{where}[{i}]"), check.count(run[1], f"{where}[{i}]")))
    return tuple(runs)


@dataclass(frozen=True)
class SplitEntry:
    """One split's shards, in order, and the totals the manifest lists for them."""

    shards: tuple[ShardEntry, ...]
    num_examples: int
    num_records: int
    num_bytes: int

    @classmethod
    def of(cls, shards: list[ShardEntry]) -> SplitEntry:
        totals = (sum(getattr(s, key) for s in shards) for key in _TOTALS)
        return cls(tuple(shards), *totals)

    def inconsistencies(self, name: str) -> list[str]:
        """Each listed total that is not the sum over the shards (``verify`` reports them;
        the reader uses the shards' own counts)."""
        out = []
        for key in _TOTALS:
            total = sum(getattr(s, key) for s in self.shards)
            if getattr(self, key) != total:
                out.append(
                    f"split {name!r}: {key} is {getattr(self, key)} but its shards add up "
                    f"to {total}"
                )
        return out

    def to_json(self) -> dict[str, Any]:
        totals = {key: getattr(self, key) for key in _TOTALS}
        return {**totals, "shards": [s.to_json() for s in self.shards]}

    @classmethod
    def parse(cls, data: Any, where: str) -> SplitEntry:
        data = check.obj(data, where)
        shards = check.array(check.field(data, "shards", where), f"{where}.shards")
        return cls(
            tuple(ShardEntry.parse(s, f"{where}.shards[{i}]") for i, s in enumerate(shards)),
            *(check.count(check.field(data, key, where), f"{where}.{key}") for key in _TOTALS),
        )


@dataclass(frozen=True)
class Manifest:
    """A converted dataset as its manifest describes it."""

    name: str
    mode: str
    compression: str
    records: RecordLayout
    features: tuple[FeatureEntry, ...]
    splits: dict[str, SplitEntry]
    sources: tuple[SourceEntry, ...] = ()
    source_roots: tuple[str, ...] = ()  # index mode, relative to the dataset directory
    config: dict[str, Any] = field(default_factory=dict)  # the options that made it
    tool_version: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def referenced(self) -> tuple[FeatureEntry, ...]:
        return tuple(f for f in self.features if f.storage == "reference")

    def to_json(self) -> dict[str, Any]:
        roots = {SOURCE_ROOTS_KEY: list(self.source_roots)} if self.referenced else {}
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "tool_version": self.tool_version,
            "mode": self.mode,
            "compression": self.compression,
            "records": self.records.to_json(),
            "features": [f.to_json() for f in self.features],
            "splits": {name: split.to_json() for name, split in self.splits.items()},
            "sources": [s.to_json() for s in self.sources],
            **roots,
            "config": self.config,
        }

    @classmethod
    def parse(cls, data: dict[str, Any], directory: str) -> Manifest:
        """The manifest of ``directory`` from its JSON (format and version already checked).

        Raises:
            ManifestError: a field is missing, of the wrong type, or inconsistent.
        """
        try:
            return cls._parse(data, directory)
        except Malformed as exc:
            raise ManifestError(f"manifest in {directory} is malformed: {exc}") from None
        except ManifestError as exc:
            raise ManifestError(f"manifest in {directory}: {exc}") from None

    @classmethod
    def _parse(cls, data: dict[str, Any], directory: str) -> Manifest:
        features = check.array(check.field(data, "features", "manifest"), "features")
        features = tuple(FeatureEntry.parse(f, f"features[{i}]") for i, f in enumerate(features))
        if not features:
            raise Malformed("features is empty")
        splits = check.obj(check.field(data, "splits", "manifest"), "splits")
        sources = check.array(data.get("sources", []), "sources")
        roots = check.array(data.get(SOURCE_ROOTS_KEY, []), SOURCE_ROOTS_KEY)
        return cls(
            check.text(check.field(data, "name", "manifest"), "name"),
            check.text(check.field(data, "mode", "manifest"), "mode"),
            check.choice(
                check.field(data, "compression", "manifest"), ("none", "gzip"), "compression"
            ),
            RecordLayout.parse(
                check.field(data, "records", "manifest"),
                "records",
                checksums_listed=data["format_version"] >= INDEX_FORMAT_VERSION,
            ),
            features,
            {
                check.text(k, "splits"): SplitEntry.parse(v, f"splits.{k}")
                for k, v in splits.items()
            },
            tuple(SourceEntry.parse(s, f"sources[{i}]") for i, s in enumerate(sources)),
            tuple(check.text(r, SOURCE_ROOTS_KEY) for r in roots),
            check.obj(data.get("config", {}), "config"),
            check.optional_text(data.get("tool_version"), "tool_version"),
            data["format_version"],
        )


def write_manifest(output: str, manifest: Manifest) -> str:
    """Write the manifest atomically (temp file + rename); return its path."""
    data = json.dumps(manifest.to_json(), indent=2, sort_keys=False).encode() + b"\n"
    return fs.commit_file(output, MANIFEST_NAME, data)


def read_manifest(directory: str) -> dict[str, Any]:
    """Load a manifest's JSON and check its format and version.

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
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > max(READABLE_VERSIONS)
        raise ManifestError(
            f"{path} has format version {version}; this tool reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
            + ("; upgrade hdf5-to-records to read it" if newer else "")
        )
    return data


def load_manifest(path: str) -> Manifest:
    """The parsed, checked manifest of a dataset directory (or of a manifest file).

    Raises:
        ManifestError: missing, unreadable, of an unknown version, or malformed.
    """
    return Manifest.parse(read_manifest(path), manifest_dir(path).rstrip("/") or "/")


def manifest_dir(path: str) -> str:
    return os.path.dirname(path) if path.endswith(".json") else path
