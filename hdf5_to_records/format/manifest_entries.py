"""The manifest's record layout, features and sources: typed, parsed and checked once.

Each ``parse`` raises :class:`manifest_fields.Malformed` for a value of the wrong type
and :class:`ManifestError` for one that is inconsistent; :class:`manifest.Manifest`
names the manifest in either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ManifestError
from . import manifest_fields as check
from .record_keys import CHECKSUMS, COUNT_KEY, FILE_KEY, REF_SUFFIX, SHAPE_SUFFIX, TAKE_SUFFIX
from .reference import Reference

BYTE_ORDER = "little"  # of every raw feature's bytes in a record
ENCODINGS = ("raw", "bytes")  # raw: fixed-size little-endian values; bytes: strings
STORAGES = ("copy", "reference")  # reference: read from the HDF5 source (index mode)


@dataclass(frozen=True)
class RecordLayout:
    """How examples are packed into records, and the record keys besides the features'."""

    rows_per_record: int
    count_key: str = COUNT_KEY
    shape_suffix: str = SHAPE_SUFFIX
    references: bool = False  # index mode: the records hold the keys below
    file_key: str = FILE_KEY
    ref_suffix: str = REF_SUFFIX
    take_suffix: str = TAKE_SUFFIX
    checksums: str = "none"  # index mode: "crc32c" when byte ranges carry their CRC32C

    @property
    def ref_width(self) -> int:
        """Values per byte range in a ``/ref`` list: offset, size, mask[, CRC32C]."""
        return 4 if self.checksums == "crc32c" else 3

    def to_json(self) -> dict[str, Any]:
        out = {
            "rows_per_record": self.rows_per_record,
            "count_key": self.count_key,
            "shape_suffix": self.shape_suffix,
            "byte_order": BYTE_ORDER,
        }
        if self.references:
            out.update(file_key=self.file_key, ref_suffix=self.ref_suffix)
            out["take_suffix"] = self.take_suffix
            out["checksums"] = self.checksums
        return out

    @classmethod
    def parse(cls, data: Any, where: str, *, checksums_listed: bool = False) -> RecordLayout:
        """``checksums_listed``: an index-mode layout must say ``checksums`` (format 3 on;
        format 2 had none)."""
        data = check.obj(data, where)
        references = "file_key" in data
        if references and checksums_listed:
            check.field(data, "checksums", where)
        if data.get("byte_order") != BYTE_ORDER:
            raise ManifestError(f"unknown byte order {data!r}")
        keys = {
            key: check.text(data.get(key, default), f"{where}.{key}")
            for key, default in (
                ("file_key", FILE_KEY),
                ("ref_suffix", REF_SUFFIX),
                ("take_suffix", TAKE_SUFFIX),
            )
        }
        return cls(
            check.count(check.field(data, "rows_per_record", where), f"{where}.rows_per_record"),
            check.text(check.field(data, "count_key", where), f"{where}.count_key"),
            check.text(check.field(data, "shape_suffix", where), f"{where}.shape_suffix"),
            references,
            **keys,
            checksums=check.choice(data.get("checksums", "none"), CHECKSUMS, f"{where}.checksums"),
        )


