"""Start the converter's forkserver early: its workers then fork at once.

Kept free of heavy imports, so that the CLI can start the forkserver before it imports
the converter itself: the forkserver's own imports (h5py, NumPy, the writer; about
0.25 s) then overlap the CLI's instead of delaying the first worker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading

from .. import fs

log = logging.getLogger(__name__)

PRELOAD = ["hdf5_to_records.writing.writer"]


def prestart(job_output: str | None, workers: int | None, *, preload_main: bool = False) -> None:
    """Start the forkserver while the caller scans and plans.

    It imports h5py and the writer once (~0.3 s, in the background); workers then fork
    from it at once. Started with SIGINT ignored, which it and the workers inherit: a
    Ctrl-C reaches the parent alone, which stops the workers and cleans up, instead of
    interrupting the forkserver's start-up with a traceback.

    ``preload_main``: the forkserver imports the ``__main__`` script too (the CLI), so
    that each worker does not import it again on start (multiprocessing does that for
    every child of a script).
    """
    if workers == 1 or (job_output is not None and fs.is_process_local(job_output)):
        return
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD, "__main__"] if preload_main else PRELOAD)
        from multiprocessing import forkserver

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            forkserver.ensure_running()  # spawns it (~2 ms); the preload runs there
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
    except Exception:  # the pool starts it again and reports any real error
        log.debug("forkserver prestart failed", exc_info=True)
