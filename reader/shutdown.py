"""Let a training script exit while index-mode reads are still in flight.

Index mode reads its referenced bytes in Python, through ``tf.numpy_function``, on
tf.data's threads. When a script stops before the end of the data (early stopping,
``steps_per_epoch``, an exception, ``sys.exit``), the iterator is still alive and its
prefetch threads are still calling that function. At teardown, Python ends every
thread that asks for the GIL (``PyThread_exit_thread``), so a tf.data thread that was
between the numpy function's C++ and its Python never finishes its call; then the
iterator's destructor, run by the main thread while modules are torn down, waits for
that call forever.

The fix belongs before teardown: an ``atexit`` hook (atexit runs while other threads
can still take the GIL) makes every later call refuse at once, then destroys every live
eager tf.data iterator, so that its destructor waits for its calls in flight while they
can still finish (it releases the GIL while it waits). Waiting for the pipelines to go
quiet instead is not enough: a tf.data thread descheduled for longer than the quiet
period on a busy machine still enters the call after the hook returned, and hangs the
exit (one run in about 60 with eleven scripts exiting at once on two cores). For
iterators it cannot reach (graph-mode ones), the hook then still waits until no call is
in flight and none has started for :data:`QUIET_SECONDS`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import threading
import time

from hdf5_to_records.errors import Hdf5ToRecordsError

QUIET_SECONDS = 0.05  # no new call for this long: the pipeline has stopped asking
MAX_WAIT_SECONDS = 10.0  # never hold the exit longer than this (reads take milliseconds)


class InterpreterExiting(Hdf5ToRecordsError, RuntimeError):
    """A read was asked for after the interpreter began to exit."""


class _Gate:
    """Counts the reads in flight, and refuses new ones once the process exits."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """A fresh state (also in a forked child: no thread of the parent is in a read)."""
        self._cond = threading.Condition()
        self._in_flight = 0
        self._last_start = 0.0
        self._closing = False

    @contextlib.contextmanager
    def call(self):
        """Wrap one read; raises :class:`InterpreterExiting` once :meth:`close` ran."""
        with self._cond:
            self._last_start = time.monotonic()
            if self._closing:
                raise InterpreterExiting("reader: the Python interpreter is exiting")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def close(self, *, quiet: float = QUIET_SECONDS, max_wait: float = MAX_WAIT_SECONDS) -> None:
        """Refuse new reads, then wait (GIL released) until the pipelines are still."""
        deadline = time.monotonic() + max_wait
        with self._cond:
            self._closing = True
        _destroy_live_iterators()
        with self._cond:
            self._last_start = max(self._last_start, time.monotonic())
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                if self._in_flight == 0 and now - self._last_start >= quiet:
                    return
                self._cond.wait(min(quiet, deadline - now))


def _destroy_live_iterators() -> None:
    """Drop the resource of every live eager tf.data iterator (the script has ended, so
    nothing reads from them again); each destructor cancels its pipeline and waits."""
    from tensorflow.python.data.ops import iterator_ops

    for obj in gc.get_objects():
        if isinstance(obj, iterator_ops.OwnedIterator):
            obj.__dict__.pop("_iterator_resource", None)


GATE = _Gate()
os.register_at_fork(after_in_child=GATE._reset)
_armed = False


def arm() -> None:
    """Register the exit hook (once). Called when a pipeline first builds a Python read,
    after TensorFlow is imported, so that the hook runs before TensorFlow's own (LIFO)."""
    global _armed
    if not _armed:
        atexit.register(GATE.close)
        _armed = True
