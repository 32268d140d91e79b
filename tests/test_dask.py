"""convert --runner beam on a real Dask cluster: a scheduler and two worker processes on
127.0.0.1, started as a user starts them (``dask scheduler``, ``dask worker``).

The output must be byte-identical to a local run, the shards must be written in the
cluster's worker processes, and Dask's log lines must not reach the user without -v.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("apache_beam")
distributed = pytest.importorskip("distributed")

CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
START_TIMEOUT_S = 90  # scheduler and workers import Dask (and Beam, on first task)
CONVERT_TIMEOUT_S = 300
ROWS = 640
MARKS_ENV = "HDF5_TO_RECORDS_TEST_MARKS"

TRANSFORM = """
import os


def mark(example):
    # Records which process converted which example; where the variable is unset (a
    # local run) it does nothing, so both runs write the same bytes.
    marks = os.environ.get("{env}")
    if marks:
        with open(os.path.join(marks, str(os.getpid())), "a") as handle:
            handle.write(f"{{int(example['id'])}}\\n")
    return example
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A gzip-chunked source, a transform module that marks its process, and a
    directory for the marks."""
    root = tmp_path_factory.mktemp("dask")
    rng = np.random.default_rng(5)
    with h5py.File(root / "scenes.h5", "w") as h5:
        h5.create_dataset(
            "x", data=rng.normal(size=(ROWS, 32)).astype("f4"), chunks=(16, 32), compression="gzip"
        )
        h5["id"] = np.arange(ROWS, dtype=">i8")
    (root / "dask_marks.py").write_text(textwrap.dedent(TRANSFORM.format(env=MARKS_ENV)))
    (root / "marks").mkdir()
    return root


@pytest.fixture(scope="module")
def cluster(workspace):
    """``dask scheduler`` and ``dask worker --nworkers 2`` as separate processes on
    127.0.0.1; yields (scheduler address, the worker processes' pids)."""
    scheduler_file = workspace / "scheduler.json"
    env = {**os.environ, MARKS_ENV: str(workspace / "marks"), "PYTHONPATH": str(workspace)}
    dask = [sys.executable, "-m", "dask"]
    logs = open(workspace / "cluster.log", "w")  # noqa: SIM115 - closed at teardown
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            stdout=logs, stderr=subprocess.STDOUT, env=env, cwd=workspace,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            assert procs[0].poll() is None, (workspace / "cluster.log").read_text()
            assert time.monotonic() < deadline, "the Dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(
            subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "2", "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard"],
                stdout=logs, stderr=subprocess.STDOUT, env=env, cwd=workspace,
            )
        )  # fmt: skip
        with distributed.Client(address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
            pids = set(client.run(os.getpid).values())
        yield address, pids
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logs.close()


def _convert(workspace, out, *extra: str, env=None) -> subprocess.CompletedProcess:
    args = [
        CLI, "convert", str(workspace / "scenes.h5"), "-o", str(out), "--name", "scenes",
        "--num-shards", "6", "--shuffle", "--seed", "3", "--split", "train=0.8",
        "--split", "test=0.2", "--transform", "dask_marks:mark", *extra,
    ]  # fmt: skip
    return subprocess.run(
        args, capture_output=True, text=True, cwd=workspace, env=env or os.environ,
        timeout=CONVERT_TIMEOUT_S,
    )  # fmt: skip


def _files(directory) -> dict[str, bytes]:
    return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory))}


def test_a_dask_cluster_converts_byte_identically_in_its_workers(workspace, cluster):
    address, worker_pids = cluster
    out = workspace / "out"
    local = _convert(workspace, out)
    assert local.returncode == 0, local.stderr
    expected = _files(out)
    assert not os.listdir(workspace / "marks"), "the local run must not mark"
    shutil.rmtree(out)

    run = _convert(
        workspace, out, "--runner", "beam", "--beam-option", "runner=DaskRunner",
        "--beam-option", f"dask_client_address={address}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _files(out) == expected
    # Every example went through a worker process of the cluster, none through this one
    # (each worker also plans, which runs the transform on the first example).
    marks = {int(pid): (workspace / "marks" / pid).read_text().split() for pid in
             os.listdir(workspace / "marks")}  # fmt: skip
    assert marks and set(marks) <= worker_pids, (marks.keys(), worker_pids)
    assert {int(i) for ids in marks.values() for i in ids} == set(range(ROWS))
    # Dask's own log lines stay out of the way without -v.
    assert run.stderr == "", run.stderr
    assert "wrote 640 examples" in run.stdout


def test_with_v_the_engine_logs_show_under_their_own_names(workspace, cluster):
    address, _ = cluster
    run = subprocess.run(
        [CLI, "-v", "convert", str(workspace / "scenes.h5"), "-o", str(workspace / "verbose"),
         "--runner", "beam", "--beam-option", "runner=dask",
         "--beam-option", f"dask_client_address={address}"],
        capture_output=True, text=True, cwd=workspace, timeout=CONVERT_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any(line.startswith("apache_beam.") for line in lines), run.stderr
    ours = [line for line in lines if line.startswith("hdf5-to-records: ")]
    assert not any("type hint" in line for line in ours), run.stderr
