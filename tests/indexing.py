"""What the index-mode tests share: reading a dataset back, comparing with what
h5py reads, and building datasets of unusual layouts."""

from __future__ import annotations

import h5py
import numpy as np

import reader

from records import load_manifest

N = 23  # rows per dataset: no chunk size used here divides it, so last chunks are partial


def read_all(out, split: str = "train", **options) -> dict[str, np.ndarray]:
    """Every example of a split through ``reader.load``, stacked per feature."""
    ds = reader.load(str(out), split, **options)
    examples = list(ds)
    return {
        name: np.stack([e[name].numpy() for e in examples]) if examples else np.empty(0)
        for name in ds.element_spec
    }


def assert_same(got: np.ndarray, expected, what: str = "") -> None:
    """``got`` is what h5py read, in native byte order: same dtype, shape and bits."""
    expected = np.asarray(expected)
    if expected.dtype.kind in "biufc":
        expected = expected.astype(expected.dtype.newbyteorder("="))
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    np.testing.assert_array_equal(got, expected, err_msg=what)
    if expected.dtype.kind in "biufc":  # bit for bit: NaN payloads and -0.0 count
        assert got.tobytes() == expected.tobytes(), what


def storage(out) -> dict[str, str]:
    return {f["name"]: f["storage"] for f in load_manifest(str(out))["features"]}


def h5_read(path, name: str, rows=None) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        values = h5[name][()]
    return values if rows is None else values[rows]


def values_for(dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values of ``dtype`` with its extremes and special values among them."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    native = dtype.newbyteorder("=")
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(native)
        values = rng.integers(info.min, info.max, size=shape, dtype=native, endpoint=True)
        specials = [info.min, info.max, 0, 1]
    elif dtype.kind == "f":
        values = (rng.standard_normal(shape) * 100).astype(native)
        specials = [np.nan, -np.inf, np.inf, -0.0, np.finfo(native).max]
    else:
        values = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(native)
        specials = [complex(np.nan, 1), complex(-0.0, np.inf), 1e30 - 2j]
    flat = values.reshape(-1)
    flat[: len(specials)] = np.array(specials, native)[: flat.size]
    return values.astype(dtype)


def create_lowlevel(group: h5py.Group, name: str, data: np.ndarray, dcpl) -> h5py.Dataset:
    """A dataset made with h5py's low-level API from a dataset creation property list
    (for what ``create_dataset`` cannot do: compact layout, filters in another order)."""
    space = h5py.h5s.create_simple(data.shape)
    tid = h5py.h5t.py_create(data.dtype, logical=True)
    h5py.h5d.create(group.id, name.encode(), tid, space, dcpl=dcpl)
    group[name][...] = data
    return group[name]


def with_filters(group, name: str, data: np.ndarray, chunk_rows: int, order: str):
    """A chunked dataset whose filters are applied in ``order``: f(letcher32), s(huffle),
    g(zip), written in that order into the pipeline."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((chunk_rows, *data.shape[1:]))
    for step in order:
        if step == "f":
            dcpl.set_fletcher32()
        elif step == "s":
            dcpl.set_shuffle()
        else:
            dcpl.set_deflate(6)
    return create_lowlevel(group, name, data, dcpl)


def compact(group, name: str, data: np.ndarray) -> h5py.Dataset:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    ds = create_lowlevel(group, name, data, dcpl)
    assert ds.id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    return ds


def shuffled(data: np.ndarray) -> bytes:
    """HDF5's shuffle filter applied to a whole chunk: byte planes one after another."""
    flat = np.ascontiguousarray(data).view(np.uint8).reshape(-1, data.dtype.itemsize)
    return flat.T.tobytes()


# name -> (dtype, row shape, create_dataset options, expected (layout, chunk rows, filters))
LAYOUTS = {
    "contiguous": (">f8", (2, 3), {}, ("contiguous", 0, [])),
    "chunk1": ("<i4", (2, 3), {"chunks": 1}, ("chunked", 1, [])),
    "chunk3": (">i2", (5,), {"chunks": 3}, ("chunked", 3, [])),
    "chunk7": ("<u8", (2, 3), {"chunks": 7}, ("chunked", 7, [])),
    "chunk16": (">f4", (2, 3), {"chunks": 16}, ("chunked", 16, [])),
    "gzip1": ("<f4", (2, 3), {"chunks": 4, "compression": "gzip", "compression_opts": 1}, None),
    "gzip9": (">i8", (2, 3), {"chunks": 5, "compression": "gzip", "compression_opts": 9}, None),
    "shuffle": (">f8", (2, 3), {"chunks": 3, "shuffle": True}, ("chunked", 3, ["shuffle"])),
    "shuffle_c16": ("<c16", (2,), {"chunks": 4, "shuffle": True}, ("chunked", 4, ["shuffle"])),
    "gzip_shuffle": (
        "<i2",
        (2, 3),
        {"chunks": 7, "compression": "gzip", "shuffle": True},
        ("chunked", 7, ["shuffle", "gzip"]),
    ),
    "fletcher32_odd": ("<i1", (), {"chunks": 3, "fletcher32": True}, None),  # 3-byte chunks
    "fletcher32": (">u4", (2, 3), {"chunks": 4, "fletcher32": True}, None),
    "fletcher32_gzip_shuffle": (
        ">c8",
        (2,),
        {"chunks": 4, "compression": "gzip", "shuffle": True, "fletcher32": True},
        ("chunked", 4, ["shuffle", "gzip", "fletcher32"]),
    ),
}
EXPECTED_FILTERS = {
    "gzip1": ("chunked", 4, ["gzip"]),
    "gzip9": ("chunked", 5, ["gzip"]),
    "fletcher32_odd": ("chunked", 3, ["fletcher32"]),
    "fletcher32": ("chunked", 4, ["fletcher32"]),
}
# Datasets with chunks written by hand whose filter mask skips filters (bit i: filter i
# of the pipeline was not applied): name -> expected (layout, chunk rows, filters).
MASKED = {
    "masked_gzip": ("chunked", 4, ["gzip"]),
    "masked_shuffle_gzip": ("chunked", 4, ["shuffle", "gzip"]),
    "masked_gzip_fletcher32": ("chunked", 4, ["gzip", "fletcher32"]),
}
