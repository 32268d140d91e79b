"""Random access (issue 15): the record index, a seeded global order, exact resume.

A checkpoint written after N batches and restored in a fresh process must continue with
the batches an uninterrupted run gives, bit for bit: shuffled or not, copy or index
mode, across an epoch boundary. Each side runs in its own subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import reader

from records import convert_small

ROWS = 3000
RESUME = r"""
import json, os, sys
import numpy as np
import reader
from hdf5_to_records._tf import import_tensorflow
tf = import_tensorflow()
path, options, skip, take, ckpt, mode = sys.argv[1:7]
options = json.loads(options)
ds = reader.load(path, "train", **options)
it = iter(ds)
size = 0
if mode == "restore":
    tf.train.Checkpoint(iterator=it).read(ckpt).assert_consumed()
else:  # read `skip` batches, write the checkpoint, then go on uninterrupted
    for _ in range(int(skip)):
        next(it)
    tf.train.Checkpoint(iterator=it).write(ckpt)
    size = sum(os.path.getsize(os.path.join(os.path.dirname(ckpt), f))
               for f in os.listdir(os.path.dirname(ckpt)))
out = [next(it)["id"].numpy().tolist() for _ in range(int(take))]
print(json.dumps({"batches": out, "bytes": size}))
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    source = root / "src.h5"
    with h5py.File(source, "w") as h5:
        h5.create_dataset("x", data=np.arange(ROWS * 4, dtype="<f4").reshape(ROWS, 4))
        h5["id"] = np.arange(ROWS, dtype=np.int64)
    copy = convert_small(source, root / "copy", num_shards=3, rows_per_record=64)
    index = convert_small(source, root / "index", num_shards=3, mode="index")
    return {"copy": copy, "index": index, "source": source}


def _run(path, options, skip, take, ckpt, mode):
    done = subprocess.run(
        [sys.executable, "-c", RESUME, str(path), json.dumps(options), str(skip), str(take),
         str(ckpt), mode],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["copy", "index"])
@pytest.mark.parametrize(
    "options, skip",
    [
        ({"batch_size": 100, "shuffle": True, "seed": 7, "repeat": 2}, 5),  # mid-epoch
        ({"batch_size": 100, "shuffle": True, "seed": 7, "repeat": 2}, 29),  # at the boundary
        ({"batch_size": 100, "repeat": 2}, 12),  # unshuffled
        ({"batch_size": 100, "shuffle": True, "seed": 3, "window_bytes": 4096, "repeat": True}, 40),
    ],
)
def test_a_restored_iterator_continues_bit_identically(converted, tmp_path, mode, options, skip):
    ckpt = tmp_path / "ckpt" / "it"
    ckpt.parent.mkdir()
    path = converted[mode]
    through = _run(path, options, skip, 4, ckpt, "write")
    assert 0 < through["bytes"] < 1 << 20  # the position, not the buffered data
    resumed = _run(path, options, 0, 4, ckpt, "restore")["batches"]
    assert resumed == through["batches"]


def _ids(ds):
    return np.concatenate([b["id"].numpy() for b in ds])


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_the_shuffle_is_a_seeded_permutation_of_every_epoch(converted, mode):
    path = converted[mode]
    first = _ids(reader.load(path, batch_size=128, shuffle=True, seed=1, repeat=2))
    again = _ids(reader.load(path, batch_size=128, shuffle=True, seed=1, repeat=2))
    other = _ids(reader.load(path, batch_size=128, shuffle=True, seed=2))
    np.testing.assert_array_equal(first, again)  # seed and epoch fix the order
    epoch0, epoch1 = first[:ROWS], first[ROWS:]
    for epoch in (epoch0, epoch1, other):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(ROWS))  # each example once
    assert not np.array_equal(epoch0, epoch1)  # every epoch its own order
    assert not np.array_equal(epoch0, other)


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_each_iteration_of_one_dataset_is_a_new_order_as_keras_epochs_need(converted, mode):
    """Keras iterates a dataset afresh each epoch: each iteration draws its own order,
    and the same seed gives the same sequence of orders."""
    ds = reader.load(converted[mode], batch_size=128, shuffle=True, seed=1)
    first, second = _ids(ds), _ids(ds)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(second), np.arange(ROWS))
    again = reader.load(converted[mode], batch_size=128, shuffle=True, seed=1)
    np.testing.assert_array_equal(_ids(again), first)
    np.testing.assert_array_equal(_ids(again), second)


