"""The one object that owns shard file names (after TFDS's ``ShardedFileTemplate``).

Shards are named ``{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}``. No other
module formats or parses these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
_SHARD_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<split>[A-Za-z0-9][A-Za-z0-9_]*)"
    r"\.tfrecord-(?P<index>\d{5,})-of-(?P<num>\d{5,})$"
)
TEMP_SUFFIX = ".incomplete"
INDEX_SUFFIX = ".idx"  # a shard's record index (DALI's tfrecord2idx names it so too)
_PART_RE = re.compile(r"^\.hdf5-to-records-task-\d{5,}-of-\d{5,}\.json$")


def temp_name(filename: str, attempt: str | None = None) -> str:
    """The hidden name any output file is written under until it is complete.

    ``attempt`` makes it unique per writer: a retried task or Beam bundle may write the
    same shard while the first attempt still runs, and must not write into its file.
    """
    return "." + filename + (f".{attempt}" if attempt else "") + TEMP_SUFFIX


def is_temp_of(name: str, filename: str) -> bool:
    """Whether ``name`` is a temporary file of ``filename`` (any attempt)."""
    return name.endswith(TEMP_SUFFIX) and (
        name == temp_name(filename) or name.startswith("." + filename + ".")
    )


def check_name(value: str, *, what: str) -> str:
    """Validate a dataset or split name: letters, digits, ``_`` and ``.``, no ``-``.

    Raises:
        UsageError: if the name could make shard names ambiguous.
    """
    if not _NAME_RE.match(value) or (what == "split" and "." in value):
        raise UsageError(
            f"{what} name {value!r} is invalid: use letters, digits and '_'"
            + (" or '.'" if what != "split" else "")
            + ", starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class ShardName:
    """A parsed shard file name."""

    name: str
    split: str
    index: int
    num_shards: int


@dataclass(frozen=True)
class ShardedFileTemplate:
    """Formats and parses the shard file names of one converted dataset."""

    name: str

    def __post_init__(self) -> None:
        check_name(self.name, what="dataset")

    def filename(self, split: str, index: int, num_shards: int) -> str:
        """The file name (no directory) of shard ``index`` of ``num_shards`` in ``split``."""
        if not 0 <= index < num_shards:
            raise ValueError(f"shard index {index} outside 0..{num_shards - 1}")
        return f"{self.name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"

    def temp_filename(self, split: str, index: int, num_shards: int) -> str:
        """The name a shard is written under before it is complete."""
        return temp_name(self.filename(split, index, num_shards))

    def parse(self, filename: str) -> ShardName | None:
        """Parse a shard file name of this dataset; ``None`` if it is not one."""
        match = _SHARD_RE.match(filename)
        if match is None or match["name"] != self.name:
            return None
        return ShardName(match["name"], match["split"], int(match["index"]), int(match["num"]))


def part_name(index: int, count: int) -> str:
    """The hidden file a task of a task array writes once its shards are complete."""
    return f".hdf5-to-records-task-{index:05d}-of-{count:05d}.json"


def index_name(shard_filename: str) -> str:
    """The record index file of a shard: ``SHARD.idx`` beside it."""
    return shard_filename + INDEX_SUFFIX


def is_part_file(filename: str) -> bool:
    return _PART_RE.match(filename) is not None


def is_output_file(filename: str) -> bool:
    """Whether a file in an output directory was written by this tool (any dataset name)."""
    if filename.endswith((TEMP_SUFFIX, TEMP_SUFFIX + INDEX_SUFFIX)):  # the latter: as issue 15
        return True  # named a worker's index temp, which no sweep removed
    if filename.endswith(INDEX_SUFFIX):
        filename = filename[: -len(INDEX_SUFFIX)]
    return _SHARD_RE.match(filename) is not None
