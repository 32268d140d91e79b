"""Index mode (``--mode index|auto``): what ``reader.load`` reads back from the HDF5
sources equals what h5py reads, value for value and dtype for dtype.

Covers the layouts the reader decodes itself (contiguous; chunked with 1, 3, 4, 5, 7 and
16 rows per chunk, partial last chunks; gzip levels 1 and 9, shuffle, fletcher32 and
their combinations; filter pipelines built in another order; chunks whose filter mask
skips filters), every numeric dtype in both byte orders, several sources of different
byte orders and chunkings, row selections, splits and shuffling (copy, index and auto
give the same examples in the same order), auto mode's mix of references and copies,
the refusals of ``--mode index`` (library and CLI), the size of the output and batched
reading.
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import reader
from hdf5_to_records.cli import main
from hdf5_to_records.errors import NotReferenceable

from records import convert_small, load_manifest, tf

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


def expected_reference(name: str) -> tuple[str, int, list[str]]:
    """(layout, chunk rows, filters) that the manifest must record for a dataset, which
    shows the test exercises the decoding path it means to."""
    if name in LAYOUTS:
        return LAYOUTS[name][3] or EXPECTED_FILTERS[name]
    if name in MASKED:
        return MASKED[name]
    return (
        "chunked",
        4,
        [{"f": "fletcher32", "s": "shuffle", "g": "gzip"}[s] for s in ORDERS[name]],
    )


# The same filters built through the low-level API in h5py's own order (a control for
# the helper) and in other orders.
ORDERS = {"order_sgf": "sgf", "order_fg": "fg", "order_fs": "fs", "order_gs": "gs"}


def write_masked(h5: h5py.File) -> None:
    """Chunked datasets in which one or two chunks were written with filters skipped."""
    data = np.arange(N * 6, dtype="<i4").reshape(N, 2, 3) * 1001 - 5000
    ds = h5.create_dataset("masked_gzip", data=data, chunks=(4, 2, 3), compression="gzip")
    ds.id.write_direct_chunk((4, 0, 0), (data[4:8] + 7).tobytes(), filter_mask=0b1)

    ds = h5.create_dataset(
        "masked_shuffle_gzip", data=data, chunks=(4, 2, 3), compression="gzip", shuffle=True
    )
    ds.id.write_direct_chunk((8, 0, 0), shuffled(data[8:12] + 9), filter_mask=0b10)
    ds.id.write_direct_chunk((12, 0, 0), (data[12:16] + 11).tobytes(), filter_mask=0b11)

    # fletcher32 checksum of a raw chunk, computed by HDF5 in a scratch in-memory file
    with h5py.File("scratch.h5", "w", driver="core", backing_store=False) as scratch:
        scratch.create_dataset("f", data=data[16:20] - 3, chunks=(4, 2, 3), fletcher32=True)
        _, checked = scratch["f"].id.read_direct_chunk((0, 0, 0))
    ds = h5.create_dataset(
        "masked_gzip_fletcher32", data=data, chunks=(4, 2, 3), compression="gzip", fletcher32=True
    )
    assert _filter_names(ds) == [b"deflate", b"fletcher32"]
    ds.id.write_direct_chunk((16, 0, 0), checked, filter_mask=0b1)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """One file with a dataset per layout, converted three ways; h5py's reads of it."""
    root = tmp_path_factory.mktemp("layouts")
    path = root / "layouts.h5"
    with h5py.File(path, "w") as h5:
        for seed, (name, (dtype, shape, options, _)) in enumerate(LAYOUTS.items()):
            options = dict(options)
            if "chunks" in options:
                options["chunks"] = (options["chunks"], *shape)
            h5.create_dataset(name, data=values_for(dtype, (N, *shape), seed), **options)
        write_masked(h5)
        for seed, (name, order) in enumerate(ORDERS.items()):
            with_filters(h5, name, values_for("<i4", (N, 3), 100 + seed), 4, order)
    with h5py.File(path, "r") as h5:
        source = {name: h5[name][()] for name in h5}
    order = [5, 0, 22, 22, 13, 4, 3, 17, 9, 9, 20, 1]  # unsorted, with repeats
    np.save(root / "order.npy", np.array(order))
    good = [n for n in source if n not in ORDERS or n == "order_sgf"]
    features = {n: f"/{n}" for n in good}
    variants = {
        # all rows in one record: each reference read in order, no take list
        "index": (convert_small(path, root / "index", mode="index", features=features), None),
        # short records: records start inside chunks and decode several chunks each
        "index_rpr5": (
            convert_small(path, root / "rpr5", mode="index", features=features, rows_per_record=5),
            None,
        ),
        # unsorted rows with repeats: take lists, shared chunks and contiguous groups
        "auto_rows": (
            convert_small(
                path,
                root / "rows",
                mode="auto",
                features=features,
                rows=f"@{root / 'order.npy'}",
                rows_per_record=4,
            ),
            order,
        ),
    }
    loaded = {key: (out, read_all(out), rows) for key, (out, rows) in variants.items()}
    return path, source, loaded


