"""Read records of the shards by position, through their record index, and check them.

Every record read here has its TFRecord framing checked (the length, the length's
masked CRC32C and the data's) before a byte of it is returned: a mismatch raises
:class:`ShardCorrupt` naming the shard, the record and its offset.

Two ways out:

- :meth:`PositionedReader.records`: the records' bytes, for TensorFlow to parse.
- :meth:`PositionedReader.rows`: for datasets whose chosen features are all raw
  fixed-shape blocks, the rows themselves. One ``preadv`` per record puts each
  feature's bytes straight into the output arrays and the protobuf framing around them
  into scratch, which is then compared with the framing a first record of the same
  example count had (:mod:`reader.record_layout`), so every byte is known to be where
  it was assumed. A record laid out otherwise is read whole and walked instead.
  This is one copy from the page cache; ``TFRecordDataset`` + ``parse_example`` +
  ``decode_raw`` made four (issue 15).
"""

from __future__ import annotations

import functools
import os
import struct
import threading
from dataclasses import dataclass

import numpy as np
from crc32c import crc32c

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.errors import ShardCorrupt
from hdf5_to_records.format.record_index import FRAMING_BYTES
from hdf5_to_records.writing.encode import mask_crc

from .descriptors import SHARED, identity
from .record_layout import walk
from .record_table import RecordTable

HEADER_BYTES = 12  # length (8) and its masked CRC (4)


