"""``describe_file``: one line per group, dataset and link, with what a user needs to
write a selection, and unconvertible datasets flagged by name."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from hdf5_to_records import SourceNotFound, SourceUnreadable, describe_file


@pytest.fixture
def sample(tmp_path, write_h5):
    write_h5(tmp_path / "other.h5", {"x": np.zeros((6, 2), ">i4")}, "compact")
    path = tmp_path / "sample.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "packed",
            data=np.zeros((10, 3), ">i2"),
            chunks=(5, 3),
            compression="gzip",
            shuffle=True,
            fletcher32=True,
        )
        h5["plain"] = np.zeros(4, "<f4")
        h5["flag"] = np.array([True, False])
        h5["color"] = np.array([0, 1], dtype=h5py.enum_dtype({"RED": 0, "BLUE": 1}, "u1"))
        h5["text"] = np.array(["a"], dtype=h5py.string_dtype())
        h5["code"] = np.array([b"ab", b"c"])
        h5["wave"] = np.zeros(3, ">c16")
        h5["count"] = 5
        h5["pair"] = np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")])
        vlen = h5.create_dataset("ragged", (2,), dtype=h5py.vlen_dtype("i4"))
        vlen[0], vlen[1] = [1, 2], [3]
        refs = h5.create_dataset("refs", (1,), dtype=h5py.ref_dtype)
        refs[0] = h5["plain"].ref
        h5["scenes/s0/points"] = np.zeros((5, 3), "f4")
        h5["scenes/s1/points"] = np.zeros((2, 3), "f4")
        h5["alias"] = h5py.SoftLink("/plain")
        h5["dangling"] = h5py.SoftLink("/nowhere")
        h5["ext"] = h5py.ExternalLink("other.h5", "/x")
        h5["ext_missing"] = h5py.ExternalLink("missing.h5", "/x")
        layout = h5py.VirtualLayout((4,), "<f4")
        layout[:] = h5py.VirtualSource(h5["plain"])
        h5.create_virtual_dataset("virtual", layout)
    return path


def test_describe_file_lists_every_object(sample):
    lines = describe_file(str(sample))
    assert re.fullmatch(r"sample\.h5 \(\d+\.\d MB\)", lines[0])
    assert lines[1:] == [
        "/",
        "  alias -> /plain  float32  (4,)  contiguous  index: yes",
        "  code  string(fixed[2], ascii)  (2,)  contiguous  "
        "index: no (strings are stored by value)",
        "  color  enum(uint8: BLUE, RED)  (2,)  contiguous  index: yes",
        "  count  int64  ()  contiguous  scalar  index: no (scalar dataset)",
        "  dangling -> /nowhere  (broken link)",
        "  ext -> other.h5:/x  big-endian int32  (6, 2)  compact  "
        "index: no (external link into other.h5)",
        "  ext_missing -> missing.h5:/x  (broken link)",
        "  flag  bool  (2,)  contiguous  index: yes",
        "  packed  big-endian int16  (10, 3)  chunked  chunks (5, 3)  "
        "filters shuffle+gzip+fletcher32  index: yes",
        "  pair  compound[('x', '<i4'), ('y', '<f8')]  (3,)  contiguous  "
        "2 fields, each a feature (NAME=path[field]):",
        "    [x]  int32  index: yes",
        "    [y]  float64  index: yes",
        "  plain  float32  (4,)  contiguous  index: yes",
        "  ragged  vlen(int32)  (2,)  contiguous  ragged rows  index: no (variable-length "
        "values live in the HDF5 heap, not in the rows)",
        "  refs  object reference  (1,)  contiguous  NOT CONVERTIBLE: object/region "
        "references are not supported",
        "  scenes/  group, 2 member(s)",
        "    s0/  group, 1 member(s)",
        "      points  float32  (5, 3)  contiguous  index: yes",
        "    s1/  group, 1 member(s)",
        "      points  float32  (2, 3)  contiguous  index: yes",
        "  text  string(vlen, utf-8)  (1,)  contiguous  index: no (strings are stored by value)",
        "  virtual  float32  (4,)  virtual  index: no (virtual dataset)",
        "  wave  big-endian complex128  (3,)  contiguous  index: yes",
    ]


def test_describe_file_names_plugin_filters(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "plugins.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("a", data=np.zeros(8), chunks=(4,), **hdf5plugin.LZ4())
        h5.create_dataset("b", data=np.zeros(8), chunks=(4,), **hdf5plugin.Zstd())
        h5.create_dataset("c", data=np.zeros(8), chunks=(4,), compression="lzf")
    assert describe_file(str(path))[2:] == [
        "  a  float64  (8,)  chunked  chunks (4,)  filters lz4  "
        "index: no (filter 'lz4' is not gzip, shuffle or fletcher32)",
        "  b  float64  (8,)  chunked  chunks (4,)  filters zstd  "
        "index: no (filter 'zstd' is not gzip, shuffle or fletcher32)",
        "  c  float64  (8,)  chunked  chunks (4,)  filters lzf  "
        "index: no (filter 'lzf' is not gzip, shuffle or fletcher32)",
    ]


def test_describe_file_says_why_a_dataset_cannot_be_referenced(tmp_path):
    path = tmp_path / "layouts.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("split_rows", data=np.zeros((8, 6)), chunks=(4, 3))
        h5.create_dataset("whole_rows", data=np.zeros((8, 6)), chunks=(4, 6))
        h5.create_dataset("unwritten", shape=(8, 6), dtype="f4")
        sparse = h5.create_dataset("sparse", shape=(8, 6), dtype="f4", chunks=(4, 6))
        sparse[0] = 1
    notes = {line.split()[0]: line.split("index: ")[1] for line in describe_file(str(path))[2:]}
    assert notes == {
        "sparse": "no (some chunks were never written (they read as fill values))",
        "split_rows": "no (chunks (4, 3) split rows of shape (6,))",
        "unwritten": "no (never written (no storage allocated))",
        "whole_rows": "yes",
    }


def test_describe_file_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(SourceNotFound, match=r"absent\.h5: no such file"):
        describe_file(str(tmp_path / "absent.h5"))
    (tmp_path / "notes.h5").write_text("not HDF5\n" * 100)
    with pytest.raises(SourceUnreadable, match=r"notes\.h5: not an HDF5 file"):
        describe_file(str(tmp_path / "notes.h5"))
