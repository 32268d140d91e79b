"""Index mode's span reader fed hostile records directly: references that point
outside their file or dataset, malformed record lists, truncated sources and corrupt
gzip chunks are refused, never read.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from hdf5_to_records.errors import (
    SourceChanged,
    SourceRefused,
)
from hdf5_to_records.format.dtypes import from_stored
from hdf5_to_records.format.reference import Reference
from hdf5_to_records.index.chunk_filters import fletcher32
from hdf5_to_records.index.spans import SourceFile, SpanReader

from index_sources import ROW_BYTES, N, chunk_offsets, flip_byte, make_dataset
from records import load_manifest


@pytest.fixture
def dataset(tmp_path):
    """``tmp/data/src.h5`` converted in index mode into ``tmp/out`` (3-row records)."""
    return make_dataset(tmp_path)


# ---- hostile records, read by SpanReader directly ----------------------------------


@pytest.fixture
def spans(dataset):
    """A SpanReader over the converted source, as ``reader.load`` builds it."""
    out, source, values = dataset
    manifest = load_manifest(str(out))
    refs = {n: Reference.from_json(r) for n, r in manifest["sources"][0]["references"].items()}
    size = os.path.getsize(source)
    stored = {f["name"]: (from_stored(f["dtype"]), tuple(f["shape"])) for f in manifest["features"]}
    files = (SourceFile("src.h5", str(source), size, refs),)
    return SpanReader(files, stored, 1000), refs, size, source, values


def read(span_reader, name, *, refs, count, takes=(), file_id=0):
    """Read one record of ``count`` examples from ``(offset, size, mask)`` triples."""
    refs = np.asarray(refs, np.int64).ravel()
    takes = np.asarray(takes, np.int64)
    return span_reader.read(
        name,
        np.array([file_id], np.int64),
        np.array([count], np.int64),
        refs,
        np.array([0, refs.size], np.int64),
        takes,
        np.array([0, takes.size], np.int64),
    )


def test_well_formed_records_read_what_h5py_reads(spans):
    span_reader, refs, _, source, values = spans
    x = refs["x"]
    got = read(span_reader, "x", refs=[x.offset + 2 * ROW_BYTES, 3 * ROW_BYTES, 0], count=3)
    np.testing.assert_array_equal(got, values["x"][2:5])
    got = read(span_reader, "x", refs=[x.offset, 4 * ROW_BYTES, 0], count=3, takes=[3, 0, 3])
    np.testing.assert_array_equal(got, values["x"][[3, 0, 3]])
    chunks = [(offset, size, 0) for offset, size in chunk_offsets(source, "g")]
    got = read(span_reader, "g", refs=chunks[1:3], count=3, takes=[5, 0, 3])
    assert got.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(got, values["g"][[9, 4, 7]])


def hostile_records(refs, size, source):
    """name -> (feature, record keywords, message regex) of records that must be refused."""
    x = refs["x"]
    first_chunk = chunk_offsets(source, "g")[0]
    whole = 4 * ROW_BYTES + (1 << 12) + 1  # bigger than a chunk of g can be
    where = r"feature 'x': byte range {}\+{} of src\.h5"
    return {
        "past_end_of_file": (
            "x",
            dict(refs=[size + 10, ROW_BYTES, 0], count=1),
            where.format(size + 10, ROW_BYTES) + rf" is outside the file \({size} bytes\)",
        ),
        "straddles_end_of_file": (
            "x",
            dict(refs=[size - ROW_BYTES // 2, ROW_BYTES, 0], count=1),
            where.format(size - ROW_BYTES // 2, ROW_BYTES) + " is outside the file",
        ),
        "negative_offset": (
            "x",
            dict(refs=[-ROW_BYTES, ROW_BYTES, 0], count=1),
            where.format(-ROW_BYTES, ROW_BYTES) + " is outside the file",
        ),
        "negative_size": (
            "x",
            dict(refs=[x.offset, -ROW_BYTES, 0], count=1),
            where.format(x.offset, -ROW_BYTES) + " is outside the file",
        ),
        "zero_size": (
            "x",
            dict(refs=[x.offset, 0, 0], count=1),
            where.format(x.offset, 0) + " is outside the file",
        ),
        "before_the_dataset": (
            "x",
            dict(refs=[x.offset - ROW_BYTES, ROW_BYTES, 0], count=1),
            where.format(x.offset - ROW_BYTES, ROW_BYTES) + " is outside dataset /x",
        ),
        "past_the_dataset": (
            "x",
            dict(refs=[x.offset + (N - 1) * ROW_BYTES, 2 * ROW_BYTES, 0], count=2),
            where.format(x.offset + (N - 1) * ROW_BYTES, 2 * ROW_BYTES) + " is outside dataset /x",
        ),
        "misaligned": (
            "x",
            dict(refs=[x.offset + 4, ROW_BYTES, 0], count=1),
            where.format(x.offset + 4, ROW_BYTES) + " is outside dataset /x",
        ),
        "not_whole_rows": (
            "x",
            dict(refs=[x.offset, ROW_BYTES + 4, 0], count=1),
            where.format(x.offset, ROW_BYTES + 4) + " is not whole rows of /x",
        ),
        "more_rows_than_the_record": (
            "x",
            dict(refs=[x.offset, 3 * ROW_BYTES, 0], count=2),
            r"feature 'x': byte range of src\.h5 is not the record's rows",
        ),
        "larger_than_a_chunk": (
            "g",
            dict(refs=[first_chunk[0], whole, 0], count=1),
            rf"feature 'g': byte range {first_chunk[0]}\+{whole} of src\.h5 is larger "
            r"than a chunk of /g",
        ),
        "take_out_of_range": (
            "x",
            dict(refs=[x.offset, 2 * ROW_BYTES, 0], count=2, takes=[0, 2]),
            r"feature 'x': a record's take list does not fit its 2 decoded rows of src\.h5",
        ),
        "negative_take": (
            "g",
            dict(refs=[first_chunk[0], first_chunk[1], 0], count=2, takes=[-1, 0]),
            r"feature 'g': a record's take list does not fit its 4 decoded rows of src\.h5",
        ),
        "take_shorter_than_count": (
            "x",
            dict(refs=[x.offset, 2 * ROW_BYTES, 0], count=3, takes=[0, 1]),
            r"feature 'x': a record's take list does not fit",
        ),
        "more_examples_than_rows": (
            "g",
            dict(refs=[first_chunk[0], first_chunk[1], 0], count=5),
            r"feature 'g': a record's take list does not fit its 4 decoded rows",
        ),
        "no_ranges": (
            "x",
            dict(refs=np.empty(0), count=1),
            r"feature 'x': a record's take list does not fit its 0 decoded rows",
        ),
        "file_not_listed": (
            "x",
            dict(refs=[x.offset, ROW_BYTES, 0], count=1, file_id=1),
            r"^feature 'x': a record names source 1, not listed$",
        ),
        "negative_file_id": (
            "g",
            dict(refs=[x.offset, ROW_BYTES, 0], count=1, file_id=-1),
            r"^feature 'g': a record names source -1, not listed$",
        ),
    }


HOSTILE = [
    "past_end_of_file",
    "straddles_end_of_file",
    "negative_offset",
    "negative_size",
    "zero_size",
    "before_the_dataset",
    "past_the_dataset",
    "misaligned",
    "not_whole_rows",
    "more_rows_than_the_record",
    "larger_than_a_chunk",
    "take_out_of_range",
    "negative_take",
    "take_shorter_than_count",
    "more_examples_than_rows",
    "no_ranges",
    "file_not_listed",
    "negative_file_id",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_records_are_refused(spans, case):
    span_reader, refs, size, source, _ = spans
    cases = hostile_records(refs, size, source)
    assert list(cases) == HOSTILE
    name, record, message = cases[case]
    # the ranges these cases need exist in this file (else they test something else)
    x = refs["x"]
    assert x.offset >= ROW_BYTES and x.offset + (N + 1) * ROW_BYTES <= size
    assert chunk_offsets(source, "g")[0][0] + 4 * ROW_BYTES + (1 << 12) + 1 <= size
    with pytest.raises(SourceRefused, match=message):
        read(span_reader, name, **record)


@pytest.mark.parametrize(
    "record",
    [
        {"refs": [None, ROW_BYTES, 0], "count": -1},
        {"refs": [None, ROW_BYTES, 0, 5], "count": 1},
    ],
    ids=["negative_count", "refs_not_triples"],
)
def test_malformed_record_lists_are_refused(spans, record):
    span_reader, refs, _, _, _ = spans
    record = dict(record, refs=[refs["x"].offset, *record["refs"][1:]])
    with pytest.raises(SourceRefused, match="feature 'x'"):
        read(span_reader, "x", **record)


def test_truncated_source_is_refused(spans):
    span_reader, refs, size, source, _ = spans
    x = refs["x"]
    os.truncate(source, x.offset + ROW_BYTES)  # the recorded size is still the old one
    with pytest.raises(SourceChanged, match=r"^source src\.h5 ended early \(truncated since"):
        read(span_reader, "x", refs=[x.offset, 2 * ROW_BYTES, 0], count=2)


def test_corrupt_gzip_chunk_does_not_inflate(spans):
    span_reader, _, _, source, _ = spans
    offset, size = chunk_offsets(source, "z")[1]
    flip_byte(source, offset + size // 2, keep_mtime=True)
    with h5py.File(source, "r") as h5, pytest.raises(OSError, match="(?i)can't|filter|inflate"):
        h5["z"][4]  # HDF5 cannot read it either
    message = rf"^chunk at byte {offset} of /z in src\.h5: does not inflate"
    with pytest.raises(ValueError, match=message):
        read(span_reader, "z", refs=[offset, size, 0], count=4)


@pytest.mark.parametrize("name", ["f", "g"])
def test_corrupt_fletcher32_chunk_fails_its_checksum(spans, name):
    span_reader, _, _, source, _ = spans
    offset, size = chunk_offsets(source, name)[2]  # the last, partial chunk
    flip_byte(source, offset + 1, keep_mtime=True)
    message = rf"^chunk at byte {offset} of /{name} in src\.h5: fletcher32 checksum mismatch"
    with pytest.raises(ValueError, match=message):
        read(span_reader, name, refs=[offset, size, 0], count=2)


@pytest.mark.parametrize(
    "length, fill",
    [
        (1, None),
        (2, None),
        (3, None),
        (255, None),
        (4096, None),
        (10_001, None),
        ((2 << 20) + 3, None),  # more than one of fletcher32's 1 Mi-word blocks
        (64, 0x00),
        (65, 0x00),
        (4097, 0xFF),  # sums that are multiples of 65535
        (4096, 0xFF),
    ],
)
def test_fletcher32_matches_hdf5(length, fill):
    if fill is None:
        data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8)
    else:
        data = np.full(length, fill, np.uint8)
    with h5py.File("f32.h5", "w", driver="core", backing_store=False) as h5:
        h5.create_dataset("d", data=data, chunks=(length,), fletcher32=True)
        _, stored = h5["d"].id.read_direct_chunk((0,))
    assert stored[:-4] == data.tobytes()
    assert fletcher32(data) == int.from_bytes(stored[-4:], "little")
