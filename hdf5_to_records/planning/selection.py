"""Row selections (``--rows``): parse the spec once, resolve it per source file.

A spec is Python slice syntax (``100:5000``, ``::10``, ``7``), a comma list of those,
``@FILE`` naming a ``.npy`` or ``.txt`` list of row indices, or ``@/path/in/h5`` naming
an integer index dataset or a boolean mask dataset inside each source. Selections apply
per file and keep the order they give (index lists may repeat or be unsorted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetNotFound, SelectionError, UsageError


@dataclass(frozen=True)
class RowSpec:
    """A parsed ``--rows`` spec. Exactly one of the three forms is set."""

    text: str
    slices: tuple[tuple[int | None, int | None, int | None] | int, ...] = ()
    index_file: str | None = None
    dataset: str | None = None


def parse_rows(text: str) -> RowSpec:
    """Parse a ``--rows`` spec without touching any file.

    Raises:
        UsageError: the spec is malformed.
    """
    stripped = text.strip()
    # "@/abs/rows.npy" is a file; "@/path/in/h5" without .npy/.txt is a dataset.
    if stripped.startswith("@/") and not stripped.endswith((".npy", ".txt")):
        return RowSpec(text, dataset=stripped[1:])
    if stripped.startswith("@"):
        path = stripped[1:]
        if not path.endswith((".npy", ".txt")):
            raise UsageError(f"--rows {text!r}: an index file must end in .npy or .txt")
        return RowSpec(text, index_file=path)
    parts = []
    for piece in stripped.split(","):
        piece = piece.strip()
        try:
            if ":" in piece:
                bounds = piece.split(":")
                if len(bounds) > 3:
                    raise ValueError
                values = [int(b) if b.strip() else None for b in bounds] + [None]
                start, stop, step = values[0], values[1], values[2]
                if step == 0:
                    raise UsageError(f"--rows {text!r}: slice step cannot be zero")
                parts.append((start, stop, step))
            else:
                parts.append(int(piece))
        except ValueError:
            raise UsageError(
                f"--rows {text!r}: cannot parse {piece!r}; expected slices like 100:5000 or "
                "::10, a comma list of them, @rows.npy, or @/path/to/index_or_mask"
            ) from None
    return RowSpec(text, slices=tuple(parts))


def resolve_rows(spec: RowSpec | None, num_rows: int, *, h5file=None, where: str) -> np.ndarray:
    """The selected row indices (int64, in selection order) of one source file.

    ``where`` names the file for error messages; ``h5file`` is the open file, needed
    for ``@/dataset`` specs.

    Raises:
        SelectionError: an index is out of range or the selection is empty.
        DatasetNotFound: an ``@/dataset`` spec names a missing dataset.
    """
    if spec is None:
        rows = np.arange(num_rows, dtype=np.int64)
    elif spec.dataset is not None:
        rows = _rows_from_dataset(spec, num_rows, h5file, where)
    elif spec.index_file is not None:
        rows = _check_indices(_load_index_file(spec), num_rows, spec, where)
    else:
        pieces = [_resolve_piece(p, num_rows, spec, where) for p in spec.slices]
        rows = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
    if rows.size == 0:
        raise SelectionError(f"--rows {spec.text if spec else ''!r} selects no rows in {where}")
    return rows


def _resolve_piece(piece, num_rows: int, spec: RowSpec, where: str) -> np.ndarray:
    if isinstance(piece, int):
        return _check_indices(np.array([piece], np.int64), num_rows, spec, where)
    start, stop, step = piece
    for bound in (start, stop):
        if bound is not None and not -num_rows <= bound <= num_rows:
            raise SelectionError(
                f"--rows {spec.text!r}: bound {bound} is outside {where} ({num_rows} rows)"
            )
    return np.arange(*slice(start, stop, step).indices(num_rows), dtype=np.int64)


def _check_indices(rows: np.ndarray, num_rows: int, spec: RowSpec, where: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype.kind not in "iu":
        raise SelectionError(
            f"--rows {spec.text!r}: expected integer row indices, got {rows.dtype}"
        )
    rows = rows.ravel()
    if rows.dtype == np.uint64 and rows.size and int(rows.max()) >= num_rows:
        raise SelectionError(
            f"--rows {spec.text!r}: row index {int(rows.max())} is out of range for {where} "
            f"({num_rows} rows)"
        )
    rows = rows.astype(np.int64)
    bad = (rows < -num_rows) | (rows >= num_rows)
    if bad.any():
        raise SelectionError(
            f"--rows {spec.text!r}: row index {int(rows[bad][0])} is out of range for {where} "
            f"({num_rows} rows)"
        )
    return np.where(rows < 0, rows + num_rows, rows)


def _load_index_file(spec: RowSpec) -> np.ndarray:
    path = spec.index_file
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        return np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#")
    except FileNotFoundError:
        raise SelectionError(f"--rows {spec.text!r}: index file {path} not found") from None
    except ValueError as exc:
        raise SelectionError(f"--rows {spec.text!r}: cannot read {path}: {exc}") from None


def _rows_from_dataset(spec: RowSpec, num_rows: int, h5file, where: str) -> np.ndarray:
    from .sources import get_dataset

    dataset = get_dataset(h5file, spec.dataset, where=where, option="--rows")
    values = dataset[()]
    if values.dtype == np.bool_:
        if values.shape != (num_rows,):
            raise SelectionError(
                f"--rows {spec.text!r}: mask {spec.dataset} in {where} has shape {values.shape}, "
                f"expected ({num_rows},) to match the features"
            )
        return np.flatnonzero(values).astype(np.int64)
    if values.ndim != 1:
        raise SelectionError(
            f"--rows {spec.text!r}: {spec.dataset} in {where} must be 1-D, got shape {values.shape}"
        )
    if values.dtype.kind in "iu" and values.size == num_rows > 2 and np.isin(values, (0, 1)).all():
        # MATLAB and C tools write logical masks as 0/1 integers: as indices they would
        # silently select rows 0 and 1 over and over.
        raise SelectionError(
            f"--rows {spec.text!r}: {spec.dataset} in {where} holds only 0s and 1s and is as "
            "long as the file: it looks like a mask stored as integers; store it as bool "
            "(or as a list of row indices)"
        )
    return _check_indices(values, num_rows, spec, where)


__all__ = ["RowSpec", "parse_rows", "resolve_rows", "DatasetNotFound"]
