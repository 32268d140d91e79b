"""``verify`` on intact datasets, and on shards damaged every way: flipped bytes in a
record's payload and header, truncated, missing, stray and unreadable files."""

from __future__ import annotations

import json
import os

import pytest

from hdf5_to_records.checks.verify import Problem, verify

from records import convert_small, load_manifest
from verifying import (
    DATASETS,
    SCENES,
    N,
    assert_cli_fails,
    flip_byte,
    frames,
    only_problems,
    run,
    shard_names,
)

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
def test_small_read_blocks_give_the_same_report(built, dataset, block):
    """Records straddle read blocks (and gzip blocks): framing must carry across them."""
    broken = dataset("copy")
    shard = os.path.join(broken, shard_names(broken)[1])
    at, _ = frames(open(shard, "rb").read())[2]
    flip_byte(shard, at + 12 + 5)
    expected = {n: verify(str(built / n)) for n in ("copy", "gzip", "groups")}
    expected_broken = [str(p) for p in verify(broken).problems]
    for name, before in expected.items():
        after = verify(str(built / name), deep=True, read_block=block)
        assert after.problems == []
        assert (after.records, after.examples, after.bytes) == (
            before.records,
            before.examples,
            before.bytes,
        )
        assert after.compared == after.records
    assert sorted(str(p) for p in verify(broken, read_block=block).problems) == sorted(
        expected_broken
    )


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
