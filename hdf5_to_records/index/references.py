"""Index-only mode: references to the bytes of HDF5 datasets instead of copies.

A dataset can be referenced when its rows are whole, self-contained byte runs in the
file: contiguous without filters (one byte range; row ``r`` at ``offset + r *
row_bytes``), or chunked with chunks spanning whole rows (chunk shape equal to the
dataset's shape beyond axis 0) and filters limited to gzip (deflate), shuffle and
fletcher32 (each chunk a byte range, decoded on its own). :func:`probe` says whether
and how; :class:`ChunkTable` finds chunk byte ranges; :func:`encode_refs` turns a
record's rows into the reference lists stored in the record.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Literal

import h5py
import numpy as np

from ..errors import Hdf5ToRecordsError, SchemaError
from ..format.dtypes import stored_type
from ..format.reference import Reference
from ..planning.columns import FieldColumn
from ..planning.group_columns import SparseMatrix
from ..planning.limits import GAP_BYTES
from ..planning.sources import filter_names

_DECODABLE_IDS = {1: "gzip", 2: "shuffle", 3: "fletcher32"}  # HDF5 filter ids

Storage = Literal["copy", "reference"]


def probe(ds: h5py.Dataset | FieldColumn, source: str) -> Reference | str:
    """How ``ds`` (opened from file ``source``) can be referenced, or a short reason why
    it cannot. A :class:`FieldColumn` is referenced through its table's records: the
    reader reads whole records and takes the field from them.

    Reads metadata only: the layout, filters and the number of allocated chunks.
    """
    if isinstance(ds, SparseMatrix):
        return "the rows of a sparse matrix vary in length (they are stored by value)"
    if h5py.check_vlen_dtype(ds.dtype) not in (None, str, bytes):
        return "variable-length values live in the HDF5 heap, not in the rows"
    try:
        stored = stored_type(ds.dtype, where=ds.name)
    except Hdf5ToRecordsError as exc:
        return str(exc)
    if stored.encoding != "raw":
        return "strings are stored by value"
    if not isinstance(ds, FieldColumn):
        return _probe_layout(ds, source, ds.dtype.str, tuple(int(d) for d in ds.shape[1:]))
    ref = _probe_layout(ds.dataset, source, ds.dtype.str, tuple(int(d) for d in ds.shape[1:]))
    if isinstance(ref, str):
        return ref
    file_type = ds.dataset.id.get_type()
    if not _fixed_size(file_type):
        return "its records hold variable-length members (stored elsewhere in the file)"
    if (
        file_type.get_size() != ds.dataset.dtype.itemsize
        or _file_offset(file_type, ds.parts) != ds.offset
    ):
        return "its records are laid out differently in the file than in memory"
    return dataclasses.replace(
        ref,
        element_bytes=int(ds.dataset.dtype.itemsize),
        field_offset=int(ds.offset),
        field_shape=tuple(int(d) for d in ds.subshape),
    )


def _fixed_size(tid) -> bool:
    """Whether an HDF5 type's values live in the record itself (no heap references)."""
    kind = tid.get_class()
    if kind in (h5py.h5t.VLEN, h5py.h5t.REFERENCE):
        return False
    if kind == h5py.h5t.STRING:
        return not tid.is_variable_str()
    if kind == h5py.h5t.COMPOUND:
        return all(_fixed_size(tid.get_member_type(i)) for i in range(tid.get_nmembers()))
    if kind == h5py.h5t.ARRAY:
        return _fixed_size(tid.get_super())
    return True


def _file_offset(tid, parts: list[str]) -> int:
    """The byte offset of a field in the file's record type (its members' offsets)."""
    offset = 0
    for part in parts:
        index = tid.get_member_index(part.encode())
        offset += tid.get_member_offset(index)
        tid = tid.get_member_type(index)
    return offset


