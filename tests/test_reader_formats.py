"""reader.load over every dtype and shape the converter writes, against h5py."""

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.errors import UsageError

from records import convert_small, tf

N = 23
DTYPES = ["<f2", "<c8", "<c16", "<u8", "<u4", ">i8", "|i1", ">f8", "<u2"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    path = root / "rows.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as h5:
        h5["row"] = np.arange(N, dtype=np.int32)
        for i, dtype in enumerate(DTYPES):
            values = rng.integers(0, 100, (N, 2, 3)).astype(dtype)
            if np.dtype(dtype).kind == "c":
                values = values + 1j * values[::-1]
            h5[f"v{i}"] = values.astype(dtype)
        h5["z"] = np.zeros((N, 0), np.float32)
    out = convert_small(path, root / "out", rows_per_record=4, num_shards=3)
    with h5py.File(path) as h5:
        return out, {k: h5[k][()] for k in h5}


@pytest.mark.parametrize("name", [f"v{i}" for i in range(len(DTYPES))])
@pytest.mark.parametrize("batch_size", [None, 5])
def test_every_numeric_dtype(rows, name, batch_size):
    out, source = rows
    ds = reader.load(out, batch_size=batch_size, features=["row", name])
    parts = [(e["row"].numpy(), e[name].numpy()) for e in ds]
    ids = np.concatenate([np.atleast_1d(r) for r, _ in parts])
    values = np.concatenate([v if batch_size else v[None] for _, v in parts])
    np.testing.assert_array_equal(ids, np.arange(N))  # unshuffled: the write order
    np.testing.assert_array_equal(values, source[name].astype(source[name].dtype.newbyteorder("=")))


@pytest.mark.parametrize("batch_size", [None, 4])
def test_zero_size_rows(rows, batch_size):
    out, _ = rows
    got = list(reader.load(out, batch_size=batch_size, features=["z"]))
    total = sum(int(e["z"].shape[0]) for e in got) if batch_size else len(got)
    assert total == N
    assert got[0]["z"].shape[-1] == 0


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    path = root / "g.h5"
    with h5py.File(path, "w") as h5:
        for g in range(7):
            grp = h5.create_group(f"s/{g}")
            grp["fx"] = np.full((2,), g, np.float64)
            grp["m"] = np.arange(g * (g % 3 + 1), dtype=np.int16).reshape(g, g % 3 + 1)
            grp["e"] = np.zeros((g, 0), np.float32)
            grp["lab"] = np.int64(g)
    out = convert_small(path, root / "out", groups="/s/*", rows_per_record=2, num_shards=2)
    return out


def test_groups_fixed_shape_features_are_dense(groups):
    ds = reader.load(groups, batch_size=3, features=["fx", "lab"])
    assert ds.element_spec["fx"].shape.as_list() == [None, 2]
    for batch in ds:
        np.testing.assert_array_equal(batch["fx"].numpy()[:, 0], batch["lab"].numpy())


def test_two_variable_dims_and_zero_inner_dims(groups):
    for example in reader.load(groups, features=["m", "e", "lab"]):
        g = int(example["lab"])
        assert isinstance(example["m"], tf.Tensor)  # unbatched: dense
        if g == 0:  # an empty ragged example cannot carry its inner variable size
            assert example["m"].shape[0] == 0
            continue
        np.testing.assert_array_equal(
            example["m"].numpy(), np.arange(g * (g % 3 + 1)).reshape(g, g % 3 + 1)
        )
        assert example["e"].shape == (g, 0)
    batches = list(reader.load(groups, batch_size=3, features=["m", "e", "lab"]))
    assert isinstance(batches[0]["e"], tf.RaggedTensor)
    assert sum(int(b["lab"].shape[0]) for b in batches) == 7


def test_bench_needs_two_batches(groups):
    from reader.throughput import measure

    with pytest.raises(UsageError, match="timing needs at least 2"):
        measure(groups, batch_size=100, epochs=1)


@pytest.mark.parametrize("repeat", [2.5, "3", 0])
def test_repeat_must_be_a_whole_number_of_epochs(groups, repeat):
    with pytest.raises(UsageError, match="repeat must be"):
        reader.load(groups, repeat=repeat)
