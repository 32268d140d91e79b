"""Read the examples of one shard from HDF5, in windows of bounded size.

Runs of rows are read with one h5py call per feature and span, never row by row, and
spans are cut at chunk boundaries so that a compressed chunk is decompressed once per
shard when the shard reads its rows in source order. Each worker process opens its own
files (never inherit an h5py handle across a fork).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import Hdf5ToRecordsError, SourceUnreadable, first_line
from ..format.record_keys import INDICES_SUFFIX
from ..format.reference import Reference
from ..index.references import ChunkTable
from ..planning.columns import shared_reads
from ..planning.features import read_row_bytes
from ..planning.group_columns import SparseMatrix
from ..planning.limits import DEFAULT_LIMITS, WINDOW_BYTES, Limits
from ..planning.schema import FeatureSchema, SourceSet
from ..planning.sources import ensure_filters, get_dataset, open_h5
from .chunk_reads import direct_reference, read_chunk_rows

MAX_OPEN_H5_FILES = 64  # h5py files a worker keeps open at once

Column = np.ndarray | list  # (n, *shape) array, or a list of n per-example arrays (ragged)


@dataclass(frozen=True)
class Window:
    """A slice ``[start, stop)`` of a shard's examples and the values read for it."""

    start: int
    stop: int
    columns: dict[str, Column]


class ShardReader:
    """Reads the examples of shards from the plan's sources; one per worker process."""

    def __init__(
        self,
        sources: SourceSet,
        features: tuple[FeatureSchema, ...],
        limits: Limits = DEFAULT_LIMITS,
    ):
        self._sources = sources
        self._limits = limits
        self._features = features
        self._files: dict[int, h5py.File] = {}
        self._row_bytes = read_row_bytes(features)
        self._chunk_rows = np.array([f.chunk_rows for f in sources.files], np.int64)
        self._buffers: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        self._chunk_tables: dict[tuple[int, str], ChunkTable] = {}
        # Per (source path, feature): its gzip chunks' Reference, read past h5py, or None.
        self._direct: dict[tuple[str, str], Reference | None] = {}

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def _file(self, file_id: int) -> h5py.File:
        handle = self._files.pop(file_id, None)
        if handle is not None:
            self._files[file_id] = handle  # most recently used last
        else:
            if len(self._files) >= MAX_OPEN_H5_FILES:
                self._files.pop(next(iter(self._files))).close()
            handle = self._files[file_id] = open_h5(self._sources.files[file_id].path)
        return handle

    def chunk_table(self, file_id: int, ref: Reference) -> ChunkTable:
        """The chunk byte ranges of a referenced chunked dataset (built once per file)."""
        key = (file_id, ref.dataset)
        if key not in self._chunk_tables:
            source = self._sources.files[file_id]
            h5 = self._file(file_id)
            try:
                self._chunk_tables[key] = ChunkTable(h5[ref.dataset], ref.chunk_rows)
            except Hdf5ToRecordsError as exc:
                raise exc.with_context(os.path.basename(source.path)) from None
        return self._chunk_tables[key]

    def shard_windows(self, shard) -> Iterator[Window]:
        """The examples of ``shard`` (a :class:`plan.ShardSpec`): see :meth:`windows`."""
        return self.windows(shard.file_ids, shard.rows)

    def windows(self, file_ids: np.ndarray, rows: np.ndarray) -> Iterator[Window]:
        """Yield the shard's examples in order, a bounded window at a time.

        Numeric arrays are double-buffered: window ``k + 2`` reuses the memory of
        window ``k``, so the caller must be done with a window two windows later.
        Reusing memory avoids faulting in fresh pages for every 64 MiB window.
        """
        bounds = window_bounds(
            file_ids, rows, self._row_bytes, self._chunk_rows[file_ids], self._limits.window_bytes
        )
        for index, (start, stop) in enumerate(bounds):
            ids, sel = file_ids[start:stop], rows[start:stop]
            if self._sources.mode == "groups":
                columns = self._read_groups(ids, sel)
            else:
                columns = self._read_rows(ids, sel, self._buffers[index % 2])
            yield Window(start, stop, columns)

    def _read_rows(
        self, file_ids: np.ndarray, rows: np.ndarray, buffers: dict[str, np.ndarray]
    ) -> dict[str, Column]:
        out = {f.name: _allocate(f, rows.size, buffers) for f in self._features}
        for feature in self._features:
            if feature.sparse:
                out[feature.name + INDICES_SUFFIX] = np.empty(rows.size, object)
        for file_id in np.unique(file_ids):
            positions = np.flatnonzero(file_ids == file_id)
            source = self._sources.files[file_id]
            h5 = self._file(int(file_id))
            name = os.path.basename(source.path)
            with shared_reads():  # the fields of one table share a read of its records
                self._read_file_rows(h5, name, rows[positions], positions, out, source)
        return out

    def _read_file_rows(self, h5, name, rows, positions, out, source) -> None:
        """Every feature's ``rows`` of one source file into ``out[...][positions]``."""
        spans = (self._row_bytes, source.chunk_rows, self._limits)
        for feature in self._features:
            ds = get_dataset(
                h5,
                feature.source,
                where=name,
                option=f"feature {feature.name!r}",
                sparse_shape=(feature.shape[0],) if feature.sparse else None,
            )
            ensure_filters(ds, where=name)
            try:
                if feature.sparse:
                    targets = (out[feature.name], out[feature.name + INDICES_SUFFIX])
                    _read_sparse(ds, rows, positions, targets, feature, *spans)
                else:
                    key = (source.path, feature.name)
                    if key not in self._direct:
                        self._direct[key] = direct_reference(ds, feature, source.path)
                    direct = self._direct[key]
                    _read_into(ds, rows, positions, out[feature.name], feature, *spans, direct)
            except OSError as exc:
                raise SourceUnreadable(
                    f"while reading {feature.source} in {name}: {first_line(exc)}"
                ) from None

    def _read_groups(self, file_ids: np.ndarray, rows: np.ndarray) -> dict[str, Column]:
        out: dict[str, list] = {f.name: [] for f in self._features}
        for file_id, row in zip(file_ids.tolist(), rows.tolist()):
            source = self._sources.files[file_id]
            group_path = source.groups[row]
            name = os.path.basename(source.path)
            group = self._file(file_id)[group_path]
            for feature in self._features:
                ds = get_dataset(
                    group,
                    feature.source.lstrip("/"),
                    where=f"group {group_path} of {name}",
                    option=f"feature {feature.name!r}",
                )
                try:
                    out[feature.name].append(_convert(ds[()], feature))
                except OSError as exc:
                    raise SourceUnreadable(
                        f"while reading {ds.name} in {name}: {first_line(exc)}"
                    ) from None
        return out


