"""Read what :mod:`encode` writes: TFRecord framing and ``tf.train.Example`` records,
without TensorFlow (``verify`` must start fast and run near disk speed).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from crc32c import crc32c

from ..writing.encode import mask_crc

Value = tuple[str, list]  # ("bytes", [memoryview, ...]) or ("int64", [int, ...])


class FramingError(ValueError):
    """A TFRecord frame is truncated or fails its CRC."""


def masked_crc(data) -> int:
    return mask_crc(crc32c(data))


class FrameReader:
    """TFRecord records from a byte stream fed in blocks, CRCs checked; holds at most
    one block plus one record in memory."""

    def __init__(self, digest=None):
        self._pending = b""
        self._digest = digest  # a shard_digest.FramingDigest fed each record's framing

    def feed(self, block: bytes) -> Iterator[memoryview]:
        """The records completed by ``block``.

        Raises:
            FramingError: a header or record that fails its CRC.
        """
        buffer = memoryview(self._pending + block) if self._pending else memoryview(block)
        at, end = 0, len(buffer)
        while end - at >= 12:
            header = buffer[at : at + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", buffer[at + 8 : at + 12])
            if masked_crc(header) != length_crc:
                raise FramingError("length CRC mismatch")
            if end - at - 12 < length + 4:
                break
            data = buffer[at + 12 : at + 12 + length]
            (data_crc,) = struct.unpack("<I", buffer[at + 12 + length : at + 16 + length])
            if masked_crc(data) != data_crc:
                raise FramingError("data CRC mismatch")
            if self._digest is not None:
                self._digest.add(buffer[at : at + 12], buffer[at + 12 + length : at + 16 + length])
            yield data
            at += 16 + length
        self._pending = bytes(buffer[at:])

    def finish(self) -> None:
        """Raises: FramingError if the stream ended inside a record."""
        if self._pending:
            raise FramingError(f"truncated record ({len(self._pending)} bytes at the end)")


def frames(buffer: bytes) -> Iterator[memoryview]:
    """The records of a whole (uncompressed) TFRecord byte stream, CRCs checked.

    Raises:
        FramingError: naming what is wrong; records before it were yielded.
    """
    reader = FrameReader()
    yield from reader.feed(buffer)
    reader.finish()


def _varint(buf: memoryview, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: ints, or memoryviews for LEN."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buf, at)
        elif wire == 2:
            size, at = _varint(buf, at)
            if at + size > len(buf):
                raise ValueError("truncated field")
            value, at = buf[at : at + size], at + size
        elif wire == 5:
            value, at = buf[at : at + 4], at + 4
        elif wire == 1:
            value, at = buf[at : at + 8], at + 8
        else:
            raise ValueError(f"unknown wire type {wire}")
        yield number, wire, value


def parse_example(record: memoryview) -> dict[str, Value]:
    """A serialized ``tf.train.Example`` as ``{key: (kind, values)}``.

    Raises:
        ValueError: not a well-formed Example of bytes and int64 lists.
    """
    try:
        return _parse_example(record)
    except (TypeError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"malformed Example ({exc})") from None


def _parse_example(record: memoryview) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for number, wire, features in _fields(record):
        if number != 1 or wire != 2:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            key, feature = None, None
            for n, _, v in _fields(entry):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    feature = v
                else:  # as TensorFlow's parser: a map entry holds a key and a value only
                    raise ValueError(f"feature map entry with an unknown field {n}")
            if key is None or feature is None:
                raise ValueError("feature map entry without key or value")
            out[key] = _feature(feature)
    return out


def _feature(feature: memoryview) -> Value:
    for number, _, body in _fields(feature):
        if number == 1:
            return "bytes", [v for n, _, v in _fields(body) if n == 1]
        if number == 3:
            values: list[int] = []
            for n, wire, v in _fields(body):
                if n != 1:
                    continue
                if wire == 0:
                    values.append(v)
                else:
                    at = 0
                    while at < len(v):
                        value, at = _varint(v, at)
                        values.append(value)
            return "int64", [x - (1 << 64) if x >= 1 << 63 else x for x in values]
        if number == 2:
            raise ValueError("float_list features are not written by this tool")
    return "bytes", []
