"""Open shard files, shared by every pipeline of the process and bounded in number.

TensorFlow keeps a pipeline's Python functions (and so its readers) alive for as long
as it likes, often to the end of the process: descriptors owned by a reader would leak
with every ``reader.load`` of a training script that builds pipelines again and again.
Here a descriptor belongs to the process: at most :data:`MAX_IDLE` stay open while no
read uses them (least recently used closed first), and one in use is never closed
under a read. A file is known by its path and its identity when the pipeline was built
(device, inode, size, mtime), so a shard replaced since is opened afresh, never read
through a descriptor of the old file.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading

from hdf5_to_records.errors import ShardCorrupt

MAX_IDLE = 256  # descriptors kept open with no read using them

Key = tuple[str, int, int, int, int]


def identity(path: str) -> Key:
    """The key of ``path`` as it is now.

    Raises:
        OSError: ``path`` cannot be stat'ed.
    """
    path = os.path.abspath(path)  # a later chdir must not change which file it names
    st = os.stat(path)
    return path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Descriptors:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: collections.OrderedDict[Key, list[int]] = collections.OrderedDict()
        self._count = 0  # idle descriptors

    @contextlib.contextmanager
    def open(self, key: Key):
        """A descriptor of the file ``key`` names, for the duration of the block."""
        fd = self._take(key)
        try:
            yield fd
        finally:
            self._give(key, fd)

    def _take(self, key: Key) -> int:
        with self._lock:
            free = self._idle.get(key)
            if free:
                fd = free.pop()
                self._count -= 1
                if not free:
                    del self._idle[key]
                return fd
        fd = os.open(key[0], os.O_RDONLY)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != key[1:]:
            os.close(fd)
            raise ShardCorrupt(
                f"shard {key[0]} was replaced or changed after reader.load checked it; "
                "load the dataset again"
            )
        return fd

    def _give(self, key: Key, fd: int) -> None:
        closing = []
        with self._lock:
            self._idle.setdefault(key, []).append(fd)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > MAX_IDLE:
                old_key, fds = next(iter(self._idle.items()))
                closing.append(fds.pop(0))
                self._count -= 1
                if not fds:
                    del self._idle[old_key]
        for old in closing:
            os.close(old)

    def forget(self) -> None:
        """In a forked child: close the parent's descriptors, never share them."""
        with self._lock:
            for fds in self._idle.values():
                for fd in fds:
                    os.close(fd)
            self._idle.clear()
            self._count = 0

    def idle(self) -> int:
        with self._lock:
            return self._count


SHARED = _Descriptors()
os.register_at_fork(after_in_child=SHARED.forget)
