"""convert --runner beam: the same plan on Apache Beam's DirectRunner, byte-identical to
a local conversion of the same inputs and options."""

from __future__ import annotations

import os
import shutil
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hdf5_to_records.cli import main
from hdf5_to_records.converter import convert
from hdf5_to_records.errors import TransformError, UsageError
from hdf5_to_records.planning.config import build_config
from hdf5_to_records.scale_out import beam_options, beam_runner
from hdf5_to_records.scale_out.beam_runner import convert_on_beam

from records import read_split

pytest.importorskip("apache_beam")

ROWS = 300


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two files: contiguous big-endian, and chunked gzip with a partial last chunk."""
    root = tmp_path_factory.mktemp("beam")
    rng = np.random.default_rng(11)
    paths = []
    for i, (layout, order) in enumerate([("contiguous", ">"), ("gzip", "<")]):
        path = root / f"part{i}.h5"
        kwargs = {"chunks": (16, 8), "compression": "gzip", "shuffle": True}
        with h5py.File(path, "w") as h5:
            h5["id"] = np.arange(ROWS, dtype=f"{order}i8") + i * ROWS
            if layout == "gzip":
                h5.create_dataset("x", data=rng.normal(size=(ROWS, 8)).astype("f4"), **kwargs)
            else:
                h5["x"] = rng.normal(size=(ROWS, 8)).astype(f"{order}f4")
        paths.append(str(path))
    (root / "beam_transforms.py").write_text(
        textwrap.dedent(
            """
            def double(example):
                return {"id": example["id"], "x2": example["x"] * 2}

            def explode(example):
                if int(example["id"]) == 123:
                    raise ValueError("bad row")
                return example
            """
        )
    )
    return root, paths


def _files(directory) -> dict[str, bytes]:
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))}


def _both(tmp_path, paths, beam_options=(), **options) -> tuple[dict, dict]:
    """Convert locally and on Beam into the same output path; return both file sets."""
    out = tmp_path / "out"
    config = build_config({"sources": paths, "output": str(out), "workers": 2, **options})
    convert(config)
    local = _files(out)
    shutil.rmtree(out)
    convert_on_beam(config, beam_options=beam_options)
    return local, _files(out)


@pytest.mark.parametrize(
    "options",
    [
        {"num_shards": 3},
        {"shuffle": True, "seed": 4, "splits": ["train=0.7", "test=0.2"], "num_shards": 4},
        {"compression": "gzip", "rows": "10:290:3", "rows_per_record": 5},
        {"mode": "index", "shuffle": True, "num_shards": 2},
        {"mode": "auto", "shard_size": "20kB"},
    ],
    ids=["plain", "shuffle-splits", "gzip-rows", "index", "auto-many-shards"],
)
def test_beam_output_is_byte_identical_to_local(tmp_path, sources, options):
    _, paths = sources
    local, beam = _both(tmp_path, paths, **options)
    assert sorted(beam) == sorted(local)
    assert len(local) > 2
    for name in local:
        assert beam[name] == local[name], name


def test_beam_multiprocess_direct_runner_and_values(tmp_path, sources):
    """Two DirectRunner worker processes; the values equal h5py's, in plan order."""
    _, paths = sources
    local, beam = _both(
        tmp_path,
        paths,
        ["direct_num_workers=2", "direct_running_mode=multi_processing"],
        num_shards=3,
    )
    assert beam == local
    got = read_split(str(tmp_path / "out"))
    ids, xs = [], []
    for path in paths:
        with h5py.File(path) as h5:
            ids.append(h5["id"][:])
            xs.append(h5["x"][:])
    np.testing.assert_array_equal(np.stack(got["id"]), np.concatenate(ids))
    np.testing.assert_array_equal(np.stack(got["x"]), np.concatenate(xs))


def test_beam_with_a_transform(tmp_path, sources, monkeypatch):
    root, paths = sources
    monkeypatch.syspath_prepend(str(root))
    local, beam = _both(tmp_path, paths, transform="beam_transforms:double", num_shards=2)
    assert beam == local
    assert "manifest.json" in beam


def test_beam_failure_leaves_no_manifest_and_no_temp_files(tmp_path, sources, monkeypatch):
    root, paths = sources
    monkeypatch.syspath_prepend(str(root))
    out = tmp_path / "failed"
    config = build_config(
        {"sources": paths, "output": str(out), "transform": "beam_transforms:explode"}
    )
    with pytest.raises(TransformError, match=r"failed on example \d+ of shard .* row 123"):
        convert_on_beam(config)
    left = os.listdir(out)
    assert "manifest.json" not in left
    assert not [n for n in left if n.startswith(".")], left


