"""One output feature as the converter stores it (:class:`FeatureSchema`), and how a
source dataset, compound field, variable-length array or sparse matrix becomes one.

The selection stage (:mod:`schema`) calls :func:`row_schema` for each row feature, after
:func:`expand_fields` turned compound datasets named whole into one feature per field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import SchemaError, UnsupportedDtype
from ..format.dtypes import StoredType, stored_type
from ..index.references import Storage
from .columns import FieldColumn, leaf_fields
from .group_columns import SparseMatrix
from .stage_options import FeatureSpec, check_feature_name

Shape = tuple[int | None, ...]
_FIELD_CHARS = re.compile(r"[^A-Za-z0-9_]")  # replaced by "_" in default field names
_STRING_BYTES_GUESS = 32  # size estimate of one variable-length string, for shard sizing


@dataclass(frozen=True)
class FeatureSchema:
    """One output feature as stored: name, origin, dtype, per-example shape."""

    name: str
    source: str  # dataset path (absolute in row mode, relative to the group in group mode)
    source_dtype: str
    stored: StoredType
    shape: Shape  # None marks a dimension that varies between examples
    ragged: bool  # records carry each example's shape under "<name>/shape"
    mean_elements: float | None = None  # mean values per example, for ragged features
    mean_item_bytes: float | None = None  # mean bytes per string, sampled from the source
    enum: tuple[tuple[str, int], ...] | None = None  # HDF5 enum labels, stored as integers
    storage: Storage = "copy"  # "reference": records hold references to the source bytes
    sparse: bool = False  # a CSR matrix's rows: values, "<name>/indices", dense shape
    table_bytes: int = 0  # a compound field: bytes of its table's whole row, read with it

    def example_bytes(self) -> int:
        """Estimated stored bytes of one example, for record and shard sizing.

        A ragged feature uses the mean element count seen while scanning, when known.
        """
        if self.mean_elements is not None:
            count = max(1, round(self.mean_elements))
        else:
            count = int(np.prod([d or 1 for d in self.shape], dtype=np.int64))
        if self.sparse:  # each value with its int64 column index
            return count * (self.stored.memory.itemsize + 8)
        if self.stored.encoding == "bytes":
            item = self.stored.memory.itemsize if self.stored.memory.kind == "S" else 0
            return count * max(1, round(self.mean_item_bytes or item or _STRING_BYTES_GUESS))
        return count * self.stored.memory.itemsize


def row_schema(spec: FeatureSpec, ds: h5py.Dataset, where: str) -> FeatureSchema:
    """The stored form of a row feature; a 1-D dataset of variable-length arrays (h5py
    ``vlen_dtype``, PyTables ``VLArray``) becomes a ragged feature of shape ``(None,)``,
    a CSR matrix a sparse one of its dense row shape."""
    vlen = h5py.check_vlen_dtype(ds.dtype)
    if isinstance(ds, SparseMatrix):
        shape, ragged, mean, dtype = (ds.shape[1],), False, ds.mean_nonzeros, ds.dtype
    elif vlen is not None and h5py.check_string_dtype(ds.dtype) is None:
        if ds.ndim != 1:
            raise UnsupportedDtype(
                f"{where}: variable-length {vlen} arrays are supported in 1-D datasets only "
                f"(this one has shape {ds.shape})"
            )
        shape, ragged, mean, dtype = (None,), True, _sample_lengths(ds), vlen
    else:
        shape, ragged, mean, dtype = ds.shape[1:], False, None, ds.dtype
    stored = stored_type(dtype, where=where)
    return FeatureSchema(
        spec.name,
        spec.path,
        ds.dtype.str,
        stored,
        shape,
        ragged,
        mean,
        mean_item_bytes=_sample_string_bytes(ds) if stored.encoding == "bytes" else None,
        enum=enum_labels(ds.dtype) if mean is None else None,
        sparse=isinstance(ds, SparseMatrix),
        table_bytes=_table_bytes(ds),
    )


def _table_bytes(ds) -> int:
    if not isinstance(ds, FieldColumn):
        return 0
    return int(ds.dataset.dtype.itemsize * np.prod(ds.dataset.shape[1:], dtype=np.int64))


def read_row_bytes(features: tuple[FeatureSchema, ...]) -> int:
    """Bytes read per example: a compound table's whole row counts once for all the
    fields taken from it (h5py reads its records whole)."""
    tables = {f.source.split("[")[0]: f.table_bytes for f in features if f.table_bytes}
    rest = sum(f.example_bytes() for f in features if not f.table_bytes)
    return max(1, rest + sum(tables.values()))


def _sample_rows(n: int, samples: int = 256) -> np.ndarray:
    """Up to ``samples`` row numbers spread over ``n`` rows."""
    return np.unique(np.linspace(0, n - 1, min(samples, n)).astype(np.int64))


def _sample_lengths(ds: h5py.Dataset) -> float | None:
    """Mean length of a variable-length array dataset's rows, sampled."""
    if ds.shape[0] == 0:
        return None
    return float(np.mean([len(v) for v in ds[_sample_rows(ds.shape[0])]]))


def expand_fields(
    h5obj: h5py.Group, features: tuple[FeatureSpec, ...], *, where: str
) -> tuple[FeatureSpec, ...]:
    """Each compound dataset named without a field -> one feature per leaf field,
    ``NAME_field`` (``NAME_pos_x`` for nested ``pos/x``), read as ``path[field]``."""
    out = []
    for spec in features:
        try:
            obj = h5obj.get(spec.path)
        except (KeyError, OSError, ValueError):
            obj = None  # get_dataset names what is wrong with it
        if not isinstance(obj, h5py.Dataset) or obj.dtype.names is None:
            out.append(spec)
            continue
        for field in leaf_fields(obj.dtype):
            name = f"{spec.name}_{_FIELD_CHARS.sub('_', field)}"
            check_feature_name(name, option=f"field {field!r} of {spec.path} in {where}")
            out.append(FeatureSpec(name, f"{spec.path}[{field}]"))
    names = [f.name for f in out]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise SchemaError(
            f"feature {clash!r} is named twice in {where} (a compound field's default name "
            "clashes with another feature); name the fields with --feature NAME=/path[field]"
        )
    return tuple(out)


def enum_labels(dtype: np.dtype) -> tuple[tuple[str, int], ...] | None:
    """The enum's labels and values, sorted by value; None for other dtypes."""
    mapping = h5py.check_enum_dtype(dtype)
    if mapping is None:
        return None
    return tuple(sorted(((str(k), int(v)) for k, v in mapping.items()), key=lambda kv: kv[1]))


def _sample_string_bytes(ds: h5py.Dataset, samples: int = 256) -> float | None:
    """Mean bytes per string over up to ``samples`` rows spread over the dataset."""
    if ds.shape[0] == 0:
        return None
    values = np.asarray(ds[_sample_rows(ds.shape[0], samples)]).ravel()
    if values.size == 0:
        return None
    return float(np.mean([len(v) for v in values.tolist()]))


def check_consistent(first: FeatureSchema, other: FeatureSchema, where: str) -> None:
    if first.enum != other.enum:
        raise SchemaError(
            f"{where} is an enum with labels {dict(other.enum or ())}, but earlier sources "
            f"have {dict(first.enum or ())}"
        )
    if first.stored.dtype != other.stored.dtype:
        raise SchemaError(
            f"{where} has dtype {other.stored.dtype}, but earlier sources have {first.stored.dtype}"
        )
    if first.shape != other.shape:
        raise SchemaError(
            f"{where} has rows of shape {other.shape}, but earlier sources have {first.shape}"
        )
