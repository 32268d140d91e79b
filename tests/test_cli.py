"""The command line: exit codes, one-line errors for every bad input, output safety."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hdf5_to_records import fs
from hdf5_to_records.cli import main

from records import read_split


@pytest.fixture
def source(tmp_path):
    """A small chunked, gzip-compressed scene-like file with known values."""
    path = tmp_path / "scenes.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "data",
            data=np.arange(40 * 6 * 3, dtype=np.float32).reshape(40, 6, 3),
            chunks=(8, 6, 3),
            compression="gzip",
            shuffle=True,
        )
        h5.create_dataset("label", data=(np.arange(40) % 7).astype(np.uint8))
        h5.create_dataset("short", data=np.arange(39))
        h5["meta/info"] = np.arange(3)
    return path


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result


def assert_failed(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, f"expected one line, got: {result.output!r}"
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_no_manifest(out):
    assert not (out / "manifest.json").exists()
    if out.exists():
        assert not [n for n in os.listdir(out) if n.endswith(".incomplete")]


def test_convert_writes_shards_and_manifest(source, tmp_path):
    out = tmp_path / "out"
    result = run(
        "convert",
        source,
        "-o",
        out,
        "--feature",
        "data=/data",
        "--feature",
        "label=/label",
        "--rows",
        "0:30",
        "--num-shards",
        "3",
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "wrote 30 examples" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [
        f"out-train.tfrecord-0000{i}-of-00003" for i in range(3)
    ]
    got = read_split(str(out))
    with h5py.File(source) as h5:
        np.testing.assert_array_equal(np.stack(got["data"]), h5["data"][:30])
        np.testing.assert_array_equal(np.stack(got["label"]), h5["label"][:30])


def test_default_features_are_root_datasets_of_common_length(source, tmp_path):
    out = tmp_path / "out"
    assert run("convert", source, "-o", out, "--workers", "1").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["name"] for f in manifest["features"]] == ["data", "label"]


def test_a_root_mask_used_by_rows_is_not_a_default_feature(tmp_path):
    path = tmp_path / "masked.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(10)
        h5["keep"] = np.arange(10) % 2 == 0
    out = tmp_path / "out"
    assert run("convert", path, "-o", out, "--rows", "@/keep", "--workers", "1").exit_code == 0
    assert [int(v) for v in read_split(str(out))["x"]] == [0, 2, 4, 6, 8]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["name"] for f in manifest["features"]] == ["x"]


def test_python_dash_m_and_help_do_not_import_tensorflow():
    code = (
        "import sys; from click.testing import CliRunner; from hdf5_to_records.cli import "
        "main; r = CliRunner().invoke(main, ['convert', '--help']); assert r.exit_code == 0;"
        "print('tensorflow' in sys.modules, 'h5py' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    help_text = subprocess.run(
        [sys.executable, "-m", "hdf5_to_records", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "convert" in help_text and "inspect" in help_text


def test_dry_run_prints_plan_and_writes_nothing(source, tmp_path):
    out = tmp_path / "out"
    result = run(
        "convert",
        source,
        "-o",
        out,
        "--split",
        "train=0.75",
        "--split",
        "test=0.25",
        "--num-shards",
        "2",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "split train: 30 examples, 2 shard(s)" in result.output
    assert "split test: 10 examples, 2 shard(s)" in result.output
    assert not out.exists()


def test_config_file_and_flag_override(source, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"sources: [{source.name}]\noutput: out\nfeatures: {{label: /label}}\n"
        "rows: '::2'\nworkers: 1\n"
    )
    result = run("convert", "--config", config, "--rows", "0:5")
    assert result.exit_code == 0, result.output
    got = read_split(str(tmp_path / "out"))
    assert [int(v) for v in got["label"]] == [0, 1, 2, 3, 4]


# --- bad input: one line, the right exit code, no manifest --------------------------------


def test_missing_source(tmp_path):
    result = run("convert", tmp_path / "nope.h5", "-o", tmp_path / "out")
    assert_failed(result, 1, "nope.h5", "no such file")
    assert_no_manifest(tmp_path / "out")


def test_glob_matching_nothing(tmp_path):
    assert_failed(run("convert", tmp_path / "*.h5", "-o", tmp_path / "out"), 1, "matches no files")


def test_not_hdf5_and_truncated(tmp_path, source):
    bad = tmp_path / "text.h5"
    bad.write_bytes(b"not hdf5 at all" * 100)
    assert_failed(run("convert", bad, "-o", tmp_path / "o1"), 1, "text.h5", "not an HDF5 file")
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(source.read_bytes()[:4000])
    assert_failed(run("convert", truncated, "-o", tmp_path / "o2"), 1, "cut.h5", "truncated")


def test_missing_dataset_lists_nearest_names(source, tmp_path):
    result = run("convert", source, "-o", tmp_path / "out", "--feature", "label=/labels")
    assert_failed(
        result, 1, "feature 'label'", "'/labels' not found in scenes.h5", "did you mean '/label'"
    )
    assert_no_manifest(tmp_path / "out")


def test_mismatched_axis0_lengths(source, tmp_path):
    result = run(
        "convert", source, "-o", tmp_path / "out", "--feature", "a=/data", "--feature", "b=/short"
    )
    assert_failed(result, 1, "axis-0 length in scenes.h5", "/data has 40", "/short has 39")


@pytest.mark.parametrize(
    "spec, code, fragment",
    [
        ("0:41", 1, "bound 41 is outside scenes.h5 (40 rows)"),
        ("45", 1, "row index 45"),
        ("10:10", 1, "selects no rows in scenes.h5"),
        ("1:x", 2, "cannot parse '1:x'"),
        ("@/meta/nope", 1, "'/meta/nope' not found in scenes.h5"),
    ],
)
def test_bad_row_selections(source, tmp_path, spec, code, fragment):
    result = run("convert", source, "-o", tmp_path / "out", "--rows", spec)
    assert_failed(result, code, "--rows", fragment)
    assert_no_manifest(tmp_path / "out")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--compression", "zip"], "--compression"),
        (["--num-shards", "x"], "--num-shards"),
        (["--split", "train=2"], "--split"),
        (["--feature", "bad"], "--feature"),
        (["--overwrite", "--resume"], "mutually exclusive"),
        (["--shard-size", "lots"], "size"),
    ],
)
def test_usage_errors_exit_2(source, tmp_path, args, fragment):
    assert_failed(run("convert", source, "-o", tmp_path / "out", *args), 2, fragment)


def test_missing_output_option(source):
    assert_failed(run("convert", source), 2, "--output is required")


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda h5: h5.create_dataset("c", (4,), dtype=h5py.ref_dtype), "references"),
        (lambda h5: h5.create_dataset("c", data=np.zeros(4, "V3")), "not supported"),
        (
            lambda h5: h5.create_dataset("c", (4, 2), dtype=h5py.vlen_dtype(np.float32)),
            "variable-length",
        ),
    ],
)
def test_unsupported_dtypes(tmp_path, make, fragment):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        make(h5)
    result = run("convert", path, "-o", tmp_path / "out", "--feature", "c=/c")
    assert_failed(result, 1, "feature 'c'", "dataset /c in odd.h5", fragment)


def test_output_exists_and_is_not_empty(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_failed(run("convert", source, "-o", out), 1, "is not empty", "--overwrite")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_failed(run("convert", source, "-o", a_file), 1, "not a directory")
    assert_failed(run("convert", source, "-o", a_file / "sub"), 1, "cannot be written")


def test_disk_full_up_front_and_while_writing(source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(fs, "free_bytes", lambda path: 10)
    assert_failed(run("convert", source, "-o", out, "--workers", "1"), 1, "only 0 MB is free")
    monkeypatch.undo()

    class Full:
        def __init__(self, path, mode):
            self.handle = open(path, mode)
            self.full = "tfrecord" in os.path.basename(path)

        def write(self, data):
            if self.full:
                raise OSError(28, "No space left on device")
            return self.handle.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(fs, "open_write", lambda path: Full(path, "wb"))
    result = run("convert", source, "-o", out, "--workers", "1")
    assert_failed(result, 1, "no space left on device while writing out-train.tfrecord")
    assert_no_manifest(out)
    assert not [n for n in os.listdir(out) if "tfrecord" in n]


def test_debug_shows_traceback(tmp_path):
    result = run("convert", tmp_path / "nope.h5", "-o", tmp_path / "o", "--debug")
    assert result.exit_code != 0
    assert isinstance(result.exception, FileNotFoundError)


def test_inspect(source):
    result = run("inspect", source)
    assert result.exit_code == 0, result.output
    assert "data  float32  (40, 6, 3)  chunked  chunks (8, 6, 3)  filters shuffle+gzip" in (
        result.output
    )
    assert_failed(run("inspect", str(source) + ".missing"), 1, "no such file")


def test_sigterm_stops_workers_and_cleans_up(tmp_path):
    """A killed run leaves no worker behind, no temp file and no manifest."""
    import signal
    import time

    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x",
            data=np.zeros((4000, 2048), np.float32),
            chunks=(16, 2048),
            compression="gzip",
            compression_opts=9,
        )
    (tmp_path / "slow.py").write_text(
        "import time\n\ndef f(e):\n    time.sleep(0.01)\n    return e\n"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hdf5_to_records",
            "convert",
            str(path),
            "-o",
            str(out),
            "--workers",
            "2",
            "--num-shards",
            "4",
            "--transform",
            "slow:f",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        out.exists() and any(n.endswith(".incomplete") for n in os.listdir(out))
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143  # 128 + SIGTERM
    assert err.strip().splitlines()[-1].startswith("Error: interrupted")
    time.sleep(0.5)
    assert not (out / "manifest.json").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".incomplete")]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps


def test_multiline_errors_print_on_one_line(tmp_path, source, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "multi.py").write_text(
        "def f(e):\n    raise ValueError('first line\\nsecond line')\n"
    )
    result = run(
        "convert", source, "-o", tmp_path / "o", "--transform", "multi:f", "--workers", "1"
    )
    assert_failed(result, 1, "ValueError: first line")


def test_bench_prints_throughput(source, tmp_path):
    out = tmp_path / "out"
    assert run("convert", source, "-o", out, "--workers", "1").exit_code == 0
    result = run("bench", out, "--batch-size", "4", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "examples/s" in result.output and "MB/s" in result.output
    assert "batches/s" in result.output
    assert_failed(run("bench", out, "--split", "test"), 1, "split 'test' not in")
    assert_failed(run("bench", tmp_path / "nothing"), 1, "no manifest at")
