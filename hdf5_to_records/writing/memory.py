"""Keep freed memory in a converting process instead of handing it back after every
large free.

glibc returns big blocks to the kernel when they are freed (``mmap``'d blocks at once,
the heap's top past a threshold). Every 2.4 MB chunk a worker inflates then faults in
fresh pages, and on this project's VM a fresh page costs about 1.6 s of kernel time per
GB (``benchmarks/README.md``). With blocks under 32 MiB taken from the heap and up to
128 MiB of free heap kept, a worker reuses its own freed memory: reading the 16-row gzip
scene source went from 2.3-2.8 to 1.1-1.5 s per GB (``benchmarks/convert_profile.py``).
The 64 MiB window buffers stay ``mmap``'d (they are reused anyway): with every block
kept in the heap, fragmentation grew a worker's RSS with the shards it wrote (190 MB
after 1.1 GB, 380 MB after 2.2 GB); now it stays at 185-195 MB.

Only processes this project owns call it: conversion workers and the CLI, never a
training script that imports the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_BYTES = 32 << 20  # blocks below this come from the heap (chunks, records)
KEEP_BYTES = 128 << 20  # free memory the heap keeps at its top: bounded RSS


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds in this process; False where there is no
    glibc (the call is then a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES) == 1
    done = mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES) == 1 and done
    if not done:
        log.debug("mallopt refused the thresholds")
    return done
