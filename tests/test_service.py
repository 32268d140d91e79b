"""Reading through tf.data service: an in-process dispatcher with two loopback workers,
plus workers in separate processes started by ``hdf5-to-records data-service worker``.

Every example read through the service equals a local read: as a multiset per epoch,
and exactly once each per epoch with the file-sharded ``distributed_epoch`` mode.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import reader
from hdf5_to_records.cli import main
from hdf5_to_records.errors import ServiceUnavailable, UsageError

from records import tf

service_api = tf.data.experimental.service
ROWS = 240
CLI = [sys.executable, "-m", "hdf5_to_records"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_worker_process(dispatcher_port: int, log_dir) -> subprocess.Popen:
    """A worker in its own process, started as users start one. Its stderr goes to a
    file: a pipe nobody reads could fill up with gRPC's log lines and block it."""
    log_path = log_dir / f"worker-{dispatcher_port}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [*CLI, "data-service", "worker", "--dispatcher", f"localhost:{dispatcher_port}"],
            stderr=log_file,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if "worker serving" in log_path.read_text():  # said after importing TF
            return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"worker process did not start: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A dispatcher and two workers in this process, and one worker in another."""
    port = _free_port()
    dispatcher = service_api.DispatchServer(service_api.DispatcherConfig(port=port))
    workers = [
        service_api.WorkerServer(service_api.WorkerConfig(dispatcher_address=f"localhost:{port}"))
        for _ in range(2)
    ]
    remote = _start_worker_process(port, tmp_path_factory.mktemp("worker-logs"))
    yield {"target": dispatcher.target, "port": port, "num_workers": 3}
    _stop(remote)
    for server in [*workers, dispatcher]:
        server.stop()


@pytest.fixture(scope="module")
def remote_only(tmp_path_factory):
    """A dispatcher here whose only worker runs in another process: whatever it serves
    ran without this process's Python functions."""
    port = _free_port()
    dispatcher = service_api.DispatchServer(service_api.DispatcherConfig(port=port))
    remote = _start_worker_process(port, tmp_path_factory.mktemp("worker-logs"))
    yield dispatcher.target
    _stop(remote)
    dispatcher.stop()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, convert_h5):
    """One source, converted in copy and in index mode (several shards each)."""
    root = tmp_path_factory.mktemp("service")
    path = root / "scenes.h5"
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as h5:
        h5["id"] = np.arange(ROWS, dtype=">i8")
        h5.create_dataset(
            "points",
            data=rng.normal(size=(ROWS, 16, 3)).astype("<f4"),
            chunks=(8, 16, 3),
            compression="gzip",
            shuffle=True,
        )
    options = dict(num_shards=5, rows_per_record=7)
    return {
        "source": path,
        "copy": convert_h5(path, **options),
        "index": convert_h5(path, mode="index", **options),
        "split": convert_h5(path, split=["train=0.75", "test=0.25"], seed=3, **options),
    }


def _examples(ds) -> list[tuple[int, bytes]]:
    """(id, points bytes) of every example read, batched or not."""
    out = []
    for batch in ds.as_numpy_iterator():
        ids, points = np.atleast_1d(batch["id"]), batch["points"].reshape(-1, 16, 3)
        out += [(int(i), p.tobytes()) for i, p in zip(ids, points)]
    return out


def _truth(source) -> collections.Counter:
    with h5py.File(source) as h5:
        ids, points = h5["id"][:], h5["points"][:]
    return collections.Counter((int(i), p.tobytes()) for i, p in zip(ids, points))


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_distributed_epoch_reads_every_example_exactly_once(cluster, datasets, mode):
    ds = reader.load(
        datasets[mode],
        batch_size=10,
        service=cluster["target"],
        processing_mode="distributed_epoch",
    )
    got = collections.Counter(_examples(ds))
    assert got == _truth(datasets["source"])
    assert set(got.values()) == {1}


def test_compressed_elements_read_the_same(cluster, datasets):
    ds = reader.load(
        datasets["copy"], batch_size=10, service=cluster["target"], service_compression="AUTO"
    )
    assert collections.Counter(_examples(ds)) == _truth(datasets["source"])


def test_repeated_epochs_through_the_service(cluster, datasets):
    ds = reader.load(
        datasets["copy"], batch_size=32, shuffle=True, seed=1, repeat=3, service=cluster["target"]
    )
    got = collections.Counter(_examples(ds))
    assert got == collections.Counter({k: 3 for k in _truth(datasets["source"])})


def test_parallel_epochs_gives_each_worker_a_whole_epoch(cluster, datasets):
    ds = reader.load(
        datasets["copy"],
        batch_size=16,
        service=cluster["target"],
        processing_mode="parallel_epochs",
    )
    got = collections.Counter(_examples(ds))
    truth = _truth(datasets["source"])
    assert got == collections.Counter({k: cluster["num_workers"] for k in truth})


def test_split_and_unbatched_reads_match_the_local_read(cluster, datasets):
    for split in ("train", "test"):
        local = collections.Counter(_examples(reader.load(datasets["split"], split)))
        remote = collections.Counter(
            _examples(reader.load(datasets["split"], split, service=cluster["target"]))
        )
        assert remote == local
        assert 0 < sum(local.values()) < ROWS


