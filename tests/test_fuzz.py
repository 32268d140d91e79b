"""Fuzzing the two files people edit by hand: manifests and config files.

Whatever a manifest holds, ``verify`` reports problems and never raises; ``describe``
and ``reader.load`` raise only the project's errors (iterating may also raise
TensorFlow's ``OpError``). Whatever a YAML config holds, ``build_config`` returns a
config or raises a project error, and ``convert --config FILE --dry-run`` exits 0, 1 or
2 with one line, never a traceback.

Mutated manifests start from real small ones (copy and index mode): a value anywhere
replaced by random JSON (negative and huge ints, NaN, strings, lists, objects), keys
deleted, keys added. Each bug the fuzzing found (and that was then fixed) is also pinned
by a concrete case below. Examples are derandomized: every run tries the same ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import reader
from hdf5_to_records.cli import main
from hdf5_to_records.config import build_config
from hdf5_to_records.errors import Hdf5ToRecordsError, ManifestError, UsageError
from hdf5_to_records.proto import masked_crc, parse_example
from hdf5_to_records.summary import describe
from hdf5_to_records.verify import Problem, verify

from records import convert_small, tf

N = 12

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: no flaky CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NO_SHRINK = [Phase.explicit, Phase.generate]  # fail fast, do not minimise (CI time)
# Text that becomes bytes (a file's contents): no lone surrogates, which UTF-8 cannot hold.
UTF8 = st.characters(codec="utf-8")


# --- manifests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """mode -> (work directory, its original manifest). Each example rewrites only the
    work directory's manifest.json; the shards (and index mode's source, referenced as
    ``../rows.h5``) stay intact."""
    root = tmp_path_factory.mktemp("fuzz")
    with h5py.File(root / "rows.h5", "w") as h5:
        h5["x"] = np.arange(N * 3, dtype="<f4").reshape(N, 3)
        h5.create_dataset("y", data=np.arange(N, dtype="<i8"), chunks=(4,), compression="gzip")
        h5["name"] = np.array([f"r{i}".encode() for i in range(N)], dtype="S3")
    options = {
        "copy": dict(num_shards=2, rows_per_record=3),
        "index": dict(num_shards=2, rows_per_record=3, mode="index", features=["x=/x", "y=/y"]),
    }
    out = {}
    for mode, kwargs in options.items():
        convert_small(root / "rows.h5", root / mode, **kwargs)
        work = root / f"{mode}_work"
        shutil.copytree(root / mode, work)
        with open(work / "manifest.json") as handle:
            out[mode] = (str(work), json.load(handle))
    return out


SPECIAL_INTS = [-1, 0, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]
SPECIAL_STRINGS = [
    "",
    ".",
    "..",
    "../rows.h5",
    "/",
    "/etc/passwd",
    "manifest.json",
    "float64",
    "float128",
    "int8",
    "bool",
    "string",
    "raw",
    "bytes",
    "reference",
    "copy",
    "gzip",
    "none",
    "little",
    "contiguous",
    "chunked",
]
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(SPECIAL_INTS),
    st.floats(),  # NaN and infinities too: Python's json writes and reads them
    st.text(max_size=8),
    st.sampled_from(SPECIAL_STRINGS),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def json_paths(value, path: tuple = ()):
    """Every path into a JSON document, the root included."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*path, index))


def mutate(document, path: tuple, op: str, value, key: str):
    """``document`` with the value at ``path`` replaced by ``value``, deleted, or (for
    an object or array) given one more member."""
    if not path:
        return value if op == "replace" else document
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    target = parent[path[-1]]
    if op == "delete":
        del parent[path[-1]]
    elif op == "add" and isinstance(target, dict):
        target[key] = value
    elif op == "add" and isinstance(target, list):
        target.append(value)
    else:
        parent[path[-1]] = value
    return document


@st.composite
def mutated(draw, original):
    document = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(json_paths(document))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        document = mutate(
            document, path, op, draw(JSON_VALUES), draw(st.text(min_size=1, max_size=6))
        )
    return document


def write_manifest(directory: str, document) -> None:
    with open(os.path.join(directory, "manifest.json"), "w") as handle:
        json.dump(document, handle)


