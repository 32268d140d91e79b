"""The NumPy views and copies the span reader returns its rows through: fields of
compound records as strided views, outputs aligned for ``numpy_function``, and the
conversion of source values to stored values."""

from __future__ import annotations

import numpy as np

from ..format.reference import Reference


def field_view(buffer: np.ndarray, ref: Reference) -> np.ndarray:
    """Rows of one field, viewed in place in a buffer of whole compound records (a
    strided view: no copy, no per-row loop)."""
    dtype = np.dtype(ref.dtype)
    elements = buffer.size // ref.element_bytes
    inner = ref.field_shape
    inner_strides = tuple(
        int(np.prod(inner[i + 1 :], dtype=np.int64)) * dtype.itemsize for i in range(len(inner))
    )
    values = np.ndarray(
        (elements, *inner),
        dtype,
        buffer=buffer,
        offset=ref.field_offset,
        strides=(ref.element_bytes, *inner_strides),
    )
    return values.reshape(-1, *ref.row_shape)


_ALIGN = 64  # TensorFlow adopts a NumPy result without a copy only if it is 64-byte aligned


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` on a 64-byte boundary, so that ``numpy_function`` does not copy it."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def same_bytes(source: np.dtype, stored: np.dtype) -> bool:
    """Whether source values are already stored values, byte for byte."""
    if source.kind == "b":
        return stored.itemsize == 1
    return source.itemsize == stored.itemsize and (source.isnative or source.itemsize == 1)


def to_stored(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows in the source dtype -> the stored dtype (little-endian; bool as uint8)."""
    if rows.dtype.kind == "b":
        return rows.view(np.uint8)
    return rows.astype(dtype, copy=False)
