"""The HDF5 the ecosystem writes, written by the libraries themselves (tests/ecosystem.py):
PyTables tables (zlib and blosc, big-endian), pandas ``format="table"`` frames, AnnData
files (CSR ``X``, categorical ``obs``, gzip or not), netCDF4 variables, variable-length
arrays. Every value read back is compared with h5py's (scipy's for the sparse rows), in
copy mode and in ``--mode auto``.
"""

from __future__ import annotations

import json
import re

import h5py
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from click.testing import CliRunner

from hdf5_to_records import SchemaError
from hdf5_to_records.cli import main

from ecosystem import (
    write_anndata,
    write_anndata_csc,
    write_h5py_vlen,
    write_netcdf4,
    write_pandas_table,
    write_pytables_table,
    write_pytables_vlarray,
)

reader = pytest.importorskip("reader")
tf = pytest.importorskip("tensorflow")

TABLE_FIELDS = ("color", "flag", "float32", "int32", "label", "nested/x", "nested/y", "vec3")


def load_all(directory: str, split: str = "train", **options) -> dict:
    """Every example of a split as one batch, NumPy values (sparse: SparseTensors)."""
    batch = next(iter(reader.load(directory, split, batch_size=1_000_000, **options)))
    return {k: v if isinstance(v, tf.SparseTensor) else v.numpy() for k, v in batch.items()}


def storages(directory: str) -> dict[str, str]:
    with open(f"{directory}/manifest.json") as handle:
        manifest = json.load(handle)
    return {f["name"]: f["storage"] for f in manifest["features"]}


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def h5_field(path, dataset: str, field: str) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        values = h5[dataset][()]
    for part in field.split("/"):
        values = values[part]
    return values


# -- PyTables tables -------------------------------------------------------------------


@pytest.mark.parametrize("complib", ["zlib", "blosc"])
@pytest.mark.parametrize("mode", ["copy", "auto"])
def test_pytables_table_converts_one_feature_per_field(tmp_path, convert_h5, complib, mode):
    pytest.importorskip("tables")
    if complib == "blosc":
        pytest.importorskip("hdf5plugin")
    path = tmp_path / "table.h5"
    expected = write_pytables_table(path, complib=complib)
    out = convert_h5(path, features={"t": "/group/table"}, mode=mode)
    got = load_all(out)
    names = {f"t_{f.replace('/', '_')}": f for f in TABLE_FIELDS}
    assert set(got) == set(names)
    for name, field in names.items():
        want = h5_field(path, "/group/table", field)
        if field == "flag":  # a PyTables BoolCol: an 8-bit bitfield that h5py reads as uint8
            assert got[name].dtype == bool
            want = want.astype(bool)
            assert np.array_equal(want, expected["flag"])
        assert np.array_equal(got[name], want), name
    referenced = {n for n, s in storages(out).items() if s == "reference"}
    if mode == "auto" and complib == "zlib":  # gzip + shuffle over whole records
        assert referenced == set(names) - {"t_label"}  # strings are stored by value
    else:  # blosc is not decoded by the reader: --mode auto copies
        assert referenced == set()
    assert cli("verify", out, "--deep")[0] == 0


def test_big_endian_table_fields_are_referenced_and_read_in_native_order(tmp_path, convert_h5):
    pytest.importorskip("tables")
    path = tmp_path / "big.h5"
    write_pytables_table(path, byteorder="big")
    with h5py.File(path) as h5:
        assert h5["/group/table"].dtype["float32"].byteorder == ">"
    features = {
        "x": "/group/table[float32]",
        "v": "/group/table[vec3]",
        "y": "/group/table[nested/y]",
    }
    out = convert_h5(path, features=features, mode="index", rows="3:900:7")
    got = load_all(out)
    rows = np.arange(3, 900, 7)
    for name, path_field in features.items():
        field = path_field.split("[")[1].rstrip("]")
        assert np.array_equal(got[name], h5_field(path, "/group/table", field)[rows]), name
    assert got["v"].shape == (rows.size, 3)
    assert set(storages(out).values()) == {"reference"}