def verify_never_raises(directory: str) -> None:
    report = verify(directory)
    assert all(isinstance(p.where, str) and isinstance(p.message, str) for p in report.problems)
    json.dumps(report.to_json())  # what --json prints


def describe_raises_only_project_errors(directory: str) -> None:
    try:
        lines = describe(directory)
    except Hdf5ToRecordsError:
        return
    assert all(isinstance(line, str) for line in lines)


def load_raises_only_project_or_tensorflow_errors(directory: str) -> None:
    try:
        ds = reader.load(directory)
    except Hdf5ToRecordsError:
        return
    try:
        list(ds.take(3))
    except tf.errors.OpError:
        pass


CHECKS = {
    "verify": verify_never_raises,
    "describe": describe_raises_only_project_errors,
    "load": load_raises_only_project_or_tensorflow_errors,
}


@pytest.mark.parametrize("mode", ["copy", "index"])
@settings(FUZZ, max_examples=150, phases=NO_SHRINK)
@given(data=st.data())
def test_verify_never_raises_on_a_mutated_manifest(manifests, mode, data):
    directory, original = manifests[mode]
    write_manifest(directory, data.draw(mutated(original)))
    verify_never_raises(directory)


@pytest.mark.parametrize("mode", ["copy", "index"])
@settings(FUZZ, max_examples=60, phases=NO_SHRINK)
@given(data=st.data())
def test_describe_raises_only_project_errors_on_a_mutated_manifest(manifests, mode, data):
    directory, original = manifests[mode]
    write_manifest(directory, data.draw(mutated(original)))
    describe_raises_only_project_errors(directory)


@pytest.mark.parametrize("mode", ["copy", "index"])
@settings(FUZZ, max_examples=40, phases=NO_SHRINK)
@given(data=st.data())
def test_load_raises_only_project_or_tensorflow_errors_on_a_mutated_manifest(manifests, mode, data):
    directory, original = manifests[mode]
    write_manifest(directory, data.draw(mutated(original)))
    load_raises_only_project_or_tensorflow_errors(directory)


@pytest.mark.parametrize("mode", ["copy", "index"])
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_a_mutated_manifest_that_verifies_ok_is_read_in_full(manifests, mode, data):
    """What ``verify`` passes, ``reader.load`` reads: every example, no error."""
    directory, original = manifests[mode]
    document = data.draw(mutated(original))
    write_manifest(directory, document)
    try:
        report = verify(directory)
    except Exception:  # verify's own crashes are test_verify_never_raises' to find
        return
    event(f"verify ok: {report.ok}")
    if not report.ok:
        return
    total = sum(s["num_examples"] for s in document["splits"]["train"]["shards"])
    assert report.examples == total == N
    assert sum(1 for _ in reader.load(directory)) == N


def test_an_unchanged_manifest_passes_every_check(manifests):
    for directory, original in manifests.values():
        write_manifest(directory, original)
        assert verify(directory).ok
        assert describe(directory)[0].startswith(f"{original['name']} ({directory}): ")
        assert len(list(reader.load(directory))) == N


GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.text(UTF8, max_size=32).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"NaN", b"1" * 5000]),
)
GARBAGE_MESSAGE = r"cannot read manifest {path}: .*|{path} is not an hdf5-to-records manifest"


@settings(FUZZ, max_examples=40)
@given(content=GARBAGE)
def test_garbage_manifest_bytes_are_a_manifest_error(tmp_path_factory, content):
    directory = str(tmp_path_factory.mktemp("garbage"))
    path = os.path.join(directory, "manifest.json")
    with open(path, "wb") as handle:
        handle.write(content)
    message = GARBAGE_MESSAGE.format(path=re.escape(path))
    report = verify(directory)
    assert len(report.problems) == 1
    assert report.problems[0].where == "manifest.json"
    assert re.fullmatch(message, report.problems[0].message, re.DOTALL), report.problems
    with pytest.raises(ManifestError, match=message):
        describe(directory)
    with pytest.raises(ManifestError, match=message):
        reader.load(directory)
    result = CliRunner().invoke(main, ["info", directory])
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("Error: ")
    result = CliRunner().invoke(main, ["verify", directory])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == f"PROBLEM {report.problems[0]}"


def _set(path: tuple, value):
    def change(document):
        return mutate(document, path, "replace", value, "")

    return change


