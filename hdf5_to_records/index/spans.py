"""Read referenced features: positioned reads of HDF5 bytes, decoded in NumPy.

This is the one seam between index-mode records and the bytes they point at. A call
takes a batch of records' references (one Python call per batch of multi-MB spans,
never per example) and returns the decoded feature arrays. ``os.preadv``, inflate and
NumPy's copies release the GIL, so ``tf.data`` runs several calls on several cores.

It runs through ``tf.numpy_function``, so it runs where the Python client runs: in the
input pipeline of the training process. A pure-op path for tf.data service workers
would replace :meth:`SpanReader.read` behind the same inputs and outputs.

Every byte range is checked before it is read: inside the source file as recorded,
and inside the referenced dataset (contiguous) or no larger than a chunk can be
(chunked). A record cannot make the reader read a file the manifest does not list.
With checksums (format 3), every range read is checked against the CRC32C recorded at
conversion before a byte of it is decoded or returned (:mod:`checksums`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np
from crc32c import crc32c

from ..errors import SourceChanged, SourceRefused
from ..format.reference import Reference
from .checksums import changed
from .chunk_filters import max_chunk_bytes, undo_filters
from .row_views import aligned_empty, field_view, same_bytes, to_stored

OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
MAX_OPEN_FILES = 128  # source files kept open at once (per SpanReader)
CHECK_BLOCK = 256 << 10  # with checksums: bytes read and checksummed at a time


@dataclass(frozen=True)
class SourceFile:
    """One checked source of an index-mode dataset: its real path, size and identity."""

    name: str  # as the manifest lists it, for messages
    path: str
    size: int
    refs: dict[str, Reference]  # feature name -> where its rows are
    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) when it was checked


class SpanReader:
    """Decodes referenced features for batches of records; safe to call from threads."""

    def __init__(
        self,
        sources: tuple[SourceFile, ...],
        stored: dict[str, tuple[np.dtype, tuple[int, ...]]],
        max_rows: int,
        max_open_files: int = MAX_OPEN_FILES,
        *,
        checksums: bool = False,
    ):
        self._sources = sources
        self._checksums = checksums  # each range is (offset, size, mask, CRC32C)
        self._width = 4 if checksums else 3
        self._max_open_files = max_open_files
        self._max_rows = max_rows  # the most examples a record holds (rows_per_record)
        self._stored = stored  # feature -> (output dtype: little-endian, bool as uint8; shape)
        self._fds: collections.OrderedDict[int, list[int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    def close(self) -> None:
        with self._lock:
            for fd, _users in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __del__(self) -> None:  # tf.data may keep the reader alive until exit
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass

    @contextlib.contextmanager
    def _open(self, file_id: int):
        """A descriptor of source ``file_id`` for the duration of a read.

        At most ``max_open_files`` stay open (least recently used closed first, never one
        in use). A file opened again must still be the file checked at ``load``.
        """
        with self._lock:
            entry = self._fds.get(file_id)
            if entry is None:
                entry = self._fds[file_id] = [self._open_checked(file_id), 0]
            self._fds.move_to_end(file_id)
            entry[1] += 1
            idle = [k for k, (_, users) in self._fds.items() if users == 0]
            for key in idle[: max(0, len(self._fds) - self._max_open_files)]:
                os.close(self._fds.pop(key)[0])
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1

    def _open_checked(self, file_id: int) -> int:
        source = self._sources[file_id]
        try:
            fd = os.open(source.path, OPEN_FLAGS)
        except OSError as exc:
            raise SourceChanged(f"source {source.name} cannot be opened: {exc.strerror}") from None
        stat = os.fstat(fd)
        if source.identity != (0, 0) and (
            (stat.st_dev, stat.st_ino) != source.identity or stat.st_size != source.size
        ):
            os.close(fd)
            raise SourceChanged(f"source {source.name} was replaced since reader.load checked it")
        return fd

    def read(
        self,
        name: str,
        file_ids: np.ndarray,
        counts: np.ndarray,
        refs: np.ndarray,
        ref_splits: np.ndarray,
        takes: np.ndarray,
        take_splits: np.ndarray,
    ) -> np.ndarray:
        """Feature ``name`` of a batch of records, as one ``[sum(counts), *shape]`` array.

        Record ``r`` is read from source ``file_ids[r]``: the ``(offset, size, mask)``
        triples (with checksums: ``(offset, size, mask, crc32c)``) in
        ``refs[ref_splits[r]:ref_splits[r + 1]]``, decoded and concatenated, then rows
        ``takes[take_splits[r]:take_splits[r + 1]]`` (all rows in order when empty).

        Raises:
            SourceRefused: a reference outside its file or dataset, or a bad take list.
            SourceChanged: bytes whose CRC32C is not the recorded one.
            ValueError: bytes that do not decode (corrupt chunk, HDF5 checksum mismatch).
        """
        dtype, shape = self._stored[name]
        width = self._width
        if (counts < 0).any() or (counts > self._max_rows).any() or refs.size % width:
            fields = "(offset, size, mask, crc32c)" if self._checksums else "(offset, size, mask)"
            raise SourceRefused(
                f"feature {name!r}: malformed record (a count outside 0..{self._max_rows}, "
                f"or byte ranges that are not {fields} values)"
            )
        out = aligned_empty((int(counts.sum()), *shape), dtype)
        position = 0
        for r in range(counts.size):
            file_id = int(file_ids[r])
            source = self._source(file_id, name)
            if source.refs[name].row_shape != tuple(shape):
                raise SourceRefused(f"feature {name!r}: rows in {source.name} are not {shape}")
            ref = source.refs[name]
            pieces = refs[ref_splits[r] : ref_splits[r + 1]].reshape(-1, width)
            take = takes[take_splits[r] : take_splits[r + 1]]
            count = int(counts[r])
            target = out[position : position + count]
            position += count
            plain = not ref.element_bytes  # a field's rows are taken from whole records
            if plain and ref.layout == "contiguous" and take.size == 0 and len(pieces) == 1:
                self._read_contiguous(file_id, name, ref, pieces[0], target)
                continue
            source_dtype = np.dtype(ref.dtype)
            whole_chunks = ref.layout == "chunked" and count == len(pieces) * ref.chunk_rows
            in_place = plain and same_bytes(source_dtype, target.dtype)
            if whole_chunks and take.size == 0 and in_place:
                # Aligned records of whole chunks (the usual case): decode in place.
                self._decode(file_id, name, ref, pieces, into=target.reshape(-1).view(np.uint8))
                continue
            rows = self._decode(file_id, name, ref, pieces)
            if take.size == 0:
                selected = rows[:count]  # the common case: rows in order
            elif take.size == count and take.min() >= 0 and take.max() < len(rows):
                selected = rows[take]
            else:
                selected = None
            if selected is None or len(selected) != count:
                raise SourceRefused(
                    f"feature {name!r}: a record's take list does not fit its {len(rows)} "
                    f"decoded rows of {source.name}"
                )
            target[...] = to_stored(selected, target.dtype)
        return out

    def read_many(self, names: list[str], file_ids, counts, *arrays) -> list[np.ndarray]:
        """:meth:`read` of several features of the same records (four arrays each, in
        order). Fields of one compound table read its records once: the ranges decoded
        for the first are reused by the others within this call."""
        self._local.decoded = {}
        try:
            return [
                self.read(name, file_ids, counts, *arrays[4 * i : 4 * i + 4])
                for i, name in enumerate(names)
            ]
        finally:
            self._local.decoded = None

    def _shared(self, file_id: int, ref: Reference, piece) -> tuple[dict | None, tuple]:
        """This call's decoded ranges of compound records (None outside read_many, and
        for plain datasets, which no other feature reads), and ``piece``'s key in it."""
        decoded = getattr(self._local, "decoded", None) if ref.element_bytes else None
        return decoded, (file_id, ref.dataset, int(piece[0]), int(piece[1]))

    def _scratch(self, size: int) -> np.ndarray:
        """This thread's reusable buffer for raw chunk bytes (fresh pages cost here)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.size < size:
            buffer = self._local.buffer = np.empty(size, np.uint8)
        return buffer[:size]

    def _source(self, file_id: int, name: str) -> SourceFile:
        if not 0 <= file_id < len(self._sources):
            raise SourceRefused(f"feature {name!r}: a record names source {file_id}, not listed")
        return self._sources[file_id]

    def _check(self, source: SourceFile, name: str, ref: Reference, piece) -> tuple[int, int]:
        offset, size = int(piece[0]), int(piece[1])
        where = f"feature {name!r}: byte range {offset}+{size} of {source.name}"
        if offset < 0 or size <= 0 or offset + size > source.size:
            raise SourceRefused(f"{where} is outside the file ({source.size} bytes)")
        if ref.layout == "contiguous":
            end = ref.offset + ref.num_rows * ref.row_bytes
            if offset < ref.offset or offset + size > end or (offset - ref.offset) % ref.row_bytes:
                raise SourceRefused(f"{where} is outside dataset {ref.dataset}")
            if size % ref.row_bytes:
                raise SourceRefused(f"{where} is not whole rows of {ref.dataset}")
        elif size > max_chunk_bytes(ref):
            raise SourceRefused(f"{where} is larger than a chunk of {ref.dataset}")
        return offset, size

    def _pread_into(self, file_id: int, ref: Reference, piece, buffer: np.ndarray) -> None:
        """Read range ``piece`` into ``buffer``; with checksums, refuse it unless its
        CRC32C is the recorded one.

        With checksums the range is read ``CHECK_BLOCK`` bytes at a time, each block
        checksummed while it is still in the CPU cache (a second pass over a multi-MB
        range would read it from memory again: measured 0.09 against 0.04 ms per MB).
        """
        offset = int(piece[0])
        view = memoryview(buffer.reshape(-1).view(np.uint8))
        block = CHECK_BLOCK if self._checksums else view.nbytes
        done = crc = 0
        with self._open(file_id) as fd:
            while done < view.nbytes:
                n = os.preadv(fd, [view[done : done + block]], offset + done)
                if n == 0:
                    name = self._sources[file_id].name
                    raise SourceChanged(f"source {name} ended early (truncated since conversion)")
                if self._checksums:
                    crc = crc32c(view[done : done + n], crc)
                done += n
        if self._checksums and crc != int(piece[3]):
            where = (
                f"source {self._sources[file_id].name}: dataset {ref.dataset}, bytes "
                f"{offset}..{offset + view.nbytes}"
            )
            raise changed(where, crc, int(piece[3]))

    def _read_contiguous(self, file_id, name, ref, piece, target: np.ndarray) -> None:
        source = self._sources[file_id]
        offset, size = self._check(source, name, ref, piece)
        if size != target.nbytes:
            raise SourceRefused(
                f"feature {name!r}: byte range of {source.name} is not the record's rows"
            )
        source_dtype = np.dtype(ref.dtype)
        if source_dtype.itemsize != target.dtype.itemsize:
            raise SourceRefused(f"feature {name!r}: dtype {ref.dtype} does not match the manifest")
        self._pread_into(file_id, ref, piece, target)
        if not source_dtype.isnative and source_dtype.itemsize > 1:
            target.byteswap(inplace=True)

    def _decode(
        self, file_id: int, name: str, ref: Reference, pieces: np.ndarray, into=None
    ) -> np.ndarray:
        """Read and decode byte ranges into rows of the source dtype (chunks straight
        into ``into``, a uint8 buffer of exactly their decoded size, when given)."""
        source, row_bytes = self._sources[file_id], ref.row_bytes
        if ref.layout == "contiguous":
            spans = [self._check(source, name, ref, p) for p in pieces]
            buffer = np.empty(sum(s for _, s in spans), np.uint8)
            at = 0
            for piece, (_offset, size) in zip(pieces, spans):
                target = buffer[at : at + size]
                at += size
                decoded, key = self._shared(file_id, ref, piece)
                if decoded is not None and key in decoded:
                    target[...] = decoded[key]
                    continue
                self._pread_into(file_id, ref, piece, target)
                if decoded is not None:
                    decoded[key] = target
        else:
            chunk_bytes = ref.chunk_rows * row_bytes
            buffer = np.empty(len(pieces) * chunk_bytes, np.uint8) if into is None else into
            for j, piece in enumerate(pieces):
                offset, size = self._check(source, name, ref, piece)
                chunk = buffer[j * chunk_bytes : (j + 1) * chunk_bytes]
                decoded, key = self._shared(file_id, ref, piece)
                if decoded is not None and key in decoded:
                    chunk[...] = decoded[key]
                    continue
                raw = self._scratch(size)
                self._pread_into(file_id, ref, piece, raw)
                where = f"chunk at byte {offset} of {ref.dataset} in {source.name}"
                undo_filters(raw, ref, int(piece[2]), where, chunk)
                if decoded is not None:
                    decoded[key] = chunk
        dtype = np.dtype(ref.dtype)
        if ref.element_bytes:
            return field_view(buffer, ref)
        return buffer.view(dtype).reshape(-1, *ref.row_shape)
