"""Groups that hold one column: CSR sparse matrices and AnnData categoricals.

AnnData writes ``X`` (and ``raw/X``, ``layers/*``) as a group of ``data``, ``indices``
and ``indptr`` with ``encoding-type: csr_matrix`` and a ``shape`` attribute; scipy users
write the same triple by hand. Each matrix row is an example: :class:`SparseMatrix`
reads rows as (column indices, values) pairs. AnnData's categorical ``obs`` columns
(``louvain``, ``bulk_labels``) are groups of integer ``codes`` and their ``categories``:
:class:`CategoricalColumn` reads the codes, with the categories as enum labels.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..errors import SchemaError

CSR_PARTS = ("data", "indices", "indptr")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def encoding(group: h5py.Group) -> str:
    """AnnData's ``encoding-type`` (or h5sparse's ``h5sparse_format``), lower case."""
    for key, prefix in (("encoding-type", ""), ("h5sparse_format", "")):
        if key in group.attrs:
            kind = prefix + _text(group.attrs[key]).lower()
            return {"csr": "csr_matrix", "csc": "csc_matrix"}.get(kind, kind)
    return ""


def open_group_column(
    group: h5py.Group, *, where: str, sparse_shape: tuple[int, ...] | None = None
) -> SparseMatrix | CategoricalColumn | None:
    """The column a group holds, or None for an ordinary group.

    Raises:
        SchemaError: a CSC matrix, or a CSR matrix whose shape is unknown or inconsistent.
    """
    kind = encoding(group)
    parts = [isinstance(group.get(p), h5py.Dataset) for p in CSR_PARTS]
    if kind == "csc_matrix":
        raise SchemaError(
            f"{where} is a CSC sparse matrix (compressed by column), whose rows cannot be "
            "read one at a time; write it as CSR first (scipy: m.tocsr(); AnnData: "
            "adata.X = adata.X.tocsr(), then adata.write_h5ad(...))"
        )
    if kind == "categorical" and all(
        isinstance(group.get(p), h5py.Dataset) for p in ("codes", "categories")
    ):
        return CategoricalColumn(group, where=where)
    if all(parts) and kind in ("", "csr_matrix"):
        return SparseMatrix(group, where=where, shape=sparse_shape)
    return None


class SparseMatrix:
    """A CSR matrix whose rows are examples: ``shape`` is ``(rows, columns)``."""

    def __init__(self, group: h5py.Group, *, where: str, shape: tuple[int, ...] | None = None):
        self.group, self.where = group, where
        self.data, self.indices, self.indptr = (group[p] for p in CSR_PARTS)
        self.name = group.name
        self.dtype = self.data.dtype
        self.parts = (self.data, self.indices, self.indptr)
        rows = self.indptr.shape[0] - 1 if self.indptr.ndim == 1 else -1
        declared = _declared_shape(group, where)
        if declared is None and shape is None:
            raise SchemaError(
                f"{where} is a CSR matrix (data, indices, indptr) without a shape "
                "attribute; give it with --sparse-shape NAME=ROWS,COLUMNS"
            )
        if shape is not None and len(shape) == 1:
            shape = (rows, shape[0])
        self.shape = tuple(int(d) for d in (shape if shape is not None else declared))
        self.ndim = 2
        self.chunks = None
        if (
            len(self.shape) != 2
            or min(self.shape) < 0
            or self.shape[0] != rows
            or self.data.ndim != 1
            or self.indices.shape != self.data.shape
        ):
            raise SchemaError(
                f"{where}: CSR parts do not agree with shape {self.shape} (indptr "
                f"{self.indptr.shape}, indices {self.indices.shape}, data {self.data.shape})"
            )
        if self.indices.dtype.kind not in "iu" or self.indptr.dtype.kind not in "iu":
            raise SchemaError(f"{where}: CSR indices and indptr must be integers")
        if self.data.dtype.kind not in "biuf":
            raise SchemaError(f"{where}: CSR data of dtype {self.data.dtype} is not numeric")

    @property
    def mean_nonzeros(self) -> float:
        return float(self.data.shape[0]) / max(1, self.shape[0])

    def read_span(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``lo..hi-1``: ``(starts, indices, values)``, with row ``r``'s entries at
        ``starts[r - lo]:starts[r - lo + 1]``, column indices sorted within each row.

        Raises:
            SchemaError: an indptr that decreases or leaves the data, a column index
                outside the matrix, or a column twice in one row.
        """
        ptr = self.indptr[lo : hi + 1].astype(np.int64)
        if (np.diff(ptr) < 0).any() or ptr[0] < 0 or ptr[-1] > self.data.shape[0]:
            raise SchemaError(f"{self.where}: indptr of rows {lo}..{hi - 1} is not a valid CSR")
        indices = self.indices[ptr[0] : ptr[-1]].astype(np.int64)
        values = self.data[ptr[0] : ptr[-1]]
        starts = ptr - ptr[0]
        if indices.size and (indices.min() < 0 or indices.max() >= self.shape[1]):
            raise SchemaError(
                f"{self.where}: a column index in rows {lo}..{hi - 1} is outside the "
                f"{self.shape[1]} columns"
            )
        _sort_rows(indices, values, starts, self.where)
        return starts, indices, values


