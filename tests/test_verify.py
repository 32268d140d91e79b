"""``verify`` and ``info``: intact datasets pass, every kind of damage is caught and named
(file, record number), and ``reader.load`` on the same damage raises instead of
returning wrong data.

Damage is done to copies of small datasets converted once per module: bytes flipped in
a record's payload and in its header, shards truncated, deleted or joined by a stray
file, manifests edited by hand (counts, split totals, dtypes, shapes, references), and
index-mode sources changed or deleted. ``--deep`` must find a source whose values
changed behind a restored size and mtime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import hdf5_to_records.checks.verify_shards as verify_module
import reader
from hdf5_to_records._version import __version__
from hdf5_to_records.checks.summary import describe
from hdf5_to_records.checks.verify import Problem, verify
from hdf5_to_records.cli import main
from hdf5_to_records.errors import (
    Hdf5ToRecordsError,
    ManifestError,
    ShardCorrupt,
    ShardMissing,
    SourceChanged,
    SourceNotFound,
)

from records import convert_small, edit_manifest, load_manifest, tf

N = 20  # rows in rows.h5
SCENES = 9  # groups in scenes.h5

# name -> (source file, convert options). Index and auto datasets reference their
# sources relative to the output directory, so copies keep the two side by side.
DATASETS = {
    "copy": ("rows.h5", dict(num_shards=2, rows_per_record=3)),
    "gzip": ("rows.h5", dict(num_shards=2, rows_per_record=3, compression="gzip")),
    "index": (
        "rows.h5",
        dict(
            num_shards=2,
            rows_per_record=3,
            mode="index",
            features={"x": "/x", "y": "/y", "flag": "/flag"},
        ),
    ),
    "auto": ("rows.h5", dict(num_shards=2, rows_per_record=3, mode="auto")),
    "groups": ("scenes.h5", dict(groups="/s/*", num_shards=2, rows_per_record=2)),
    "splits": (
        "rows.h5",
        dict(
            splits={"train": 0.6, "test": 0.4},
            shuffle=True,
            seed=3,
            num_shards=2,
            rows_per_record=4,
        ),
    ),
}


def write_rows(path) -> None:
    """Rows of every kind verify decodes: contiguous floats, gzip-chunked ints (the
    row id), fixed-length strings, variable-length unicode strings and bools."""
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(N * 3, dtype="<f4").reshape(N, 3) / 4
        h5.create_dataset("y", data=np.arange(N, dtype="<i8"), chunks=(4,), compression="gzip")
        h5["name"] = np.array([f"r{i}".encode() for i in range(N)], dtype="S4")
        h5["label"] = np.array([f"é{i}" for i in range(N)], dtype=h5py.string_dtype())
        h5["flag"] = np.arange(N) % 3 == 0


def write_scenes(path) -> None:
    """One group per example: point clouds of 1 to 4 points (ragged), a label, a name."""
    with h5py.File(path, "w") as h5:
        for i in range(SCENES):
            points = np.arange((i % 4 + 1) * 3, dtype="<f4").reshape(-1, 3) + i
            h5[f"s/{i:02d}/points"] = points
            h5[f"s/{i:02d}/label"] = np.int32(i)
            h5[f"s/{i:02d}/name"] = f"scene {i} é"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every dataset of ``DATASETS``, converted once into one directory."""
    root = tmp_path_factory.mktemp("verify")
    write_rows(root / "rows.h5")
    write_scenes(root / "scenes.h5")
    for name, (source, options) in DATASETS.items():
        convert_small(root / source, root / name, **options)
    return root


@pytest.fixture
def dataset(built, tmp_path):
    """``dataset(name)``: a fresh copy of a built dataset (and its sources) to damage."""

    def copy(name: str) -> str:
        source = DATASETS[name][0]
        if not (tmp_path / source).exists():
            shutil.copy2(built / source, tmp_path / source)
        shutil.copytree(built / name, tmp_path / name)
        return str(tmp_path / name)

    return copy


def shard_names(directory: str, split: str = "train") -> list[str]:
    return [s["file"] for s in load_manifest(directory)["splits"][split]["shards"]]


def frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, payload length) of every TFRecord frame: 8-byte length, 4-byte length
    CRC, payload, 4-byte payload CRC."""
    out, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        out.append((at, length))
        at += 16 + length
    assert at == len(data)
    return out


def flip_byte(path: str, offset: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def only_problems(report, *expected: tuple[str, int | None, str]) -> None:
    """The report's problems are exactly ``expected``: (where, record, message regex)."""
    got = [(p.where, p.record, p.message) for p in report.problems]
    assert len(got) == len(expected), got
    for where, record, pattern in expected:
        assert any(w == where and r == record and re.fullmatch(pattern, m) for w, r, m in got), (
            f"no problem {where} record {record}: {pattern!r} in {got}"
        )