@dataclass(frozen=True)
class FeatureEntry:
    """One stored feature: dtype name, per-example shape (None = varies), encoding,
    where it came from, and whether records copy it or reference the source."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    encoding: str
    ragged: bool
    source: str = ""  # the HDF5 dataset path
    source_dtype: str = ""  # NumPy's name, with byte order
    storage: str = "copy"
    enum: dict[str, int] | None = None
    sparse: bool = False  # a CSR matrix's rows: ``shape`` is the dense row shape

    @property
    def variable(self) -> bool:
        return None in self.shape

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "encoding": self.encoding,
            "ragged": self.ragged,
            "source": self.source,
            "source_dtype": self.source_dtype,
            "storage": self.storage,
        }
        if self.sparse:
            out["sparse"] = True
        return out if self.enum is None else {**out, "enum": dict(self.enum)}

    @classmethod
    def parse(cls, data: Any, where: str) -> FeatureEntry:
        data = check.obj(data, where)
        name = check.text(check.field(data, "name", where), f"{where}.name")
        storage = data.get("storage", "copy")
        if storage not in STORAGES:
            raise ManifestError(f"feature storage {storage!r} is unknown")
        feature = cls(
            name,
            check.choice(check.field(data, "dtype", where), check.DTYPE_NAMES, f"{where}.dtype"),
            check.shape(check.field(data, "shape", where), f"{where}.shape"),
            check.choice(check.field(data, "encoding", where), ENCODINGS, f"{where}.encoding"),
            check.flag(check.field(data, "ragged", where), f"{where}.ragged"),
            check.text(data.get("source", ""), f"{where}.source"),
            check.text(data.get("source_dtype", ""), f"{where}.source_dtype"),
            storage,
            _enum(data.get("enum"), f"{where}.enum"),
            check.flag(data.get("sparse", False), f"{where}.sparse"),
        )
        if storage == "reference" and (
            feature.encoding != "raw" or feature.ragged or feature.sparse
        ):
            raise ManifestError(f"feature {name!r} cannot be referenced")
        if feature.sparse and (
            len(feature.shape) != 1 or feature.variable or feature.encoding != "raw"
        ):
            raise ManifestError(f"sparse feature {name!r} needs a numeric shape [columns]")
        return feature


def _enum(value: Any, where: str) -> dict[str, int] | None:
    if value is None:
        return None
    members = check.obj(value, where)
    for label, code in members.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise check.Malformed(f"{where}.{label} is {code!r}, not an integer")
    return dict(members)


@dataclass(frozen=True)
class SourceEntry:
    """One source file as the conversion saw it; in index mode with where each
    referenced feature's rows are (``references``) and a content fingerprint.

    A reference is parsed when a reader asks for its feature (:meth:`reference`), so
    that a bad entry stops only the features it describes, and ``verify`` names it as a
    source problem while it goes on checking the shards."""

    path: str  # index mode: relative to the dataset directory, or absolute
    size: int
    mtime: float
    num_items: int  # rows, or groups with --groups
    selection: dict[str, Any] = field(default_factory=dict)  # rows, groups, num_selected
    fingerprint: str | None = None
    references: dict[str, Any] = field(default_factory=dict)  # feature -> its JSON
    indexed: bool = False  # index mode: fingerprint and references are recorded

    @property
    def num_selected(self) -> int | None:
        value = self.selection.get("num_selected")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def to_json(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "num_items": self.num_items,
            "selection": self.selection,
        }
        if self.indexed:
            out["fingerprint"] = self.fingerprint
            out["references"] = self.references
        return out

    @classmethod
    def parse(cls, data: Any, where: str) -> SourceEntry:
        data = check.obj(data, where)
        return cls(
            check.text(check.field(data, "path", where), f"{where}.path"),
            check.count(check.field(data, "size", where), f"{where}.size"),
            check.timestamp(check.field(data, "mtime", where), f"{where}.mtime"),
            check.count(check.field(data, "num_items", where), f"{where}.num_items"),
            check.obj(data.get("selection", {}), f"{where}.selection"),
            check.optional_text(data.get("fingerprint"), f"{where}.fingerprint"),
            check.obj(data.get("references", {}), f"{where}.references"),
            "references" in data,
        )

    def reference(self, feature: str) -> Reference:
        """Where ``feature``'s rows are in this source.

        Raises:
            ManifestError: none is listed, or a malformed one (message without the
                directory).
        """
        try:
            return Reference.from_json(self.references[feature])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            # from_json converts with int() and np.dtype(): what fails is the entry.
            raise ManifestError(f"malformed source entry ({exc!r})") from None