def test_contiguous_compound_fields_are_referenced_by_strided_views(tmp_path, convert_h5):
    # h5py writes compound datasets contiguous by default; mixed byte orders are fine here.
    dtype = np.dtype([("id", "<i8"), ("pos", ">f4", (2,)), ("ok", "?"), ("w", ">f8")])
    rng = np.random.default_rng(5)
    table = np.zeros(3000, dtype)
    table["id"] = np.arange(3000)
    table["pos"] = rng.standard_normal((3000, 2))
    table["ok"] = rng.random(3000) < 0.5
    table["w"] = rng.standard_normal(3000)
    path = tmp_path / "contiguous.h5"
    with h5py.File(path, "w") as h5:
        h5["t"] = table
    rows = [2999, 0, 17, 18, 19, 1500, 17]
    out = convert_h5(path, features={"t": "/t"}, mode="index", rows=",".join(map(str, rows)))
    got = load_all(out)
    for field in dtype.names:
        assert np.array_equal(got[f"t_{field}"], table[field][rows]), field
    assert got["t_ok"].dtype == bool and got["t_pos"].shape == (len(rows), 2)
    assert cli("verify", out, "--deep")[0] == 0


def test_a_named_field_keeps_its_enum_labels_and_a_missing_one_is_named(tmp_path, convert_h5):
    pytest.importorskip("tables")
    path = tmp_path / "table.h5"
    write_pytables_table(path)
    out = convert_h5(path, features={"color": "/group/table[color]"}, mode="auto")
    with open(f"{out}/manifest.json") as handle:
        (feature,) = json.load(handle)["features"]
    assert feature["enum"] == {"red": 0, "green": 1, "blue": 2}
    assert feature["source"] == "/group/table[color]"
    code, output = cli("convert", path, "-o", tmp_path / "bad", "--feature", "c=/group/table[hue]")
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert "no field 'hue'; it has color, flag, float32" in output and "table.h5" in output
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_inspect_lists_the_fields_and_whether_each_is_referenced(tmp_path):
    pytest.importorskip("tables")
    path = tmp_path / "table.h5"
    write_pytables_table(path)
    code, output = cli("inspect", path)
    assert code == 0
    assert "8 fields, each a feature (NAME=path[field])" in output
    assert "[vec3]  float64  (3,)  index: yes" in output
    assert "[label]  string(fixed[8], ascii)  index: no (strings are stored by value)" in output
    assert "[flag]  bool  index: yes" in output


# -- pandas ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["copy", "auto"])
def test_pandas_table_frames_convert_by_value_block_and_by_data_column(tmp_path, convert_h5, mode):
    pytest.importorskip("pandas")
    path = tmp_path / "frames.h5"
    frames = write_pandas_table(path)
    out = convert_h5(path, features={"f": "/frame/table", "d": "/frame_dc/table"}, mode=mode)
    got = load_all(out)
    frame, columns = frames["frame"], frames["frame_dc"]
    assert np.array_equal(got["f_index"], frame.index.to_numpy())
    # values_block_k: one (1,) sub-array per block of same-dtype columns, in dtype order
    for k, column in enumerate(["int64", "float64", "float32", "bool"]):
        assert got[f"f_values_block_{k}"].shape == (len(frame), 1)
        assert np.array_equal(got[f"f_values_block_{k}"][:, 0], frame[column].to_numpy()), column
    strings = [s.encode() for s in frame["string"]]
    assert got["f_values_block_4"][:, 0].tolist() == strings
    assert np.array_equal(got["f_values_block_5"][:, 0], frame["category"].cat.codes.to_numpy())
    for column in ["int64", "float64", "float32", "bool"]:
        assert np.array_equal(got[f"d_{column}"], columns[column].to_numpy()), column
    assert got["d_string"].tolist() == strings
    if mode == "auto":
        assert storages(out)["d_float32"] == "reference"
        assert storages(out)["f_values_block_1"] == "reference"


# -- AnnData and sparse matrices -------------------------------------------------------

