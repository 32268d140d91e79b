"""Fuzzing records: valid TFRecord framing around damaged payloads, and the project's
Example parser against TensorFlow's. Examples are derandomized.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hdf5_to_records.checks.verify import Problem, verify
from hdf5_to_records.format.proto import masked_crc, parse_example

from fuzzing import FUZZ, UTF8, write_manifest
from records import convert_small, tf

# --- records: valid framing around damaged payloads -------------------------------------------


def read_frames(path: str) -> list[bytes]:
    """The payloads of an uncompressed TFRecord file (8-byte length, 4-byte CRC,
    payload, 4-byte CRC)."""
    data, out, at = open(path, "rb").read(), [], 0
    while at < len(data):
        length = int.from_bytes(data[at : at + 8], "little")
        out.append(data[at + 12 : at + 12 + length])
        at += 16 + length
    return out


def write_frames(path: str, payloads: list[bytes]) -> None:
    """A TFRecord file of ``payloads`` with correct CRCs: only the payload is damaged."""
    with open(path, "wb") as handle:
        for payload in payloads:
            header = len(payload).to_bytes(8, "little")
            handle.write(header + masked_crc(header).to_bytes(4, "little"))
            handle.write(payload + masked_crc(payload).to_bytes(4, "little"))


@st.composite
def damaged_bytes(draw, original: bytes) -> bytes:
    """``original`` with 1 to 3 bytes replaced, deleted or inserted anywhere (positions
    and values uniform, as a bad disk or a bad writer would leave them)."""
    rng = draw(st.randoms(use_true_random=False))
    data = bytearray(original)
    for _ in range(rng.randint(1, 3)):
        at, byte = rng.randrange(max(len(data), 1)), rng.randrange(256)
        op = rng.choice(["replace", "delete", "insert"])
        if op == "insert" or not data:
            data.insert(at, byte)
        elif op == "delete":
            del data[at]
        else:
            data[at] = byte
    return bytes(data)


@pytest.fixture(scope="module")
def record_datasets(manifests, tmp_path_factory):
    """mode -> (dataset directory to damage, its first shard's path and payloads), for
    copies of the copy and index datasets (beside the index source) and a ragged groups
    dataset."""
    root = tmp_path_factory.mktemp("records")
    with h5py.File(root / "scenes.h5", "w") as h5:
        for i in range(5):
            h5[f"s/{i}/points"] = np.arange((i % 3 + 1) * 3, dtype="<f4").reshape(-1, 3)
            h5[f"s/{i}/name"] = f"scene {i}"
    directories = {"groups": convert_small(root / "scenes.h5", root / "groups", groups="/s/*")}
    for mode, (work, original) in manifests.items():
        directories[mode] = os.path.join(os.path.dirname(work), f"{mode}_records")
        shutil.copytree(work, directories[mode])
        write_manifest(directories[mode], original)
    out = {}
    for mode, directory in directories.items():
        shard = sorted(
            n for n in os.listdir(directory) if ".tfrecord-" in n and not n.endswith(".idx")
        )[0]
        path = os.path.join(directory, shard)
        out[mode] = (directory, path, read_frames(path))
    return out


@pytest.mark.parametrize("mode", ["copy", "index", "groups"])
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_verify_reports_records_with_valid_crcs_and_damaged_payloads(record_datasets, mode, data):
    directory, path, payloads = record_datasets[mode]
    index = data.draw(st.integers(0, len(payloads) - 1))
    damaged = data.draw(damaged_bytes(payloads[index]))
    try:
        write_frames(path, [*payloads[:index], damaged, *payloads[index + 1 :]])
        report = verify(directory)
    finally:
        write_frames(path, payloads)
    name = os.path.basename(path)
    # Valid CRCs of other bytes: the framing digest (format 5) tells, or another check.
    digest = Problem(
        name, "framing_sha256 differs from the manifest (records changed or reordered)"
    )
    assert report.problems or damaged == payloads[index], report.problems
    if len(damaged) == len(payloads[index]) and damaged != payloads[index]:
        assert digest in report.problems, report.problems
    assert all(p.where in (name, "sources") for p in report.problems), report.problems
    assert all(p.record in (None, index) for p in report.problems), report.problems


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_parse_example_agrees_with_the_readers_parser_where_both_parse(record_datasets, data):
    """The TF-free parser verify uses reads what ``tf.io.parse_example`` (the reader's
    parser) reads, value for value, from damaged records."""
    mode = data.draw(st.sampled_from(sorted(record_datasets)))
    payloads = record_datasets[mode][2]
    record = data.draw(damaged_bytes(data.draw(st.sampled_from(payloads))))
    try:
        ours = as_python(parse_example(memoryview(record)))
    except (ValueError, TypeError):  # verify reports the record as not decoding
        return
    try:
        theirs = parse_like_the_reader(record, ours)
    except Exception:  # refused (InvalidArgumentError); ours must refuse it too, see
        # test_parse_example_rejects_what_the_readers_parser_rejects
        return
    event("both parse")
    assert ours == theirs


def parse_like_the_reader(record: bytes, like: dict) -> dict:
    """``record`` parsed by ``tf.io.parse_single_example`` for the keys and kinds of
    ``like``, in :func:`as_python`'s form."""
    spec = {
        key: tf.io.VarLenFeature(tf.int64 if kind == "int64" else tf.string)
        for key, (kind, _) in like.items()
    }
    parsed = tf.io.parse_single_example(record, spec) if spec else {}
    return {
        key: (kind, [bytes(v) if kind == "bytes" else int(v) for v in parsed[key].values.numpy()])
        for key, (kind, _) in like.items()
    }


def as_python(example: dict) -> dict:
    return {
        k: (kind, [bytes(v) if kind == "bytes" else v for v in values])
        for k, (kind, values) in example.items()
    }


def from_tensorflow(example) -> dict:
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "int64_list":
            out[key] = ("int64", list(feature.int64_list.value))
        elif kind == "float_list":
            out[key] = ("float", list(feature.float_list.value))
        else:
            out[key] = ("bytes", list(feature.bytes_list.value))
    return out


INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(FUZZ, max_examples=200)
@given(
    features=st.dictionaries(
        st.text(UTF8, max_size=8),
        st.one_of(
            st.lists(st.binary(max_size=8), max_size=4).map(lambda v: ("bytes", v)),
            st.lists(INT64, max_size=4).map(lambda v: ("int64", v)),
        ),
        max_size=4,
    )
)
def test_parse_example_reads_what_tensorflow_writes(features):
    """Any Example of bytes and int64 lists (negative and extreme ints, empty lists,
    unicode keys), serialized by TensorFlow's protobuf, parses to the same values."""
    example = tf.train.Example()
    for key, (kind, values) in features.items():
        feature = example.features.feature[key]
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    record = example.SerializeToString()
    assert as_python(parse_example(memoryview(record))) == from_tensorflow(example)
    assert from_tensorflow(example) == dict(features)


def test_parse_example_raises_only_value_error():
    record = b"\x0a\x02\x08\x01"  # Example{features: Features{1: varint 1}}
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not parse example input"):
        tf.io.parse_single_example(record, {"a": tf.io.VarLenFeature(tf.string)})
    with pytest.raises(ValueError, match="malformed Example"):
        parse_example(memoryview(record))


def test_parse_example_rejects_what_the_readers_parser_rejects():
    entry = b"\x0a\x01a" + b"\x12\x00" + b"\x1a\x02\x0a\x00"  # key, empty value, field 3
    record = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not parse example input"):
        tf.io.parse_single_example(record, {"a": tf.io.VarLenFeature(tf.string)})
    with pytest.raises(ValueError, match="feature map entry with an unknown field 3"):
        parse_example(memoryview(record))
