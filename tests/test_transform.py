"""--transform: runs per example in the workers; schema from the first example."""

import textwrap

import h5py
import numpy as np
import pytest

from hdf5_to_records.converter import convert
from hdf5_to_records.errors import TransformError, UsageError
from hdf5_to_records.planning.config import build_config

from records import load_manifest, read_split

TRANSFORMS = textwrap.dedent("""
    import os
    import numpy as np

    def centre(example):
        points = example["points"]
        return {"points": points - points.mean(axis=0, keepdims=True),
                "count": np.int64(points.shape[0])}

    def subsample(example):
        points = example["points"]
        return {"points": points[: 1 + int(points[0, 0]) % 4]}

    def explode(example):
        if int(example["points"][0, 0]) == 12 or os.environ.get("H2R_FAIL_ALL"):
            raise ValueError("bad scene")
        return {"points": example["points"]}

    def wrong_keys(example):
        return {"a": example["points"]} if example["points"][0, 0] < 20 else {"b": 1}

    def not_a_dict(example):
        return [1, 2]
""")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "my_transforms.py").write_text(TRANSFORMS)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "pts.h5"
    with h5py.File(path, "w") as h5:
        h5["points"] = np.repeat(np.arange(30, dtype=np.float32), 12).reshape(30, 4, 3)
    return tmp_path, path


def run(tmp_path, path, transform, workers=1, **extra):
    out = tmp_path / f"out_{transform.split(':')[1]}_{workers}"
    convert(
        build_config(
            {
                "sources": [str(path)],
                "output": str(out),
                "transform": transform,
                "workers": workers,
                "num_shards": 2,
                **extra,
            }
        )
    )
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_transform_output_is_stored(setup, workers):
    tmp_path, path = setup
    out = run(tmp_path, path, "my_transforms:centre", workers=workers)
    got = read_split(str(out))
    with h5py.File(path) as h5:
        source = h5["points"][()]
    expected = source - source.mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(np.stack(got["points"]), expected)
    assert [int(c) for c in got["count"]] == [4] * 30
    features = {f["name"]: f for f in load_manifest(str(out))["features"]}
    assert features["points"]["shape"] == [4, 3] and features["count"]["shape"] == []
    assert features["points"]["source"] == "transform:my_transforms:centre"


def test_variable_length_output_is_recorded_as_unknown(setup):
    tmp_path, path = setup
    out = run(tmp_path, path, "my_transforms:subsample")
    got = read_split(str(out))
    assert [p.shape[0] for p in got["points"]] == [1 + i % 4 for i in range(30)]
    features = {f["name"]: f for f in load_manifest(str(out))["features"]}
    assert features["points"]["shape"] == [None, 3]


@pytest.mark.parametrize("workers", [1, 2])
def test_transform_that_raises_names_example_and_row(setup, workers):
    tmp_path, path = setup
    with pytest.raises(
        TransformError,
        match=r"my_transforms:explode failed on example \d+ of "
        r"shard .*pts.h5 row 12\): ValueError: bad scene",
    ):
        run(tmp_path, path, "my_transforms:explode", workers=workers)


def test_transform_failing_on_first_example(setup, monkeypatch):
    tmp_path, path = setup
    monkeypatch.setenv("H2R_FAIL_ALL", "1")
    with pytest.raises(TransformError, match=r"the first example \(pts.h5 row 0\)"):
        run(tmp_path, path, "my_transforms:explode")


def test_inconsistent_schema_names_the_example(setup):
    tmp_path, path = setup
    with pytest.raises(TransformError, match=r"returned keys \['b'\] for example .*row 20"):
        run(tmp_path, path, "my_transforms:wrong_keys")


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("my_transforms:not_a_dict", TransformError, "returned list"),
        ("my_transforms:nope", UsageError, "has no function 'nope'"),
        ("no_such_module:f", UsageError, "cannot import module 'no_such_module'"),
    ],
)
def test_bad_transforms(setup, spec, error, match):
    tmp_path, path = setup
    with pytest.raises(error, match=match):
        run(tmp_path, path, spec)