def assert_cli_fails(directory: str, *problems: Problem) -> None:
    """``hdf5-to-records verify`` exits 1 and prints each problem on a PROBLEM line."""
    result = run("verify", directory)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    for problem in problems:
        assert f"PROBLEM {problem}" in lines, result.output
    assert lines[-1].startswith(f"FAILED: {directory}: "), lines[-1]
    assert lines[-1].endswith(f"; {len(lines) - 1} problem(s)"), lines[-1]


# --- intact datasets -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_intact_dataset_verifies_ok(built, name):
    directory = str(built / name)
    manifest = load_manifest(directory)
    splits = manifest["splits"].values()
    report = verify(directory)
    assert report.problems == []
    assert report.ok
    assert report.shards == sum(len(s["shards"]) for s in splits)
    assert report.records == sum(s["num_records"] for s in splits)
    assert (
        report.examples
        == sum(s["num_examples"] for s in splits)
        == (SCENES if name == "groups" else N)
    )
    assert report.bytes == sum(s["num_bytes"] for s in splits)
    assert report.compared == 0
    result = run("verify", directory)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"OK: {directory}: {report.shards} shard(s), {report.records} records, "
        f"{report.examples} examples"
    ), result.output


@pytest.mark.parametrize("name", list(DATASETS))
def test_deep_and_sampled_verify_compare_values_and_pass(built, name):
    directory = str(built / name)
    deep = verify(directory, deep=True)
    assert deep.problems == []
    assert deep.compared == deep.records > 0
    sampled = verify(directory, sample=0.5)
    assert sampled.problems == []
    assert 0 < sampled.compared <= sampled.records
    result = run("verify", directory, "--deep")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"values of {deep.records} record(s) compared")
    result = run("verify", directory, "--sample", "0.5")
    assert result.exit_code == 0, result.output
    assert f"values of {sampled.compared} record(s) compared" in result.output


def test_sample_is_a_seeded_fraction_of_the_records(tmp_path, built):
    out = convert_small(built / "rows.h5", tmp_path / "out", rows_per_record=1, num_shards=2)
    counts = {seed: verify(out, sample=0.5, seed=seed).compared for seed in range(4)}
    assert all(0 < c < N for c in counts.values()), counts
    assert len(set(counts.values())) > 1, counts  # the seed picks the records
    assert verify(out, sample=0.5, seed=1).compared == counts[1]
    assert verify(out, sample=1.0).compared == N


def test_progress_reports_every_shard_byte(built):
    seen = []
    report = verify(str(built / "gzip"), progress=seen.append)
    assert sum(seen) == report.bytes > 0


@pytest.mark.parametrize("block", [1, 7, 64])
def test_small_read_blocks_give_the_same_report(built, dataset, monkeypatch, block):
    """Records straddle read blocks (and gzip blocks): framing must carry across them."""
    broken = dataset("copy")
    shard = os.path.join(broken, shard_names(broken)[1])
    at, _ = frames(open(shard, "rb").read())[2]
    flip_byte(shard, at + 12 + 5)
    expected = {n: verify(str(built / n)) for n in ("copy", "gzip", "groups")}
    expected_broken = [str(p) for p in verify(broken).problems]
    monkeypatch.setattr(verify_module, "READ_BLOCK", block)
    for name, before in expected.items():
        after = verify(str(built / name), deep=True)
        assert after.problems == []
        assert (after.records, after.examples, after.bytes) == (
            before.records,
            before.examples,
            before.bytes,
        )
        assert after.compared == after.records
    assert sorted(str(p) for p in verify(broken).problems) == sorted(expected_broken)