def test_the_shuffle_mixes_the_whole_split(converted):
    """Over small rows the order is uncorrelated with the source order, and each batch
    draws from most of the split's 1% blocks (a uniform shuffle: ~92 of 100 for 256)."""
    ids = _ids(reader.load(converted["copy"], batch_size=256, shuffle=True, seed=0))
    ranks = np.argsort(np.argsort(ids))
    assert abs(np.corrcoef(ranks, np.arange(ROWS))[0, 1]) <= 0.05
    blocks = [len(np.unique(ids[i : i + 256] * 100 // ROWS)) for i in range(0, ROWS - 255, 256)]
    assert np.median(blocks) >= 75


def test_indexed_reads_equal_h5py_and_the_streaming_path(converted, tmp_path):
    with h5py.File(converted["source"]) as h5:
        x = h5["x"][()]
    got = reader.load(converted["copy"], batch_size=100, shuffle=True, seed=5)
    for batch in got:
        np.testing.assert_array_equal(batch["x"].numpy(), x[batch["id"].numpy()])
    # The same dataset without its index entries (as written before them) streams.
    stream = tmp_path / "stream"
    os.makedirs(stream)
    for name in os.listdir(converted["copy"]):
        if not name.endswith(".idx") and name != "manifest.json":
            os.link(os.path.join(converted["copy"], name), stream / name)
    manifest = json.loads(open(os.path.join(converted["copy"], "manifest.json")).read())
    for shard in manifest["splits"]["train"]["shards"]:
        shard.pop("index_sha256"), shard.pop("record_examples")
    (stream / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(_ids(reader.load(str(stream), batch_size=100)), np.arange(ROWS))


def test_a_tampered_index_is_refused(converted, tmp_path):
    import shutil

    from hdf5_to_records.errors import ShardCorrupt

    copy = tmp_path / "copy"
    shutil.copytree(converted["copy"], copy)
    index = sorted(n for n in os.listdir(copy) if n.endswith(".idx"))[0]
    lines = (copy / index).read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (copy / index).write_text("\n".join(lines) + "\n")
    with pytest.raises(ShardCorrupt, match=f"record index .*{index} does not match its sha256"):
        reader.load(str(copy), batch_size=10)


def test_an_unseeded_shuffle_still_checkpoints_and_each_run_draws_its_order(converted, tmp_path):
    from hdf5_to_records._tf import import_tensorflow

    tf = import_tensorflow()
    ds = reader.load(converted["copy"], batch_size=100, shuffle=True)
    it = iter(ds)
    next(it)
    tf.train.Checkpoint(iterator=it).write(str(tmp_path / "c"))  # no reordering op inside
    other = _ids(reader.load(converted["copy"], batch_size=100, shuffle=True))
    assert not np.array_equal(_ids(ds), other)


def test_pipelines_built_again_and_again_share_a_few_descriptors(converted, tmp_path):
    """TensorFlow may keep a dropped pipeline's functions (and its reader) alive: the
    shard descriptors belong to the process, a few per file, never one set per load."""

    here = os.path.realpath(converted["copy"]) + os.sep

    def open_shards():
        paths = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
        return sum(p.startswith(here) and ".tfrecord-" in p for p in paths)

    reading_threads = os.cpu_count() or 2
    loads = 2 * reading_threads + 4  # a leak would leave 3 descriptors (one per shard) each
    for _ in range(loads):
        for _batch in reader.load(converted["copy"], batch_size=100, shuffle=True, seed=0).take(2):
            pass
    assert 0 < open_shards() <= 3 * reading_threads < 3 * loads


def test_a_shard_replaced_after_load_is_refused(converted, tmp_path):
    import shutil

    from hdf5_to_records._tf import import_tensorflow

    copy = tmp_path / "copy"
    shutil.copytree(converted["copy"], copy)
    ds = reader.load(str(copy), batch_size=100)
    shard = sorted(n for n in os.listdir(copy) if n.endswith("-of-00003"))[0]
    data = (copy / shard).read_bytes()
    os.remove(copy / shard)
    (copy / shard).write_bytes(data)  # the same bytes, another file
    with pytest.raises(import_tensorflow().errors.OpError, match="was replaced or changed"):
        _ids(ds)


def test_too_few_examples_for_one_whole_batch_end_at_once_even_endless(converted):
    ds = reader.load(converted["copy"], batch_size=ROWS + 1, drop_remainder=True, repeat=True)
    assert list(ds.take(1)) == []
