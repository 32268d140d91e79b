"""Shuffled conversions of compressed sources stage the selection once, same bytes."""

import os

import h5py
import numpy as np
import pytest

from hdf5_to_records.converter import convert
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.limits import Limits
from hdf5_to_records.writing import staging

from records import load_manifest, read_split

MANY_WINDOWS = Limits(window_bytes=1024)  # many windows, as on a big source


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x",
            data=rng.standard_normal((300, 8)).astype(">f4"),
            chunks=(16, 8),
            compression="gzip",
            shuffle=True,
        )
        h5.create_dataset(
            "name",
            data=np.array([f"r{i}".encode() for i in range(300)]),
            chunks=(32,),
            compression="gzip",
        )
        h5["id"] = np.arange(300)
    return path


def run(source, out, workers):
    options = {
        "sources": [str(source)],
        "output": str(out),
        "workers": workers,
        "shuffle": True,
        "seed": 2,
        "num_shards": 3,
        "rows": "::2,0:40",
        "splits": {"train": 0.8, "test": 0.2},
    }
    convert(build_config(options), limits=MANY_WINDOWS)
    manifest = load_manifest(str(out))
    return {k: [s["framing_sha256"] for s in v["shards"]] for k, v in manifest["splits"].items()}


@pytest.mark.parametrize("workers", [1, 2])
def test_staging_gives_the_same_shards(source, tmp_path, monkeypatch, workers):
    monkeypatch.setattr("hdf5_to_records.converter.needs_staging", lambda *a: False)
    direct = run(source, tmp_path / "direct", workers)
    monkeypatch.undo()
    calls = []
    real_stage = staging.stage
    monkeypatch.setattr(
        "hdf5_to_records.converter.stage", lambda *a: calls.append(1) or real_stage(*a)
    )
    staged = run(source, tmp_path / "staged", workers)
    assert calls == [1]
    assert staged == direct
    assert not [n for n in os.listdir(tmp_path / "staged") if n.startswith(".hdf5-to-records")]
    got = read_split(str(tmp_path / "staged"), "train")
    with h5py.File(source) as h5:
        for i, x, name in zip(got["id"], got["x"], got["name"]):
            np.testing.assert_array_equal(x, h5["x"][int(i)])
            assert name.item() == f"r{int(i)}".encode()