@pytest.mark.parametrize("variant", ["index", "index_rpr5", "auto_rows"])
@pytest.mark.parametrize("name", [*LAYOUTS, *MASKED, "order_sgf"])
def test_layouts_read_back_as_h5py_reads_them(layouts, name, variant):
    path, source, loaded = layouts
    out, got, rows = loaded[variant]
    manifest = load_manifest(out)
    assert {f["name"]: f["storage"] for f in manifest["features"]}[name] == "reference"
    ref = manifest["sources"][0]["references"][name]
    assert (ref["layout"], ref["chunk_rows"], ref["filters"]) == expected_reference(name)
    expected = source[name] if rows is None else source[name][rows]
    assert_same(got[name], expected, f"{name} ({variant})")


def test_masked_chunks_hold_what_was_written(layouts):
    """The hand-written chunks are what h5py reads (so the test above checks them)."""
    path, source, _ = layouts
    data = np.arange(N * 6, dtype="<i4").reshape(N, 2, 3) * 1001 - 5000
    np.testing.assert_array_equal(source["masked_gzip"][4:8], data[4:8] + 7)
    np.testing.assert_array_equal(source["masked_gzip"][:4], data[:4])
    np.testing.assert_array_equal(source["masked_shuffle_gzip"][8:12], data[8:12] + 9)
    np.testing.assert_array_equal(source["masked_shuffle_gzip"][12:16], data[12:16] + 11)
    np.testing.assert_array_equal(source["masked_gzip_fletcher32"][16:20], data[16:20] - 3)
    with h5py.File(path, "r") as h5:
        assert h5["masked_gzip"].id.get_chunk_info_by_coord((4, 0, 0)).filter_mask == 1
        assert h5["masked_shuffle_gzip"].id.get_chunk_info_by_coord((8, 0, 0)).filter_mask == 2
        assert h5["masked_shuffle_gzip"].id.get_chunk_info_by_coord((12, 0, 0)).filter_mask == 3


@pytest.mark.parametrize("name", ["order_fg", "order_fs", "order_gs"])
def test_filters_in_another_order(layouts, tmp_path, name):
    path, source, _ = layouts
    with h5py.File(path, "r") as h5:
        assert [f.decode() for f in _filter_names(h5[name])] == [
            {"f": "fletcher32", "s": "shuffle", "g": "deflate"}[s] for s in ORDERS[name]
        ]
    out = convert_small(path, tmp_path / "out", mode="index", features={name: f"/{name}"})
    assert storage(out) == {name: "reference"}
    assert_same(read_all(out)[name], source[name], name)


def _filter_names(ds: h5py.Dataset) -> list[bytes]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[3] for i in range(plist.get_nfilters())]