def _sort_rows(indices: np.ndarray, values: np.ndarray, starts: np.ndarray, where: str) -> None:
    """Sort each row's entries by column in place (scipy allows unsorted CSR rows;
    ``tf.SparseTensor`` wants them sorted); refuse a column named twice in a row."""
    if indices.size < 2:
        return
    step = np.diff(indices)
    inside = np.ones(step.size, bool)
    inner_starts = starts[1:-1]
    inside[inner_starts[(inner_starts > 0) & (inner_starts <= step.size)] - 1] = False
    bad = inside & (step <= 0)
    if not bad.any():
        return
    rows = np.unique(np.searchsorted(starts, np.flatnonzero(bad) + 1, side="right") - 1)
    for r in rows.tolist():
        a, b = int(starts[r]), int(starts[r + 1])
        order = np.argsort(indices[a:b], kind="stable")
        indices[a:b], values[a:b] = indices[a:b][order], values[a:b][order]
        if (np.diff(indices[a:b]) == 0).any():
            raise SchemaError(
                f"{where}: a column appears twice in one row (scipy sums such entries; "
                "call sum_duplicates() before writing)"
            )


def _declared_shape(group: h5py.Group, where: str) -> tuple[int, ...] | None:
    for key in ("shape", "h5sparse_shape"):
        if key in group.attrs:
            value = np.asarray(group.attrs[key])
            if value.dtype.kind not in "iu" or value.ndim != 1:
                raise SchemaError(f"{where}: attribute {key!r} is {value!r}, not (rows, columns)")
            return tuple(int(d) for d in value)
    return None


class CategoricalColumn:
    """AnnData's categorical column: its integer ``codes``, read like a dataset whose
    dtype is an enum of the ``categories`` (code -1, a missing value, has no label)."""

    def __init__(self, group: h5py.Group, *, where: str):
        self.codes = group["codes"]
        if self.codes.dtype.kind not in "iu":
            raise SchemaError(f"{where}: categorical codes must be integers")
        stored = group["categories"]
        if stored.shape is None or len(stored.shape) != 1:
            raise SchemaError(f"{where}: categorical categories must be a 1-D dataset")
        categories = [_text(c) for c in np.asarray(stored[()]).tolist()]
        if len(set(categories)) != len(categories):
            raise SchemaError(f"{where}: categorical categories are not unique")
        mapping = {label: code for code, label in enumerate(categories)}
        self.dtype = h5py.enum_dtype(mapping, basetype=self.codes.dtype)
        self.shape, self.ndim = self.codes.shape, self.codes.ndim

    def __getattr__(self, name: str):
        return getattr(self.codes, name)

    def __getitem__(self, key) -> np.ndarray:
        return self.codes[key]

    def read_direct(self, dest: np.ndarray, source_sel=None) -> None:
        self.codes.read_direct(dest, source_sel)
