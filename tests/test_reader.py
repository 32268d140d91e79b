"""reader.load: values equal h5py's reads, under every option that reorders or cuts."""

import collections
import os

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.errors import (
    ManifestError,
    ShardCorrupt,
    ShardMissing,
    UnknownName,
    UsageError,
)

from records import convert_small, tf

N = 53


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """53 rows, 4 shards, 5 rows per record (short last records), with an id column."""
    root = tmp_path_factory.mktemp("reader")
    path = root / "src.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x",
            data=rng.standard_normal((N, 3, 2)).astype(">f4"),
            chunks=(8, 3, 2),
            compression="gzip",
        )
        h5["id"] = np.arange(N, dtype=np.int64)
        h5["flag"] = np.arange(N) % 3 == 0
        h5["name"] = np.array([f"row{i}".encode() for i in range(N)], dtype="S8")
    out = convert_small(path, root / "out", num_shards=4, rows_per_record=5)
    with h5py.File(path) as h5:
        source = {k: h5[k][()] for k in h5}
    return out, source


def collect(ds):
    """All elements of a batched dataset as numpy, concatenated along the batch axis."""
    parts = collections.defaultdict(list)
    for element in ds:
        for key, value in element.items():
            parts[key].append(value.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def check_rows(got, source, ids=None):
    ids = got["id"] if ids is None else ids
    np.testing.assert_array_equal(got["x"], source["x"][ids])
    np.testing.assert_array_equal(got["flag"], source["flag"][ids])
    np.testing.assert_array_equal(got["name"], source["name"][ids])


def test_unbatched_examples(dataset):
    out, source = dataset
    ds = reader.load(out)
    spec = ds.element_spec
    assert spec["x"].shape == (3, 2) and spec["x"].dtype == tf.float32
    assert spec["flag"].dtype == tf.bool and spec["name"].dtype == tf.string
    assert ds.cardinality().numpy() == N
    examples = list(ds)
    got = {k: np.stack([e[k].numpy() for e in examples]) for k in spec}
    assert sorted(got["id"].tolist()) == list(range(N))
    check_rows(got, source)
    # Without shuffle the order is fixed: shards interleave record by record.
    again = [int(e["id"]) for e in reader.load(out)]
    assert again == got["id"].tolist()


@pytest.mark.parametrize("batch_size, drop", [(7, False), (7, True), (64, False), (1, False)])
def test_batched(dataset, batch_size, drop):
    out, source = dataset
    ds = reader.load(out, batch_size=batch_size, drop_remainder=drop)
    sizes = [b["id"].shape[0] for b in ds]
    expected = N // batch_size if drop else -(-N // batch_size)
    assert len(sizes) == expected == ds.cardinality().numpy()
    assert all(s == batch_size for s in sizes[:-1])
    if drop:
        assert ds.element_spec["x"].shape == (batch_size, 3, 2)
    got = collect(ds)
    assert len(set(got["id"].tolist())) == got["id"].size == sum(sizes)
    check_rows(got, source)


def test_shuffle_is_a_permutation_and_seeded(dataset):
    out, source = dataset
    first = collect(reader.load(out, batch_size=8, shuffle=True, seed=3))
    again = collect(reader.load(out, batch_size=8, shuffle=True, seed=3))
    other = collect(reader.load(out, batch_size=8, shuffle=True, seed=4))
    assert sorted(first["id"].tolist()) == list(range(N))
    check_rows(first, source)
    np.testing.assert_array_equal(first["id"], again["id"])
    assert not np.array_equal(first["id"], other["id"])
    unshuffled = collect(reader.load(out, batch_size=8))["id"]
    assert not np.array_equal(first["id"], unshuffled)


def test_epochs_reshuffle_and_repeat(dataset):
    out, _ = dataset
    ds = reader.load(out, batch_size=N, shuffle=True, seed=1, repeat=2, shuffle_buffer=10)
    epochs = collect(ds)["id"]
    assert epochs.size == 2 * N and ds.cardinality().numpy() == 2
    assert sorted(epochs[:N].tolist()) == sorted(epochs[N:].tolist()) == list(range(N))
    assert not np.array_equal(epochs[:N], epochs[N:])


def test_feature_subset_and_supervised(dataset):
    out, source = dataset
    ds = reader.load(out, batch_size=10, features=["id"])
    assert set(ds.element_spec) == {"id"}
    sup = reader.load(out, batch_size=10, supervised=("x", "id"))
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in sup])
    ids = np.concatenate(ys)
    np.testing.assert_array_equal(np.concatenate(xs), source["x"][ids])
    assert sorted(ids.tolist()) == list(range(N))


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_worker_shards_partition_the_split(dataset, workers):
    out, source = dataset
    seen = []
    for index in range(workers):
        got = collect(reader.load(out, batch_size=4, num_workers=workers, worker_index=index))
        check_rows(got, source)
        seen += got["id"].tolist()
    assert sorted(seen) == list(range(N))


def test_input_context(dataset):
    out, _ = dataset
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    got = collect(reader.load(out, batch_size=4, input_context=context))
    direct = collect(reader.load(out, batch_size=4, num_workers=2, worker_index=1))
    np.testing.assert_array_equal(got["id"], direct["id"])