ANNDATA_FEATURES = {
    "X": "/X",
    "raw": "/raw/X",
    "louvain": "/obs/louvain",
    "bulk": "/obs/bulk_labels",
    "pca": "/obsm/X_pca",
    "cell": "/obs/_index",
}


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("mode", ["copy", "auto"])
def test_anndata_rows_convert_with_splits_and_shuffle(tmp_path, convert_h5, compression, mode):
    pytest.importorskip("anndata")
    path = tmp_path / "cells.h5ad"
    expected = write_anndata(path, compression=compression)
    out = convert_h5(
        path,
        features=ANNDATA_FEATURES,
        mode=mode,
        splits={"train": 0.8, "test": 0.2},
        shuffle=True,
        seed=3,
    )
    names = {name: i for i, name in enumerate(expected["obs_names"])}
    seen = []
    for split in ("train", "test"):
        got = load_all(out, split)
        rows = [names[c.decode()] for c in got["cell"]]
        seen += rows
        assert got["X"].dense_shape.numpy().tolist() == [len(rows), 200]
        assert np.array_equal(tf.sparse.to_dense(got["X"]).numpy(), expected["X"][rows].toarray())
        raw = tf.sparse.to_dense(got["raw"]).numpy()
        assert np.array_equal(raw, expected["raw_X"][rows].toarray())
        assert np.array_equal(got["louvain"], expected["louvain_codes"][rows])
        assert np.array_equal(got["bulk"], expected["bulk_labels_codes"][rows])
        assert np.array_equal(got["pca"], expected["X_pca"][rows])
    assert sorted(seen) == list(range(300)) and seen != sorted(seen)
    with open(f"{out}/manifest.json") as handle:
        manifest = json.load(handle)
    features = {f["name"]: f for f in manifest["features"]}
    assert manifest["format_version"] == 5  # 4 (sparse) and 5 (framing digests)
    assert features["X"]["sparse"] is True and features["X"]["shape"] == [200]
    categories = list(expected["bulk_labels_categories"])
    assert list(features["bulk"]["enum"]) == categories
    code, info = cli("info", out)
    assert code == 0 and "sparse CSR rows, dense shape (200)" in info
    assert cli("verify", out, "--deep")[0] == 0


