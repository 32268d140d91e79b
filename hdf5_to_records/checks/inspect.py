"""``inspect``: the tree of groups and datasets in one HDF5 file, for writing selections."""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import Hdf5ToRecordsError
from ..format.dtypes import stored_type
from ..format.reference import Reference
from ..index.references import probe
from ..planning.columns import FieldColumn, leaf_fields
from ..planning.group_columns import CategoricalColumn, SparseMatrix, open_group_column
from ..planning.sources import layout, open_h5


def describe_file(path: str) -> list[str]:
    """Lines describing every group, dataset and link of an HDF5 file.

    Raises:
        SourceNotFound, SourceUnreadable: the file is missing or not HDF5.
    """
    name = os.path.basename(path)
    with open_h5(path) as h5:
        lines = [f"{name} ({os.path.getsize(path) / 1e6:.1f} MB)", "/"]
        _walk(h5, "/", 1, lines)
    return lines


def _walk(group: h5py.Group, path: str, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key in sorted(group.keys()):
        full = path.rstrip("/") + "/" + key
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.SoftLink):
            target = f" -> {link.path}"
        elif isinstance(link, h5py.ExternalLink):
            target = f" -> {link.filename}:{link.path}"
        else:
            target = ""
        try:
            obj = group[key]
        except (KeyError, OSError):
            lines.append(f"{pad}{key}{target}  (broken link)")
            continue
        if isinstance(obj, h5py.Group):
            column = _group_column(obj)
            if column is not None:
                lines.append(f"{pad}{key}/{target}  {column}")
                continue
            lines.append(f"{pad}{key}/{target}  group, {len(obj)} member(s)")
            if not target:
                _walk(obj, full, depth + 1, lines)
        elif isinstance(obj, h5py.Dataset):
            lines.append(f"{pad}{key}{target}  {_describe_dataset(obj, group.file.filename)}")
            if obj.dtype.names is not None:
                lines += _describe_fields(obj, group.file.filename, pad + "  ")
        else:
            lines.append(f"{pad}{key}{target}  {type(obj).__name__}")


def _group_column(group: h5py.Group) -> str | None:
    """The line for a group that holds one column (a sparse matrix, a categorical)."""
    try:
        column = open_group_column(group, where="it")
    except Hdf5ToRecordsError as exc:
        return "NOT CONVERTIBLE: " + str(exc)
    if isinstance(column, SparseMatrix):
        return (
            f"CSR sparse matrix {column.shape} of {_dtype_name(column.dtype)}, "
            f"{column.data.shape[0]:,} stored values: a feature of its rows "
            "(--feature NAME=" + group.name + ")  index: no (copied)"
        )
    if isinstance(column, CategoricalColumn):
        labels = h5py.check_enum_dtype(column.dtype)
        return (
            f"categorical {column.codes.dtype} codes {column.shape} of {len(labels)} "
            f"categories  {_index_note(probe(column, group.file.filename))}"
        )
    return None


def _describe_dataset(ds: h5py.Dataset, source: str) -> str:
    info = layout(ds)
    parts = [_dtype_name(ds.dtype), str(ds.shape), info.kind]
    if info.chunks:
        parts.append(f"chunks {info.chunks}")
    if info.filters:
        parts.append("filters " + "+".join(info.filters))
    if ds.ndim == 0:
        parts.append("scalar")
    if ds.dtype.names is not None:
        parts.append(f"{len(leaf_fields(ds.dtype))} fields, each a feature (NAME=path[field]):")
        return "  ".join(parts)
    vlen = h5py.check_vlen_dtype(ds.dtype)
    try:
        if vlen is not None and h5py.check_string_dtype(ds.dtype) is None and ds.ndim == 1:
            stored_type(vlen, where=ds.name)
            parts.append("ragged rows")
        else:
            stored_type(ds.dtype, where=ds.name)
    except Hdf5ToRecordsError as exc:
        parts.append("NOT CONVERTIBLE: " + str(exc).split(": ", 1)[-1])
        return "  ".join(parts)
    parts.append(_index_note(probe(ds, source)))
    return "  ".join(parts)


def _describe_fields(ds: h5py.Dataset, source: str, pad: str) -> list[str]:
    """One line per leaf field of a compound dataset: dtype, shape, referenceable."""
    lines = []
    for field in leaf_fields(ds.dtype):
        try:
            column = FieldColumn(ds, field)
        except Hdf5ToRecordsError as exc:
            lines.append(f"{pad}[{field}]  NOT CONVERTIBLE: {str(exc).split(': ', 1)[-1]}")
            continue
        parts = [f"{pad}[{field}]", _dtype_name(column.dtype)]
        if column.subshape:
            parts.append(str(column.subshape))
        try:
            stored_type(column.dtype, where=ds.name)
        except Hdf5ToRecordsError as exc:
            parts.append("NOT CONVERTIBLE: " + str(exc).split(": ", 1)[-1])
        else:
            parts.append(_index_note(probe(column, source)))
        lines.append("  ".join(parts))
    return lines


def _index_note(ref: Reference | str) -> str:
    return "index: yes" if isinstance(ref, Reference) else f"index: no ({ref})"


def _dtype_name(dtype: np.dtype) -> str:
    string = h5py.check_string_dtype(dtype)
    if string is not None:
        kind = "vlen" if string.length is None else f"fixed[{string.length}]"
        return f"string({kind}, {string.encoding})"
    enum = h5py.check_enum_dtype(dtype)
    if enum is not None:
        return f"enum({dtype}: {', '.join(sorted(enum))})"
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None:
        return f"vlen({_dtype_name(np.dtype(vlen))})"
    ref = h5py.check_ref_dtype(dtype)
    if ref is not None:
        return "region reference" if ref is h5py.RegionReference else "object reference"
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return f"array({_dtype_name(base)}, {shape})"
    order = {">": "big-endian ", "<": "", "=": "", "|": ""}.get(dtype.byteorder, "")
    return order + (str(dtype.newbyteorder("=")) if dtype.names is None else f"compound{dtype}")
