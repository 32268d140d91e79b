"""Files as they come in the wild: scene files with large rows and compressed chunks,
every HDF5 chunk index and file-format version, resizable datasets with unwritten
chunks, user blocks, virtual datasets, and the inputs the converter must refuse
cleanly (by error class, naming the dataset and the file).
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from hdf5_to_records import (
    DatasetNotFound,
    FilterUnavailable,
    SchemaError,
    SourceNotFound,
    SourceUnreadable,
    UnsupportedDtype,
)
from hdf5_to_records.samples import write_scene_file

from records import load_manifest, read_split


def h5_rows(path, dataset: str, rows=None) -> list:
    with h5py.File(path, "r") as h5:
        values = h5[dataset][()]
    return [values[i] for i in (range(len(values)) if rows is None else rows)]


@pytest.mark.parametrize("layout, workers", [("gzip", 2), ("chunked", 1), ("contiguous", 1)])
def test_scene_files_with_large_rows(tmp_path, convert_h5, check_examples, layout, workers):
    # 21 rows of 4096x9 float32 points: two 16-row chunks, the second partial.
    a = write_scene_file(str(tmp_path / "scenes_a.h5"), 21, layout=layout, seed=1)
    b = write_scene_file(str(tmp_path / "scenes_b.h5"), 17, layout=layout, seed=2)
    picks = {a: [15, 16, 20, 3], b: [16, 0]}  # rows 15 and 16 straddle a chunk edge
    for path, rows in picks.items():
        with h5py.File(path, "a") as h5:
            h5["pick"] = rows
    out = convert_h5(
        [a, b],
        features={"data": "/data", "label": "/label"},
        rows="@/pick",
        shuffle=True,
        seed=3,
        num_shards=2,
        workers=workers,
        rows_per_record=2,
    )
    got = read_split(out)
    # Recover the shuffled order from the first value of each row, then compare all.
    expected = {}
    for path, rows in picks.items():
        with h5py.File(path, "r") as h5:
            for row in rows:
                expected[h5["data"][row, 0, 0].tobytes()] = (h5["data"][row], h5["label"][row])
    assert len(got["data"]) == len(expected) == 6
    order = [expected[example[0, 0].tobytes()] for example in got["data"]]
    check_examples(got["data"], [d for d, _ in order], what="scene data")
    check_examples(got["label"], [lab for _, lab in order], what="scene label")


def _chunk_index_file(path) -> dict[str, np.ndarray]:
    """Datasets stored with each HDF5 chunk index and odd chunk shapes."""
    values = np.arange(20 * 4 * 3, dtype="<i4").reshape(20, 4, 3) * 7 - 100
    with h5py.File(path, "w", libver="latest", userblock_size=512, track_order=True) as h5:
        h5.create_dataset("single_chunk", data=values, chunks=values.shape)
        h5.create_dataset("fixed_array", data=values, chunks=(3, 4, 3))
        h5.create_dataset("extensible", data=values, chunks=(6, 2, 3), maxshape=(None, 4, 3))
        h5.create_dataset("btree_v2", data=values, chunks=(7, 3, 2), maxshape=(None, None, 3))
        h5.create_dataset("big_chunk", data=values, chunks=(64, 4, 3), maxshape=(None, 4, 3))
        h5.create_dataset("scaleoffset", data=values, chunks=(5, 4, 3), scaleoffset=0)
        partly = h5.create_dataset(
            "partly_written",
            shape=(20, 2),
            chunks=(4, 2),
            dtype=">f8",
            fillvalue=-1.5,
            maxshape=(None, 2),
            compression="gzip",
        )
        partly[3:9] = np.linspace(0, 1, 12).reshape(6, 2)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((6,))
        dcpl.set_filter(h5py.h5z.FILTER_NBIT, 0, ())
        nbit_type = h5py.h5t.STD_I32LE.copy()
        nbit_type.set_precision(12)
        h5py.h5d.create(h5.id, b"nbit", nbit_type, h5py.h5s.create_simple((20,)), dcpl=dcpl)
        h5["nbit"][...] = np.arange(20) * 50 - 500
        if h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
            h5.create_dataset(
                "szip", data=values[:, :, 0].astype("f4"), chunks=(8, 4), compression="szip"
            )
    with h5py.File(path, "a", libver="earliest") as h5:
        h5.create_dataset("btree_v1", data=values, chunks=(9, 4, 1), compression="gzip")
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def test_every_chunk_index_and_filter(tmp_path, convert_h5, check_examples):
    path = tmp_path / "indexes.h5"
    datasets = _chunk_index_file(path)
    assert (datasets["partly_written"][:3] == -1.5).all()  # unwritten chunks read the fill value
    out = convert_h5(path, rows="::-1,2,2", features={n: "/" + n for n in datasets})
    got = read_split(out)
    rows = [*range(19, -1, -1), 2, 2]
    for name in datasets:
        check_examples(got[name], h5_rows(path, name, rows), what=name)


def test_virtual_dataset(tmp_path, monkeypatch, write_h5, convert_h5, check_examples):
    write_h5(tmp_path / "part0.h5", {"x": np.arange(6, dtype=">i2") * 3}, "gzip")
    write_h5(tmp_path / "part1.h5", {"x": np.arange(6, dtype="<i2") * -1})
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as h5:
        layout = h5py.VirtualLayout((15,), "<i2")
        layout[0:6] = h5py.VirtualSource("part0.h5", "x", shape=(6,))
        layout[6:9] = h5py.VirtualSource("part1.h5", "x", shape=(6,))[::2]
        h5.create_virtual_dataset("x", layout, fillvalue=99)  # rows 9:15 map to no source
    monkeypatch.chdir(tmp_path.parent)
    out = convert_h5(path, rows="::-1")
    expected = h5_rows(path, "x", range(14, -1, -1))
    assert [int(v) for v in expected] == [99] * 6 + [-4, -2, 0, 15, 12, 9, 6, 3, 0]
    check_examples(read_split(out)["x"], expected, what="virtual dataset")


def test_virtual_dataset_with_a_missing_source_is_refused(tmp_path, write_h5, convert_h5):
    write_h5(tmp_path / "part0.h5", {"x": np.arange(6, dtype="i2")})
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as h5:
        layout = h5py.VirtualLayout((12,), "i2")
        layout[0:6] = h5py.VirtualSource("part0.h5", "x", shape=(6,))
        layout[6:12] = h5py.VirtualSource("gone.h5", "x", shape=(6,))
        h5.create_virtual_dataset("x", layout, fillvalue=0)
    # HDF5 itself would quietly read zeros for rows 6:12.
    with pytest.raises(SourceNotFound, match=r"virtual dataset /x in vds\.h5: .*gone\.h5"):
        convert_h5(path)


# -- inputs that must be refused -------------------------------------------------------


@pytest.fixture
def odd_file(tmp_path):
    """A file with one dataset of each unconvertible kind, next to a good one."""
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        h5["good"] = np.arange(3)
        h5["compound"] = np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")])
        h5.create_dataset("vlen2d", (3, 2), dtype=h5py.vlen_dtype("i4"))
        refs = h5.create_dataset("refs", (3,), dtype=h5py.ref_dtype)
        refs[0] = h5["good"].ref
        h5.create_dataset("regions", (3,), dtype=h5py.regionref_dtype)
        h5.create_dataset("triples", (3,), dtype=np.dtype(("<i4", (3,))))
        h5["scalar"] = 5
        h5["group/inner"] = np.arange(3)
        h5["dangling"] = h5py.SoftLink("/nowhere")
        h5["elsewhere"] = h5py.ExternalLink("missing.h5", "/x")
    return path


@pytest.mark.parametrize(
    "dataset, error, message",
    [
        ("/compound[z]", SchemaError, "dataset /compound in odd.h5: no field 'z'; it has x, y"),
        ("/good[x]", SchemaError, "dataset /good in odd.h5: [x] selects a field, but the dataset"),
        (
            "/vlen2d",
            UnsupportedDtype,
            "dataset /vlen2d in odd.h5: variable-length int32 arrays are supported in 1-D",
        ),
        ("/refs", UnsupportedDtype, "dataset /refs in odd.h5: object/region references"),
        ("/regions", UnsupportedDtype, "dataset /regions in odd.h5: object/region references"),
        ("/triples", UnsupportedDtype, "dataset /triples in odd.h5: dtype ('<i4', (3,))"),
        ("/scalar", SchemaError, "dataset /scalar in odd.h5 is scalar"),
        ("/group", DatasetNotFound, "'/group' in odd.h5 is a group"),
        ("/dangling", DatasetNotFound, "'/dangling' in odd.h5 is a soft link to '/nowhere'"),
        (
            "/elsewhere",
            DatasetNotFound,
            "'/elsewhere' in odd.h5 is an external link to '/x' in missing.h5",
        ),
        ("/gooood", DatasetNotFound, "dataset '/gooood' not found in odd.h5; did you mean '/good'"),
    ],
)
def test_unconvertible_datasets_are_refused_by_name(odd_file, convert_h5, dataset, error, message):
    with pytest.raises(error, match=re.escape(f"feature 'x': {message}")):
        convert_h5(odd_file, features={"good": "/good", "x": dataset})


def test_unsupported_dtype_in_a_group_is_refused(tmp_path, convert_h5):
    path = tmp_path / "groups.h5"
    with h5py.File(path, "w") as h5:
        h5["g0/points"] = np.arange(3)
        h5["g1/points"] = np.arange(2)
        h5.create_dataset("g1/bad", (2,), dtype=h5py.vlen_dtype("f4"))
        h5.create_dataset("g0/bad", (2,), dtype=h5py.vlen_dtype("f4"))
    with pytest.raises(UnsupportedDtype, match=r"feature 'bad': dataset /g0/bad in groups\.h5"):
        convert_h5(path, groups="/g*")


def test_dataset_with_an_unavailable_filter_is_refused(tmp_path, convert_h5):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "packed.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.arange(10.0), chunks=(5,), **hdf5plugin.LZ4())
    h5py.h5z.unregister_filter(hdf5plugin.LZ4_ID)
    try:
        with pytest.raises(
            FilterUnavailable,
            match=r"dataset /x in packed\.h5: compression filter 'lz4' \(id 32004\) is not "
            "available",
        ):
            convert_h5(path)
    finally:
        hdf5plugin.register(filters=("lz4",))
    assert h5py.h5z.filter_avail(hdf5plugin.LZ4_ID)


def test_dataset_with_an_unknown_filter_is_refused(tmp_path, convert_h5):
    # An optional filter that no library provides: HDF5 writes the chunks unfiltered,
    # but the pipeline still names the filter, as in a file from a site with a plugin.
    path = tmp_path / "mystery.h5"
    with h5py.File(path, "w") as h5:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(32099, h5py.h5z.FLAG_OPTIONAL, (1,))
        space = h5py.h5s.create_simple((8,))
        h5py.h5d.create(h5.id, b"x", h5py.h5t.NATIVE_INT32, space, dcpl=dcpl)
        h5["x"][...] = np.arange(8)
    with pytest.raises(FilterUnavailable, match=r"dataset /x in mystery\.h5: .*\(id 32099\)"):
        convert_h5(path)


def test_files_that_are_not_hdf5_are_refused(tmp_path, write_h5, convert_h5):
    (tmp_path / "notes.h5").write_bytes(b"just some text, not HDF5\n" * 20)
    with pytest.raises(SourceUnreadable, match=r"notes\.h5: not an HDF5 file"):
        convert_h5(tmp_path / "notes.h5")
    whole = write_h5(tmp_path / "whole.h5", {"x": np.arange(5000.0)})
    data = open(whole, "rb").read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceUnreadable, match=r"cut\.h5: truncated"):
        convert_h5(tmp_path / "cut.h5")
    with pytest.raises(SourceNotFound, match=r"absent\.h5: no such file"):
        convert_h5(tmp_path / "absent.h5")


def test_refusals_leave_no_manifest(odd_file, tmp_path, convert_h5):
    out = tmp_path / "out"
    with pytest.raises(UnsupportedDtype, match="dataset /refs in odd.h5: object/region"):
        convert_h5(odd_file, features={"x": "/refs"}, output=out)
    assert not (out / "manifest.json").exists()
    good = convert_h5(odd_file, features={"x": "/good"})
    assert load_manifest(good)["splits"]["train"]["num_examples"] == 3


def test_ragged_groups_get_records_of_about_the_target_size(tmp_path, convert_h5, check_examples):
    path = tmp_path / "clouds.h5"
    with h5py.File(path, "w") as h5:
        for i in range(24):  # 24 clouds of ~4000 points: 48 kB each, 1.15 MB in all
            h5[f"cloud_{i:02d}/points"] = np.full((4000 + i, 3), i, "f4")
    out = convert_h5(path, groups="/cloud_*")
    check_examples(
        read_split(out)["points"], h5_rows_of_groups(path, "points"), what="ragged clouds"
    )
    manifest = load_manifest(out)
    # Records aim at 1 MiB (sharding.DEFAULT_RECORD_BYTES): about 21 clouds each, not 87381.
    assert manifest["records"]["rows_per_record"] * 4000 * 3 * 4 <= 2 << 20
    assert manifest["splits"]["train"]["num_records"] >= 2


def h5_rows_of_groups(path, name: str) -> list:
    with h5py.File(path, "r") as h5:
        return [h5[group][name][()] for group in sorted(h5)]


def test_small_chunked_scene_file(tmp_path, convert_h5, check_examples):
    path = write_scene_file(str(tmp_path / "small.h5"), 5, layout="gzip")
    out = convert_h5(path, features={"label": "/label"})
    check_examples(read_split(out)["label"], h5_rows(path, "label"), what="small scene file")