def test_json_output_has_the_reports_problems(dataset):
    directory = dataset("copy")
    shard = os.path.join(directory, shard_names(directory)[0])
    at, _ = frames(open(shard, "rb").read())[1]
    flip_byte(shard, at + 12 + 3)
    report = verify(directory)
    result = run("verify", directory, "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["problems"] == [p.to_json() for p in report.problems]
    assert {
        "file": shard_names(directory)[0],
        "record": 1,
        "message": "bad TFRecord framing: data CRC mismatch",
    } in data["problems"]
    assert (data["shards"], data["records"], data["examples"]) == (
        report.shards,
        report.records,
        report.examples,
    )


def test_json_output_of_an_intact_dataset(built):
    directory = str(built / "groups")
    result = run("verify", directory, "--json", "--deep")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    report = verify(directory, deep=True)
    assert data["ok"] is True
    assert data["problems"] == []
    assert data["directory"] == directory
    assert data["compared_records"] == report.compared == report.records
    assert data["examples"] == SCENES


# --- shard damage ------------------------------------------------------------------------


def test_flipped_payload_byte_is_a_data_crc_problem_at_its_record(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[1]
    shard = os.path.join(directory, name)
    layout = frames(open(shard, "rb").read())
    at, _ = layout[2]
    flip_byte(shard, at + 12 + 5)  # inside record 2's payload
    report = verify(directory)
    only_problems(
        report,
        (name, 2, "bad TFRecord framing: data CRC mismatch"),
        (name, None, r"sha256 differs from the manifest \(corrupt or rewritten\)"),
        (name, None, f"2 records, the manifest says {len(layout)}"),
        (name, None, "6 examples, the manifest says 10"),
    )
    assert_cli_fails(directory, Problem(name, "bad TFRecord framing: data CRC mismatch", 2))


def test_flipped_header_byte_is_a_length_crc_problem_at_its_record(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[1]
    shard = os.path.join(directory, name)
    at, _ = frames(open(shard, "rb").read())[3]
    flip_byte(shard, at + 1)  # record 3's length field
    report = verify(directory)
    only_problems(
        report,
        (name, 3, "bad TFRecord framing: length CRC mismatch"),
        (name, None, r"sha256 differs from the manifest \(corrupt or rewritten\)"),
        (name, None, "3 records, the manifest says 4"),
        (name, None, "9 examples, the manifest says 10"),
    )
    assert_cli_fails(directory, Problem(name, "bad TFRecord framing: length CRC mismatch", 3))


def test_flipped_byte_in_a_gzip_shard_is_caught(dataset):
    directory = dataset("gzip")
    name = shard_names(directory)[0]
    shard = os.path.join(directory, name)
    flip_byte(shard, os.path.getsize(shard) // 2)
    report = verify(directory)
    assert not report.ok
    assert all(p.where == name for p in report.problems)
    messages = [p.message for p in report.problems]
    assert "sha256 differs from the manifest (corrupt or rewritten)" in messages
    assert any(m.startswith("bad TFRecord framing: ") for m in messages), messages


def test_truncated_shard_is_named_with_its_last_record(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[1]
    shard = os.path.join(directory, name)
    data = open(shard, "rb").read()
    layout = frames(data)
    with open(shard, "wb") as handle:
        handle.write(data[:-7])
    report = verify(directory)
    last = len(layout) - 1
    only_problems(
        report,
        (name, last, r"bad TFRecord framing: truncated record \(\d+ bytes at the end\)"),
        (name, None, f"{len(data) - 7} bytes, the manifest says {len(data)}"),
        (name, None, r"sha256 differs from the manifest \(corrupt or rewritten\)"),
        (name, None, f"{last} records, the manifest says {len(layout)}"),
        (name, None, "9 examples, the manifest says 10"),
    )
    assert_cli_fails(
        directory, Problem(name, f"{len(data) - 7} bytes, the manifest says {len(data)}")
    )


def test_missing_shard_is_named(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[0]
    os.remove(os.path.join(directory, name))
    report = verify(directory)
    only_problems(report, (name, None, "missing: listed in the manifest, not on disk"))
    assert report.shards == 2
    assert report.examples == 10  # the other shard was still checked
    assert_cli_fails(directory, Problem(name, "missing: listed in the manifest, not on disk"))


def test_stray_file_is_named(dataset):
    directory = dataset("copy")
    with open(os.path.join(directory, "notes.txt"), "w") as handle:
        handle.write("not a shard")
    report = verify(directory)
    only_problems(report, ("notes.txt", None, "stray file: not listed in the manifest"))
    assert_cli_fails(directory, Problem("notes.txt", "stray file: not listed in the manifest"))


def test_unreadable_shard_is_named(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[0]
    os.remove(os.path.join(directory, name))
    os.mkdir(os.path.join(directory, name))
    report = verify(directory)
    only_problems(report, (name, None, "unreadable: Is a directory"))


# --- hand-edited manifests ----------------------------------------------------------------


def _shift_shard_count(key: str, delta: int):
    """Change shard 0's ``key`` and its split's total alike: the manifest stays
    self-consistent, only the shard on disk disagrees."""

    def change(manifest):
        split = manifest["splits"]["train"]
        split["shards"][0][key] += delta
        split[key] += delta

    return change


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
    edit_manifest(directory, _shift_shard_count(key, delta))
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


def _set_feature(feature_name: str, **changes):
    def change(manifest):
        feature = next(f for f in manifest["features"] if f["name"] == feature_name)
        feature.update(changes)

    return change


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
    edit_manifest(directory, _set_feature(feature, **changes))
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
    edit_manifest(out, _set_feature("y", dtype="int32"))
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
    edit_manifest(directory, _set_feature("x", shape=[1, 3]))
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


# --- reader.load on the same damage -----------------------------------------------------------


def test_load_refuses_a_truncated_shard(dataset):
    directory = dataset("copy")
    name = shard_names(directory)[1]
    shard = os.path.join(directory, name)
    data = open(shard, "rb").read()
    with open(shard, "wb") as handle:
        handle.write(data[:-7])
    message = (
        f"shard {shard} has {len(data) - 7} bytes but the manifest says {len(data)} "
        "(truncated or overwritten?)"
    )
    with pytest.raises(ShardCorrupt, match=re.escape(message)):
        reader.load(directory)


def test_load_refuses_a_missing_shard(dataset):
    directory = dataset("copy")
    shard = os.path.join(directory, shard_names(directory)[0])
    os.remove(shard)
    with pytest.raises(
        ShardMissing, match=re.escape(f"shard {shard} listed in the manifest is missing")
    ):
        reader.load(directory)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_load_of_a_flipped_byte_raises(dataset, built, where):
    directory = dataset("copy")
    shard = os.path.join(directory, shard_names(directory)[1])
    records = frames(open(shard, "rb").read())
    at, _ = records[2]
    flip_byte(shard, at + (12 + 5 if where == "payload" else 1))
    message = f"shard {shard} does not match its sha256 in the manifest"
    with pytest.raises(ShardCorrupt, match=re.escape(message)):
        reader.load(directory, verify_checksums=True)
    with h5py.File(built / "rows.h5") as h5:
        x = h5["x"][()]
    seen = []
    # TensorFlow alone names no file ("DataLossError: corrupted record at N"): the reader
    # names the shard, the record and its offset.
    named = f"shard {shard} is corrupt or truncated: record 2 of {len(records)} (at byte {at})"
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(named)):
        for example in reader.load(directory):
            seen.append(int(example["y"]))
            np.testing.assert_array_equal(example["x"].numpy(), x[seen[-1]])
    assert seen == list(range(len(seen)))  # what came before the error was right
    assert len(seen) < 16  # nothing past the damaged record came through


@pytest.mark.parametrize(
    "delta, message",
    [
        (1, "Input dataset was expected to contain 21 elements but contained only 20 elements"),
        (-1, "Input dataset was expected to contain 19 elements but contained at least 20"),
    ],
)
def test_load_of_edited_example_counts_fails_when_iterated(dataset, delta, message):
    """The counts are trusted at load (they set the cardinality) and caught on reading."""
    directory = dataset("copy")
    edit_manifest(directory, _shift_shard_count("num_examples", delta))
    ds = reader.load(directory)
    assert len(ds) == N + delta
    with pytest.raises(tf.errors.FailedPreconditionError, match=message):
        for _ in ds:
            pass


def test_load_of_edited_record_counts_keeps_the_write_order_or_raises(dataset):
    directory = dataset("copy")
    edit_manifest(
        directory,
        lambda m: [s.update(num_records=1) for s in m["splits"]["train"]["shards"]],
    )
    try:
        ids = [int(e["y"]) for e in reader.load(directory)]
    except (Hdf5ToRecordsError, tf.errors.OpError):
        return
    assert ids == list(range(N))


@pytest.mark.parametrize("changes", [{"dtype": "float64"}, {"shape": [4]}, {"shape": [2]}])
def test_load_of_an_edited_feature_raises_instead_of_returning_wrong_values(dataset, changes):
    directory = dataset("copy")
    edit_manifest(directory, _set_feature("x", **changes))
    with pytest.raises(
        (Hdf5ToRecordsError, tf.errors.OpError), match="does not match the manifest"
    ):
        for _ in reader.load(directory):
            pass


# --- verify on a manifest path ----------------------------------------------------------------


def test_verify_accepts_the_manifest_path_like_the_reader(built):
    path = str(built / "copy" / "manifest.json")
    assert len(list(reader.load(path))) == N
    report = verify(path)
    assert report.ok, report.problems


# --- info -------------------------------------------------------------------------------------


def info_lines(directory: str) -> list[str]:
    result = run("info", directory)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == describe(directory)
    return [" ".join(line.split()) for line in result.output.splitlines()]


def test_info_of_a_copy_dataset(built):
    directory = str(built / "copy")
    manifest = load_manifest(directory)
    records = manifest["splits"]["train"]["num_records"]
    lines = info_lines(directory)
    assert lines[0] == (f"copy ({directory}): format v1, written by hdf5-to-records {__version__}")
    assert lines[1] == (
        "storage copy, compression none, up to 3 example(s) per record, rows as examples"
    )
    assert lines[2] == "splits:"
    assert lines[3].startswith(f"train 20 examples 2 shard(s) {records} records ")
    assert lines[4].startswith("total 20 examples ")
    features = lines[lines.index("features:") + 1 : lines.index("sources (1):")]
    assert features == [  # manifest order: sorted by name
        "flag bool () copied from /flag (|b1)",
        "label string () copied from /label (|O)",
        "name string () copied from /name (|S4)",
        "x float32 (3) copied from /x (<f4)",
        "y int64 () copied from /y (<i8)",
    ]
    source = lines[lines.index("sources (1):") + 1]
    assert re.fullmatch(
        rf"{re.escape(str(built / 'rows.h5'))} [\d.]+ kB, modified \d{{4}}-\d\d-\d\d \d\d:\d\d "
        r"UTC, 20 of 20 selected",
        source,
    ), source
    assert lines[-1] == (
        "settings: mode=copy, num_shards=2, compression=none, rows_per_record=3; splits train=1.0"
    )


def test_info_of_an_index_dataset(built):
    directory = str(built / "index")
    lines = info_lines(directory)
    assert lines[0].endswith("format v2, written by hdf5-to-records " + __version__)
    assert lines[1].startswith("storage index (references into the HDF5 sources), compression none")
    assert lines[lines.index("features:") + 1 : lines.index("sources (1):")] == [
        "x float32 (3) referenced from /x (<f4)",  # the order of --feature
        "y int64 () referenced from /y (<i8)",
        "flag bool () referenced from /flag (|b1)",
    ]
    assert lines[lines.index("sources (1):") + 1].startswith("../rows.h5 ")
    assert lines[-1].startswith("settings: mode=index, num_shards=2,")


def test_info_of_auto_groups_and_split_datasets(built):
    auto = info_lines(str(built / "auto"))
    assert "name string () copied from /name (|S4)" in auto
    assert "x float32 (3) referenced from /x (<f4)" in auto
    groups = info_lines(str(built / "groups"))
    assert groups[1].endswith("up to 2 example(s) per record, groups as examples")
    assert "points float32 (?, 3) copied from points (<f4)" in groups
    assert any(line.startswith("total 9 examples") for line in groups)
    splits = info_lines(str(built / "splits"))
    manifest = load_manifest(str(built / "splits"))
    for split in ("train", "test"):
        count = manifest["splits"][split]["num_examples"]
        assert any(line.startswith(f"{split} {count} examples 2 shard(s)") for line in splits)
    assert splits[-1].startswith("settings: mode=copy, shuffle=True, seed=3, num_shards=2,")
    assert splits[-1].endswith("; splits train=0.6, test=0.4")


def test_info_of_a_directory_without_a_manifest(tmp_path):
    result = run("info", tmp_path)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: no manifest at {tmp_path}/manifest.json: not a converted dataset, or the "
        "conversion did not finish"
    ]
    with pytest.raises(ManifestError, match="no manifest at"):
        describe(str(tmp_path))


def test_verify_of_a_directory_without_a_manifest(tmp_path):
    report = verify(str(tmp_path))
    assert report.problems == [
        Problem(
            "manifest.json",
            f"no manifest at {tmp_path}/manifest.json: not a converted dataset, or the "
            "conversion did not finish",
        )
    ]
    assert_cli_fails(str(tmp_path), report.problems[0])


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--deep", "--sample", "0.5"], "Error: --deep and --sample are mutually exclusive"),
        (["--sample", "0"], "Error: --sample must be in (0, 1], got 0.0"),
        (["--sample", "2"], "Error: --sample must be in (0, 1], got 2.0"),
        (["--sample", "-0.5"], "Error: --sample must be in (0, 1], got -0.5"),
        (["--sample", "half"], "Error: Invalid value for '--sample': 'half' is not a valid float."),
    ],
)
def test_verify_usage_errors_exit_2(built, args, message):
    result = run("verify", built / "copy", *args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [message]
