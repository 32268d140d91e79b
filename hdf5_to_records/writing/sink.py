"""The byte sink of one shard: optionally gzip, and write on a background thread.

zlib and file writes release the GIL on large buffers, so while this thread writes the
records of one window, the worker's main thread already reads the next window from
HDF5. Pieces are written as given (views of the window arrays, never copied), so the
caller must not reuse an array before a barrier placed after its pieces has passed.

The shard is not hashed whole: every record carries its CRC32C, and the manifest holds
the sha256 of the records' framing (format/shard_digest.py), which the writer computes
from 16 bytes per record. A whole-shard sha256 cost 0.57-0.63 s of CPU per GB here
(issue 18), a third of a worker's time.
"""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

GZIP_LEVEL = 6  # zlib's default, as TensorFlow's TFRecordWriter uses
MAX_PENDING = 256  # pieces queued per thread; each holds only views and small headers


def _nbytes(data) -> int:
    return len(data) if isinstance(data, bytes) else memoryview(data).nbytes


class _Counting:
    """Counts the bytes that reach the file, and passes them on."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.size = raw, 0

    def write(self, data) -> int:
        self.raw.write(data)
        size = _nbytes(data)
        self.size += size
        return size

    def flush(self) -> None:
        self.raw.flush()


class _Consumer:
    """One thread applying ``write`` to every queued piece, in order."""

    def __init__(self, write: Callable, name: str):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            elif self.error is None:
                try:
                    for piece in item:
                        self._write(piece)
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc

    def put(self, item) -> None:
        self._queue.put(item)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


class _Barrier:
    """Passed once every consumer has reached it."""

    def __init__(self, events: list[threading.Event]):
        self._events = events

    def wait(self) -> None:
        for event in self._events:
            event.wait()


class BackgroundSink:
    """Writes pieces to ``raw`` in order on a background thread; reports the size."""

    def __init__(self, raw: BinaryIO, *, compress: bool):
        self._counting = _Counting(raw)
        self._stream = None
        write = self._counting.write
        if compress:
            self._stream = gzip.GzipFile(
                filename="", fileobj=self._counting, mode="wb", mtime=0, compresslevel=GZIP_LEVEL
            )
            write = self._stream.write
        self._consumers = [_Consumer(write, "shard-gzip-write" if compress else "shard-write")]

    def _raise_error(self) -> None:
        for consumer in self._consumers:
            if consumer.error is not None:
                error, consumer.error = consumer.error, None
                raise error

    def write(self, piece) -> None:
        """Queue one piece (bytes or a memoryview) for writing."""
        self.write_all([piece])

    def write_all(self, pieces: list) -> None:
        """Queue pieces (bytes or memoryviews) for writing, in order, as one hand-off."""
        self._raise_error()
        for consumer in self._consumers:
            consumer.put(pieces)

    def barrier(self) -> _Barrier:
        """Passed (``.wait()``) once every piece queued so far has been written."""
        events = [threading.Event() for _ in self._consumers]
        for consumer, event in zip(self._consumers, events):
            consumer.put(event)
        return _Barrier(events)

    def close(self) -> int:
        """Write what is queued, finish the gzip stream; return the bytes written.

        Raises:
            OSError: the first write error (for example, disk full).
        """
        for consumer in self._consumers:
            consumer.stop()
        self._raise_error()
        if self._stream is not None:
            self._stream.close()
        return self._counting.size

    def abandon(self) -> None:
        """Stop the threads after an error elsewhere; queued pieces are dropped."""
        for consumer in self._consumers:
            consumer.error = consumer.error or RuntimeError("abandoned")
            consumer.stop()
