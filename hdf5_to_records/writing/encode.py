"""Encode blocks of examples as serialized ``tf.train.Example`` records.

A record holds ``n`` consecutive examples (``n`` = rows per record, fewer in a shard's
last record):

- ``__rows__``: int64_list ``[n]``;
- a numeric feature: bytes_list with one value, the raw little-endian bytes of the
  ``(n, *shape)`` block in C order (bool as uint8);
- a string feature: bytes_list with the ``n * prod(shape)`` values, flattened;
- a ragged feature (shape varies between examples) additionally has ``<name>/shape``:
  int64_list of the ``n * ndim`` dimensions, example after example.

The protobuf wire format is written directly, so worker processes never import
TensorFlow; tests parse the output with TensorFlow itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from ..errors import RecordTooLarge
from ..format.record_keys import COUNT_KEY, INDICES_SUFFIX, SHAPE_SUFFIX
from ..planning.schema import FeatureSchema
from ..planning.sharding import MAX_RECORD_BYTES
from .reading import Column


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint((tag << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(values: list[bytes]) -> bytes:
    return _field(1, b"".join(_field(1, v) for v in values))


def _int64_feature(values: list[int]) -> bytes:
    if len(values) < _VECTOR_VARINTS:
        return _field(3, _field(1, b"".join(_varint(v) for v in values)))
    return _field(3, _field(1, _varints(np.asarray(values, np.int64))))


_VECTOR_VARINTS = 64  # lists at least this long are encoded in NumPy (index take lists)


def _varints(values: np.ndarray) -> bytes:
    """The packed varints of int64 ``values`` (two's complement, as protobuf encodes
    negative int64s: ten bytes), in NumPy: a take list of 100k rows in milliseconds."""
    unsigned = values.astype(np.uint64)
    lengths = np.ones(unsigned.size, np.int64)
    for k in range(1, 10):
        lengths += unsigned >= np.uint64(1) << np.uint64(7 * k)
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]), np.uint8)
    starts = ends - lengths
    for k in range(10):
        has = lengths > k
        byte = (unsigned[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (byte | more).astype(np.uint8)
    return out.tobytes()


Piece = bytes | memoryview
_LEN1 = (1 << 3) | 2  # field 1, length-delimited
_LEN2 = (2 << 3) | 2  # field 2, length-delimited


def _raw_bytes_feature(block: np.ndarray, dtype: np.dtype) -> list[Piece]:
    """``Feature{bytes_list{value: <raw bytes>}}`` without copying the block.

    The payload is a view of the (already little-endian, C-ordered) window array; the
    protobuf headers around it are built from its length alone.
    """
    flat = np.ascontiguousarray(block, dtype=dtype).reshape(-1).view(np.uint8)
    payload = memoryview(flat)
    value_head = _varint(_LEN1) + _varint(payload.nbytes)
    list_len = len(value_head) + payload.nbytes
    return [_varint(_LEN1) + _varint(list_len) + value_head, payload]


def _map_entry(key: str, feature: list[Piece]) -> list[Piece]:
    """``Features.feature`` map entry ``{key, value: feature}`` as pieces."""
    feature_len = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in feature)
    key_field = _field(1, key.encode())
    value_head = _varint(_LEN2) + _varint(feature_len)
    entry_len = len(key_field) + len(value_head) + feature_len
    return [_varint(_LEN1) + _varint(entry_len) + key_field + value_head, *feature]


def piece_length(pieces: list[Piece]) -> int:
    """Total bytes of a record given as pieces."""
    return sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)


def encode_block(
    columns: dict[str, Column],
    n: int,
    features: tuple[FeatureSchema, ...],
    extra: dict[str, list[int]] | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> list[Piece]:
    """Serialize ``n`` examples as one ``tf.train.Example``, as a list of pieces.

    Numeric payloads are views of the window arrays (no copy); the caller writes the
    pieces in order and must not reuse the arrays until they are written. ``extra``
    adds int64 features (index mode's references).

    Raises:
        RecordTooLarge: the record would exceed what a protobuf parser accepts.
    """
    entries: dict[str, list[Piece]] = {COUNT_KEY: [_int64_feature([n])]}
    for key, values in (extra or {}).items():
        entries[key] = [_int64_feature(values)]
    for feature in features:
        column = columns[feature.name]
        if feature.sparse:
            entries.update(_sparse_entries(feature, column, columns[feature.name + INDICES_SUFFIX]))
        elif feature.ragged:
            items = [np.asarray(v) for v in column]
            entries[feature.name + SHAPE_SUFFIX] = [
                _int64_feature([d for v in items for d in v.shape])
            ]
            if feature.stored.encoding == "bytes":
                entries[feature.name] = [
                    _bytes_feature([_as_bytes(x) for v in items for x in v.ravel().tolist()])
                ]
            else:
                flat = _joined([v.ravel() for v in items], feature.stored.memory)
                entries[feature.name] = _raw_bytes_feature(flat, feature.stored.memory)
        elif feature.stored.encoding == "bytes":
            entries[feature.name] = [
                _bytes_feature([_as_bytes(x) for x in np.asarray(column).ravel().tolist()])
            ]
        else:
            entries[feature.name] = _raw_bytes_feature(column, feature.stored.memory)
    body: list[Piece] = []
    for key in sorted(entries):
        body.extend(_map_entry(key, entries[key]))
    body_len = piece_length(body)
    total = body_len + len(_varint(_LEN1)) + len(_varint(body_len))
    if total > max_record_bytes:
        raise RecordTooLarge(
            f"a record of {n} example(s) takes {total} bytes, over the "
            f"{max_record_bytes}-byte limit of one TFRecord record"
            + ("; lower --rows-per-record" if n > 1 else "")
        )
    return _coalesce([_varint(_LEN1) + _varint(body_len), *body])


def _sparse_entries(feature: FeatureSchema, values: Column, indices: Column) -> dict:
    """A sparse feature's record keys: values, their counts, their column indices."""
    counts = [len(v) for v in values]
    flat = [np.asarray(v) for v in values]
    return {
        feature.name: _raw_bytes_feature(
            _joined(flat, feature.stored.memory), feature.stored.memory
        ),
        feature.name + SHAPE_SUFFIX: [_int64_feature(counts)],
        feature.name + INDICES_SUFFIX: _raw_bytes_feature(
            _joined([np.asarray(i) for i in indices], np.dtype("<i8")), np.dtype("<i8")
        ),
    }


def _joined(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype)


def _coalesce(pieces: list[Piece]) -> list[Piece]:
    """Merge runs of small byte strings so a record is written in few calls."""
    out: list[Piece] = []
    for piece in pieces:
        if out and isinstance(piece, bytes) and isinstance(out[-1], bytes):
            out[-1] = out[-1] + piece
        else:
            out.append(piece)
    return out


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


class Blocker:
    """Re-cut a stream of windows into blocks of the given sizes, in turn
    (``itertools.repeat(rows_per_record)`` in copy mode).

    Only the tail of a window (fewer than ``rows_per_record`` examples) is carried over
    and copied; everything else is sliced as views.
    """

    def __init__(self, sizes: Iterator[int]):
        self._sizes = sizes
        self._k = next(sizes, 0)
        self._carry: dict[str, Column] | None = None
        self._carry_n = 0

    def add(self, columns: dict[str, Column], n: int) -> Iterator[tuple[dict[str, Column], int]]:
        start = 0
        while start < n:
            if self._k <= 0:
                raise ValueError("more examples than the record sizes cover")
            if self._carry is None and n - start >= self._k:
                yield {k: _slice(v, start, start + self._k) for k, v in columns.items()}, self._k
                start += self._k
                self._k = next(self._sizes, 0)
                continue
            take = min(self._k - self._carry_n, n - start)
            part = {k: _slice(v, start, start + take) for k, v in columns.items()}
            if self._carry is None:
                self._carry = {k: _copy(v) for k, v in part.items()}
            else:
                self._carry = {k: _concat(self._carry[k], part[k]) for k in part}
            self._carry_n += take
            start += take
            if self._carry_n == self._k:
                yield self._carry, self._carry_n
                self._carry, self._carry_n = None, 0
                self._k = next(self._sizes, 0)

    def flush(self) -> Iterator[tuple[dict[str, Column], int]]:
        if self._carry is not None and self._carry_n:
            yield self._carry, self._carry_n
        self._carry, self._carry_n = None, 0


def _slice(column: Column, a: int, b: int) -> Column:
    return column[a:b]


def _copy(column: Column) -> Column:
    return column.copy() if isinstance(column, np.ndarray) else list(column)


def _concat(a: Column, b: Column) -> Column:
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    return list(a) + list(b)


def record_framing(pieces: list[Piece]) -> tuple[bytes, bytes]:
    """The TFRecord framing around one record: (length + its masked CRC32C, data CRC).

    Written as prefix, pieces, suffix so the record itself is never copied.
    """
    from crc32c import crc32c

    header = struct.pack("<Q", piece_length(pieces))
    crc = 0
    for piece in pieces:
        crc = crc32c(piece, crc)
    prefix = header + struct.pack("<I", mask_crc(crc32c(header)))
    return prefix, struct.pack("<I", mask_crc(crc))


def mask_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
