"""Checks of the manifest's JSON values, used while it is parsed.

Each raises :class:`Malformed`, a ``ValueError`` whose message names the field, so that
``manifest.parse_manifest`` can report one line naming the manifest and the field.
"""

from __future__ import annotations

from typing import Any

MAX_COUNT = 1 << 53  # any count or size beyond this is not from a real conversion
DTYPE_NAMES = (
    "bool",
    "string",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


class Malformed(ValueError):
    """A manifest value of the wrong type or out of range."""


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where} is not an object: {value!r}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{where} is not a list: {value!r}")
    return value


def field(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise Malformed(f"{where} has no {key!r}")
    return data[key]


def count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
        raise Malformed(f"{where} is {value!r}, not a count")
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise Malformed(f"{where} is {value!r}, not a number")
    return float(value)


def timestamp(value: Any, where: str) -> float:
    """Seconds since the epoch, within what a file system records (years 1653 to 5138)."""
    seconds = number(value, where)
    if not -1e10 < seconds < 1e11:
        raise Malformed(f"{where} is {value!r}, not a file time")
    return seconds


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{where} is {value!r}, not a string")
    return value


def optional_text(value: Any, where: str) -> str | None:
    return None if value is None else text(value, where)


def choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Malformed(f"{where} is {value!r}, not one of {list(allowed)}")
    return value


def flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise Malformed(f"{where} is {value!r}, not true or false")
    return value


def shape(value: Any, where: str) -> tuple[int | None, ...]:
    return tuple(None if d is None else count(d, where) for d in array(value, where))