def _delete(path: tuple):
    def change(document):
        return mutate(document, path, "delete", None, "")

    return change


def _empty_split(document):
    document["splits"]["train"].update(shards=[], num_examples=0, num_records=0, num_bytes=0)
    return document


@pytest.mark.parametrize(
    "mode, change, where, message",
    [
        (
            "copy",
            _delete(("format",)),
            "manifest.json",
            "{path} is not an hdf5-to-records manifest",
        ),
        (
            "index",
            _set(("format_version",), 9),
            "manifest.json",
            "{path} has format version 9; this tool reads versions 1 and 2",
        ),
        (
            "copy",
            _set(("splits", "train", "shards", 0, "file"), "../rows.h5"),
            "manifest.json",
            "manifest in {directory}: bad shard name '../rows.h5'",
        ),
        (
            "copy",
            _set(("records", "byte_order"), "big"),
            "manifest.json",
            "manifest in {directory}: unknown byte order ",
        ),
        (
            "index",
            _set(("sources", 0, "references", "x", "layout"), "virtual"),
            "sources",
            "manifest in {directory}: malformed source entry "
            "(ValueError(\"unknown layout 'virtual'\"))",
        ),
    ],
    ids=["no-format", "version-9", "shard-outside", "big-endian", "unknown-layout"],
)
def test_manifest_errors_are_reported_by_verify_and_raised_by_load(
    manifests, mode, change, where, message
):
    directory, original = manifests[mode]
    write_manifest(directory, change(copy.deepcopy(original)))
    message = message.format(path=os.path.join(directory, "manifest.json"), directory=directory)
    report = verify(directory)
    problems = [p for p in report.problems if p.where == where]
    assert len(problems) == 1 and problems[0].message.startswith(message), report.problems
    with pytest.raises(ManifestError, match=re.escape(message)):
        reader.load(directory)
    describe_raises_only_project_errors(directory)


def _known(check, mode, change, raises, reason, name):
    return pytest.param(check, mode, change, id=name)