NUMERIC = ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
DTYPE_CASES = [
    (code, order, layout)
    for code in NUMERIC
    for order in ("<", ">")
    if order == "<" or np.dtype(code).itemsize > 1
    for layout in ("contiguous", "gzip")
] + [("b1", "|", "contiguous"), ("b1", "|", "gzip"), ("enum", ">", "contiguous")]


def _dtype_name(code: str, order: str, layout: str) -> str:
    return f"{code}_{'be' if order == '>' else 'le'}_{layout}"


@pytest.fixture(scope="module")
def dtypes(tmp_path_factory):
    """Every numeric dtype in both byte orders, rows of shape (2, 3), contiguous and
    chunked gzip+shuffle, in one file converted in index mode."""
    root = tmp_path_factory.mktemp("dtypes")
    path = root / "dtypes.h5"
    with h5py.File(path, "w") as h5:
        for seed, (code, order, layout) in enumerate(DTYPE_CASES):
            name = _dtype_name(code, order, layout)
            if code == "enum":
                dtype = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 300}, basetype=">i2")
                data = np.array([0, 1, 300] * 50)[: N * 6].reshape(N, 2, 3).astype(dtype)
            else:
                data = values_for(order + code if order != "|" else code, (N, 2, 3), seed)
            options = {}
            if layout == "gzip":
                options = {"chunks": (4, 2, 3), "compression": "gzip", "shuffle": True}
            h5.create_dataset(name, data=data, **options)
            assert h5[name].dtype.str[0] == (order if data.dtype.itemsize > 1 else "|")
    with h5py.File(path, "r") as h5:
        source = {name: h5[name][()] for name in h5}
    out = convert_small(path, root / "out", mode="index", rows_per_record=5)
    return out, source, read_all(out)


@pytest.mark.parametrize("case", DTYPE_CASES, ids=lambda c: _dtype_name(*c))
def test_every_numeric_dtype_in_both_byte_orders(dtypes, case):
    out, source, got = dtypes
    name = _dtype_name(*case)
    assert storage(out)[name] == "reference"
    assert got[name].shape == (N, 2, 3)
    expected = source[name]
    if case[0] == "b1":
        assert got[name].dtype == np.bool_
    assert_same(got[name], expected, name)


# ---- several sources, selections, splits and shuffling -----------------------------


LENGTHS = {"a.h5": 13, "b.h5": 17, "c.h5": 11}
INDEX_LIST = [7, 2, 2, 10, 0, 7, 5]  # unsorted, with repeats, in range of every file


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sources: big- and little-endian, contiguous and chunked differently.

    Each has ``x`` (floats), ``id`` (the row's global number), ``y`` (lzf: copied in
    auto mode, so index mode leaves it out) and ``mask`` (a row selection).
    """
    root = tmp_path_factory.mktemp("multi")
    layouts = {
        "a.h5": (">f4", {}, ">i8", {}),
        "b.h5": (
            "<f4",
            {"chunks": (4, 2, 3), "compression": "gzip", "shuffle": True},
            ">i8",
            {"chunks": (5,)},
        ),
        "c.h5": (
            ">f4",
            {"chunks": (5, 2, 3), "shuffle": True, "fletcher32": True},
            "<i8",
            {"chunks": (8,)},
        ),
    }
    start = 0
    paths = []
    for seed, (name, n) in enumerate(LENGTHS.items()):
        x_dtype, x_options, id_dtype, id_options = layouts[name]
        path = root / name
        with h5py.File(path, "w") as h5:
            h5.create_dataset("x", data=values_for(x_dtype, (n, 2, 3), seed), **x_options)
            h5.create_dataset("id", data=np.arange(start, start + n, dtype=id_dtype), **id_options)
            h5.create_dataset("y", data=np.arange(n) * 0.5 + start, chunks=(3,), compression="lzf")
            h5["mask"] = np.arange(n) % 4 != 1
        start += n
        paths.append(path)
    np.save(root / "rows.npy", np.array(INDEX_LIST))
    by_id = {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            for key in ("x", "id", "y"):
                by_id.setdefault(key, []).append(h5[key][()])
    by_id = {k: np.concatenate(v) for k, v in by_id.items()}
    assert (by_id["id"] == np.arange(start)).all()
    return root, paths, by_id


def convert_modes(root, tag: str, **options) -> dict[str, str]:
    """The three sources converted in copy, index and auto mode with the same options."""
    out = {}
    for mode in ("copy", "index", "auto"):
        features = {"x": "/x", "id": "/id"}
        if mode != "index":
            features["y"] = "/y"
        out[mode] = convert_small(
            str(root / "*.h5"), root / f"{tag}_{mode}", mode=mode, features=features, **options
        )
    assert storage(out["index"]) == {"x": "reference", "id": "reference"}
    assert storage(out["auto"]) == {"x": "reference", "id": "reference", "y": "copy"}
    assert storage(out["copy"]) == {"x": "copy", "id": "copy", "y": "copy"}
    return out


def assert_modes_agree(outs: dict[str, str], split: str = "train") -> dict[str, np.ndarray]:
    """Copy, index and auto give the same examples in the same order; return copy's."""
    got = {mode: read_all(out, split) for mode, out in outs.items()}
    for mode in ("index", "auto"):
        for name, values in got[mode].items():
            assert len(values) == len(got["copy"][name]), (mode, name)
            for i, (a, b) in enumerate(zip(values, got["copy"][name])):
                assert_same(a, b, f"{mode} {split} {name}[{i}]")
    return got["copy"]


