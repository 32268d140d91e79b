"""What the verify tests share: the small source files, the datasets converted from
them, and helpers that damage shards and read ``verify``'s report."""

from __future__ import annotations

import re
import struct

import h5py
import numpy as np
from click.testing import CliRunner

from hdf5_to_records.checks.verify import Problem
from hdf5_to_records.cli import main

from records import load_manifest

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


def shift_shard_count(key: str, delta: int):
    """Change shard 0's ``key`` and its split's total alike: the manifest stays
    self-consistent, only the shard on disk disagrees. The shard's record index entries
    go (as in a manifest written before them), or the manifest would contradict itself."""

    def change(manifest):
        split = manifest["splits"]["train"]
        split["shards"][0][key] += delta
        split["shards"][0].pop("index_sha256", None)
        split["shards"][0].pop("record_examples", None)
        split[key] += delta

    return change


def set_feature(feature_name: str, **changes):
    def change(manifest):
        feature = next(f for f in manifest["features"] if f["name"] == feature_name)
        feature.update(changes)

    return change