@pytest.mark.parametrize(
    "check, mode, change",
    [
        # verify raises instead of reporting.
        _known(
            "verify",
            "copy",
            _set(("splits", "train", "num_examples"), "many"),
            ValueError,
            "verify.py:142 _check_manifest calls int() on the split's num_examples: "
            "ValueError (TypeError for a list or null)",
            "verify-split-total-not-a-number",
        ),
        _known(
            "verify",
            "copy",
            _set(("features", 1, "shape"), [2**64]),
            OverflowError,
            "verify.py:388 _decode: np.prod of a dimension >= 2**63 raises OverflowError, "
            "not caught by _record",
            "verify-huge-dimension",
        ),
        _known(
            "verify",
            "index",
            _set(("features", 0, "dtype"), True),
            TypeError,
            "verify.py:186 _sources calls from_stored(dtype) outside any try: TypeError",
            "verify-referenced-dtype-not-a-string",
        ),
        # dataset_spec.py's load_spec turns KeyError/TypeError/ValueError into
        # ManifestError, not AttributeError: verify and reader.load both raise it.
        *[
            _known(
                check,
                "copy",
                change,
                AttributeError,
                f"dataset_spec.py:{line} raises AttributeError on {what}",
                f"{check}-{name}",
            )
            for check in ("verify", "load")
            for name, change, line, what in [
                (
                    "records-not-an-object",
                    _set(("records",), 5),
                    103,
                    "records that is not an object",
                ),
                (
                    "splits-not-an-object",
                    _set(("splits",), "train"),
                    117,
                    "splits that is not an object",
                ),
                (
                    "shard-file-not-a-string",
                    _set(("splits", "train", "shards", 0, "file"), ["a"]),
                    121,
                    "a shard file name that is not a string",
                ),
            ]
        ],
        # reader.load raises other errors than the project's (or TensorFlow's on reading).
        _known(
            "load",
            "copy",
            _set(("features", 1, "dtype"), "float128"),
            TypeError,
            "reader/decode.py:24 tf.as_dtype('float128') raises TypeError at load: the spec "
            "never checks dtype names",
            "load-unknown-dtype",
        ),
        _known(
            "load",
            "copy",
            _set(("records", "count_key"), []),
            TypeError,
            "reader/decode.py:41 uses count_key as a dict key unchecked: TypeError",
            "load-count-key-not-a-string",
        ),
        _known(
            "load",
            "copy",
            _empty_split,
            ValueError,
            "reader/pipeline.py:106 max() over no shards raises ValueError",
            "load-split-without-shards",
        ),
        _known(
            "load",
            "copy",
            _set(("splits", "train", "shards", 1, "num_records"), 2**64),
            ValueError,
            "reader/pipeline.py:106 passes num_records as the interleave block length: "
            "ValueError (out-of-range integer) at load",
            "load-huge-record-count",
        ),
        _known(
            "load",
            "copy",
            _set(("splits", "train", "shards", 0, "num_examples"), -30),
            ValueError,
            "dataset_spec.py accepts a negative num_examples; it becomes the dataset's "
            "cardinality and len(ds) (called by list(ds)) raises ValueError",
            "load-negative-example-count",
        ),
        # describe indexes the manifest unchecked.
        _known(
            "describe",
            "copy",
            _delete(("name",)),
            KeyError,
            "summary.py:40 manifest['name']: KeyError",
            "describe-no-name",
        ),
        _known(
            "describe",
            "copy",
            _delete(("sources", 0, "size")),
            KeyError,
            "summary.py:69 source['size']: KeyError",
            "describe-source-without-size",
        ),
        _known(
            "describe",
            "copy",
            _set(("sources", 0, "mtime"), "yesterday"),
            TypeError,
            "summary.py:66 datetime.fromtimestamp('yesterday'): TypeError",
            "describe-mtime-not-a-number",
        ),
        _known(
            "describe",
            "index",
            _set(("features", 0), 3),
            AttributeError,
            "summary.py:36 feature.get on a non-object: AttributeError",
            "describe-feature-not-an-object",
        ),
        _known(
            "describe",
            "copy",
            lambda document: {"format": "hdf5-to-records", "format_version": 1},
            KeyError,
            "summary.py:33 manifest['records'] on a manifest with only its format: KeyError",
            "describe-format-only",
        ),
    ],
)
def test_known_manifest_crashes(manifests, check, mode, change):
    directory, original = manifests[mode]
    write_manifest(directory, change(copy.deepcopy(original)))
    CHECKS[check](directory)
    if check == "verify":
        assert not verify(directory).ok


@pytest.mark.parametrize("check", list(CHECKS))
def test_deeply_nested_manifest_is_a_manifest_error(tmp_path, check):
    (tmp_path / "manifest.json").write_bytes(b"[" * 100_000)
    CHECKS[check](str(tmp_path))
    report = verify(str(tmp_path))
    assert report.problems[0].where == "manifest.json"


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
        shard = sorted(n for n in os.listdir(directory) if ".tfrecord-" in n)[0]
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
    sha256 = Problem(name, "sha256 differs from the manifest (corrupt or rewritten)")
    assert sha256 in report.problems or damaged == payloads[index], report.problems
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


# --- config files ---------------------------------------------------------------------------

