"""``verify`` on hand-edited manifests (counts, split totals, dtypes, shapes,
references), on index-mode sources changed or deleted, and ``--deep`` on values
changed behind a restored size and mtime."""

from __future__ import annotations

import os
import re
import shutil

import h5py
import numpy as np
import pytest

import hdf5_to_records.checks.verify_shards as verify_module
import reader
from hdf5_to_records.checks.verify import Problem, verify
from hdf5_to_records.errors import (
    ManifestError,
    SourceChanged,
    SourceNotFound,
)

from records import convert_small, edit_manifest, load_manifest
from verifying import (
    N,
    assert_cli_fails,
    only_problems,
    run,
    set_feature,
    shard_names,
    shift_shard_count,
)

# --- hand-edited manifests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key, delta, message",
    [
        ("num_examples", 1, "10 examples, the manifest says 11"),
        ("num_examples", -3, "10 examples, the manifest says 7"),
        ("num_records", 1, "4 records, the manifest says 5"),
    ],
)
def test_wrong_shard_count_in_the_manifest_is_named(dataset, key, delta, message):
    directory = dataset("copy")
    edit_manifest(directory, shift_shard_count(key, delta))
    name = shard_names(directory)[0]
    report = verify(directory)
    only_problems(report, (name, None, message))
    assert_cli_fails(directory, Problem(name, message))


@pytest.mark.parametrize("key", ["num_examples", "num_records", "num_bytes"])
def test_wrong_split_total_in_the_manifest_is_named(dataset, key):
    directory = dataset("copy")
    total = load_manifest(directory)["splits"]["train"][key]
    edit_manifest(directory, lambda m: m["splits"]["train"].update({key: total + 1}))
    report = verify(directory)
    message = f"split 'train': {key} is {total + 1} but its shards add up to {total}"
    only_problems(report, ("manifest.json", None, re.escape(message)))
    assert_cli_fails(directory, Problem("manifest.json", message))


@pytest.mark.parametrize(
    "name, feature, changes, expected",
    [
        (
            "copy",
            "x",
            {"dtype": "float64"},
            "feature 'x': 36 bytes, expected 72 for 3 example(s) of float64 (3,)",
        ),
        (
            "copy",
            "x",
            {"shape": [4]},
            "feature 'x': 36 bytes, expected 48 for 3 example(s) of float32 (4,)",
        ),
        (
            "copy",
            "x",
            {"shape": [3, 2]},
            "feature 'x': 36 bytes, expected 72 for 3 example(s) of float32 (3, 2)",
        ),
        ("copy", "name", {"shape": [2]}, "feature 'name': 3 strings, expected 6"),
        ("copy", "x", {"name": "title"}, "feature 'title' is missing or not a bytes list"),
        (
            "groups",
            "points",
            {"shape": [None, 4]},
            "feature 'points': example shape (1, 3), manifest (None, 4)",
        ),
    ],
    ids=["dtype", "shape", "rank", "strings", "renamed", "ragged-shape"],
)
def test_feature_edited_in_the_manifest_fails_to_decode_every_record(
    dataset, name, feature, changes, expected
):
    directory = dataset(name)
    edit_manifest(directory, set_feature(feature, **changes))
    report = verify(directory)
    assert not report.ok
    shards = load_manifest(directory)["splits"]["train"]["shards"]
    assert {(p.where, p.record) for p in report.problems} == {
        (s["file"], r) for s in shards for r in range(s["num_records"])
    }
    first = Problem(shards[0]["file"], f"does not decode: {expected}", 0)
    assert first in report.problems
    assert_cli_fails(directory, first)


def test_record_problems_are_capped_per_shard(tmp_path, built):
    out = convert_small(built / "rows.h5", tmp_path / "out", rows_per_record=1, num_shards=1)
    edit_manifest(out, set_feature("y", dtype="int32"))
    name = shard_names(out)[0]
    report = verify(out)
    records = [p.record for p in report.problems if p.record is not None]
    assert records == list(range(verify_module.MAX_RECORD_PROBLEMS))
    assert Problem(name, f"{N - len(records)} more record problem(s) like the ones above") in (
        report.problems
    )
    assert report.examples == N  # counted although their values do not decode


def test_shape_edit_keeping_the_size_passes_shallow_but_fails_deep(dataset):
    """Records store no shape for fixed-shape features: (3,) edited to (1, 3) decodes,
    and only a comparison with the source can tell."""
    directory = dataset("copy")
    edit_manifest(directory, set_feature("x", shape=[1, 3]))
    assert verify(directory).ok
    deep = verify(directory, deep=True)
    assert {p.message for p in deep.problems} == {
        f"feature 'x', example {i}: values differ from the source" for i in (0, 3, 6, 9)
    }


# --- index mode: sources -----------------------------------------------------------------


def _check_source_problem(directory: str, message: str) -> None:
    """verify names the source problem once, then every record it could not decode (at
    the first referenced feature)."""
    report = verify(directory)
    assert [p for p in report.problems if p.where == "sources"] == [Problem("sources", message)]
    records = [p for p in report.problems if p.where != "sources"]
    shards = load_manifest(directory)["splits"]["train"]["shards"]
    assert {(p.where, p.record) for p in records} == {
        (s["file"], r) for s in shards for r in range(s["num_records"])
    }
    assert {p.message for p in records} == {
        "does not decode: feature 'x': its sources could not be checked"
    }
    assert_cli_fails(directory, Problem("sources", message))