@pytest.mark.parametrize(
    "rows",
    [None, "3:9", "::3", "@rows.npy", "@/mask"],
    ids=["all", "range", "step", "list", "mask"],
)
def test_sources_and_selections_agree_with_h5py_in_every_mode(sources, rows):
    root, paths, by_id = sources
    options = {}
    if rows is not None:
        options["rows"] = "@" + str(root / rows[1:]) if rows == "@rows.npy" else rows
    tag = {None: "all", "3:9": "range", "::3": "step", "@rows.npy": "list", "@/mask": "mask"}
    outs = convert_modes(root, tag[rows], rows_per_record=3, **options)
    got = assert_modes_agree(outs)
    expected_ids = []
    for path in paths:  # sources in sorted order, each's selection in its own order
        with h5py.File(path, "r") as h5:
            n = h5["id"].shape[0]
            selected = {
                None: np.arange(n),
                "3:9": np.arange(3, 9),
                "::3": np.arange(0, n, 3),
                "@rows.npy": np.array(INDEX_LIST),
                "@/mask": np.flatnonzero(h5["mask"][()]),
            }[rows]
            expected_ids.append(h5["id"][()][selected])
    expected_ids = np.concatenate(expected_ids)
    assert_same(got["id"], expected_ids.astype(np.int64), "id")
    for name in ("x", "y"):
        assert_same(got[name], by_id[name][expected_ids], name)