CONFIG_KEYS = [
    "sources",
    "source",
    "output",
    "features",
    "feature",
    "rows",
    "groups",
    "transform",
    "splits",
    "split",
    "shuffle",
    "seed",
    "num_shards",
    "num-shards",
    "shard_size",
    "shard-size",
    "name",
    "compression",
    "mode",
    "rows_per_record",
    "workers",
    "overwrite",
    "resume",
]
YAML_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(SPECIAL_INTS),
    st.floats(),
    st.text(UTF8, max_size=10),
    st.sampled_from(
        [
            "a.h5",
            "out",
            "/x",
            "x=/x",
            "train=0.5",
            "0:10",
            "::2",
            "256MB",
            "1e400",
            "inf",
            "gzip",
            "index",
            "auto",
            "mod:fn",
            "/s/*",
        ]
    ),
)
YAML_VALUES = st.recursive(
    YAML_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(UTF8, max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


@st.composite
def config_documents(draw) -> bytes:
    """A YAML config file: mostly mappings of known keys to values of any type (on top
    of valid sources and output, so later checks run too), with unknown keys, or
    another YAML value, or text and bytes that may not even parse."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "value", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "text":
        return draw(st.text(UTF8, max_size=40)).encode()
    if kind == "value":
        return yaml.safe_dump(draw(YAML_VALUES)).encode()
    document = draw(st.sampled_from([{}, {"sources": ["a.h5"], "output": "out"}]))
    document = {
        **document,
        **draw(st.dictionaries(st.sampled_from(CONFIG_KEYS), YAML_VALUES, max_size=4)),
    }
    if draw(st.booleans()):
        document.update(
            draw(st.dictionaries(st.text(UTF8, min_size=1, max_size=8), YAML_VALUES, max_size=2))
        )
    return yaml.safe_dump(document, allow_unicode=True).encode()


def build_from(tmp_path_factory, content: bytes):
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_bytes(content)
    return build_config({}, yaml_path=str(path))


@settings(FUZZ, max_examples=300, phases=NO_SHRINK)
@given(content=config_documents())
def test_build_config_from_a_fuzzed_yaml_file_raises_only_usage_errors(tmp_path_factory, content):
    try:
        build_from(tmp_path_factory, content)
    except Hdf5ToRecordsError:
        pass


@pytest.mark.parametrize(
    "content, message",
    [
        ("- a.h5\n- out\n", "expected a mapping of option names to values"),
        ("7\n", "expected a mapping of option names to values"),
        ("sources: [a.h5\n", r"not valid YAML \(ParserError\)"),
        ("!!python/object/apply:os.system [echo]\n", r"not valid YAML \(ConstructorError\)"),
        ("sources: [a.h5]\noutput: out\nseed: true\n", "--seed: expected an integer, got True"),
        ("sources: [a.h5]\noutput: out\nworkers: 1.5\n", "--workers: expected an integer, got 1.5"),
        ("sources: [a.h5]\noutput: out\nshard_size: -5\n", "--shard-size: size must be positive"),
        ("sources: [a.h5]\noutput: out\nshard_size: lots\n", "--shard-size: expected a size"),
        ("sources: [a.h5]\noutput: out\nsplits: 0.5\n", "config key 'splits': expected a mapping"),
        ("sources: [a.h5]\noutput: out\nshuffle: yes please\n", "config key 'shuffle': expected"),
        ("sources: [a.h5]\noutput: out\nbogus: 1\n", "unknown config key 'bogus'"),
        ("output: out\n", "no SOURCES given"),
        pytest.param(
            "sources: 5\noutput: out\n",
            "sources",
            marks=(),
            id="sources-a-number",
        ),
        *[
            pytest.param(
                f"sources: [a.h5]\noutput: out\nshard_size: {value}\n",
                "--shard-size",
                marks=(),
                id=f"shard-size-{value}",
            )
            for value in ("1.5", "null", "[1]")
        ],
        *[
            pytest.param(
                f"sources: [a.h5]\noutput: out\nshard_size: {value}\n",
                "--shard-size",
                marks=(),
                id=f"shard-size-{value}",
            )
            for value in ("inf", "1e400")
        ],
        pytest.param(
            "sources: [a.h5]\noutput: out\nshard_size: true\n",
            "--shard-size",
            marks=(),
            id="shard-size-true",
        ),
        pytest.param(
            b"sources: [a.h5]\noutput: \xe9t\xe9\n",
            "--config",
            marks=(),
            id="not-utf8",
        ),
    ],
)
def test_known_config_errors(tmp_path_factory, content, message):
    if isinstance(content, str):
        content = content.encode()
    with pytest.raises(UsageError, match=message):
        build_from(tmp_path_factory, content)


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(UsageError, match="--config"):
        build_config({}, yaml_path=str(tmp_path))


VALID_VALUES = {
    "features": st.sampled_from([{"x": "/x"}, ["x=/x", "y=/y"], "y=/y"]),
    "rows": st.sampled_from(["0:10", "::-2", "1,3,5"]),
    "splits": st.sampled_from([{"train": 0.5, "test": 0.5}, ["train=0.8"]]),
    "shuffle": st.booleans(),
    "seed": st.integers(0, 100),
    "num_shards": st.integers(1, 4),
    "shard_size": st.sampled_from(["1MB", 4096]),
    "name": st.sampled_from(["ds", "a.b"]),
    "compression": st.sampled_from(["none", "gzip"]),
    "mode": st.sampled_from(["copy", "index", "auto"]),
    "rows_per_record": st.integers(1, 5),
    "workers": st.integers(1, 2),
    "overwrite": st.booleans(),
    "resume": st.booleans(),
}


@st.composite
def cli_documents(draw) -> str:
    """Config files for ``convert --dry-run``: each option valid or of any type. Sources
    and output come from safe values (a real file, a missing one, relative names that
    resolve under the config's directory) and transforms from a harmless list, so that
    a dry run reads only test files."""
    if draw(st.integers(0, 3)):
        document = {"sources": ["rows.h5"], "output": "out"}
    else:
        document = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "sources": st.sampled_from([["rows.h5"], "rows.h5", ["missing.h5"], [], 5]),
                    "output": st.sampled_from(["out", "", None, 7, ["out"]]),
                    "transform": st.sampled_from(["json:dumps", "nomodule:fn", "nocolon", 3]),
                },
            )
        )
    for key in draw(st.lists(st.sampled_from(sorted(VALID_VALUES)), unique=True, max_size=4)):
        document[key] = draw(VALID_VALUES[key] if draw(st.integers(0, 3)) else YAML_VALUES)
    return yaml.safe_dump(document, allow_unicode=True)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    with h5py.File(directory / "rows.h5", "w") as h5:
        h5["x"] = np.arange(N * 3, dtype="<f4").reshape(N, 3)
        h5["y"] = np.arange(N, dtype="<i8")
    return directory


@settings(FUZZ, max_examples=40)
@given(document=cli_documents())
def test_convert_dry_run_with_a_fuzzed_config_exits_cleanly(config_dir, document):
    path = config_dir / "config.yaml"
    path.write_text(document, encoding="utf-8")
    before = sorted(os.listdir(config_dir))
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--dry-run"])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    event(f"exit {result.exit_code}")
    assert "Traceback" not in result.output
    if result.exit_code:
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    else:
        assert result.output.startswith("plan for "), result.output
    assert sorted(os.listdir(config_dir)) == before  # a dry run writes nothing


def test_convert_dry_run_with_a_float_shard_size_is_a_usage_error(config_dir):
    path = config_dir / "float.yaml"
    path.write_text("sources: [rows.h5]\noutput: out\nshard_size: 1.5\n")
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --shard-size")


# --- the config a manifest records rebuilds the same config (verify --deep relies on it) ---

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@st.composite
def valid_options(draw) -> dict:
    options = {
        "sources": draw(st.lists(st.sampled_from(["a.h5", "d/b.h5", "c*.h5"]), min_size=1)),
        "output": draw(st.sampled_from(["out", "/tmp/x/out", "gs://bucket/out"])),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**64)),
        "compression": draw(st.sampled_from(["none", "gzip"])),
        "mode": draw(st.sampled_from(["copy", "index", "auto"])),
        "workers": draw(st.integers(1, 64)),
    }
    names = draw(st.lists(NAMES, unique=True, max_size=3))
    if draw(st.booleans()):
        options["groups"] = "/s/*"
        options["features"] = {n: draw(st.sampled_from(["points", "/p", "a/b"])) for n in names}
    else:
        options["features"] = {n: "/" + n for n in names}
        options["rows"] = draw(st.sampled_from([None, "0:10", "::-2", "1,3,5", "@/idx"]))
    splits = draw(st.lists(NAMES, unique=True, min_size=1, max_size=3))
    weights = draw(st.lists(st.integers(1, 10), min_size=len(splits), max_size=len(splits)))
    options["splits"] = {s: w / sum(weights) for s, w in zip(splits, weights)}
    size = draw(st.sampled_from(["num_shards", "shard_size", None]))
    if size:
        options[size] = draw(st.integers(1, 2**40))
    for key in ("rows_per_record", "name"):
        if draw(st.booleans()):
            options[key] = draw(st.integers(1, 10_000) if key == "rows_per_record" else NAMES)
    return options


@settings(FUZZ, max_examples=100)
@given(options=valid_options())
def test_a_configs_json_rebuilds_the_same_config(options):
    config = build_config(options)
    recorded = json.loads(json.dumps(config.to_json()))  # as the manifest stores it
    rebuilt = build_config(recorded)
    assert rebuilt == dataclasses.replace(config, name=config.dataset_name)
    assert rebuilt.to_json() == config.to_json()
