"""A corrupt or truncated shard, read by ``reader.load``, raises an error that names the
shard file and the byte offset of the first record that does not read; it is never
skipped silently."""

from __future__ import annotations

import os
import re
import struct

import h5py
import numpy as np
import pytest

import reader

from records import convert_small, edit_manifest, load_manifest, tf

ROWS = 600


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(7)
    with h5py.File(root / "src.h5", "w") as h5:
        h5.create_dataset("x", data=rng.normal(size=(ROWS, 64)).astype("f4"), chunks=(32, 64))
        h5["id"] = np.arange(ROWS, dtype="i8")
    return root / "src.h5"


def _dataset(source, tmp_path, *, indexed: bool = False, **options) -> str:
    """A converted dataset; without ``indexed``, its manifest lists no record indexes
    (as datasets written before them), so the reader streams the shards, as it does
    gzip shards and the tf.data service: what ``reader/records.py`` covers."""
    options = {"num_shards": 3, "rows_per_record": 20, **options}
    out = convert_small(source, tmp_path / "out", **options)
    if not indexed:
        edit_manifest(out, _without_indexes)
    return out


def _without_indexes(manifest) -> None:
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            shard.pop("index_sha256", None)
            shard.pop("record_examples", None)


def _shard(directory: str, index: int = 1) -> str:
    name = load_manifest(directory)["splits"]["train"]["shards"][index]["file"]
    return os.path.join(directory, name)


def _record_starts(path: str) -> list[int]:
    """Byte offsets of an uncompressed TFRecord file's records, from its framing."""
    data, starts, at = open(path, "rb").read(), [], 0
    while at < len(data):
        starts.append(at)
        (length,) = struct.unpack("<Q", data[at : at + 8])
        at += 16 + length
    return starts


def _flip(path: str, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _read_all(directory: str, **options) -> int:
    return sum(int(b["id"].shape[0]) for b in reader.load(directory, batch_size=16, **options))


def _error(directory: str, **options) -> str:
    with pytest.raises(tf.errors.InvalidArgumentError, match="assertion failed: .shard ") as info:
        _read_all(directory, **options)
    return str(info.value)


@pytest.mark.parametrize("part", ["data", "length"])
def test_a_flipped_byte_names_the_shard_and_the_record_offset(source, tmp_path, part):
    directory = _dataset(source, tmp_path)
    path = _shard(directory)
    starts = _record_starts(path)
    record = 3
    # The data of record 3, or its length field (whose own CRC then fails).
    _flip(path, starts[record] + (100 if part == "data" else 2))
    message = _error(directory)
    assert f"shard {path} is corrupt or truncated" in message
    assert f"record {record} of {len(starts)} (at byte {starts[record]})" in message
    assert "hdf5-to-records verify" in message


def test_a_shard_truncated_after_load_names_the_shard(source, tmp_path):
    directory = _dataset(source, tmp_path)
    path = _shard(directory, 2)
    starts = _record_starts(path)
    ds = reader.load(directory, batch_size=16)  # checks sizes: the file is whole here
    os.truncate(path, starts[5] + 30)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(path)) as info:
        sum(1 for _ in ds)
    assert f"record 5 of {len(starts)} (at byte {starts[5]})" in str(info.value)


def test_gzip_shards_name_the_shard(source, tmp_path):
    directory = _dataset(source, tmp_path, compression="gzip")
    path = _shard(directory, 0)
    _flip(path, os.path.getsize(path) // 2)
    message = _error(directory)
    assert f"shard {path} is corrupt or truncated" in message
    assert "of the uncompressed stream" in message


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_shuffled_cached_and_repeated_reads_name_the_shard_too(source, tmp_path, mode):
    directory = _dataset(source, tmp_path, mode=mode, num_shards=2)
    path = _shard(directory, 0)
    _flip(path, _record_starts(path)[-1] + 20)
    message = _error(directory, shuffle=True, seed=1, cache=True, repeat=2)
    assert f"shard {path} is corrupt or truncated" in message


def test_records_past_the_manifest_count_are_not_read_and_the_read_fails(source, tmp_path):
    """A manifest that lists fewer records than a shard holds (hand-edited): the reader
    reads what the manifest lists, and the split's example count then fails."""
    directory = _dataset(source, tmp_path)

    def fewer(manifest):
        manifest["splits"]["train"]["shards"][0]["num_records"] -= 1

    edit_manifest(directory, fewer)
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain"):
        _read_all(directory)


def test_a_manifest_that_lists_more_records_than_a_shard_holds_names_it(source, tmp_path):
    directory = _dataset(source, tmp_path)
    path, starts = _shard(directory, 0), _record_starts(_shard(directory, 0))

    def more(manifest):
        manifest["splits"]["train"]["shards"][0]["num_records"] += 1

    edit_manifest(directory, more)
    message = _error(directory)
    assert (
        f"shard {path} is corrupt or truncated: record {len(starts)} of {len(starts) + 1}"
        in message
    )
    assert f"(at byte {os.path.getsize(path)})" in message


def test_an_intact_dataset_reads_every_example(source, tmp_path):
    directory = _dataset(source, tmp_path)
    assert _read_all(directory) == ROWS
    ids = np.concatenate([b["id"].numpy() for b in reader.load(directory, batch_size=64)])
    with h5py.File(source) as h5:
        assert ids.tolist() == h5["id"][()].tolist()


def test_the_cli_reports_a_corrupt_shard_in_one_line(source, tmp_path):
    from click.testing import CliRunner

    from hdf5_to_records.cli import main

    for indexed, said in ((False, "Error: shard {} is corrupt"),
                          (True, "Error: record 2 of shard {} (at byte")):  # fmt: skip
        directory = _dataset(source, tmp_path / str(indexed), indexed=indexed)
        path = _shard(directory, 0)
        _flip(path, _record_starts(path)[2] + 50)
        result = CliRunner().invoke(main, ["bench", directory, "--batch-size", "16"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(said.replace("{}", path)), lines
        assert "internal error" not in result.output