def _probe_layout(
    ds: h5py.Dataset, source: str, dtype: str, shape: tuple[int, ...]
) -> Reference | str:
    """The reference to the rows of ``ds`` stored as ``dtype`` rows of ``shape``."""
    if not _same_file(ds.file.filename, source):
        return f"external link into {os.path.basename(ds.file.filename)}"
    if ds.ndim == 0:
        return "scalar dataset"
    if ds.is_virtual:
        return "virtual dataset"
    plist = ds.id.get_create_plist()
    if plist.get_external_count():
        return "external raw storage"
    kind = plist.get_layout()
    if kind == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:
            return "never written (no storage allocated)" if ds.shape[0] else "empty"
        return Reference(ds.name, "contiguous", dtype, shape, int(ds.shape[0]), int(offset))
    if kind != h5py.h5d.CHUNKED:
        return "compact layout (stored in the object header)"
    if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return f"chunks {ds.chunks} split rows of shape {tuple(ds.shape[1:])}"
    # By filter id: a plugin's self-chosen name cannot pass for a decodable filter.
    ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    names = filter_names(ds)
    other = [name for code, name in zip(ids, names) if code not in _DECODABLE_IDS]
    if other:
        return f"filter {other[0]!r} is not gzip, shuffle or fletcher32"
    filters = tuple(_DECODABLE_IDS[code] for code in ids)
    expected = -(-int(ds.shape[0]) // ds.chunks[0])
    if ds.id.get_num_chunks() != expected:
        return "some chunks were never written (they read as fill values)"
    return Reference(
        ds.name,
        "chunked",
        dtype,
        shape,
        int(ds.shape[0]),
        chunk_rows=int(ds.chunks[0]),
        filters=filters,
    )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


class ChunkTable:
    """Byte ranges of a chunked dataset's chunks, by chunk number along axis 0."""

    def __init__(self, ds: h5py.Dataset, chunk_rows: int):
        count = -(-int(ds.shape[0]) // chunk_rows)
        self.table = np.full((count, 3), -1, np.int64)  # offset, size, filter mask

        def visit(info) -> None:
            self.table[info.chunk_offset[0] // chunk_rows] = (
                info.byte_offset,
                info.size,
                info.filter_mask,
            )

        if hasattr(ds.id, "chunk_iter"):
            ds.id.chunk_iter(visit)
        else:  # HDF5 < 1.12.3: one call per chunk
            for index in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(index))
        if (self.table[:, 0] < 0).any():
            missing = int(np.flatnonzero(self.table[:, 0] < 0)[0])
            raise SchemaError(
                f"dataset {ds.name}: chunk at row {missing * chunk_rows} was never written"
            )


def encode_refs(
    ref: Reference,
    rows: np.ndarray,
    chunks: ChunkTable | None,
    gap_bytes: int = GAP_BYTES,
    add_checksums: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[int], list[int]]:
    """The reference lists of one record: ``(ref, take)``.

    ``ref`` holds ``(offset, size, filter mask)`` per byte range to read, and its CRC32C
    as a fourth value when ``add_checksums`` (``(k, 3)`` ranges -> ``(k, 4)``) is given;
    ``take[i]`` is the row of example ``i`` within the ranges decoded and concatenated
    in order. Contiguous rows are grouped into ranges, read through gaps under
    ``gap_bytes``; chunked rows name each chunk they touch once.
    """
    add_checksums = add_checksums or (lambda pieces: pieces)
    unique, inverse = np.unique(rows, return_inverse=True)
    if ref.layout == "chunked":
        ids, where = np.unique(unique // ref.chunk_rows, return_inverse=True)
        pieces = add_checksums(chunks.table[ids])
        take = where * ref.chunk_rows + unique % ref.chunk_rows
        return pieces.ravel().tolist(), _take_list(take[inverse.ravel()])
    firsts, lengths, group = _ranges(ref, unique, gap_bytes)
    base = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    take = base[group] + unique - firsts[group]
    pieces = np.stack(
        [ref.offset + firsts * ref.row_bytes, lengths * ref.row_bytes, np.zeros_like(firsts)],
        axis=1,
    )
    pieces = add_checksums(pieces)
    return pieces.ravel().tolist(), _take_list(take[inverse.ravel()])


def read_bytes(ref: Reference, rows: np.ndarray, gap_bytes: int = GAP_BYTES) -> int:
    """Decoded bytes the reader reads for ``rows`` (all read-through gaps included)."""
    unique = np.unique(rows)
    if ref.layout == "chunked":
        return np.unique(unique // ref.chunk_rows).size * ref.chunk_rows * ref.row_bytes
    return int(_ranges(ref, unique, gap_bytes)[1].sum()) * ref.row_bytes


def _ranges(
    ref: Reference, unique: np.ndarray, gap_bytes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous ranges covering sorted rows ``unique``: first rows, lengths, and the
    range of each row. A gap under ``gap_bytes`` is read through rather than split."""
    gap_rows = max(1, gap_bytes // max(1, ref.row_bytes))
    breaks = np.flatnonzero(np.diff(unique) > gap_rows) + 1
    firsts = unique[np.concatenate([[0], breaks])]
    lasts = unique[np.concatenate([breaks - 1, [unique.size - 1]])]
    group = np.repeat(np.arange(firsts.size), np.diff(np.concatenate([[0], breaks, [unique.size]])))
    return firsts, lasts - firsts + 1, group


def _take_list(take: np.ndarray) -> list[int]:
    """``take``, or ``[]`` when it is ``0, 1, ..., n-1`` (rows read in order, the common
    case), so that records of small rows stay small."""
    if take.size and take[0] == 0 and (take.size == 1 or (np.diff(take) == 1).all()):
        return []
    return take.tolist()
