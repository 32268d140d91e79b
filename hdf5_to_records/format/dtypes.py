"""The one table that maps HDF5/NumPy dtypes to stored encodings.

Numeric features are stored as raw little-endian bytes (``encoding: "raw"``); strings as
a ``bytes_list`` (``encoding: "bytes"``); bool as uint8 bytes. Anything outside the table
is refused by name: dtype, dataset and file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import h5py
import numpy as np

from ..errors import UnsupportedDtype

Encoding = Literal["raw", "bytes"]

# kind/itemsize -> stored dtype name. Stored names are NumPy/TensorFlow names.
_NUMERIC: dict[tuple[str, int], str] = {
    ("i", 1): "int8",
    ("i", 2): "int16",
    ("i", 4): "int32",
    ("i", 8): "int64",
    ("u", 1): "uint8",
    ("u", 2): "uint16",
    ("u", 4): "uint32",
    ("u", 8): "uint64",
    ("f", 2): "float16",
    ("f", 4): "float32",
    ("f", 8): "float64",
    ("c", 8): "complex64",
    ("c", 16): "complex128",
}


@dataclass(frozen=True)
class StoredType:
    """How one feature's values are stored.

    ``dtype`` is the dtype the reader decodes to (``"string"`` for bytes); ``memory``
    is the NumPy dtype the converter reads into (little-endian, bool read as uint8).
    """

    dtype: str
    encoding: Encoding
    memory: np.dtype


def stored_type(dtype: np.dtype, *, where: str) -> StoredType:
    """Map a source dtype to its stored encoding.

    ``where`` names the dataset and file for the error message.

    Raises:
        UnsupportedDtype: for compound, vlen numeric, references, opaque and other dtypes.
    """
    dtype = np.dtype(dtype)
    string_info = h5py.check_string_dtype(dtype)
    if string_info is not None or dtype.kind == "S":
        return StoredType("string", "bytes", np.dtype(object) if dtype.kind == "O" else dtype)
    if dtype.kind == "b":
        return StoredType("bool", "raw", np.dtype("u1"))
    if h5py.check_vlen_dtype(dtype) is not None:
        raise UnsupportedDtype(
            f"{where}: variable-length {h5py.check_vlen_dtype(dtype)} arrays are supported "
            "as the rows of 1-D datasets only (one dataset per example in --groups)"
        )
    if h5py.check_ref_dtype(dtype) is not None:
        raise UnsupportedDtype(f"{where}: object/region references are not supported")
    if dtype.names is not None:
        raise UnsupportedDtype(
            f"{where}: compound dtype {dtype} is not supported; select its fields as "
            "separate datasets or use --transform"
        )
    name = _NUMERIC.get((dtype.kind, dtype.itemsize))
    if name is None or dtype.subdtype is not None:
        raise UnsupportedDtype(f"{where}: dtype {dtype} is not supported")
    return StoredType(name, "raw", np.dtype(name).newbyteorder("<"))


def from_stored(name: str) -> np.dtype:
    """The little-endian NumPy dtype for a stored dtype name (``bool`` is uint8 on disk)."""
    if name == "string":
        return np.dtype(object)
    if name == "bool":
        return np.dtype("u1")
    return np.dtype(name).newbyteorder("<")