def test_cache_and_map_fn(dataset, tmp_path):
    out, source = dataset
    ds = reader.load(
        out, batch_size=10, cache=True, repeat=2, map_fn=lambda b: {**b, "twice": b["id"] * 2}
    )
    got = collect(ds)
    np.testing.assert_array_equal(got["twice"], got["id"] * 2)
    assert sorted(got["id"].tolist()) == sorted(list(range(N)) * 2)
    on_disk = collect(reader.load(out, batch_size=10, cache=str(tmp_path / "cache")))
    check_rows(on_disk, source)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"split": "nope"}, UnknownName, r"split 'nope' not in .*it has \['train'\]"),
        ({"features": ["y"]}, UnknownName, r"feature 'y' not in .*it has \["),
        ({"drop_remainder": True}, UsageError, "needs batch_size"),
        ({"seed": 1}, UsageError, "without shuffle"),
        ({"shuffle_buffer": 5}, UsageError, "needs shuffle"),
        ({"num_workers": 5, "worker_index": 0}, UsageError, "4 shard.s. cannot feed 5 workers"),
        ({"num_workers": 2}, UsageError, "go together"),
        ({"num_workers": 2, "worker_index": 2}, UsageError, "not in 0..1"),
        ({"batch_size": 0}, UsageError, "batch_size must be >= 1"),
        ({"supervised": ("x", "id"), "features": ["x"]}, UsageError, "not in features"),
    ],
)
def test_bad_options(dataset, kwargs, error, match):
    out, _ = dataset
    split = kwargs.pop("split", "train")
    with pytest.raises(error, match=match):
        reader.load(out, split, **kwargs)


def test_missing_manifest_and_version(tmp_path, dataset):
    with pytest.raises(ManifestError, match="no manifest at"):
        reader.load(str(tmp_path))
    out, _ = dataset
    text = open(os.path.join(out, "manifest.json")).read()
    (tmp_path / "manifest.json").write_text(
        text.replace('"format_version": 5', '"format_version": 9')
    )
    with pytest.raises(ManifestError, match="format version 9"):
        reader.load(str(tmp_path))


def test_missing_and_corrupt_shards(tmp_path, dataset):
    out, _ = dataset
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = sorted(p for p in os.listdir(copy) if ".tfrecord-" in p and not p.endswith(".idx"))[1]
    data = bytearray((copy / shard).read_bytes())
    data[40] ^= 0xFF
    (copy / shard).write_bytes(bytes(data))
    with pytest.raises(ShardCorrupt, match=f"{shard}: (data|length) CRC mismatch"):
        reader.load(str(copy), verify_checksums=True)
    (copy / shard).write_bytes(bytes(data[:-3]))
    with pytest.raises(ShardCorrupt, match=f"{shard} has {len(data) - 3} bytes"):
        reader.load(str(copy))
    (copy / shard).unlink()
    with pytest.raises(ShardMissing, match=f"{shard} listed in the manifest is missing"):
        reader.load(str(copy))


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    root = tmp_path_factory.mktemp("ragged")
    path = root / "clouds.h5"
    clouds = []
    with h5py.File(path, "w") as h5:
        for i in range(11):
            cloud = np.arange((i % 4 + 1) * 3, dtype=np.float32).reshape(-1, 3) + i
            clouds.append(cloud)
            h5[f"s/{i:02d}/points"] = cloud
            h5[f"s/{i:02d}/label"] = np.int32(i)
    out = convert_small(path, root / "out", groups="/s/*", rows_per_record=3, num_shards=2)
    return out, clouds


def test_ragged_unbatched_and_batched(ragged):
    out, clouds = ragged
    examples = list(reader.load(out))
    for example in examples:
        np.testing.assert_array_equal(example["points"].numpy(), clouds[int(example["label"])])
    assert sorted(int(e["label"]) for e in examples) == list(range(11))
    batches = list(reader.load(out, batch_size=4))
    assert isinstance(batches[0]["points"], tf.RaggedTensor)
    assert batches[0]["points"].shape.as_list()[1:] == [None, 3]
    got = [(int(i), c) for b in batches for i, c in zip(b["label"], b["points"].to_list())]
    assert len(got) == 11
    for label, cloud in got:
        assert cloud == clouds[label].tolist()


def test_keras_fit_one_epoch(dataset):
    out, _ = dataset
    model = tf.keras.Sequential(
        [tf.keras.Input((3, 2)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    ds = reader.load(out, batch_size=8, supervised=("x", "id"), shuffle=True, seed=0)
    history = model.fit(ds, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])


MIRRORED = """
import sys
import numpy as np
from hdf5_to_records._tf import import_tensorflow
tf = import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import reader
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
calls = []

def dataset_fn(context):
    calls.append((context.num_input_pipelines, context.input_pipeline_id))
    return reader.load(sys.argv[1], batch_size=context.get_per_replica_batch_size(8),
                       input_context=context, shuffle=True, seed=0)

dist = strategy.distribute_datasets_from_function(dataset_fn)
for epoch in range(2):
    ids = []
    for batch in dist:
        for part in strategy.experimental_local_results(batch["id"]):
            ids += part.numpy().tolist()
    print(epoch, sorted(ids) == list(range(int(sys.argv[2]))), len(ids))
print("replicas", strategy.num_replicas_in_sync, "calls", calls)
"""


def test_mirrored_strategy_sees_every_example_once_per_epoch(dataset):
    import subprocess
    import sys

    out, _ = dataset
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, out, str(N)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"0 True {N}" and lines[1] == f"1 True {N}", result.stdout
    assert lines[2].startswith("replicas 2")
