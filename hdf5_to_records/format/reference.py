"""Where a referenced feature's rows live in a source file, as the manifest records it.

Index mode's manifest lists one :class:`Reference` per feature and source file; the
records then hold byte ranges into it (see :mod:`record_keys`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

DECODABLE_FILTERS = ("gzip", "shuffle", "fletcher32")  # what the reader decodes itself


@dataclass(frozen=True)
class Reference:
    """Where one feature's rows live in one source file, as the manifest records it.

    ``dtype`` is the source dtype with its byte order (``>f4``); ``filters`` is the
    HDF5 filter pipeline in write order (the reader undoes it in reverse).

    A field of a compound dataset (format 4) has ``element_bytes``: the size of one of
    the dataset's records, which the reader reads whole; the field's values start
    ``field_offset`` bytes into each record and have the trailing ``field_shape`` of
    ``row_shape`` (a sub-array field). Plain datasets have ``element_bytes == 0``.
    """

    dataset: str
    layout: Literal["contiguous", "chunked"]
    dtype: str
    row_shape: tuple[int, ...]
    num_rows: int
    offset: int = 0  # contiguous: first byte of row 0
    chunk_rows: int = 0  # chunked: rows per chunk
    filters: tuple[str, ...] = ()
    element_bytes: int = 0
    field_offset: int = 0
    field_shape: tuple[int, ...] = ()

    @property
    def row_bytes(self) -> int:
        """Bytes of one row as stored (a field's: its row's whole records)."""
        if not self.element_bytes:
            return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        outer = self.row_shape[: len(self.row_shape) - len(self.field_shape)]
        return int(np.prod(outer, dtype=np.int64)) * self.element_bytes

    @property
    def element_size(self) -> int:
        """Bytes of one stored element: what HDF5's shuffle filter interleaves."""
        return self.element_bytes or np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["row_shape"] = list(self.row_shape)
        out["filters"] = list(self.filters)
        out["field_shape"] = list(self.field_shape)
        if not self.element_bytes:  # plain datasets keep format 3's entry
            for key in ("element_bytes", "field_offset", "field_shape"):
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        """Raises: ValueError/KeyError/TypeError on a malformed entry."""
        ref = cls(
            str(data["dataset"]),
            data["layout"],
            str(np.dtype(data["dtype"]).str),
            tuple(int(d) for d in data["row_shape"]),
            int(data["num_rows"]),
            int(data.get("offset", 0)),
            int(data.get("chunk_rows", 0)),
            tuple(str(f) for f in data.get("filters", ())),
            int(data.get("element_bytes", 0)),
            int(data.get("field_offset", 0)),
            tuple(int(d) for d in data.get("field_shape", ())),
        )
        if ref.layout not in ("contiguous", "chunked"):
            raise ValueError(f"unknown layout {ref.layout!r}")
        if ref.num_rows < 0 or ref.offset < 0 or any(d < 0 for d in ref.row_shape):
            raise ValueError("negative size or offset")
        if ref.row_bytes == 0:
            raise ValueError("rows of zero bytes are never referenced")
        if ref.layout == "chunked" and ref.chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        unknown = set(ref.filters) - set(DECODABLE_FILTERS)
        if unknown or (ref.layout == "contiguous" and ref.filters):
            raise ValueError(f"filters {list(ref.filters)} cannot be decoded")
        if np.dtype(ref.dtype).kind not in "biufc":
            raise ValueError(f"dtype {ref.dtype} cannot be referenced")
        if ref.element_bytes:
            field_bytes = (
                int(np.prod(ref.field_shape, dtype=np.int64)) * np.dtype(ref.dtype).itemsize
            )
            shape_ok = ref.row_shape[len(ref.row_shape) - len(ref.field_shape) :] == ref.field_shape
            if (
                not shape_ok
                or ref.field_offset < 0
                or ref.field_offset + field_bytes > ref.element_bytes
            ):
                raise ValueError("the field does not lie inside its records")
        return ref