def test_sparse_rows_read_dense_one_at_a_time_and_selected(tmp_path, convert_h5):
    pytest.importorskip("anndata")
    path = tmp_path / "cells.h5ad"
    expected = write_anndata(path)
    out = convert_h5(path, features={"X": "/X"}, rows="10:200:3", rows_per_record=5)
    rows = np.arange(10, 200, 3)
    dense = load_all(out, sparse="dense")["X"]
    assert dense.dtype == np.float32 and np.array_equal(dense, expected["X"][rows].toarray())
    shuffled = load_all(out, shuffle=True, seed=1, sparse="dense")["X"]
    order = [int(np.flatnonzero((dense == row).all(1))[0]) for row in shuffled]
    assert sorted(order) == list(range(rows.size)) and order != sorted(order)
    sizes = [int(b["X"].dense_shape[0]) for b in reader.load(out, batch_size=7)]
    assert sizes == [7] * (rows.size // 7) + [rows.size % 7]  # whole batches across records
    first = next(iter(reader.load(out)))["X"]
    assert isinstance(first, tf.SparseTensor) and first.dense_shape.numpy().tolist() == [200]
    assert np.array_equal(tf.sparse.to_dense(first).numpy(), expected["X"][10].toarray()[0])


def test_a_csc_matrix_is_refused_with_how_to_convert_it(tmp_path):
    pytest.importorskip("anndata")
    path = tmp_path / "csc.h5ad"
    write_anndata_csc(path)
    code, output = cli("convert", path, "-o", tmp_path / "out", "--feature", "X=/X")
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert "CSC sparse matrix" in output and "tocsr()" in output and "csc.h5ad" in output
    assert not (tmp_path / "out" / "manifest.json").exists()


def write_csr_group(path, matrix, *, shape=True) -> None:
    with h5py.File(path, "w") as h5:
        group = h5.create_group("m")
        group["data"], group["indices"], group["indptr"] = matrix
        if shape:
            group.attrs["shape"] = (len(matrix[2]) - 1, 6)


def test_a_plain_csr_group_needs_a_shape_and_its_rows_are_checked(tmp_path, convert_h5):
    data = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    indptr = np.array([0, 2, 2, 4])
    path = tmp_path / "plain.h5"
    write_csr_group(path, (data, np.array([5, 1, 0, 3]), indptr), shape=False)
    with pytest.raises(SchemaError, match="without a shape attribute; give it with --sparse-shape"):
        convert_h5(path, features={"m": "/m"})
    out = convert_h5(path, features={"m": "/m"}, sparse_shapes={"m": "3,6"})
    want = [[0, 2, 0, 0, 0, 1], [0] * 6, [3, 0, 0, 4, 0, 0]]  # row 0's columns were unsorted
    assert load_all(out, sparse="dense")["m"].tolist() == want
    for indices, message in (([1, 1, 0, 3], "a column appears twice"), ([1, 9, 0, 3], "outside")):
        bad = tmp_path / "bad.h5"
        write_csr_group(bad, (data, np.array(indices), indptr))
        with pytest.raises(SchemaError, match=message):
            convert_h5(bad, features={"m": "/m"})


# -- variable-length arrays and netCDF4 ------------------------------------------------


@pytest.mark.parametrize("writer", [write_pytables_vlarray, write_h5py_vlen])
@pytest.mark.parametrize("mode", ["copy", "auto"])
def test_variable_length_arrays_become_ragged_features(tmp_path, convert_h5, writer, mode):
    pytest.importorskip("tables")
    path = tmp_path / "ragged.h5"
    expected = writer(path)
    rows = [0, 5, 3, 199, 42]
    out = convert_h5(path, features={"r": "/ragged"}, mode=mode, rows=",".join(map(str, rows)))
    got = reader.load(out, batch_size=100)
    (batch,) = list(got)
    assert isinstance(batch["r"], tf.RaggedTensor)
    for value, row in zip(batch["r"].to_list(), rows):
        assert np.array_equal(np.asarray(value, expected["rows"][row].dtype), expected["rows"][row])
    assert storages(out) == {"r": "copy"}


def test_netcdf4_variables_and_coordinates_convert_and_reference(tmp_path, convert_h5):
    pytest.importorskip("netCDF4")
    path = tmp_path / "climate.nc"
    expected = write_netcdf4(path)
    features = {"t": "/temperature", "p": "/pressure", "time": "/time"}
    out = convert_h5(path, features=features, mode="auto")
    got = load_all(out)
    assert np.array_equal(got["t"], expected["temperature"])
    assert np.array_equal(got["p"], expected["pressure"])
    assert np.array_equal(got["time"], expected["time"])
    assert storages(out)["t"] == "reference"  # zlib + shuffle, one chunk per time step
    code, output = cli("verify", out, "--deep")
    assert code == 0, output
    with pytest.raises(SchemaError, match="features must share the axis-0 length"):
        convert_h5(path, features={"t": "/temperature", "lat": "/lat"})


def test_shuffles_larger_than_a_window_and_transforms_take_sparse_and_ragged_rows(
    tmp_path, convert_h5
):
    pytest.importorskip("anndata")
    from hdf5_to_records.planning.limits import Limits

    cells, ragged = tmp_path / "cells.h5ad", tmp_path / "ragged.h5"
    expected = write_anndata(cells, compression="gzip")
    rows = write_h5py_vlen(ragged)["rows"]
    small = Limits(window_bytes=4096)  # many windows: a shuffle that would be staged
    out = convert_h5(cells, features={"X": "/X", "cell": "/obs/_index"}, shuffle=True, limits=small)
    got = load_all(out)
    order = [int(c.decode().split("_")[1]) for c in got["cell"]]
    assert order != sorted(order)
    assert np.array_equal(tf.sparse.to_dense(got["X"]).numpy(), expected["X"][order].toarray())
    out = convert_h5(ragged, features={"r": "/ragged"}, shuffle=True, limits=small)
    values = reader.load(out, batch_size=1000)
    (batch,) = list(values)
    assert sorted(map(len, batch["r"].to_list())) == sorted(map(len, rows))
    out = convert_h5(
        cells, features={"X": "/X"}, rows="0:20", transform="conventions_transform:total"
    )
    assert np.allclose(load_all(out)["total"], expected["X"][:20].toarray().sum(1))


def test_a_sparse_matrix_in_a_group_example_is_refused(tmp_path, convert_h5):
    path = tmp_path / "groups.h5"
    write_csr_group(path, (np.ones(2, "f4"), np.array([0, 1]), np.array([0, 1, 2])))
    with h5py.File(path, "a") as h5:
        h5.move("m", "g0/m")
    with pytest.raises(SchemaError, match="is a sparse matrix: its rows are examples"):
        convert_h5(path, groups="/g*", features={"m": "m"})


@hypothesis.given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 9),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
@hypothesis.settings(max_examples=40)
def test_csr_rows_read_back_as_scipy_reads_them_even_unsorted(rows, cols, density, seed):
    import scipy.sparse as sp

    from hdf5_to_records.planning.group_columns import SparseMatrix

    rng = np.random.default_rng(seed)
    matrix = sp.random(rows, cols, density=density, format="csr", dtype=np.float32, rng=rng)
    order = np.concatenate(  # shuffle each row's entries: scipy allows unsorted CSR rows
        [rng.permutation(np.arange(a, b)) for a, b in zip(matrix.indptr[:-1], matrix.indptr[1:])]
        or [np.empty(0, np.int64)]
    ).astype(np.int64)
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as h5:
        group = h5.create_group("m")
        group["data"], group["indices"] = matrix.data[order], matrix.indices[order]
        group["indptr"], group.attrs["shape"] = matrix.indptr, matrix.shape
        lo = int(rng.integers(0, rows))
        starts, indices, values = SparseMatrix(group, where="m").read_span(lo, rows)
    for r in range(lo, rows):
        a, b = starts[r - lo], starts[r - lo + 1]
        dense = np.zeros(cols, np.float32)
        dense[indices[a:b]] = values[a:b]
        assert np.array_equal(dense, matrix[r].toarray()[0])
        assert (np.diff(indices[a:b]) > 0).all()