@dataclass(frozen=True)
class RawFeature:
    """A raw fixed-shape block feature: its record key, stored dtype and row shape."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    boolean: bool = False  # stored as uint8, handed out as tf.bool

    @functools.cached_property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class _Template:
    """The layout of records of one example count: each feature's payload (start and
    length within the framed record, in file order) and every other byte but the
    data CRC, which every such record repeats."""

    segments: tuple[tuple[int, int, int], ...]  # (feature index, start, length)
    framing: bytes
    size: int  # of the framed record


class PositionedReader:
    """Positioned reads of the records of a :class:`RecordTable`."""

    def __init__(self, table: RecordTable, raw: tuple[RawFeature, ...] = ()):
        self.table = table
        self.raw = raw
        # Local shards as they are now: a file replaced later is refused, not read.
        self._keys = [None if "://" in p else identity(p) for p in table.paths]
        self._templates: dict[int, _Template | None] = {}
        self._lock = threading.Lock()

    # -- bytes -------------------------------------------------------------------------

    def _pread(self, record: int, buffers) -> None:
        """Fill ``buffers`` (together exactly the framed record) from the shard."""
        file = int(self.table.file[record])
        offset, size = int(self.table.offset[record]), int(self.table.size[record])
        path = self.table.paths[file]
        if "://" in path:  # remote: no descriptor; the rare case, so read plainly
            with import_tensorflow().io.gfile.GFile(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(size)
            got = 0
            for view in buffers:
                view[:] = data[got : got + len(view)]
                got += len(view)
            got = len(data)
        else:
            with SHARED.open(self._keys[file]) as fd:
                got = os.preadv(fd, buffers, offset)
        if got != size:
            raise ShardCorrupt(
                f"{self.table.where(record)}: read {got} of its {size} bytes (truncated?); "
                "run `hdf5-to-records verify` on the dataset, then convert that shard again"
            )

    def _check(self, record: int, header, crc: int, stored_crc: int) -> None:
        length, length_crc = struct.unpack_from("<QI", header)
        size = int(self.table.size[record])
        if length + FRAMING_BYTES != size or length_crc != mask_crc(crc32c(bytes(header[:8]))):
            raise ShardCorrupt(f"{self.table.where(record)}: its framing does not read ({_FIX})")
        if stored_crc != mask_crc(crc):
            raise ShardCorrupt(f"{self.table.where(record)} does not match its CRC ({_FIX})")

    def record(self, record: int) -> memoryview:
        """The data of one record (its ``tf.train.Example`` bytes), checked."""
        buffer = bytearray(int(self.table.size[record]))
        view = memoryview(buffer)
        self._pread(record, [view])
        data = view[HEADER_BYTES:-4]
        self._check(record, view, crc32c(data), struct.unpack_from("<I", view, len(view) - 4)[0])
        return data

    def records(self, ids) -> np.ndarray:
        """The data of records ``ids``, as a NumPy object array of bytes."""
        out = np.empty(len(ids), dtype=object)
        for i, r in enumerate(ids):
            out[i] = bytes(self.record(int(r)))
        return out

    # -- rows --------------------------------------------------------------------------

    def rows(self, ids, start: int, stop: int) -> list[np.ndarray]:
        """Examples ``[start, stop)`` of records ``ids`` concatenated: one array per raw
        feature, ``[stop - start, *shape]``."""
        n = stop - start
        out = [np.empty((n, *f.shape), f.dtype) for f in self.raw]
        flat = [memoryview(a.reshape(-1).view(np.uint8)) for a in out]
        position = done = 0
        for r in ids:
            r = int(r)
            count = int(self.table.count[r])
            a, b = max(start - position, 0), min(stop - position, count)
            position += count
            if b > a:
                self._rows_of(r, count, a, b, flat, done)
                done += b - a
        return out

    def _rows_of(self, record: int, count: int, a: int, b: int, flat, done: int) -> None:
        """Rows ``[a, b)`` of one record into ``flat`` from row ``done`` on."""
        template = self._template(record, count)
        size = int(self.table.size[record])
        if template is None or template.size != size:  # strings of other lengths, say
            return self._walked_rows(record, self.record(record), a, b, flat, done)
        scratch = memoryview(bytearray(size - sum(s[2] for s in template.segments)))
        skipped = sum((count - (b - a)) * self.raw[q].row_bytes for q, _, _ in template.segments)
        spare = memoryview(np.empty(skipped, np.uint8))
        buffers, framing, used, spent, cur = [], [], 0, 0, 0
        for q, seg_start, length in template.segments:
            gap = scratch[used : used + seg_start - cur]
            used += len(gap)
            buffers.append(gap)
            framing.append(gap)
            rb = self.raw[q].row_bytes
            for rows, is_wanted in ((a, False), (b - a, True), (count - b, False)):
                if not rows:
                    continue
                if is_wanted:
                    buffers.append(flat[q][done * rb : (done + rows) * rb])
                else:
                    buffers.append(spare[spent : spent + rows * rb])
                    spent += rows * rb
            cur = seg_start + length
        tail = scratch[used : used + size - cur]
        buffers.append(tail)
        framing.append(tail[:-4])
        self._pread(record, buffers)
        crc = crc32c(buffers[0][HEADER_BYTES:])
        for view in buffers[1:-1]:
            crc = crc32c(view, crc)
        crc = crc32c(tail[:-4], crc)
        self._check(record, buffers[0], crc, struct.unpack_from("<I", tail, len(tail) - 4)[0])
        if b"".join(framing) != template.framing:
            # Another layout (a shard from another writer): the bytes are sound, so read
            # the record whole and find its rows.
            self._walked_rows(record, self.record(record), a, b, flat, done)

    def _template(self, record: int, count: int) -> _Template | None:
        """The layout of records of ``count`` examples, from this (checked) record; None
        when a raw feature is not one ``bytes_list`` value here."""
        with self._lock:
            if count in self._templates:
                return self._templates[count]
        data = self.record(record)
        found = walk(data, self.table.where(record))
        segments = []
        for q, feature in enumerate(self.raw):
            values = found.get(feature.name)
            if values is None or len(values.ranges) != 1:
                return self._remember(count, None)
            s, e = values.ranges[0]
            if e - s != count * feature.row_bytes:
                raise ShardCorrupt(
                    f"{self.table.where(record)}: feature {feature.name!r} holds {e - s} bytes, "
                    f"not {count} rows of {feature.row_bytes} (edited manifest?)"
                )
            segments.append((q, s + HEADER_BYTES, e - s))
        segments.sort(key=lambda seg: seg[1])
        whole = bytes(data)
        length = len(whole)
        pieces = [struct.pack("<QI", length, mask_crc(crc32c(struct.pack("<Q", length))))]
        cur = 0
        for _, s, n in segments:
            pieces.append(whole[cur : s - HEADER_BYTES])
            cur = s - HEADER_BYTES + n
        pieces.append(whole[cur:])
        framed = length + FRAMING_BYTES
        return self._remember(count, _Template(tuple(segments), b"".join(pieces), framed))

    def _remember(self, count: int, template: _Template | None) -> _Template | None:
        with self._lock:
            self._templates[count] = template
        return template

    def _walked_rows(self, record: int, data, a: int, b: int, flat, done: int) -> None:
        found = walk(data, self.table.where(record))
        for q, feature in enumerate(self.raw):
            values = found.get(feature.name)
            rb = feature.row_bytes
            count = int(self.table.count[record])
            if (
                values is None
                or len(values.ranges) != 1
                or (values.ranges[0][1] - values.ranges[0][0] != count * rb)
            ):
                raise ShardCorrupt(
                    f"{self.table.where(record)}: feature {feature.name!r} is not {count} rows "
                    f"of {rb} bytes (edited manifest?)"
                )
            s = values.ranges[0][0]
            flat[q][done * rb : (done + b - a) * rb] = data[s + a * rb : s + b * rb]


_FIX = "run `hdf5-to-records verify` on the dataset, then convert that shard again"