def test_splits_and_shuffle_give_the_same_order_in_every_mode(sources):
    root, _, by_id = sources
    outs = convert_modes(
        root,
        "splits",
        splits={"train": 0.6, "test": 0.4},
        shuffle=True,
        seed=7,
        num_shards=2,
        rows_per_record=3,
    )
    seen = []
    for split in ("train", "test"):
        got = assert_modes_agree(outs, split)
        ids = got["id"]
        assert not (np.diff(ids) > 0).all(), f"{split}: --shuffle left source order"
        for name in ("x", "y"):
            assert_same(got[name], by_id[name][ids], f"{split} {name}")
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(sum(LENGTHS.values())))


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_batched_reading(sources, tmp_path, drop_remainder):
    root, _, by_id = sources
    out = convert_small(
        str(root / "*.h5"),
        tmp_path / "out",
        mode="index",
        features={"x": "/x", "id": "/id"},
        rows_per_record=4,
        num_shards=2,
    )
    single = read_all(out)
    batches = list(reader.load(out, batch_size=7, drop_remainder=drop_remainder))
    total = sum(LENGTHS.values())
    sizes = [int(b["id"].shape[0]) for b in batches]
    assert sizes == [7] * (total // 7) + ([] if drop_remainder else [total % 7])
    for name in ("x", "id"):
        got = np.concatenate([b[name].numpy() for b in batches])
        assert_same(got, single[name][: len(got)], name)
        assert_same(got, by_id[name][single["id"][: len(got)]], name)


@pytest.mark.parametrize("shuffle", [False, True])
def test_cache_keeps_decoded_examples_not_references(tmp_path, shuffle):
    """With ``cache=True`` later epochs come from memory: they read no source bytes."""
    path = tmp_path / "src.h5"
    values = np.arange(60 * 3, dtype="<f4").reshape(60, 3)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=values, chunks=(4, 3), compression="gzip")
    out = convert_small(path, tmp_path / "out", mode="index", rows_per_record=8)
    options = {"shuffle": True, "seed": 3} if shuffle else {}
    epochs = iter(reader.load(out, batch_size=10, cache=True, repeat=2, **options))
    first = np.concatenate([next(epochs)["x"].numpy() for _ in range(6)])
    with open(path, "r+b") as handle:  # wreck the source: only the cache can serve now
        handle.write(b"\0" * os.path.getsize(path))
    second = np.concatenate([b["x"].numpy() for b in epochs])
    for epoch in (first, second):
        assert_same(epoch[np.argsort(epoch[:, 0])], values)
    if shuffle:
        assert not np.array_equal(first, values) and not np.array_equal(first, second)
    else:
        assert_same(first, values)
        assert_same(second, values)


def test_records_never_read_more_than_the_cap(tmp_path, monkeypatch):
    """Sparse small rows are read through their gaps, but a record is split before its
    byte ranges add up to more than MAX_READ_BYTES."""
    monkeypatch.setattr("hdf5_to_records.writing.writer.MAX_READ_BYTES", 64 << 10)
    path = tmp_path / "src.h5"
    values = np.arange(100_000, dtype="<i4")
    with h5py.File(path, "w") as h5:
        h5["x"] = values
        h5.create_dataset("z", data=values, chunks=(1000,), compression="gzip")
    out = convert_small(path, tmp_path / "out", mode="index", rows="::997")
    manifest = load_manifest(out)
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(out, shard["file"])):
            fmap = tf.train.Example.FromString(raw.numpy()).features.feature
            ranges = np.array(fmap["x/ref"].int64_list.value).reshape(-1, 3)
            chunks = np.array(fmap["z/ref"].int64_list.value).reshape(-1, 3)
            count = fmap["__rows__"].int64_list.value[0]
            assert ranges[:, 1].sum() <= 64 << 10 or count == 1
            assert len(chunks) * 4000 <= 64 << 10 or count == 1
    got = read_all(out)
    assert_same(got["x"], values[::997])
    assert_same(got["z"], values[::997])


# ---- auto mode's mix, --mode index's refusals ---------------------------------------


def test_auto_mode_mixes_references_and_copies(tmp_path):
    path = tmp_path / "mix.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("ok", data=values_for(">f4", (N, 3), 1))
        h5.create_dataset(
            "small", data=values_for("<i2", (N, 2), 2), chunks=(4, 2), compression="lzf"
        )
        h5["name"] = np.array([f"row{i}".encode() for i in range(N)], dtype="S6")
        h5.create_dataset(
            "text", data=[f"t{i}" * (i % 3 + 1) for i in range(N)], dtype=h5py.string_dtype()
        )
    out = convert_small(path, tmp_path / "out", mode="auto", rows_per_record=5)
    manifest = load_manifest(out)
    assert storage(out) == {"name": "copy", "ok": "reference", "small": "copy", "text": "copy"}
    assert manifest["format_version"] == 2
    assert list(manifest["sources"][0]["references"]) == ["ok"]
    got = read_all(out)
    for name in ("ok", "small"):
        assert_same(got[name], h5_read(path, name), name)
    assert got["name"].tolist() == h5_read(path, "name").tolist()
    assert got["text"].tolist() == h5_read(path, "text").tolist()
    assert got["text"][4] == b"t4t4"


