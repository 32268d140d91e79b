"""``inspect``: the tree of groups and datasets in one HDF5 file, for writing selections."""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import Hdf5ToRecordsError
from ..format.dtypes import stored_type
from ..format.reference import Reference
from ..index.references import probe
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
            lines.append(f"{pad}{key}/{target}  group, {len(obj)} member(s)")
            if not target:
                _walk(obj, full, depth + 1, lines)
        elif isinstance(obj, h5py.Dataset):
            lines.append(f"{pad}{key}{target}  {_describe_dataset(obj, group.file.filename)}")
        else:
            lines.append(f"{pad}{key}{target}  {type(obj).__name__}")


def _describe_dataset(ds: h5py.Dataset, source: str) -> str:
    info = layout(ds)
    parts = [_dtype_name(ds.dtype), str(ds.shape), info.kind]
    if info.chunks:
        parts.append(f"chunks {info.chunks}")
    if info.filters:
        parts.append("filters " + "+".join(info.filters))
    if ds.ndim == 0:
        parts.append("scalar")
    try:
        stored_type(ds.dtype, where=ds.name)
    except Hdf5ToRecordsError as exc:
        parts.append("NOT CONVERTIBLE: " + str(exc).split(": ", 1)[-1])
        return "  ".join(parts)
    ref = probe(ds, source)
    parts.append("index: yes" if isinstance(ref, Reference) else f"index: no ({ref})")
    return "  ".join(parts)


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
