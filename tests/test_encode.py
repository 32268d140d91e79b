"""Record encoding: blocks of examples as tf.train.Example, framed as TFRecord."""

import itertools
import os

import h5py
import numpy as np
import pytest

from hdf5_to_records.converter import convert
from hdf5_to_records.errors import RecordTooLarge
from hdf5_to_records.format.dtypes import StoredType
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.limits import Limits
from hdf5_to_records.planning.schema import FeatureSchema
from hdf5_to_records.writing.encode import Blocker, encode_block, piece_length, record_framing

from records import tf


def feature(name, dtype, shape, *, encoding="raw", ragged=False):
    memory = np.dtype(object) if encoding == "bytes" else np.dtype(dtype).newbyteorder("<")
    return FeatureSchema(
        name, "/" + name, dtype, StoredType(dtype, encoding, memory), shape, ragged
    )


def parse(pieces):
    return tf.train.Example.FromString(b"".join(bytes(p) for p in pieces)).features.feature


def test_block_layout_parses_with_tensorflow():
    x = np.arange(12, dtype="<f4").reshape(3, 2, 2)
    s = np.array([b"a", b"", b"ccc"], dtype=object)
    ragged = [np.arange(2, dtype="<i2"), np.arange(3, dtype="<i2"), np.arange(0, dtype="<i2")]
    features = (
        feature("x", "float32", (2, 2)),
        feature("s", "string", (), encoding="bytes"),
        feature("r", "int16", (None,), ragged=True),
    )
    parsed = parse(encode_block({"x": x, "s": s, "r": ragged}, 3, features))
    assert list(parsed["__rows__"].int64_list.value) == [3]
    np.testing.assert_array_equal(
        np.frombuffer(parsed["x"].bytes_list.value[0], "<f4").reshape(3, 2, 2), x
    )
    assert list(parsed["s"].bytes_list.value) == [b"a", b"", b"ccc"]
    assert list(parsed["r/shape"].int64_list.value) == [2, 3, 0]
    np.testing.assert_array_equal(
        np.frombuffer(parsed["r"].bytes_list.value[0], "<i2"), [0, 1, 0, 1, 2]
    )


def test_payload_is_a_view_not_a_copy():
    x = np.zeros((4, 1000), "<f8")
    pieces = encode_block({"x": x}, 4, (feature("x", "float64", (1000,)),))
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert len(views) == 1 and views[0].obj is not None and views[0].nbytes == x.nbytes
    assert piece_length(pieces) == len(b"".join(bytes(p) for p in pieces))


def test_framing_matches_tensorflow_writer(tmp_path):
    x = np.arange(10, dtype="<i8").reshape(5, 2)
    pieces = encode_block({"x": x}, 5, (feature("x", "int64", (2,)),))
    prefix, suffix = record_framing(pieces)
    ours = prefix + b"".join(bytes(p) for p in pieces) + suffix
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"".join(bytes(p) for p in pieces))
    with open(path, "rb") as handle:
        assert handle.read() == ours


def test_record_too_large():
    with pytest.raises(RecordTooLarge, match="over the 100-byte limit.*lower --rows-per-record"):
        encode_block(
            {"x": np.zeros((4, 8), "<f8")},
            4,
            (feature("x", "float64", (8,)),),
            max_record_bytes=100,
        )


def test_a_record_over_the_limit_fails_the_conversion_naming_the_shard(tmp_path):
    """Strings are sized only when written: the writer refuses the record, and the
    conversion leaves no manifest and no temporary shard behind."""
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("name", data=[b"n" * 100] * 4, dtype=h5py.string_dtype("ascii"))
    out = tmp_path / "out"
    config = build_config(
        {"sources": [str(path)], "output": str(out), "workers": 1, "rows_per_record": 1}
    )
    with pytest.raises(
        RecordTooLarge, match=r"out-train\.tfrecord-00000-of-00001.*over the 50-byte limit"
    ):
        convert(config, limits=Limits(max_record_bytes=50))
    assert not (out / "manifest.json").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".incomplete")]


@pytest.mark.parametrize("k", [1, 3, 4, 10])
@pytest.mark.parametrize("windows", [[10], [3, 3, 4], [1, 1, 1, 7], [4, 6]])
def test_blocker_recuts_windows_into_blocks_of_k(k, windows):
    blocker, values, start = Blocker(itertools.repeat(k)), [], 0
    blocks = []
    for size in windows:
        column = np.arange(start, start + size)
        start += size
        blocks += [(b["v"].copy(), n) for b, n in blocker.add({"v": column}, size)]
    blocks += [(b["v"].copy(), n) for b, n in blocker.flush()]
    for block, n in blocks:
        assert len(block) == n
        values += block.tolist()
    assert values == list(range(10))
    assert [n for _, n in blocks] == [k] * (10 // k) + ([10 % k] if 10 % k else [])


@pytest.mark.parametrize("sizes", [[10], [3, 3, 4], [1, 9], [4, 2, 1, 3], [7, 1, 1, 1]])
@pytest.mark.parametrize("windows", [[10], [3, 3, 4], [1, 1, 1, 7], [4, 6]])
def test_blocker_cuts_blocks_of_given_sizes(sizes, windows):
    """Index mode cuts records at given sizes (file and chunk boundaries)."""
    blocker, start, blocks = Blocker(iter(sizes)), 0, []
    for size in windows:
        column = np.arange(start, start + size)
        start += size
        blocks += [b["v"].copy() for b, _ in blocker.add({"v": column}, size)]
    assert list(blocker.flush()) == []
    assert [len(b) for b in blocks] == sizes
    assert np.concatenate(blocks).tolist() == list(range(10))


def test_blocker_refuses_more_rows_than_sizes_cover():
    blocker = Blocker(iter([2]))
    with pytest.raises(ValueError, match="more examples"):
        list(blocker.add({"v": np.arange(3)}, 3))


def test_long_int64_lists_encode_as_protobuf_does():
    """Lists of 64+ values (index mode's take lists) are varint-encoded in NumPy: the
    record must parse to the same values, negative and extreme ones included."""
    rng = np.random.default_rng(11)
    values = np.concatenate(
        [
            np.arange(100_000, 100_200),
            rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64, endpoint=True),
            [0, 127, 128, 2**14 - 1, 2**14, 2**63 - 1, -1, -(2**63)],
        ]
    ).astype(np.int64)
    pieces = encode_block({}, 1, (), extra={"take": values.tolist()})
    got = parse(pieces)["take"].int64_list.value
    assert list(got) == values.tolist()
