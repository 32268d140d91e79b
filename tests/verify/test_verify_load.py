"""``reader.load`` on the damage ``verify`` finds: it raises instead of returning wrong
data; and ``verify`` takes a manifest path as the reader does."""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.checks.verify import verify
from hdf5_to_records.errors import (
    Hdf5ToRecordsError,
    ShardCorrupt,
    ShardMissing,
)

from records import edit_manifest, tf
from verifying import N, flip_byte, frames, set_feature, shard_names, shift_shard_count

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
    crc = "data" if where == "payload" else "length"
    message = f"shard {shard}: {crc} CRC mismatch"
    with pytest.raises(ShardCorrupt, match=re.escape(message)):
        reader.load(directory, verify_checksums=True)
    with h5py.File(built / "rows.h5") as h5:
        x = h5["x"][()]
    seen = []
    # TensorFlow alone names no file ("DataLossError: corrupted record at N"): the reader
    # names the shard, the record and its offset.
    named = f"record 2 of shard {shard} (at byte {at})"
    with pytest.raises(tf.errors.OpError, match=re.escape(named)):
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
    edit_manifest(directory, shift_shard_count("num_examples", delta))
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
    edit_manifest(directory, set_feature("x", **changes))
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
