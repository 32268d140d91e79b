"""Run the shard specs of a plan: in worker processes, or in this process.

Workers come from a ``forkserver`` context: each starts from a clean interpreter that
has imported h5py but opened no file, so no HDF5 handle (and no TensorFlow state) is
ever inherited across a fork. Progress flows back through a queue to the caller's
callback, which owns the progress bar.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_module
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from .. import fs
from ..errors import WorkerDied
from ..planning.plan import ShardSpec
from .forkserver import PRELOAD
from .writer import Job, ShardResult, init_worker, open_inputs, run_in_worker, write_shard

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
OnResult = Callable[[ShardResult], None]
PUMP_POLL_S = 0.02


def execute(
    job: Job,
    specs: Sequence[ShardSpec],
    *,
    workers: int,
    progress: Progress | None = None,
    on_result: OnResult | None = None,
) -> list[ShardResult]:
    """Write every shard in ``specs``; return their results in completion order.

    ``on_result`` is called in this process as each shard completes (used to record
    progress for ``--resume``).
    """
    if not specs:
        return []
    if workers <= 1 or len(specs) == 1 or fs.is_process_local(job.output):
        return _execute_here(job, specs, progress, on_result)
    return _execute_pool(job, specs, min(workers, len(specs)), progress, on_result)


def _execute_here(job, specs, progress, on_result) -> list[ShardResult]:
    reader, transform = open_inputs(job)
    results = []
    try:
        for spec in specs:
            result = write_shard(job, spec, reader, progress=progress, transform=transform)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        reader.close()
    return results


def _execute_pool(job, specs, workers, progress, on_result) -> list[ShardResult]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    events = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not events.empty():
            try:
                # A short poll: the run ends at most this long after its last shard. No
                # sentinel is put to wake it: putting takes the queue's lock, which a
                # worker terminated while putting holds forever (a hang at exit).
                item = events.get(timeout=PUMP_POLL_S)
            except queue_module.Empty:
                continue
            except (EOFError, OSError, ValueError):
                return
            if progress is not None:
                progress(*item)

    pump = threading.Thread(target=drain, daemon=True)
    pump.start()
    results = []
    # ProcessPoolExecutor, unlike multiprocessing.Pool, notices a worker that dies
    # (out of memory, killed) instead of waiting forever for its task.
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(job, events)
    )
    try:
        # Largest shards first keeps the workers busy until the end.
        ordered = sorted(specs, key=lambda s: -s.est_bytes)
        futures = {pool.submit(run_in_worker, spec): spec for spec in ordered}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                raise WorkerDied(
                    f"a worker process died while writing {futures[future].filename} "
                    "(killed, or out of memory?)"
                ) from None
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        _stop_pool(pool)
        stop.set()
        pump.join(timeout=5)
        events.close()
    return results


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down; on an error, stop the shards still running at once."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    # Before 3.14 there is no public way to stop the workers of a running pool.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