def test_changed_source_is_reported_as_source_changed(dataset):
    directory = dataset("index")
    source = os.path.join(os.path.dirname(directory), "rows.h5")
    with h5py.File(source, "a") as h5:
        h5["extra"] = np.arange(100)
    size = os.path.getsize(source)
    with pytest.raises(
        SourceChanged, match=r"source \.\./rows\.h5 changed since the conversion"
    ) as caught:
        reader.load(directory)
    assert str(caught.value) == (
        f"source ../rows.h5 changed since the conversion: {size} bytes, recorded "
        f"{load_manifest(directory)['sources'][0]['size']}; convert again"
    )
    _check_source_problem(directory, str(caught.value))


def test_same_size_source_with_other_values_is_reported_as_source_changed(dataset):
    directory = dataset("index")
    source = os.path.join(os.path.dirname(directory), "rows.h5")
    size = os.path.getsize(source)
    with h5py.File(source, "r+") as h5:
        h5["x"][4, 1] = -1.0
    assert os.path.getsize(source) == size
    message = (
        "source ../rows.h5 changed since the conversion (modified, and its content "
        "fingerprint differs); convert again"
    )
    with pytest.raises(SourceChanged, match=re.escape(message)):
        reader.load(directory)
    _check_source_problem(directory, message)


def test_deleted_source_is_reported(dataset):
    directory = dataset("index")
    source = os.path.join(os.path.dirname(directory), "rows.h5")
    os.remove(source)
    message = f"source ../rows.h5 of {directory} is missing ({source})"
    with pytest.raises(SourceNotFound, match=re.escape(message)):
        reader.load(directory)
    _check_source_problem(directory, message)


def test_negative_offset_in_a_reference_is_a_manifest_error(dataset):
    directory = dataset("index")
    edit_manifest(directory, lambda m: m["sources"][0]["references"]["x"].update(offset=-8))
    message = (
        f"manifest in {directory}: malformed source entry (ValueError('negative size or offset'))"
    )
    with pytest.raises(ManifestError, match=re.escape(message)):
        reader.load(directory)
    _check_source_problem(directory, message)


def test_auto_mode_copied_features_are_still_checked_without_sources(dataset):
    directory = dataset("auto")
    os.remove(os.path.join(os.path.dirname(directory), "rows.h5"))
    report = verify(directory)
    assert [p.where for p in report.problems if p.record is None][0] == "sources"
    # Referenced features cannot be read; the copied ones are not blamed.
    assert not [p for p in report.problems if "'name'" in p.message or "'label'" in p.message]


# --- deep: values changed behind a restored size and mtime ----------------------------------


def _locate(directory: str, example: int) -> tuple[str, int, int]:
    """(shard file, record, position in the shard) of the ``example``-th example written
    (unshuffled, one split, copy mode: every record but a shard's last is full)."""
    manifest = load_manifest(directory)
    per_record = manifest["records"]["rows_per_record"]
    for shard in manifest["splits"]["train"]["shards"]:
        if example < shard["num_examples"]:
            return shard["file"], example // per_record, example
        example -= shard["num_examples"]
    raise AssertionError("example out of range")


def _rewrite_keeping_size_and_mtime(path, dataset_name: str, index) -> None:
    stat = os.stat(path)
    with h5py.File(path, "r+") as h5:
        value = h5[dataset_name][index]
        h5[dataset_name][index] = value + 100
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns


@pytest.mark.parametrize(
    "source, options, dataset_name, index, feature, example",
    [
        ("rows.h5", dict(num_shards=2, rows_per_record=3), "x", (13, 1), "x", 13),
        ("rows.h5", dict(num_shards=2, rows_per_record=3, compression="gzip"), "y", 4, "y", 4),
        (
            "scenes.h5",
            dict(groups="/s/*", num_shards=2, rows_per_record=2),
            "s/06/points",
            (0, 2),
            "points",
            6,
        ),
    ],
    ids=["rows", "gzip", "groups"],
)
def test_deep_finds_values_changed_behind_size_and_mtime(
    tmp_path, built, source, options, dataset_name, index, feature, example
):
    path = tmp_path / source
    shutil.copy2(built / source, path)
    out = convert_small(path, tmp_path / "out", **options)
    _rewrite_keeping_size_and_mtime(path, dataset_name, index)
    assert verify(out).ok
    shard, record, position = _locate(out, example)
    problem = Problem(
        shard, f"feature {feature!r}, example {position}: values differ from the source", record
    )
    deep = verify(out, deep=True)
    assert deep.problems == [problem]
    result = run("verify", out, "--deep")
    assert result.exit_code == 1, result.output
    assert f"PROBLEM {problem}" in result.output.splitlines()
    assert run("verify", out).exit_code == 0


def test_deep_without_the_source_says_it_cannot_rebuild_the_plan(tmp_path, built):
    shutil.copy2(built / "rows.h5", tmp_path / "rows.h5")
    out = convert_small(tmp_path / "rows.h5", tmp_path / "out", num_shards=2)
    os.remove(tmp_path / "rows.h5")
    assert verify(out).ok  # copied values need no source
    deep = verify(out, deep=True)
    assert deep.problems == [
        Problem("sources", f"cannot rebuild the plan: source {tmp_path}/rows.h5: no such file")
    ]
    assert deep.compared == 0


def test_deep_on_a_transform_dataset_says_values_cannot_be_compared(tmp_path, built, monkeypatch):
    """--transform outputs are not the sources' values: every other check runs and
    passes, and a note says the values were not compared (a CI --sample job still
    passes on such datasets)."""
    (tmp_path / "double_it.py").write_text("def double(e):\n    return {'x': e['x'] * 2}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = convert_small(built / "rows.h5", tmp_path / "out", transform="double_it:double")
    assert verify(out).ok
    for options in ({"deep": True}, {"sample": 0.5}):
        report = verify(out, **options)
        assert report.ok
        assert report.notes == ["values of --transform outputs are not compared"]
        assert report.compared == 0
        assert report.examples == N
