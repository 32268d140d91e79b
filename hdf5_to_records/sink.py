"""The byte sink of one shard: hash, optionally gzip, and write on a background thread.

hashlib, zlib and file writes release the GIL on large buffers, so while this thread
hashes and writes the records of one window, the worker's main thread already reads
the next window from HDF5. Pieces are written as given (views of the window arrays,
never copied), so the caller must not reuse an array before a barrier placed after its
pieces has passed.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import threading
from typing import BinaryIO

GZIP_LEVEL = 6  # zlib's default, as TensorFlow's TFRecordWriter uses
MAX_PENDING = 256  # pieces queued: a few records; each holds only views and small headers


class _Hashing:
    """Counts and hashes the bytes that reach the file."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.size, self.sha = raw, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.raw.write(data)
        self.sha.update(data)
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        self.size += size
        return size

    def flush(self) -> None:
        self.raw.flush()


class BackgroundSink:
    """Writes pieces to ``raw`` in order on a thread; reports size and sha256."""

    def __init__(self, raw: BinaryIO, *, compress: bool):
        self._hashing = _Hashing(raw)
        self._stream = (
            gzip.GzipFile(
                filename="", fileobj=self._hashing, mode="wb", mtime=0, compresslevel=GZIP_LEVEL
            )
            if compress
            else self._hashing
        )
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            elif self._error is None:
                try:
                    self._stream.write(item)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, piece) -> None:
        """Queue one piece (bytes or a memoryview) for writing."""
        self._raise_error()
        self._queue.put(piece)

    def barrier(self) -> threading.Event:
        """An event set once every piece queued so far has been written."""
        event = threading.Event()
        self._queue.put(event)
        return event

    def close(self) -> tuple[int, str]:
        """Write what is queued, finish the gzip stream; return (bytes, sha256 hex).

        Raises:
            OSError: the first write error (for example, disk full).
        """
        self._queue.put(None)
        self._thread.join()
        self._raise_error()
        if self._stream is not self._hashing:
            self._stream.close()
        return self._hashing.size, self._hashing.sha.hexdigest()

    def abandon(self) -> None:
        """Stop the thread after an error elsewhere; queued pieces are dropped."""
        self._error = self._error or RuntimeError("abandoned")
        self._queue.put(None)
        self._thread.join()
