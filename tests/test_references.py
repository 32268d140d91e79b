"""references.py: what can be referenced, chunk tables, and the reference lists of a
record; fingerprint.py: the sampled content fingerprint."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from hdf5_to_records.format.reference import Reference
from hdf5_to_records.index.fingerprint import fingerprint
from hdf5_to_records.index.references import GAP_BYTES, ChunkTable, encode_refs, probe


@pytest.fixture
def h5(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        yield f


_GZ = {"chunks": (3, 4), "compression": "gzip", "shuffle": True, "fletcher32": True}


@pytest.mark.parametrize(
    "kwargs, expected, filters",
    [
        ({}, "contiguous", ()),
        ({"chunks": (3, 4)}, "chunked", ()),
        (_GZ, "chunked", ("shuffle", "gzip", "fletcher32")),
        ({"chunks": (3, 2)}, "chunks (3, 2) split rows of shape (4,)", None),
        ({"chunks": (3, 4), "compression": "lzf"}, "filter 'lzf' is not gzip", None),
        ({"chunks": (3, 4), "scaleoffset": 2}, "filter 'scaleoffset' is not gzip", None),
    ],
)
def test_probe_layouts(h5, kwargs, expected, filters):
    ds = h5.create_dataset("x", data=np.arange(40, dtype=">i4").reshape(10, 4), **kwargs)
    ref = probe(ds, ds.file.filename)
    if filters is None:
        assert isinstance(ref, str) and expected in ref
        return
    assert (ref.layout, ref.filters) == (expected, filters)
    assert (ref.dtype, ref.row_shape, ref.num_rows, ref.row_bytes) == (">i4", (4,), 10, 16)
    if ref.layout == "contiguous":
        assert ref.offset == ds.id.get_offset()
    else:
        assert ref.chunk_rows == 3


def test_probe_refuses_what_has_no_bytes_of_its_own(h5):
    h5["text"] = np.array([b"a", b"b"])
    h5.create_dataset("unwritten", shape=(4, 2), dtype="f4")
    sparse = h5.create_dataset("sparse", shape=(8, 2), dtype="f4", chunks=(2, 2))
    sparse[0] = 1
    h5["scalar"] = 3
    assert probe(h5["text"], h5.filename) == "strings are stored by value"
    assert probe(h5["unwritten"], h5.filename).startswith("never written")
    assert probe(h5["sparse"], h5.filename).startswith("some chunks were never written")
    assert probe(h5["scalar"], h5.filename) == "scalar dataset"


def test_probe_refuses_external_links(tmp_path):
    """An external link's bytes live in another file than the one the manifest lists."""
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["x"] = np.arange(8.0)
    with h5py.File(tmp_path / "main.h5", "w") as main:
        main["x"] = h5py.ExternalLink("other.h5", "/x")
        main["y"] = np.arange(8.0)
        main["alias"] = h5py.SoftLink("/y")
    with h5py.File(tmp_path / "main.h5", "r") as main:
        assert probe(main["x"], main.filename) == "external link into other.h5"
        assert probe(main["alias"], main.filename).layout == "contiguous"


def test_chunk_table_matches_hdf5_chunk_index(h5):
    ds = h5.create_dataset("x", data=np.arange(70.0).reshape(35, 2), chunks=(4, 2), compression=1)
    table = ChunkTable(ds, 4).table
    assert table.shape == (9, 3)  # 35 rows in 4-row chunks: the last one partial
    for i in range(9):
        info = ds.id.get_chunk_info_by_coord((4 * i, 0))
        assert tuple(table[i]) == (info.byte_offset, info.size, info.filter_mask)


def _contiguous(rows_total=1000, row_bytes=1000):
    return Reference("/x", "contiguous", "<u1", (row_bytes,), rows_total, offset=5000)


def test_encode_refs_contiguous_ranges_and_take():
    ref = _contiguous()
    gap_rows = GAP_BYTES // ref.row_bytes
    rows = np.array([10, 11, 12, 14, 12, 14 + gap_rows + 1])
    pieces, take = encode_refs(ref, rows, None)
    # 10..14 read as one range (the gap of row 13 is read through), then a far row.
    assert pieces == [5000 + 10 * 1000, 5 * 1000, 0, 5000 + (15 + gap_rows) * 1000, 1000, 0]
    assert take == [0, 1, 2, 4, 2, 5]


def test_encode_refs_omits_the_take_list_for_rows_in_order():
    pieces, take = encode_refs(_contiguous(), np.arange(20, 30), None)
    assert pieces == [5000 + 20 * 1000, 10 * 1000, 0] and take == []


def test_encode_refs_chunked_names_each_chunk_once():
    ref = Reference("/x", "chunked", "<f4", (2,), 40, chunk_rows=4, filters=("gzip",))

    class Table:
        table = np.array([[100 * i, 10 + i, 0] for i in range(10)], np.int64)

    pieces, take = encode_refs(ref, np.array([9, 1, 8, 2]), Table)
    assert pieces == [0, 10, 0, 200, 12, 0]  # chunks 0 and 2, in row order
    assert take == [4 + 1, 1, 4 + 0, 2]


def test_fingerprint_sees_rewrites_not_copies(tmp_path):
    path = tmp_path / "a.bin"
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)
    path.write_bytes(data.tobytes())
    copy = tmp_path / "b.bin"
    shutil.copy(path, copy)
    assert fingerprint(str(path)) == fingerprint(str(copy))
    data[0] ^= 1  # the HDF5 superblock lives at the start
    copy.write_bytes(data.tobytes())
    assert fingerprint(str(path)) != fingerprint(str(copy))
    assert fingerprint(str(path)).startswith("sha256:")
