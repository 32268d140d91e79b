"""Window and span arithmetic of the HDF5 reader."""

import numpy as np

from hdf5_to_records.planning.limits import Limits
from hdf5_to_records.writing.reading import _spans, window_bounds

SMALL = Limits(window_bytes=100, gap_bytes=50)  # windows of 10 rows of 10 bytes


def bounds(rows, chunk_rows=1, file_ids=None):
    rows = np.asarray(rows)
    ids = np.zeros(rows.size, np.int32) if file_ids is None else np.asarray(file_ids)
    return window_bounds(ids, rows, 10, chunk_rows, SMALL.window_bytes)


def test_windows_cover_everything_in_order():
    got = bounds(range(35))
    assert got[0][0] == 0 and got[-1][1] == 35
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    assert all(b - a <= 20 for a, b in got)


def test_windows_cut_at_chunk_boundaries():
    got = bounds(range(40), chunk_rows=4)
    assert [a for a, _ in got[1:]] == [12, 24, 36]  # first boundary >= 10 rows in


def test_windows_cut_where_the_file_changes():
    got = bounds(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1], chunk_rows=100, file_ids=[0] * 11 + [1] * 2
    )
    assert got == [(0, 11), (11, 13)]


def test_long_chunks_do_not_stretch_windows():
    got = bounds(range(100), chunk_rows=1000)
    assert max(b - a for a, b in got) <= 20


def test_spans_skip_large_gaps_and_cap_length():
    unique = np.array([0, 1, 2, 3, 20, 21, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51])
    spans = _spans(unique, 10, 1, SMALL)
    assert spans == [(0, 4), (4, 6), (6, 16), (16, 18)]
    assert _spans(np.array([], np.int64), 10, 1, SMALL) == []
