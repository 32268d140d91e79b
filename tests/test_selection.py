import h5py
import numpy as np
import pytest

from hdf5_to_records.errors import DatasetNotFound, SelectionError, UsageError
from hdf5_to_records.planning.selection import parse_rows, resolve_rows


def rows(text, n=10, **kwargs):
    return resolve_rows(parse_rows(text), n, where="a.h5", **kwargs).tolist()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2:5", [2, 3, 4]),
        ("::4", [0, 4, 8]),
        ("7", [7]),
        ("-1", [9]),
        ("-3:", [7, 8, 9]),
        ("0:2, 8:10", [0, 1, 8, 9]),
        ("9:0:-3", [9, 6, 3]),
        ("5:5, 1", [1]),
    ],
)
def test_slices_follow_python_semantics(text, expected):
    assert rows(text) == expected


def test_no_spec_selects_everything():
    assert resolve_rows(None, 4, where="a.h5").tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("text", ["a:b", "1:2:3:4", "1.5", "0:10:0"])
def test_malformed_specs(text):
    with pytest.raises(UsageError, match="--rows"):
        parse_rows(text)


def test_index_file_must_be_npy_or_txt():
    with pytest.raises(UsageError, match=".npy or .txt"):
        parse_rows("@rows.csv")


@pytest.mark.parametrize(
    "text, match",
    [
        ("10", "row index 10 is out of range for a.h5 \\(10 rows\\)"),
        ("-11", "out of range"),
        ("0:11", "bound 11 is outside a.h5"),
        ("5:5", "selects no rows in a.h5"),
    ],
)
def test_out_of_range_and_empty(text, match):
    with pytest.raises(SelectionError, match=match):
        rows(text)


def test_index_files_keep_order_and_repeats(tmp_path):
    np.save(tmp_path / "idx.npy", np.array([5, 1, 1, 9]))
    (tmp_path / "idx.txt").write_text("# rows\n3\n0\n")
    assert rows(f"@{tmp_path / 'idx.npy'}") == [5, 1, 1, 9]
    assert rows(f"@{tmp_path / 'idx.txt'}") == [3, 0]


def test_index_file_errors(tmp_path):
    with pytest.raises(SelectionError, match="not found"):
        rows(f"@{tmp_path / 'missing.npy'}")
    np.save(tmp_path / "f.npy", np.array([0.5]))
    with pytest.raises(SelectionError, match="integer row indices"):
        rows(f"@{tmp_path / 'f.npy'}")
    np.save(tmp_path / "big.npy", np.array([3, 10]))
    with pytest.raises(SelectionError, match="row index 10 is out of range"):
        rows(f"@{tmp_path / 'big.npy'}")


def test_index_and_mask_datasets(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as h5:
        h5["sel/idx"] = np.array([4, 2], np.uint32)
        h5["sel/mask"] = np.arange(10) % 3 == 0
        h5["sel/short_mask"] = np.ones(4, bool)
        h5["sel/matrix"] = np.zeros((2, 2), np.int64)
        h5["sel/bad"] = np.array([1, 12])
    with h5py.File(path, "r") as h5:
        assert rows("@/sel/idx", h5file=h5) == [4, 2]
        assert rows("@/sel/mask", h5file=h5) == [0, 3, 6, 9]
        with pytest.raises(SelectionError, match=r"mask /sel/short_mask in a.h5 has shape \(4,\)"):
            rows("@/sel/short_mask", h5file=h5)
        with pytest.raises(SelectionError, match="must be 1-D"):
            rows("@/sel/matrix", h5file=h5)
        with pytest.raises(SelectionError, match="row index 12 is out of range"):
            rows("@/sel/bad", h5file=h5)
        with pytest.raises(DatasetNotFound, match="did you mean '/sel/idx'"):
            rows("@/sel/idz", h5file=h5)


def test_integer_masks_are_refused_not_taken_as_indices(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5["keep_u8"] = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0], np.uint8)
        h5["huge"] = np.array([2**63 + 5], np.uint64)
    with h5py.File(path, "r") as h5:
        with pytest.raises(SelectionError, match="looks like a mask stored as integers"):
            rows("@/keep_u8", h5file=h5)
        with pytest.raises(SelectionError, match="row index 9223372036854775813 is out of range"):
            rows("@/huge", h5file=h5)