def test_cli_runner_beam(tmp_path, sources):
    _, paths = sources
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main, ["convert", *paths, "-o", str(out), "--runner", "beam", "--num-shards", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 600 examples" in result.output
    assert sorted(os.listdir(out)) == [
        "cli-train.tfrecord-00000-of-00002",
        "cli-train.tfrecord-00000-of-00002.idx",
        "cli-train.tfrecord-00001-of-00002",
        "cli-train.tfrecord-00001-of-00002.idx",
        "manifest.json",
    ]
    again = CliRunner().invoke(main, ["convert", *paths, "-o", str(out), "--runner", "beam"])
    assert again.exit_code == 1
    assert "directory is not empty" in again.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--runner", "beam", "--beam-option", "bogus=1"], "'bogus' is not a Beam pipeline option"),
        (["--runner", "beam", "--beam-option", "=1"], "expected KEY=VALUE"),
        (["--beam-option", "runner=DirectRunner"], "--beam-option needs --runner beam"),
        (["--runner", "beam", "--resume"], "--resume with --runner beam"),
        (["--runner", "beam", "--num-tasks", "2", "--task-index", "0"], "are alternatives"),
    ],
)
def test_cli_beam_usage_errors(tmp_path, sources, args, match):
    _, paths = sources
    result = CliRunner().invoke(main, ["convert", *paths, "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert match in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("pairs", "runner", "option"),
    [
        (["runner=DaskRunner", "dask_client_address=tcp://h:1"], "DaskRunner", "--dask_client_"),
        (["runner=dask", "dask_connection_timeout=5"], "DaskRunner", "--dask_connection_timeout"),
        (["runner=FlinkRunner", "flink_master=localhost:8081"], "FlinkRunner", "--flink_master"),
        (["runner=spark", "spark_master_url=spark://h:7077"], "SparkRunner", "--spark_master_url"),
        (["runner=PrismRunner", "environment_type=LOOPBACK"], "PrismRunner", "--environment_type"),
        (["runner=apache_beam.runners.dask.dask_runner.DaskRunner"], "DaskRunner", None),
        (["direct_num_workers=2"], "DirectRunner", "--direct_num_workers"),
    ],
)  # fmt: skip
def test_every_runner_shipped_with_beam_is_accepted_with_its_options(pairs, runner, option):
    """Short names (any case, with or without "Runner") and full paths; a runner's own
    options are known even though its module was not imported before."""
    flags = beam_options.parse_beam_options(pairs)
    runners = [f for f in flags if f.startswith("--runner=")]
    assert len(runners) == 1 and runners[0].endswith("." + runner), flags
    assert option is None or any(f.startswith(option) for f in flags), flags


def test_on_dask_each_shard_is_its_own_task_unless_partitioning_is_given():
    flags = beam_options.parse_beam_options(["runner=dask"])
    assert "--dask_partition_size=1" in flags
    flags = beam_options.parse_beam_options(["runner=dask", "dask_npartitions=3"])
    assert not any(f.startswith("--dask_partition_size") for f in flags)


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        (["runner=NoSuchRunner"], "runner=NoSuchRunner: not a Beam runner; expected .*DaskRunner"),
        (["runner=os.path"], "os.path is not a Beam PipelineRunner"),
        (["runner=no_such_module.Runner"], "cannot import no_such_module"),
        (["runner=DaskRunner", "dask_bogus=1"], "'dask_bogus' is not a Beam pipeline option"),
        (["direct_num_workers=two"], "invalid int value: 'two'"),
    ],
)  # fmt: skip
def test_unknown_runners_and_options_are_refused_in_one_line(pairs, match):
    with pytest.raises(UsageError, match=match) as info:
        beam_options.parse_beam_options(pairs)
    assert "\n" not in str(info.value)


def test_without_beam_installed_the_error_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(beam_options, "beam", None)
    config = build_config({"sources": ["x.h5"], "output": str(tmp_path / "o")})
    with pytest.raises(UsageError, match=r"pip install 'hdf5-to-records\[beam\]'"):
        convert_on_beam(config)


def test_the_pipeline_carries_the_config_not_the_plan(tmp_path, sources):
    """Workers rebuild the plan (the row indices of every example would not fit in a
    Dataflow job graph) and refuse one that differs from the launcher's."""
    import pickle

    from hdf5_to_records.converter import plan_conversion
    from hdf5_to_records.errors import OutputError
    from hdf5_to_records.planning.limits import DEFAULT_LIMITS
    from hdf5_to_records.scale_out.tasks import plan_id

    _, paths = sources
    config = build_config({"sources": paths, "output": str(tmp_path / "o"), "num_shards": 4})
    plan = plan_conversion(config)
    assert len(pickle.dumps(plan)) > 2 * ROWS * 8
    step = beam_runner._WriteShard(config, plan_id(plan), DEFAULT_LIMITS)
    assert len(pickle.dumps(step)) < 4000
    beam_runner._PLANS.clear()
    assert plan_id(beam_runner._plan_for(config, plan_id(plan), DEFAULT_LIMITS)) == plan_id(plan)
    beam_runner._PLANS.clear()
    with pytest.raises(OutputError, match="a Beam worker planned differently"):
        beam_runner._plan_for(config, "0" * 64, DEFAULT_LIMITS)
    beam_runner._PLANS.clear()
