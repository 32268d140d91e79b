"""``reader.data_source`` (issue 16): random access without TensorFlow, for Grain,
PyTorch and NumPy. Values are compared with what h5py reads from the source."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.errors import ManifestError, ShardCorrupt, SourceChanged

from records import convert_small

ROWS = 61


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_source")
    path = root / "src.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x", data=rng.standard_normal((ROWS, 3, 2)).astype(">f4"), chunks=(8, 3, 2),
            compression="gzip",
        )  # fmt: skip
        h5["id"] = np.arange(ROWS, dtype=np.int64)
        h5["flag"] = np.arange(ROWS) % 3 == 0
        h5["name"] = np.array([f"row{i}".encode() for i in range(ROWS)], dtype="S8")
        points = h5.create_dataset("points", (ROWS,), dtype=h5py.vlen_dtype(np.int32))
        for i in range(ROWS):
            points[i] = np.arange(i % 5, dtype=np.int32) * i
    return path


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("random_source_out")
    return {
        "copy": convert_small(source, root / "copy", num_shards=3, rows_per_record=7),
        "index": convert_small(
            source, root / "index", num_shards=2, mode="auto", features=["x=/x", "id=/id"]
        ),
    }


def _truth(source):
    with h5py.File(source) as h5:
        return {k: h5[k][()] for k in h5}


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_every_example_equals_h5py_in_write_order(converted, source, mode):
    src = reader.data_source(converted[mode])
    truth = _truth(source)
    assert len(src) == ROWS
    for i in range(ROWS):
        example = src[i]
        np.testing.assert_array_equal(example["x"], truth["x"][i])
        assert example["x"].dtype == np.float32 and example["x"].shape == (3, 2)
        assert int(example["id"]) == i
        if mode == "copy":
            assert example["name"] == truth["name"][i]
            assert example["flag"].dtype == bool and bool(example["flag"]) == truth["flag"][i]
            np.testing.assert_array_equal(example["points"], truth["points"][i])
    np.testing.assert_array_equal(src[-1]["id"], ROWS - 1)
    with pytest.raises(IndexError, match=f"example {ROWS} is not in 0..{ROWS - 1}"):
        src[ROWS]


def test_a_batch_of_keys_is_stacked_and_ragged_features_are_lists(converted, source):
    src = reader.data_source(converted["copy"], features=["x", "id", "points"])
    batch = src[[5, 0, 33]]
    truth = _truth(source)
    assert batch["x"].shape == (3, 3, 2)
    np.testing.assert_array_equal(batch["id"], [5, 0, 33])
    np.testing.assert_array_equal(batch["x"], truth["x"][[5, 0, 33]])
    assert isinstance(batch["points"], list) and len(batch["points"]) == 3
    np.testing.assert_array_equal(batch["points"][2], truth["points"][33])
    assert set(batch) == {"x", "id", "points"}


def test_using_it_never_imports_tensorflow(converted):
    code = (
        "import sys, reader\n"
        f"src = reader.data_source({converted['index']!r})\n"
        "src[0]; src[[1, 2]]; len(src)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _read_ids(src) -> list[int]:
    return [int(src[i]["id"]) for i in range(len(src))]


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_it_pickles_and_a_forked_child_opens_its_own_files(converted, mode):
    src = reader.data_source(converted[mode])
    src[0]  # the parent has its files open
    again = pickle.loads(pickle.dumps(src))
    assert len(again) == ROWS and _read_ids(again) == list(range(ROWS))
    assert len(pickle.dumps(src)) < 2000  # the arguments, not the open state
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_read_ids, [src, src]) == [list(range(ROWS))] * 2
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_read_ids, [src]) == [list(range(ROWS))]


def test_grain_data_loader_with_two_worker_processes(converted):
    grain = pytest.importorskip("grain.python")
    src = reader.data_source(converted["copy"], features=["x", "id"])
    assert isinstance(src, grain.RandomAccessDataSource)
    sampler = grain.IndexSampler(
        num_records=len(src), shard_options=grain.NoSharding(), shuffle=True, num_epochs=1, seed=0
    )
    loader = grain.DataLoader(
        data_source=src, sampler=sampler, operations=[grain.Batch(8)], worker_count=2
    )
    ids = np.concatenate([batch["id"] for batch in loader])
    assert sorted(ids.tolist()) == list(range(ROWS))
    assert ids.tolist() != list(range(ROWS))  # shuffled


def test_pytorch_data_loader_with_two_workers(converted):
    torch = pytest.importorskip("torch")
    src = reader.data_source(converted["copy"], features=["x", "id"])
    loader = torch.utils.data.DataLoader(src, batch_size=8, shuffle=True, num_workers=2)
    ids = torch.cat([batch["id"] for batch in loader]).tolist()
    assert sorted(ids) == list(range(ROWS))


def test_the_map_style_protocol_a_torch_loader_uses(converted):
    """What PyTorch's map-style DataLoader calls (len, integer keys, fetching workers
    that unpickle the source), without torch."""
    src = reader.data_source(converted["copy"], features=["id"])
    order = np.random.default_rng(0).permutation(len(src))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map(_fetch, [(src, order[i : i + 8]) for i in range(0, len(src), 8)])
    assert sorted(int(i) for batch in got for i in batch) == list(range(ROWS))


def _fetch(job):
    src, keys = job
    return [int(src[int(k)]["id"]) for k in keys]


def test_a_corrupt_record_names_its_shard(converted, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(converted["copy"], copy)
    shard = sorted(n for n in os.listdir(copy) if n.endswith("-of-00003"))[1]
    data = bytearray((copy / shard).read_bytes())
    data[40] ^= 0xFF
    (copy / shard).write_bytes(bytes(data))
    src = reader.data_source(str(copy))
    with pytest.raises(ShardCorrupt, match=f"record 0 of shard .*{shard} .*does not match its CRC"):
        for i in range(len(src)):
            src[i]


def test_a_changed_source_is_refused_in_index_mode(converted, source, tmp_path):
    import shutil

    root = tmp_path / "moved"
    root.mkdir()
    shutil.copy(source, root / "src.h5")
    out = convert_small(root / "src.h5", root / "out", mode="index", features=["x=/x", "id=/id"])
    src = reader.data_source(out)
    assert int(src[3]["id"]) == 3
    with h5py.File(root / "src.h5", "r+") as h5:
        h5["id"][3] = -1  # same size; the bytes differ from their checksums
    with pytest.raises(SourceChanged, match="src.h5"):
        reader.data_source(out, cache_bytes=0)[3]


def test_a_gzip_dataset_has_no_index_and_says_so(source, tmp_path):
    out = convert_small(source, tmp_path / "gz", compression="gzip")
    with pytest.raises(ManifestError, match="has no record index"):
        reader.data_source(out)