def test_two_clients_share_one_job(cluster, datasets):
    """Two trainers with one job_name split an epoch between them: together, once each."""
    kwargs = dict(batch_size=8, service=cluster["target"], job_name="shared-job")
    first = iter(reader.load(datasets["copy"], **kwargs).as_numpy_iterator())
    second = iter(reader.load(datasets["copy"], **kwargs).as_numpy_iterator())
    got: list = []
    for it in (first, second):
        for batch in it:
            got += [(int(i), p.tobytes()) for i, p in zip(batch["id"], batch["points"])]
    assert collections.Counter(got) == _truth(datasets["source"])


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_a_worker_in_another_process_serves_copy_and_index_datasets(remote_only, datasets, mode):
    """Index mode's numpy_function cannot run in the worker's process: the records cross
    the service and their bytes are read here, so the values still equal h5py's."""
    ds = reader.load(datasets[mode], batch_size=12, shuffle=True, seed=5, service=remote_only)
    got = collections.Counter(_examples(ds))
    assert got == _truth(datasets["source"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(service="localhost"), "expected 'grpc://HOST:PORT'"),
        (dict(service="http://localhost:80"), "expected 'grpc://HOST:PORT'"),
        (dict(processing_mode="distributed_epoch"), "need service="),
        (dict(job_name="x"), "need service="),
        (dict(service="SERVICE", processing_mode="sideways"), "processing_mode='sideways'"),
        (dict(service="SERVICE", cache=True), "cache= with service="),
        (dict(service_compression="AUTO"), "service_compression= needs service="),
        (dict(service="SERVICE", service_compression="zstd"), "expected None or 'AUTO'"),
        (dict(service="SERVICE", num_workers=2, worker_index=0), "num_workers= with service="),
    ],
)
def test_bad_service_options_are_one_line_errors(cluster, datasets, options, match):
    if options.get("service") == "SERVICE":
        options["service"] = cluster["target"]
    with pytest.raises(UsageError, match=match) as caught:
        reader.load(datasets["copy"], **options)
    assert "\n" not in str(caught.value)


def test_an_unreachable_service_fails_at_once():
    with pytest.raises(ServiceUnavailable, match="no tf.data service dispatcher answers at"):
        reader.load("unused", service=f"grpc://localhost:{_free_port()}")


def test_cli_servers_refuse_taken_ports_and_absent_dispatchers(cluster):
    runner = CliRunner()
    result = runner.invoke(main, ["data-service", "dispatcher", "--port", str(cluster["port"])])
    assert result.exit_code == 1, result.output
    assert result.output.strip().endswith(f"--port {cluster['port']}: Address already in use")
    port = _free_port()
    result = runner.invoke(main, ["data-service", "worker", "--dispatcher", f"localhost:{port}"])
    assert result.exit_code == 1, result.output
    assert (
        f"--dispatcher localhost:{port}: no tf.data service dispatcher answers at "
        f"localhost:{port}" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1


def test_cli_servers_refuse_bad_options():
    runner = CliRunner()
    result = runner.invoke(main, ["data-service", "worker", "--dispatcher", "nowhere"])
    assert result.exit_code == 2
    assert "--dispatcher nowhere: expected HOST:PORT" in result.output
    result = runner.invoke(main, ["data-service", "dispatcher", "--port", "70000"])
    assert result.exit_code == 2 and "--port 70000" in result.output
    result = runner.invoke(main, ["data-service", "dispatcher", "--fault-tolerant"])
    assert result.exit_code == 2 and "--fault-tolerant needs --work-dir" in result.output


def test_cli_dispatcher_serves_until_sigterm(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [*CLI, "data-service", "dispatcher", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        for line in proc.stderr:
            if line.startswith("dispatcher serving"):
                assert line.strip() == f"dispatcher serving at grpc://localhost:{port}"
                break
        socket.create_connection(("localhost", port), timeout=5).close()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)  # a server that ignores SIGTERM fails
        assert proc.returncode == 143
    finally:
        proc.kill()
    errors = [line for line in rest.splitlines() if line.startswith("Error")]
    assert errors == ["Error: stopped"]
    assert "Traceback" not in rest


def test_map_fn_and_supervised_run_on_a_worker_in_another_process(remote_only, datasets):
    """Copy mode finishes the batches on the workers, map_fn included (TF ops only)."""

    def scale(x, y):
        return x * 2.0, y + 1

    kwargs = dict(batch_size=16, supervised=("points", "id"), map_fn=scale)
    local = reader.load(datasets["copy"], **kwargs)
    remote = reader.load(datasets["copy"], service=remote_only, **kwargs)

    def pairs(ds):
        return collections.Counter(
            (int(i), p.tobytes()) for x, y in ds.as_numpy_iterator() for p, i in zip(x, y)
        )

    got = pairs(remote)
    assert got == pairs(local)
    assert sum(got.values()) == ROWS


@pytest.mark.parametrize("mode", ["copy", "index"])
def test_a_corrupt_shard_read_by_a_remote_worker_names_itself(
    remote_only, datasets, mode, tmp_path
):
    """The check that names a corrupt shard is pure ops: it runs on a worker that has
    none of this process's Python functions."""
    directory = tmp_path / mode
    shutil.copytree(datasets[mode], directory)
    shard = sorted(
        p for p in os.listdir(directory) if ".tfrecord-" in p and not p.endswith(".idx")
    )[1]
    with open(directory / shard, "r+b") as handle:
        handle.seek(20)
        byte = handle.read(1)
        handle.seek(20)
        handle.write(bytes([byte[0] ^ 0xFF]))
    ds = reader.load(str(directory), batch_size=12, service=remote_only)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"shard .*{shard} is corrupt"):
        for _ in ds:
            pass
