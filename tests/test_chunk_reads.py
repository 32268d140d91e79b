"""writing/chunk_reads.py: gzip chunks read raw and decoded past h5py's filter pipeline
must give exactly what h5py reads, in whole and partial chunks, and name a bad chunk."""

import h5py
import numpy as np
import pytest

from hdf5_to_records.errors import SourceUnreadable
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.limits import Limits
from hdf5_to_records.planning.schema import scan_sources
from hdf5_to_records.writing.chunk_reads import direct_reference, read_chunk_rows
from hdf5_to_records.writing.memory import keep_freed_memory
from hdf5_to_records.writing.reading import ShardReader

ROWS = 103  # not a multiple of the chunk rows: the last chunk is partly beyond the end


def _write(path, **filters):
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=rng.normal(size=(ROWS, 5, 3)).astype("<f4"),
                          chunks=(8, 5, 3), **filters)  # fmt: skip
        h5.create_dataset("i", data=rng.integers(-9, 9, (ROWS, 4)).astype("<i8"),
                          chunks=(8, 4), **filters)  # fmt: skip
        h5.create_dataset("u", data=np.arange(ROWS, dtype="u1"), chunks=(8,), **filters)
    return path


FILTERS = {
    "gzip": {"compression": "gzip"},
    "gzip-shuffle": {"compression": "gzip", "shuffle": True},
    "gzip-shuffle-fletcher32": {"compression": "gzip", "shuffle": True, "fletcher32": True},
}


@pytest.mark.parametrize("filters", list(FILTERS))
@pytest.mark.parametrize("window_bytes", [1, 700, 1 << 20])  # row by row, partial, whole
def test_windows_equal_what_h5py_reads(tmp_path, filters, window_bytes):
    path = _write(tmp_path / "src.h5", **FILTERS[filters])
    sources = scan_sources(build_config({"sources": [str(path)], "output": "o"}).source_options)
    reader = ShardReader(sources, sources.features, Limits(window_bytes=window_bytes))
    for lo, hi in [(0, ROWS), (5, 13), (96, ROWS), (8, 16)]:
        rows = np.arange(lo, hi)
        got = {f.name: [] for f in sources.features}
        for window in reader.windows(np.zeros(rows.size, np.int32), rows):
            for name, column in window.columns.items():
                got[name].append(np.array(column))
        with h5py.File(path) as h5:
            for name, parts in got.items():
                np.testing.assert_array_equal(np.concatenate(parts), h5[name][lo:hi])
    with h5py.File(path) as h5:
        feature = next(f for f in sources.features if f.name == "x")
        assert direct_reference(h5["x"], feature, str(path)) is not None  # the direct path ran
    reader.close()


def test_other_byte_orders_and_filters_read_through_h5py(tmp_path):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("big", data=np.arange(20, dtype=">f4"), chunks=(4,), compression="gzip")
        h5.create_dataset("plain", data=np.arange(20, dtype="<f4"), chunks=(4,))
    sources = scan_sources(build_config({"sources": [str(path)], "output": "o"}).source_options)
    with h5py.File(path) as h5:
        for feature in sources.features:
            assert direct_reference(h5[feature.name], feature, str(path)) is None


def test_a_chunk_that_does_not_inflate_is_named_once_with_its_dataset_and_file(tmp_path):
    path = _write(tmp_path / "src.h5", compression="gzip")
    with h5py.File(path, "r+") as h5:
        ds = h5["x"]
        _, raw = ds.id.read_direct_chunk((16, 0, 0))
        ds.id.write_direct_chunk((16, 0, 0), raw[:10] + bytes(len(raw) - 10))
    sources = scan_sources(build_config({"sources": [str(path)], "output": "o"}).source_options)
    feature = next(f for f in sources.features if f.name == "x")
    with h5py.File(path) as h5:
        ref = direct_reference(h5["x"], feature, str(path))
        with pytest.raises(SourceUnreadable, match=r"^the chunk at row 16: does not inflate"):
            read_chunk_rows(h5["x"], ref, 0, ROWS, np.empty((ROWS, 5, 3), "<f4"))
    reader = ShardReader(sources, sources.features)
    rows = np.arange(ROWS)
    with pytest.raises(SourceUnreadable) as caught:
        list(reader.windows(np.zeros(ROWS, np.int32), rows))
    message = str(caught.value)
    assert message.startswith("while reading /x in src.h5: the chunk at row 16: does not")
    assert message.count("src.h5") == 1
    reader.close()


def test_keep_freed_memory_sets_glibc_thresholds():
    import sys

    assert keep_freed_memory() is sys.platform.startswith("linux")