def window_bounds(
    file_ids: np.ndarray,
    rows: np.ndarray,
    row_bytes: int,
    chunk_rows: int | np.ndarray,
    window_bytes: int = WINDOW_BYTES,
) -> list[tuple[int, int]]:
    """Cut a shard's example list into windows of about ``window_bytes``.

    ``chunk_rows`` is the chunk extent along axis 0, one for all examples or one per
    example (that of its source file). Cuts fall where the source file or the chunk
    changes, so consecutive windows of an in-order shard never share a chunk.
    """
    n = rows.size
    target = max(1, window_bytes // row_bytes)
    if n <= target:
        return [(0, n)] if n else []
    chunk = rows // np.maximum(chunk_rows, 1)
    candidates = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(file_ids) != 0)) + 1
    bounds, start = [], 0
    while n - start > target:
        k = np.searchsorted(candidates, start + target)
        cut = int(candidates[k]) if k < candidates.size else n
        if cut - start > 2 * target:
            # A feature with very long chunks (a 1-byte label chunked by 15625 rows)
            # must not stretch the window: cutting inside its chunk costs little.
            cut = start + target
        bounds.append((start, cut))
        start = cut
    if start < n:
        bounds.append((start, n))
    return bounds


def _read_into(
    ds: h5py.Dataset,
    rows: np.ndarray,
    positions: np.ndarray,
    out: np.ndarray,
    feature: FeatureSchema,
    row_bytes: int,
    chunk_rows: int,
    limits: Limits,
    direct: Reference | None = None,
) -> None:
    """Read ``ds[rows]`` into ``out[positions]`` with one call per span of rows.

    ``direct``: the Reference of ``ds``'s gzip chunks, to read in-order rows past h5py
    (:mod:`chunk_reads`).
    """
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    in_order = hi - lo == rows.size and (rows.size < 2 or bool(np.all(np.diff(rows) == 1)))
    contiguous_out = positions[-1] - positions[0] + 1 == positions.size
    if in_order and contiguous_out and _direct_ok(ds, feature):
        dest = out[positions[0] : positions[-1] + 1]
        if dest.size and direct is not None:
            read_chunk_rows(ds, direct, lo, hi, dest)
        elif dest.size:
            ds.read_direct(dest, np.s_[lo:hi])
        return
    unique, inverse = np.unique(rows, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sorted_inverse = inverse[order]
    for a, b in _spans(unique, row_bytes, chunk_rows, limits):
        lo, hi = int(unique[a]), int(unique[b - 1]) + 1
        block = _convert(ds[lo:hi], feature)
        first, last = np.searchsorted(sorted_inverse, [a, b])
        targets = order[first:last]
        out[positions[targets]] = block[unique[sorted_inverse[first:last]] - lo]


def _read_sparse(
    matrix: SparseMatrix,
    rows: np.ndarray,
    positions: np.ndarray,
    out: tuple[np.ndarray, np.ndarray],
    feature: FeatureSchema,
    row_bytes: int,
    chunk_rows: int,
    limits: Limits,
) -> None:
    """Rows of a CSR matrix into ``out`` (values, column indices: one array per example),
    one read of ``data`` and ``indices`` per span of rows."""
    values_out, indices_out = out
    unique, inverse = np.unique(rows, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sorted_inverse = inverse[order]
    for a, b in _spans(unique, row_bytes, chunk_rows, limits):
        lo, hi = int(unique[a]), int(unique[b - 1]) + 1
        starts, indices, values = matrix.read_span(lo, hi)
        values = values.astype(feature.stored.memory, copy=False)
        first, last = np.searchsorted(sorted_inverse, [a, b])
        for t in order[first:last].tolist():
            r = int(unique[inverse[t]]) - lo
            values_out[positions[t]] = values[starts[r] : starts[r + 1]]
            indices_out[positions[t]] = indices[starts[r] : starts[r + 1]]


def _spans(
    unique: np.ndarray, row_bytes: int, chunk_rows: int, limits: Limits
) -> list[tuple[int, int]]:
    """Group sorted unique rows into spans read with one call each.

    A gap of at least ``limits.gap_bytes`` (and one chunk) starts a new span, and a span never
    exceeds a window's rows, so sparse selections do not read what lies between.
    """
    if unique.size == 0:
        return []
    gap_rows = max(chunk_rows, limits.gap_bytes // row_bytes, 1)
    limit = max(chunk_rows, limits.window_bytes // row_bytes, 1)
    breaks = np.flatnonzero(np.diff(unique) > gap_rows) + 1
    edges = [0, *breaks.tolist(), unique.size]
    spans = []
    for a, b in zip(edges[:-1], edges[1:]):
        while unique[b - 1] - unique[a] >= limit:
            cut = int(np.searchsorted(unique, unique[a] + limit))
            spans.append((a, cut))
            a = cut
        spans.append((a, b))
    return spans


def _allocate(feature: FeatureSchema, n: int, buffers: dict[str, np.ndarray]) -> np.ndarray:
    """The window's array for ``n`` examples of a row feature, reusing ``buffers``.

    Strings go in a fresh object array: the first source's fixed length (``S2``, say)
    would silently cut longer strings of later sources.
    """
    if feature.stored.encoding == "bytes" or feature.ragged or feature.sparse:
        ragged = feature.ragged or feature.sparse
        return np.empty(n, object) if ragged else np.empty((n, *feature.shape), object)
    buffer = buffers.get(feature.name)
    if buffer is None or buffer.shape[0] < n:
        buffer = buffers[feature.name] = np.empty((n, *feature.shape), feature.stored.memory)
    return buffer[:n]


def _direct_ok(ds: h5py.Dataset, feature: FeatureSchema) -> bool:
    """HDF5 converts byte order on read_direct, but not enum/bool or strings."""
    return feature.stored.encoding == "raw" and ds.dtype.kind in "iufc"


def _convert(values: np.ndarray, feature: FeatureSchema) -> np.ndarray:
    """Values as stored: little-endian numbers, bool as uint8, strings as bytes."""
    values = np.asarray(values)
    if feature.stored.encoding == "bytes":
        return values
    if values.dtype == object:  # variable-length arrays, one per row
        out = np.empty(len(values), object)
        out[:] = [np.asarray(v).astype(feature.stored.memory, copy=False) for v in values]
        return out
    return values.astype(feature.stored.memory, copy=False)


__all__ = ["ShardReader", "Window", "window_bounds", "Hdf5ToRecordsError"]
