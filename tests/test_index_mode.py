"""Index mode (``--mode index|auto``): what ``reader.load`` reads back from the HDF5
sources equals what h5py reads, value for value and dtype for dtype.

Covers the layouts the reader decodes itself (contiguous; chunked with 1, 3, 4, 5, 7 and
16 rows per chunk, partial last chunks; gzip levels 1 and 9, shuffle, fletcher32 and
their combinations; filter pipelines built in another order; chunks whose filter mask
skips filters), every numeric dtype in both byte orders, several sources of different
byte orders and chunkings, row selections, splits and shuffling (copy, index and auto
give the same examples in the same order), and batched reading.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.planning.limits import Limits

from indexing import (
    EXPECTED_FILTERS,
    LAYOUTS,
    MASKED,
    N,
    assert_same,
    read_all,
    shuffled,
    storage,
    values_for,
    with_filters,
)
from records import convert_small, load_manifest, tf


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


def test_records_never_read_more_than_the_cap(tmp_path):
    """Sparse small rows are read through their gaps, but a record is split before its
    byte ranges add up to more than MAX_READ_BYTES."""
    path = tmp_path / "src.h5"
    values = np.arange(100_000, dtype="<i4")
    with h5py.File(path, "w") as h5:
        h5["x"] = values
        h5.create_dataset("z", data=values, chunks=(1000,), compression="gzip")
    limits = Limits(max_read_bytes=64 << 10)
    out = convert_small(path, tmp_path / "out", mode="index", rows="::997", limits=limits)
    manifest = load_manifest(out)
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(out, shard["file"])):
            fmap = tf.train.Example.FromString(raw.numpy()).features.feature
            ranges = np.array(fmap["x/ref"].int64_list.value).reshape(-1, 4)
            chunks = np.array(fmap["z/ref"].int64_list.value).reshape(-1, 4)
            count = fmap["__rows__"].int64_list.value[0]
            assert ranges[:, 1].sum() <= 64 << 10 or count == 1
            assert len(chunks) * 4000 <= 64 << 10 or count == 1
    got = read_all(out)
    assert_same(got["x"], values[::997])
    assert_same(got["z"], values[::997])
