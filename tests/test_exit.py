"""A training script that stops reading early exits promptly, with its own status.

Each scenario runs in its own Python process under a timeout, so that a hang at
interpreter exit fails its test instead of freezing the suite. The processes run side
by side (each one imports TensorFlow), and each test checks one of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from records import convert_small

ROWS, FEATURES = 2048, 4096
EXIT_TIMEOUT_S = 120  # all scenarios together, on 2 busy cores; a hang never ends

SCRIPT = r"""
import json, sys
import reader

path, options, stop = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
ds = reader.load(path, batch_size=16, **options)
if stop == "fit":
    import keras
    model = keras.Sequential([keras.Input((4096,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(ds.map(lambda e: (e["x"], e["y"])), epochs=1, steps_per_epoch=3, verbose=0)
    print("READ", flush=True)
    sys.exit(0)
it = iter(ds)
for _ in range(3):
    next(it)
print("READ", flush=True)
if stop == "raise":
    raise RuntimeError("the training step failed")
if stop == "exit":
    sys.exit(3)
"""

# (mode, reader options, how the script stops, the exit status it must end with)
SCENARIOS = {
    "index-end": ("index", {}, "end", 0),
    "index-raise": ("index", {}, "raise", 1),
    "index-sys-exit": ("index", {}, "exit", 3),
    "index-shuffle-repeat-end": ("index", {"shuffle": True, "seed": 1, "repeat": True}, "end", 0),
    "index-shuffle-raise": ("index", {"shuffle": True, "seed": 2}, "raise", 1),
    "index-cache-repeat-exit": ("index", {"cache": True, "repeat": 2}, "exit", 3),
    "index-unseeded-shuffle-cache": ("index", {"shuffle": True, "cache": True}, "end", 0),
    "index-keras-steps-per-epoch": ("index", {"repeat": True}, "fit", 0),
    "copy-end": ("copy", {}, "end", 0),
    "copy-shuffle-repeat-raise": ("copy", {"shuffle": True, "seed": 3, "repeat": True}, "raise", 1),
    "copy-cache-exit": ("copy", {"cache": True}, "exit", 3),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, str]:
    """A gzip-chunked and a contiguous feature, converted in copy and index mode.

    Rows of 16 KiB in records of megabytes, as scene data has them: each index-mode read
    takes milliseconds, so tf.data's threads are still inside reads when the script
    stops (with rows of a few bytes the prefetch buffers fill before the exit).
    """
    root = tmp_path_factory.mktemp("exit")
    rng = np.random.default_rng(0)
    source = root / "scenes.h5"
    with h5py.File(source, "w") as h5:
        x = rng.integers(0, 64, (ROWS, FEATURES)).astype(np.float32)
        h5.create_dataset("x", data=x, chunks=(16, FEATURES), compression="gzip", shuffle=True)
        h5.create_dataset("y", data=rng.standard_normal(ROWS).astype(np.float32))
    return {mode: convert_small(source, root / mode, mode=mode) for mode in ("copy", "index")}


@pytest.fixture(scope="module")
def outcomes(datasets) -> dict[str, tuple[int | None, str, str]]:
    """Every scenario's (exit status or None if it hung, stdout, stderr), run at once."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = {}
    for name, (mode, options, stop, _status) in SCENARIOS.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, datasets[mode], json.dumps(options), stop],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results[name] = (proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            results[name] = (None, out, err)
    return results


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_script_that_stops_early_exits_with_its_own_status(outcomes, name):
    _mode, _options, stop, status = SCENARIOS[name]
    code, out, err = outcomes[name]
    assert "READ" in out, f"{name}: the script did not get its batches:\n{err[-3000:]}"
    assert code is not None, f"{name}: the process hung at exit (killed after the timeout)"
    assert code == status, f"{name}: exit status {code}, expected {status}:\n{err[-3000:]}"
    if stop == "raise":
        # The user's own traceback, and nothing of ours after it.
        assert err.rstrip().endswith("RuntimeError: the training step failed"), err[-3000:]
    else:
        assert "Error" not in err and "Traceback" not in err, err[-3000:]


def test_the_exit_gate_waits_for_reads_in_flight_then_refuses_new_ones():
    import threading

    from reader.shutdown import InterpreterExiting, _Gate

    gate, done = _Gate(), []

    def read():
        with gate.call():
            time.sleep(0.3)
            done.append(True)

    worker = threading.Thread(target=read)
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    gate.close(quiet=0.01, max_wait=5)
    assert done == [True], "close() returned while a read was in flight"
    assert time.monotonic() - started < 2
    with pytest.raises(InterpreterExiting, match="exiting"):
        with gate.call():
            pass
    worker.join()


ENDED_SCRIPT = r"""
import atexit, gc, sys

def check():  # registered first, so it runs after reader's own exit hook
    from tensorflow.python.data.ops import iterator_ops
    live = [o for o in gc.get_objects() if isinstance(o, iterator_ops.OwnedIterator)
            and hasattr(o, "_iterator_resource")]
    print("LIVE", len(live), flush=True)

atexit.register(check)
import reader
it = iter(reader.load(sys.argv[1], batch_size=16))
for _ in range(3):
    next(it)
print("READ", flush=True)
"""


def test_no_iterator_is_left_running_when_python_begins_its_teardown(datasets):
    """Waiting for the reads to go quiet is not enough: a tf.data thread descheduled
    past the quiet period still enters a read after the hook, and hangs the exit (about
    one run in sixty on two busy cores). The hook destroys the iterators instead."""
    proc = subprocess.run(
        [sys.executable, "-c", ENDED_SCRIPT, datasets["index"]],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "READ\nLIVE 0\n" in proc.stdout, proc.stdout + proc.stderr[-3000:]
