"""The values of one parsed record, feature by feature, as NumPy arrays, checked.

``verify`` and the framework-free data source (:mod:`reader.random_source`) both decode
records parsed by :func:`format.proto.parse_example` through here: the example count,
each feature's per-example arrays (raw blocks, strings, ragged and sparse values,
index-mode references read by a span reader), and a sparse feature's column indices.
Every shape and size is checked against the manifest; a mismatch raises ``ValueError``
naming the feature.
"""

from __future__ import annotations

import numpy as np

from .dtypes import from_stored
from .record_keys import INDICES_SUFFIX


def record_count(example: dict, spec) -> int:
    kind, values = example.get(spec.count_key, (None, []))
    if kind != "int64" or len(values) != 1 or not 0 < values[0] <= spec.rows_per_record:
        raise ValueError(
            f"{spec.count_key} is {values!r}, not a count in 1..{spec.rows_per_record}"
        )
    return values[0]


def feature_values(example: dict, feature, n: int, spec, spans) -> list:
    """The record's ``n`` values of ``feature`` as NumPy arrays, shape-checked."""
    name = feature.name
    if feature.storage == "reference":
        return referenced_values(example, feature, n, spec, spans)
    kind, values = example.get(name, (None, None))
    if kind != "bytes":
        raise ValueError(f"feature {name!r} is missing or not a bytes list")
    if feature.ragged or feature.sparse:
        dims_kind, dims = example.get(name + spec.shape_suffix, (None, []))
        ndim = 1 if feature.sparse else len(feature.shape)
        if dims_kind != "int64" or len(dims) != n * ndim:
            raise ValueError(f"feature {name!r}: {len(dims)} shape values for {n} examples")
        shapes = [tuple(dims[i * ndim : (i + 1) * ndim]) for i in range(n)]
    else:
        shapes = [tuple(feature.shape)] * n
    for shape in shapes:
        if feature.sparse and not 0 <= shape[0] <= feature.shape[0]:
            raise ValueError(f"feature {name!r}: {shape[0]} values in a row of {feature.shape}")
        if feature.sparse:
            continue
        if any(d < 0 or (f is not None and d != f) for d, f in zip(shape, feature.shape)):
            raise ValueError(f"feature {name!r}: example shape {shape}, manifest {feature.shape}")
    counts = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if feature.encoding == "bytes":
        if len(values) != sum(counts):
            raise ValueError(f"feature {name!r}: {len(values)} strings, expected {sum(counts)}")
        flat = np.array([bytes(v) for v in values], dtype=object)
    else:
        dtype = from_stored(feature.dtype)
        payload = b"".join(bytes(v) for v in values) if len(values) != 1 else values[0]
        if len(payload) != sum(counts) * dtype.itemsize:
            raise ValueError(
                f"feature {name!r}: {len(payload)} bytes, expected {sum(counts) * dtype.itemsize}"
                f" for {n} example(s) of {feature.dtype} {feature.shape}"
            )
        flat = np.frombuffer(payload, dtype)
        if feature.dtype == "bool":
            flat = flat.astype(bool)
    out, at = [], 0
    for shape, count in zip(shapes, counts):
        out.append(flat[at : at + count].reshape(shape))
        at += count
    return out


def sparse_indices(example: dict, feature, values: list) -> list:
    """A sparse feature's column indices, one array per example, checked: as many as its
    values, inside the matrix, increasing within each row."""
    kind, payload = example.get(feature.name + INDICES_SUFFIX, (None, None))
    if kind != "bytes" or len(payload) != 1:
        raise ValueError(f"feature {feature.name!r}: column indices missing")
    flat = np.frombuffer(payload[0], "<i8")
    counts = [len(v) for v in values]
    if flat.size != sum(counts):
        raise ValueError(f"feature {feature.name!r}: {flat.size} indices for {sum(counts)} values")
    out, at = [], 0
    for count in counts:
        row = flat[at : at + count]
        at += count
        if row.size and (row[0] < 0 or row[-1] >= feature.shape[0] or (np.diff(row) <= 0).any()):
            raise ValueError(f"feature {feature.name!r}: column indices not increasing in range")
        out.append(row)
    return out


def referenced_values(example: dict, feature, n: int, spec, spans) -> list:
    if spans is None:
        raise ValueError(f"feature {feature.name!r}: its sources could not be checked")
    file_kind, file_ids = example.get(spec.file_key, (None, []))
    ref_kind, refs = example.get(feature.name + spec.ref_suffix, (None, None))
    take_kind, takes = example.get(feature.name + spec.take_suffix, ("int64", []))
    if file_kind != "int64" or len(file_ids) != 1 or ref_kind != "int64" or take_kind != "int64":
        raise ValueError(f"feature {feature.name!r}: malformed references")
    values = spans.read(
        feature.name,
        np.array(file_ids, np.int64),
        np.array([n], np.int64),
        np.array(refs, np.int64),
        np.array([0, len(refs)], np.int64),
        np.array(takes, np.int64),
        np.array([0, len(takes)], np.int64),
    )
    if feature.dtype == "bool":
        values = values.astype(bool)
    return list(values)
