"""Output safety: atomic shards, manifest last, --overwrite, --resume, ram://, determinism."""

import json
import os
import textwrap

import h5py
import numpy as np
import pytest

from hdf5_to_records.converter import convert
from hdf5_to_records.errors import OutputError, TransformError, WorkerDied
from hdf5_to_records.planning.config import build_config

from records import load_manifest, read_split

FLAKY = textwrap.dedent("""
    import os

    def maybe_fail(example):
        if int(example["x"][0]) == int(os.environ.get("H2R_FAIL_ROW", "-1")):
            raise RuntimeError("simulated crash")
        return example
""")


@pytest.fixture
def source(tmp_path, monkeypatch):
    (tmp_path / "flaky.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x",
            data=np.arange(64 * 5, dtype=">i4").reshape(64, 5),
            chunks=(8, 5),
            compression="gzip",
        )
    return path


def options(source, out, **extra):
    return {
        "sources": [str(source)],
        "output": str(out),
        "workers": 1,
        "num_shards": 4,
        "rows_per_record": 3,
        **extra,
    }


def shard_files(out):
    return sorted(n for n in os.listdir(out) if ".tfrecord-" in n and not n.endswith(".idx"))


def test_overwrite_replaces_previous_output(source, tmp_path):
    out = tmp_path / "out"
    convert(build_config(options(source, out, num_shards=5)))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not empty"):
        convert(build_config(options(source, out)))
    convert(build_config(options(source, out, overwrite=True)))
    assert shard_files(out) == [f"out-train.tfrecord-0000{i}-of-00004" for i in range(4)]
    assert (out / "notes.txt").read_text() == "mine"  # only our own files are removed
    assert len(read_split(str(out))["x"]) == 64


def test_resume_skips_complete_shards_and_matches_a_clean_run(source, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    convert(build_config(options(source, clean, transform="flaky:maybe_fail")))
    out = tmp_path / "out"
    monkeypatch.setenv("H2R_FAIL_ROW", "200")  # x[40, 0] == 200; row 40 is in shard 2 of 4
    with pytest.raises(TransformError, match="simulated crash"):
        convert(build_config(options(source, out, transform="flaky:maybe_fail")))
    assert not (out / "manifest.json").exists()
    assert shard_files(out) == [
        "out-train.tfrecord-00000-of-00004",
        "out-train.tfrecord-00001-of-00004",
    ]
    assert not [n for n in os.listdir(out) if n.endswith(".incomplete")]
    before = {n: os.stat(out / n).st_mtime_ns for n in shard_files(out)}

    monkeypatch.delenv("H2R_FAIL_ROW")
    with pytest.raises(OutputError, match="--resume"):
        convert(build_config(options(source, out, transform="flaky:maybe_fail")))
    result = convert(build_config(options(source, out, transform="flaky:maybe_fail", resume=True)))
    assert result.skipped_shards == 2
    assert {n: os.stat(out / n).st_mtime_ns for n in before} == before

    def shards(d):
        return [
            (s["file"][-14:], s["framing_sha256"])
            for s in load_manifest(str(d))["splits"]["train"]["shards"]
        ]

    assert shards(out) == shards(clean)
    assert not (out / ".hdf5-to-records-state.json").exists()


def test_resume_rewrites_shards_when_the_plan_changed(source, tmp_path):
    out = tmp_path / "out"
    convert(build_config(options(source, out)))
    result = convert(build_config(options(source, out, rows="0:32", resume=True)))
    assert result.skipped_shards == 0
    assert len(read_split(str(out))["x"]) == 32
    again = convert(build_config(options(source, out, rows="0:32", resume=True)))
    assert again.skipped_shards == 4


def test_resume_needs_something_to_resume(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.txt").write_text("x")
    with pytest.raises(OutputError, match="no interrupted or finished conversion"):
        convert(build_config(options(source, out, resume=True)))


def test_same_inputs_give_byte_identical_shards(source, tmp_path):
    digests = []
    for i, workers in enumerate([1, 2, 2]):
        out = tmp_path / f"run{i}"
        convert(
            build_config(
                options(
                    source,
                    out,
                    workers=workers,
                    shuffle=True,
                    seed=9,
                    name="same",
                    splits={"train": 0.7, "test": 0.3},
                )
            )
        )
        manifest = load_manifest(str(out))
        digests.append(
            {k: [s["framing_sha256"] for s in v["shards"]] for k, v in manifest["splits"].items()}
        )
    assert digests[0] == digests[1] == digests[2]


def test_manifest_contents(source, tmp_path):
    out = tmp_path / "out"
    convert(build_config(options(source, out, rows="::2", compression="gzip")))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "hdf5-to-records" and manifest["format_version"] == 5
    assert manifest["compression"] == "gzip"
    assert manifest["records"] == {
        "rows_per_record": 3,
        "count_key": "__rows__",
        "shape_suffix": "/shape",
        "byte_order": "little",
    }
    (feature,) = manifest["features"]
    assert feature == {
        "name": "x",
        "dtype": "int32",
        "shape": [5],
        "encoding": "raw",
        "ragged": False,
        "source": "/x",
        "source_dtype": ">i4",
        "storage": "copy",
    }
    split = manifest["splits"]["train"]
    assert split["num_examples"] == 32
    assert sum(s["num_records"] for s in split["shards"]) == split["num_records"] == 4 * 3
    for shard in split["shards"]:
        assert os.path.getsize(out / shard["file"]) == shard["num_bytes"]
    (src,) = manifest["sources"]
    assert src["path"] == str(source) and src["size"] == os.path.getsize(source)
    assert src["selection"] == {"rows": "::2", "groups": None, "num_selected": 32}
    assert manifest["config"]["rows_per_record"] == 3
    with h5py.File(source) as h5:
        np.testing.assert_array_equal(np.stack(read_split(str(out))["x"]), h5["x"][::2])


def test_ram_filesystem_output(source):
    out = "ram://h2r_test/out"
    convert(build_config(options(source, out, workers=2)))
    got = read_split(out)
    with h5py.File(source) as h5:
        np.testing.assert_array_equal(np.stack(got["x"]), h5["x"][()])


def test_a_worker_that_dies_fails_the_run_cleanly(source, tmp_path, monkeypatch):
    (tmp_path / "killer.py").write_text(
        "import os\n\ndef die(example):\n    if int(example['x'][0]) == 200:\n"
        "        os._exit(9)\n    return example\n"
    )
    out = tmp_path / "out"
    with pytest.raises(WorkerDied, match="a worker process died while writing out-train"):
        convert(build_config(options(source, out, transform="killer:die", workers=2)))
    assert not (out / "manifest.json").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".incomplete")]