def test_fields_share_a_read_only_of_the_very_same_selection():
    from hdf5_to_records.planning.columns import FieldColumn, shared_reads

    table = np.zeros(5000, [("a", "<i4"), ("b", ">f8")])
    table["a"], table["b"] = np.arange(5000), -np.arange(5000)
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as h5:
        h5["t"] = table
        a, b = FieldColumn(h5["t"], "a"), FieldColumn(h5["t"], "b")
        first = np.arange(0, 4000, 2)
        second = first.copy()
        second[1000] += 1  # the same repr (NumPy elides the middle), another selection
        with shared_reads():
            assert a[first][1000] == 2000 and a[second][1000] == 2001
            assert b[first][1000] == -2000 and a[10:20].tolist() == list(range(10, 20))


def test_fields_of_tables_with_variable_length_members_are_copied_not_referenced(
    tmp_path, convert_h5
):
    # h5py's dtype packs a vlen string as an 8-byte pointer; the file stores 16 bytes:
    # byte offsets taken from the dtype would read the wrong bytes.
    dtype = np.dtype([("a", "<i4"), ("s", h5py.string_dtype()), ("b", "<f8")])
    table = np.zeros(20, dtype)
    table["a"], table["s"], table["b"] = np.arange(20), [f"s{i}" for i in range(20)], 1.5
    for layout in ({}, {"chunks": (5,)}):
        path = tmp_path / f"vlen{len(layout)}.h5"
        with h5py.File(path, "w") as h5:
            h5.create_dataset("t", data=table, **layout)
        out = convert_h5(path, features={"t": "/t"}, mode="auto")
        got = load_all(out)
        assert np.array_equal(got["t_a"], table["a"]) and np.array_equal(got["t_b"], table["b"])
        assert set(storages(out).values()) == {"copy"}


def test_odd_compound_names_and_malformed_groups_get_one_line_errors(tmp_path, convert_h5):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        h5["slash"] = np.array([(1, 2.0)] * 4, [("a/b", "<i4"), ("c", "<f4")])
        h5["a[1]"] = np.arange(4)  # a dataset whose name ends in [..] is itself
        h5["scalar"] = np.array((np.arange(3.0), 1), [("v", "<f8", (3,)), ("k", "<i4")])
        h5["y"] = np.arange(3)
        h5["g/inner"] = np.arange(3)
    got = load_all(convert_h5(path, features={"s": "/slash", "x": "/a[1]"}))
    assert got["s_a_b"].tolist() == [1] * 4 and got["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(SchemaError, match=r"\[v\] selects a field, but '/g' in odd.h5 is a group"):
        convert_h5(path, features={"v": "/g[v]"})
    with pytest.raises(SchemaError, match=r"dataset /scalar\[v\] in odd.h5 is scalar"):
        convert_h5(path, features={"v": "/scalar[v]", "y": "/y"})
    cases = {
        "shape": ("3,5", "attribute 'shape' is"),
        "negative": ((3, -2), "do not agree with shape (3, -2)"),
        "strings": ((3, 5), "CSR data of dtype |S1 is not numeric"),
    }
    for name, (shape, message) in cases.items():
        bad = tmp_path / f"{name}.h5"
        with h5py.File(bad, "w") as h5:
            group = h5.create_group("X")
            group["data"] = np.array([b"a", b"b"]) if name == "strings" else np.ones(2, "f4")
            group["indices"], group["indptr"] = np.array([0, 1]), np.array([0, 1, 2, 2])
            group.attrs["shape"] = shape
        with pytest.raises(SchemaError, match=re.escape(message)):
            convert_h5(bad, features={"X": "/X"})
