"""Fields of compound datasets, as columns the other stages read like datasets.

PyTables ``Table``s, pandas ``format="table"`` frames and older AnnData ``obs``/``obsm``
are compound datasets: one record per row, one field per column. A feature selects one
field with ``/path/to/table[field]`` (a nested field by its path: ``[pos/x]``).
:class:`FieldColumn` wraps the dataset so that schema, reading and ``inspect`` treat the
field like a dataset of its own: a sub-array field of shape ``(3,)`` adds that axis to
the rows. Reads of several fields of one table share one read of its records (a
compressed chunk is decompressed once per window, not once per field).
"""

from __future__ import annotations

import contextlib
import re
import threading

import h5py
import numpy as np

from ..errors import SchemaError

_FIELD_RE = re.compile(r"^(?P<path>[^\[\]]+)\[(?P<field>[^\[\]]+)\]$")
_shared = threading.local()  # this thread's records read in the current shared_reads()


def split_field(path: str) -> tuple[str, str | None]:
    """``"/t[a/b]"`` -> ``("/t", "a/b")``; a path without a field -> ``(path, None)``."""
    match = _FIELD_RE.match(path.strip())
    if match is None:
        return path, None
    return match["path"].strip(), match["field"].strip().strip("/")


def leaf_fields(dtype: np.dtype, prefix: str = "") -> list[str]:
    """The paths of a compound dtype's leaf fields, in order (``a``, ``pos/x``, ...)."""
    out = []
    for name in dtype.names or ():
        sub = dtype.fields[name][0]
        path = f"{prefix}{name}"
        out += leaf_fields(sub, path + "/") if sub.names else [path]
    return out


def field_parts(dtype: np.dtype, field: str) -> list[str] | None:
    """The member names along field path ``field`` (``"pos/x"`` -> ``["pos", "x"]``); a
    name that itself holds ``/`` matches whole first. None if there is no such field."""
    if dtype.names is None:
        return None
    if field in dtype.names:
        return [field]
    for name in dtype.names:
        if field.startswith(name + "/"):
            rest = field_parts(dtype.fields[name][0], field[len(name) + 1 :])
            if rest is not None:
                return [name, *rest]
    return None


def field_of(dtype: np.dtype, field: str, *, where: str) -> tuple[np.dtype, int, list[str]]:
    """The dtype of field path ``field`` of compound ``dtype``, its byte offset, and the
    member names along the path.

    Raises:
        SchemaError: the dataset is not compound, or has no such field (naming those it has).
    """
    if dtype.names is None:
        raise SchemaError(f"{where}: [{field}] selects a field, but the dataset is not compound")
    parts = field_parts(dtype, field)
    if parts is None:
        raise SchemaError(f"{where}: no field {field!r}; it has {', '.join(leaf_fields(dtype))}")
    offset, current = 0, dtype
    for part in parts:
        current, at = current.fields[part][:2]
        offset += at
    if current.names is not None:
        raise SchemaError(
            f"{where}: field {field!r} is itself compound; select one of "
            f"{', '.join(field + '/' + f for f in leaf_fields(current))}"
        )
    return current, offset, parts


class FieldColumn:
    """One field of a compound dataset, read like a dataset of that field's values.

    ``dtype`` is the field's scalar dtype (a sub-array field's base), ``shape`` the
    dataset's shape followed by the sub-array's; every other attribute is the dataset's.
    """

    def __init__(self, dataset: h5py.Dataset, field: str, *, where: str = ""):
        """``where`` names the selection and file for errors (dataset ... in file)."""
        self.dataset = dataset
        self.field = field
        where = where or f"dataset {dataset.name}"
        field_dtype, self.offset, self.parts = field_of(dataset.dtype, field, where=where)
        self.field_dtype = field_dtype  # with its sub-array shape, if any
        self.dtype = np.dtype(bool) if _pytables_bool(dataset, self.parts) else field_dtype.base
        self.subshape = tuple(field_dtype.shape)
        self.shape = tuple(dataset.shape) + self.subshape
        self.ndim = len(self.shape)
        self.name = f"{dataset.name}[{field}]"

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)

    def __getitem__(self, key) -> np.ndarray:
        values = _records(self.dataset, key)
        for part in self.parts:
            values = values[part]
        return np.asarray(values)

    def read_direct(self, dest: np.ndarray, source_sel=None) -> None:
        dest[...] = self[source_sel if source_sel is not None else ()]


def _pytables_bool(dataset: h5py.Dataset, parts: list[str]) -> bool:
    """A PyTables ``BoolCol``: stored as an 8-bit bitfield, which h5py reads as uint8.
    Only PyTables' own tables are trusted to hold nothing but 0 and 1 in it."""
    if dataset.attrs.get("CLASS") not in (b"TABLE", "TABLE"):
        return False
    member = dataset.id.get_type()
    for part in parts:
        member = member.get_member_type(member.get_member_index(part.encode()))
    if member.get_class() == h5py.h5t.ARRAY:  # pandas' value blocks: arrays of columns
        member = member.get_super()
    return member.get_class() == h5py.h5t.BITFIELD and member.get_size() == 1


@contextlib.contextmanager
def shared_reads():
    """Within this block, fields of one table read with the same selection share one read
    of its records (the caller's sources do not change inside it)."""
    _shared.reads = {}
    try:
        yield
    finally:
        _shared.reads = None


def _records(dataset: h5py.Dataset, key) -> np.ndarray:
    """``dataset[key]``, shared with the other fields inside :func:`shared_reads`."""
    reads = getattr(_shared, "reads", None)
    if reads is None:
        return dataset[key]
    ident = (dataset.file.filename, dataset.name, _selection_id(key))
    if ident not in reads:
        reads[ident] = dataset[key]
    return reads[ident]


def _selection_id(key):
    """A selection as a dict key: index arrays by their bytes (``repr`` elides long ones,
    and two different selections must never share a read)."""
    if isinstance(key, np.ndarray):
        return ("array", key.dtype.str, key.shape, key.tobytes())
    if isinstance(key, (tuple, list)):
        return (type(key).__name__, *(_selection_id(k) for k in key))
    return repr(key)
