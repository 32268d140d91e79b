"""Scaling out (task arrays, ``--runner beam``, reading through tf.data service) on the
layouts the feature tests do not cover.

The ``xfail(strict=True)`` tests pin known defects: each fails because of the defect and
passes once it is fixed. The others cover groups with ragged features, transforms,
YAML configs with relative paths and ``ram://`` outputs through task arrays; Beam
against a staged local shuffle; ragged, string and bool features and mixed index-mode
datasets through the service.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import reader
from hdf5_to_records import converter
from hdf5_to_records.checks.verify import verify
from hdf5_to_records.cli import main
from hdf5_to_records.converter import convert, finalize
from hdf5_to_records.errors import Hdf5ToRecordsError
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.limits import Limits
from hdf5_to_records.scale_out.tasks import TaskSlice
from hdf5_to_records.writing.output import SCRATCH_PREFIX

from records import tf

ROWS = 100
GROUPS = 30
# Windows below any selection here: a --shuffle of chunked data stages.
SMALL = Limits(window_bytes=256)
TRANSFORMS = "scaling_review_transforms"  # a module name no other test imports

needs_beam = pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None, reason="needs the [beam] extra"
)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """Sources with known values: ``rows.h5`` (contiguous floats, gzip-chunked floats,
    ints, bools, variable-length strings), ``groups.h5`` (one group per example, with
    a ragged ``pts``), a row list and a YAML config with relative paths, and a module
    of transforms."""
    root = tmp_path_factory.mktemp("review-src")
    labels = np.arange(ROWS, dtype=np.int64)
    with h5py.File(root / "rows.h5", "w") as h5:
        h5["x"] = (labels[:, None] * 3 + np.arange(3)).astype("<f4")
        h5.create_dataset(
            "ch",
            data=(labels[:, None] + np.arange(4) / 8).astype("f4"),
            chunks=(8, 4),
            compression="gzip",
        )
        h5["label"] = labels
        h5["flag"] = labels % 3 == 0
        names = np.array([f"row-{i}".encode() for i in labels], dtype=object)
        h5.create_dataset("s", data=names, dtype=h5py.vlen_dtype(bytes))
    with h5py.File(root / "groups.h5", "w") as h5:
        for i in range(GROUPS):
            group = h5.create_group(f"scene_{i:03d}")
            group["pts"] = np.full((i % 4 + 1, 3), i, dtype="f4")
            group["id"] = np.int64(i)
    np.save(root / "rows.npy", np.arange(3, 90, 2))
    (root / "relative.yaml").write_text(
        "sources: [rows.h5]\nrows: '@rows.npy'\nnum_shards: 3\nrows_per_record: 4\n"
    )
    (root / f"{TRANSFORMS}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def ragged(example):
                n = int(example["label"]) % 4
                return {"y": np.repeat(example["ch"][None], n, axis=0), "label": example["label"]}

            def bad(example):
                if int(example["label"]) == 42:
                    raise ValueError("bad row")
                return example

            def interrupted(example):
                if int(example["label"]) == 50:
                    raise KeyboardInterrupt  # what Ctrl-C or SIGTERM raises mid-shard
                return example
            """
        )
    )
    return root


@pytest.fixture
def transforms(src, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(src))


def _files(directory: str) -> dict[str, bytes]:
    """Every file of an output directory (local or a tf.io.gfile URL), by name."""
    directory = directory.rstrip("/")
    return {
        name: tf.io.gfile.GFile(f"{directory}/{name}", "rb").read()
        for name in sorted(tf.io.gfile.listdir(directory))
    }


def _remove(directory: str) -> None:
    if "://" in directory:
        tf.io.gfile.rmtree(directory)
    else:
        shutil.rmtree(directory)