def test_copy_mode_manifest_stays_version_1(tmp_path):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(N, dtype="<f4")
    manifest = load_manifest(convert_small(path, tmp_path / "out"))
    assert manifest["format_version"] == 1
    assert "source_roots" not in manifest and "references" not in manifest["sources"][0]
    assert storage(tmp_path / "out") == {"x": "copy"}


def _bad(kind: str):
    """Write a dataset that cannot be referenced; return the reason's expected text."""

    def write(h5: h5py.File) -> None:
        data = np.linspace(-3, 3, N * 6, dtype="<f4").reshape(N, 2, 3)  # finite: scaleoffset
        if kind == "compact":
            compact(h5, "bad", data)
        elif kind == "lzf":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), compression="lzf")
        elif kind == "scaleoffset":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), scaleoffset=2)
        elif kind == "blosc":
            hdf5plugin = pytest.importorskip("hdf5plugin")
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), **hdf5plugin.Blosc())
        elif kind == "split_rows":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 1))
        elif kind == "strings":
            h5["bad"] = np.array([b"s%d" % i for i in range(N)])
        elif kind == "partial":
            ds = h5.create_dataset("bad", shape=data.shape, dtype="<f4", chunks=(4, 2, 3))
            ds[:8] = data[:8]

    return write


_FILTER = (
    "filter '{}' (is not gzip, shuffle or fletcher32|only gzip, shuffle and fletcher32 are decoded)"
)
NOT_REFERENCEABLE = {  # kind -> the reason, a regular expression
    "compact": re.escape("compact layout (stored in the object header)"),
    "lzf": _FILTER.format("lzf"),
    "scaleoffset": _FILTER.format("scaleoffset"),
    "blosc": _FILTER.format("blosc"),
    "split_rows": re.escape("chunks (4, 2, 1) split rows of shape (2, 3)"),
    "strings": re.escape("strings are stored by value"),
    "partial": re.escape("some chunks were never written (they read as fill values)"),
}


@pytest.mark.parametrize("kind", NOT_REFERENCEABLE)
def test_index_mode_refuses_what_it_cannot_reference(tmp_path, kind):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["ok"] = np.arange(N, dtype=">i4")
        _bad(kind)(h5)
    reason = NOT_REFERENCEABLE[kind]
    message = (
        re.escape("--mode index: cannot reference feature(s) 'bad': ")
        + reason
        + re.escape(" (/bad in src.h5); use --mode auto to copy them")
    )
    with pytest.raises(NotReferenceable, match=f"^{message}$"):
        convert_small(path, tmp_path / "index", mode="index")
    assert not (tmp_path / "index" / "manifest.json").exists()
    # auto copies the feature and references the rest
    out = convert_small(path, tmp_path / "auto", mode="auto")
    assert storage(out) == {"bad": "copy", "ok": "reference"}
    got = read_all(out)
    assert_same(got["ok"], h5_read(path, "ok"), "ok")
    if kind == "strings":
        assert got["bad"].tolist() == h5_read(path, "bad").tolist()
    else:
        assert_same(got["bad"], h5_read(path, "bad"), "bad")


