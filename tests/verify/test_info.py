"""``info``: what a converted dataset holds, from its manifest; and ``verify``'s usage
errors."""

from __future__ import annotations

import re

import pytest

from hdf5_to_records._version import __version__
from hdf5_to_records.checks.summary import describe
from hdf5_to_records.checks.verify import Problem, verify
from hdf5_to_records.errors import (
    ManifestError,
)

from records import load_manifest
from verifying import assert_cli_fails, run

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
    assert lines[0] == (f"copy ({directory}): format v5, written by hdf5-to-records {__version__}")
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
    assert lines[0].endswith("format v5, written by hdf5-to-records " + __version__)
    assert lines[1].startswith(
        "storage index (references into the HDF5 sources, each byte range with its CRC32C, "
        "checked on every read), compression none"
    )
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