def _one_error_line(result) -> str:
    """The single ``Error:`` line of a failed command (and nothing else on stderr)."""
    assert "Traceback" not in result.output, result.output[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {result.stderr[-2000:]}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


# --- task arrays: defects -------------------------------------------------------------


def test_finalize_leaves_no_scratch_of_a_killed_task(src, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = build_config(
        {
            "sources": [str(src / "rows.h5")],
            "output": str(out),
            "features": {"ch": "/ch", "label": "/label"},
            "shuffle": True,
            "seed": 1,
            "num_shards": 4,
            "workers": 1,
        }
    )
    out.mkdir()
    # What the first attempt of task 0, killed while staging its rows, leaves behind.
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out)
    Path(scratch, "00000.h5").write_bytes(b"\0" * 64)
    for i in range(2):
        convert(cfg, task=TaskSlice(i, 2), limits=SMALL)  # the retry of task 0, then task 1
    finalize(str(out))
    report = verify(str(out))
    assert report.ok, [str(p) for p in report.problems]


def test_finalize_from_another_working_directory(src, tmp_path, monkeypatch):
    out, ref = tmp_path / "out", tmp_path / "ref"
    monkeypatch.chdir(src)
    cfg = build_config({"sources": ["rows.h5"], "output": str(out), "num_shards": 3, "workers": 1})
    convert(cfg)
    os.rename(out, ref)
    for i in range(2):
        convert(cfg, task=TaskSlice(i, 2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    try:
        finalize(str(out))
    except Hdf5ToRecordsError as exc:
        assert str(src) in str(exc), f"the error does not say where to run finalize: {exc}"
    else:
        assert _files(str(out)) == _files(str(ref))


# --- task arrays: layouts the feature tests do not cover ---------------------------------


def _task_case(case: str, src: Path, out: str) -> dict:
    """Build-config options (and the YAML path) of one task-array case."""
    rows = str(src / "rows.h5")
    return {
        "groups-ragged": {
            "sources": [str(src / "groups.h5")],
            "groups": "/scene_*",
            "features": {"pts": "pts", "id": "id"},
            "shuffle": True,
            "seed": 2,
            "num_shards": 3,
            "rows_per_record": 4,
        },
        "transform-ragged-staged": {
            "sources": [rows],
            "features": {"ch": "/ch", "label": "/label"},
            "transform": f"{TRANSFORMS}:ragged",
            "shuffle": True,
            "seed": 5,
            "num_shards": 4,
            "rows_per_record": 3,
        },
        "strings-bool-gzip-ram": {
            "sources": [rows],
            "features": {"s": "/s", "flag": "/flag", "label": "/label"},
            "compression": "gzip",
            "num_shards": 3,
            "rows_per_record": 7,
        },
        "index-auto": {"sources": [rows], "mode": "auto", "num_shards": 3},
    }[case] | {"output": out, "workers": 1}


@pytest.mark.parametrize(
    "case", ["groups-ragged", "transform-ragged-staged", "strings-bool-gzip-ram", "index-auto"]
)
def test_more_layouts_through_tasks_equal_a_local_run(case, src, tmp_path, monkeypatch, transforms):
    staged = []
    real_stage = converter.stage
    monkeypatch.setattr(converter, "stage", lambda *a: staged.append(1) or real_stage(*a))
    out = "ram://scaling-review/out" if case.endswith("-ram") else str(tmp_path / "out")
    cfg = build_config(_task_case(case, src, out))
    convert(cfg, limits=SMALL)
    local = _files(out)
    _remove(out)
    for i in range(3):
        convert(cfg, task=TaskSlice(i, 3), limits=SMALL)
    finalize(out)
    assert _files(out) == local
    assert bool(staged) == case.endswith("-staged")
    _remove(out)


def test_yaml_relative_paths_finalize_from_anywhere(src, tmp_path, monkeypatch):
    """A YAML config's relative sources and ``@rows.npy`` are resolved against its
    directory before the part file records them, so finalize works from any directory."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = build_config({"output": str(out), "workers": 1}, yaml_path=str(src / "relative.yaml"))
    convert(cfg)
    os.rename(out, ref)
    for i in range(2):
        convert(cfg, task=TaskSlice(i, 2))
    monkeypatch.chdir(tmp_path)
    finalize(str(out))
    assert _files(str(out)) == _files(str(ref))
    got = reader.load(str(out), batch_size=None, features=["label"])
    assert [int(e["label"]) for e in got.as_numpy_iterator()] == list(range(3, 90, 2))


# --- Beam -------------------------------------------------------------------------------


def _beam_cli(src: Path, out: Path, *args: str):
    return CliRunner().invoke(
        main,
        ["convert", str(src / "rows.h5"), "-o", str(out), "--feature", "label=/label"]
        + ["--num-shards", "2", "--workers", "1", "--runner", "beam", *args],
    )


@needs_beam
@pytest.mark.parametrize("option", ["direct_num_workers=abc", "project"])
def test_a_bad_beam_option_value_is_one_line(src, tmp_path, option):
    result = _beam_cli(src, tmp_path / "o", "--beam-option", option)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert option.partition("=")[0] in line


@needs_beam
def test_an_unknown_beam_runner_is_a_usage_error(src, tmp_path):
    result = _beam_cli(src, tmp_path / "o", "--beam-option", "runner=NoSuchRunner")
    line = _one_error_line(result)
    assert result.exit_code == 2, line
    assert "NoSuchRunner" in line and "internal error" not in line


@needs_beam
def test_a_shard_error_on_beam_threads_is_one_line(src, tmp_path, transforms):
    result = _beam_cli(
        src,
        tmp_path / "o",
        *("--transform", f"{TRANSFORMS}:bad"),
        *("--beam-option", "direct_num_workers=2"),
        *("--beam-option", "direct_running_mode=multi_threading"),
    )
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "bad row" in line and "internal error" not in line, line


@needs_beam
def test_interrupting_a_beam_run_exits_130(src, tmp_path, transforms):
    result = _beam_cli(src, tmp_path / "o", "--transform", f"{TRANSFORMS}:interrupted")
    line = _one_error_line(result)
    assert result.exit_code == 130, line
    assert line.startswith("Error: interrupted") and "--resume" not in line, line


@needs_beam
@pytest.mark.parametrize("case", ["staged-shuffle-strings", "groups-ragged"])
def test_beam_equals_a_local_run_that_staged_or_used_groups(case, src, tmp_path, monkeypatch):
    """Locally a shuffle of chunked data reads from a staged copy; Beam reads the chunks:
    the bytes must still be the same (groups with a ragged feature, too)."""
    from hdf5_to_records.scale_out.beam_runner import convert_on_beam

    staged = []
    real_stage = converter.stage
    monkeypatch.setattr(converter, "stage", lambda *a: staged.append(1) or real_stage(*a))
    out = str(tmp_path / "out")
    options = {
        "staged-shuffle-strings": {
            "sources": [str(src / "rows.h5")],
            "features": {"ch": "/ch", "s": "/s", "flag": "/flag"},
            "splits": {"train": 0.7, "test": 0.3},
            "shuffle": True,
            "seed": 3,
            "num_shards": 3,
            "rows_per_record": 4,
        },
        "groups-ragged": _task_case("groups-ragged", src, out),
    }[case]
    cfg = build_config({**options, "output": out, "workers": 1})
    convert(cfg, limits=SMALL)
    local = _files(out)
    assert bool(staged) == (case == "staged-shuffle-strings")
    _remove(out)
    convert_on_beam(cfg, limits=SMALL)
    assert _files(out) == local


# --- tf.data service ----------------------------------------------------------------------

service_api = tf.data.experimental.service


@pytest.fixture(scope="module")
def cluster():
    """A dispatcher and two workers, in this process, on loopback."""
    dispatcher = service_api.DispatchServer(service_api.DispatcherConfig(port=0))
    port = int(dispatcher.target.rsplit(":", 1)[1])
    workers = [
        service_api.WorkerServer(service_api.WorkerConfig(dispatcher_address=f"localhost:{port}"))
        for _ in range(2)
    ]
    yield dispatcher.target
    for server in [*workers, dispatcher]:
        server.stop()


@pytest.fixture(scope="module")
def service_datasets(src, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("review-service")
    rows = str(src / "rows.h5")
    options = {
        "groups": _task_case("groups-ragged", src, "") | {"shuffle": False},
        "strings": {
            "sources": [rows],
            "features": {"s": "/s", "flag": "/flag", "label": "/label"},
            "num_shards": 3,
            "rows_per_record": 7,
        },
        "auto": {"sources": [rows], "mode": "auto", "num_shards": 3, "rows_per_record": 7},
    }
    out = {}
    for name, opts in options.items():
        out[name] = str(root / name)
        convert(build_config({**opts, "output": out[name], "workers": 1}))
    return out


def _examples(ds, *, batched: bool) -> collections.Counter:
    """Every example read, dicts or (x, y) pairs, as comparable keys (a multiset)."""

    def key(value):
        array = np.asarray(value)
        if array.dtype == object:
            return array.shape, tuple(array.ravel().tolist())
        return array.shape, array.dtype.str, array.tobytes()

    got = collections.Counter()
    for element in ds:
        examples = [element]
        if batched:
            first = tf.nest.flatten(element)[0]
            n = int(first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(first)[0])
            examples = [tf.nest.map_structure(lambda t, i=i: t[i], element) for i in range(n)]
        for example in examples:
            got[tuple(key(t.numpy()) for t in tf.nest.flatten(example))] += 1
    return got


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("groups", dict(batch_size=4)),
        ("groups", dict(shuffle=True, seed=3, repeat=2)),
        ("strings", dict(batch_size=8, shuffle=True, seed=1, supervised=("s", "flag"))),
        ("strings", dict()),
        ("auto", dict(batch_size=8, supervised=(["x", "s", "ch"], "label"))),
        ("auto", dict(shuffle=True, seed=2, repeat=2)),
    ],
    ids=[
        "ragged-batched",
        "ragged-unbatched-repeat",
        "strings-bool-supervised",
        "strings-unbatched",
        "auto-mixed-supervised",
        "auto-unbatched-repeat",
    ],
)
def test_service_reads_equal_local_reads(cluster, service_datasets, name, options):
    batched = "batch_size" in options
    local = _examples(reader.load(service_datasets[name], **options), batched=batched)
    remote = _examples(
        reader.load(service_datasets[name], service=cluster, **options), batched=batched
    )
    assert remote == local
    epochs = options.get("repeat", 1)
    assert sum(local.values()) == epochs * (GROUPS if name == "groups" else ROWS)
