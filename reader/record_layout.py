"""Where the values of a ``tf.train.Example`` record lie, found without parsing it whole.

A record is ``Example{features: Features{feature: map<string, Feature>}}``; each map
entry holds a key and a ``Feature`` with one of ``bytes_list``, ``float_list`` or
``int64_list``. :func:`walk` steps over the length-delimited fields (skipping a value
costs nothing whatever its size) and returns, per key, the byte ranges of its
``bytes_list`` values, or the decoded ``int64_list`` values. The positioned reader uses
it to read a raw block's rows straight into the output arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdf5_to_records.errors import ShardCorrupt


@dataclass(frozen=True)
class Values:
    """One feature of a record: byte ranges (``bytes_list``) or integers (``int64_list``)."""

    ranges: tuple[tuple[int, int], ...] = ()
    ints: tuple[int, ...] = ()


def _varint(data, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(data, i: int, end: int):
    """(field number, wire type, start, stop or value) of each field in data[i:end]."""
    while i < end:
        tag, i = _varint(data, i, end)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            length, i = _varint(data, i, end)
            if i + length > end:
                raise ValueError("field runs past its message")
            yield number, wire, i, i + length
            i += length
        elif wire == 0:
            value, i = _varint(data, i, end)
            yield number, wire, value, value
        elif wire == 5:
            yield number, wire, i, i + 4
            i += 4
        elif wire == 1:
            yield number, wire, i, i + 8
            i += 8
        else:
            raise ValueError(f"wire type {wire}")


def walk(data, where: str) -> dict[str, Values]:
    """Per feature key, where its values lie in ``data`` (one record's bytes).

    Raises:
        ShardCorrupt: naming ``where``, when ``data`` is not an Example.
    """
    try:
        return _walk(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardCorrupt(f"{where} is not a tf.train.Example ({exc})") from None


def _walk(data) -> dict[str, Values]:
    out: dict[str, Values] = {}
    for number, _, a, b in _fields(data, 0, len(data)):
        if number != 1:
            continue
        for entry_number, _, c, d in _fields(data, a, b):
            if entry_number != 1:
                continue
            key, value = None, Values()
            for part, _, e, f in _fields(data, c, d):
                if part == 1:
                    key = bytes(data[e:f]).decode()
                elif part == 2:
                    value = _feature(data, e, f)
            if key is not None:
                out[key] = value
    return out


def _feature(data, a: int, b: int) -> Values:
    for kind, _, c, d in _fields(data, a, b):
        if kind == 1:  # bytes_list
            return Values(ranges=tuple((e, f) for n, _, e, f in _fields(data, c, d) if n == 1))
        if kind == 3:  # int64_list, packed or not
            ints: list[int] = []
            for n, wire, e, f in _fields(data, c, d):
                if n != 1:
                    continue
                if wire == 0:
                    ints.append(e)
                else:
                    i = e
                    while i < f:
                        value, i = _varint(data, i, f)
                        ints.append(value)
            return Values(ints=tuple(ints))
    return Values()