def test_index_mode_names_every_feature_and_the_first_file_at_fault(tmp_path):
    for name, lzf in (("a.h5", False), ("b.h5", True), ("c.h5", True)):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["ok"] = np.arange(N, dtype="<i4")
            options = {"chunks": (4,), "compression": "lzf"} if lzf else {}
            h5.create_dataset("later", data=np.arange(N, dtype="<f8"), **options)
            h5["text"] = np.array([b"t"] * N)
    message = (
        re.escape("--mode index: cannot reference feature(s) 'later': ")
        + NOT_REFERENCEABLE["lzf"]
        + re.escape(
            " (/later in b.h5); 'text': strings are stored by value (/text in a.h5); "
            "use --mode auto to copy them"
        )
    )
    with pytest.raises(NotReferenceable, match=f"^{message}$"):
        convert_small(str(tmp_path / "*.h5"), tmp_path / "out", mode="index")
    out = convert_small(str(tmp_path / "*.h5"), tmp_path / "auto", mode="auto")
    assert storage(out) == {"later": "copy", "ok": "reference", "text": "copy"}
    got = read_all(out)
    expected = np.concatenate([h5_read(tmp_path / n, "later") for n in ("a.h5", "b.h5", "c.h5")])
    assert_same(got["later"], expected, "later")


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"transform": "builtins:dict"}, "--transform outputs are stored by value"),
        ({"groups": "/s/*", "features": {"v": "v"}}, "--groups examples are stored by value"),
    ],
)
def test_index_mode_refuses_transforms_and_groups(tmp_path, options, reason):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["v"] = np.arange(N, dtype="<f4")
        for i in range(3):
            h5[f"s/{i}/v"] = np.arange(4, dtype="<f4") + i
    name = next(iter(options.get("features", {"v": None})))
    with pytest.raises(NotReferenceable, match=re.escape(f"feature(s) {name!r}: {reason}; ")):
        convert_small(path, tmp_path / "out", mode="index", **options)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_mode_index_refusal_is_one_line(tmp_path):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["ok"] = np.arange(N, dtype="<i4")
        h5.create_dataset("packed", data=np.arange(N, dtype="<f4"), chunks=(4,), compression="lzf")
    out = tmp_path / "out"
    args = ["convert", str(path), "-o", str(out), "--workers", "1", "--mode", "index"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: --mode index: cannot reference feature(s) 'packed': ")
    assert "filter 'lzf'" in lines[0] and "(/packed in src.h5)" in lines[0]
    assert "Traceback" not in result.output
    assert not (out / "manifest.json").exists()

    result = CliRunner().invoke(main, [*args[:-1], "auto"])
    assert result.exit_code == 0, result.output
    assert storage(out) == {"ok": "reference", "packed": "copy"}
    assert_same(read_all(out)["packed"], h5_read(path, "packed"), "packed")


# ---- size of the output ------------------------------------------------------------


def test_index_output_is_a_small_fraction_of_the_source(tmp_path):
    rows, width = 2000, 1024  # 4 KiB rows
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5["x"] = rng.standard_normal((rows, width)).astype("<f4")
        y = np.arange(rows * width, dtype=">i4").reshape(rows, width)
        h5.create_dataset("y", data=y, chunks=(16, width))
    out = convert_small(path, tmp_path / "out", mode="index", num_shards=2)
    manifest = load_manifest(out)
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    index_bytes = sum(os.path.getsize(os.path.join(out, s["file"])) for s in shards)
    assert index_bytes == sum(s["num_bytes"] for s in shards)
    source_bytes = os.path.getsize(path)
    assert source_bytes > 2 * rows * width * 4
    assert index_bytes * 500 < source_bytes, (index_bytes, source_bytes)
    for name in ("x", "y"):
        got = np.concatenate([b[name].numpy() for b in reader.load(out, batch_size=512)])
        assert_same(got, h5_read(path, name), name)

    # rows far apart: contiguous reads split at gaps over 1 MiB, rows still right
    sparse = convert_small(path, tmp_path / "sparse", mode="index", rows="7::300")
    got = read_all(sparse)
    for name in ("x", "y"):
        assert_same(got[name], h5_read(path, name, np.arange(7, rows, 300)), name)
