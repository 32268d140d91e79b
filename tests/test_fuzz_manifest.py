"""Fuzzing hand-edited manifests: ``verify`` reports problems and never raises;
``describe`` and ``reader.load`` raise only the project's errors (iterating may also raise
TensorFlow's ``OpError``). Mutated manifests start from real small ones (copy and index
mode): a value anywhere replaced by random JSON, keys deleted, keys added. Each bug the
fuzzing found (and that was then fixed) is also pinned by a concrete case. Examples are
derandomized: every run tries the same ones.
"""

from __future__ import annotations

import copy
import json
import os
import re

import pytest
from click.testing import CliRunner
from hypothesis import event, given, settings
from hypothesis import strategies as st

import reader
from hdf5_to_records.checks.summary import describe
from hdf5_to_records.checks.verify import verify
from hdf5_to_records.cli import main
from hdf5_to_records.errors import Hdf5ToRecordsError, ManifestError

from fuzzing import FUZZ, NO_SHRINK, SPECIAL_INTS, UTF8, N, write_manifest
from records import tf

# --- manifests ----------------------------------------------------------------------------


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
            "{path} has format version 9; this tool reads versions 1, 2, 3, 4, 5; "
            "upgrade hdf5-to-records to read it",
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
