"""A shard's record index: where each record starts, how long it is, and what it holds.

Beside every uncompressed shard ``SHARD`` the converter writes ``SHARD.idx``, one line
per record, ``OFFSET SIZE`` in decimal: the byte at which the record's framing starts
and its framed size (length, its CRC, the data and the data's CRC). That is the text
index of DALI's ``tfrecord2idx``, so ``nvidia.dali.fn.readers.tfrecord(index_path=...)``
reads our shards as they are. The manifest's shard entry holds the index file's sha256
and the examples per record as runs (``record_examples: [[count, times], ...]``), so a
reader can turn "example 1,234,567 of the split" into one positioned read.

gzip-compressed shards have no index: a gzip stream cannot be read from the middle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import ShardCorrupt

FRAMING_BYTES = 16  # per TFRecord: length (8), its CRC (4), the data's CRC (4)


@dataclass(frozen=True, eq=False)
class RecordIndex:
    """Offsets and framed sizes (int64 arrays) of a shard's records, in file order."""

    offsets: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of_sizes(cls, sizes) -> RecordIndex:
        """The index of records of these framed sizes written one after another."""
        sizes = np.asarray(sizes, np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(offsets[: len(sizes)], sizes)

    def to_bytes(self) -> bytes:
        return "".join(
            f"{o} {s}\n" for o, s in zip(self.offsets.tolist(), self.sizes.tolist())
        ).encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> RecordIndex:
        """Parse ``OFFSET SIZE`` lines.

        Raises:
            ShardCorrupt: naming ``where`` and the first line that is not two numbers.
        """
        lines = data.decode("ascii", errors="replace").splitlines()
        values = np.zeros((len(lines), 2), np.int64)
        for i, line in enumerate(lines):
            parts = line.split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ShardCorrupt(f"record index {where}: line {i + 1} is not 'OFFSET SIZE'")
            values[i] = int(parts[0]), int(parts[1])
        return cls(values[:, 0].copy(), values[:, 1].copy())

    def check(self, *, num_records: int, num_bytes: int, where: str) -> None:
        """Check the index tiles a shard of ``num_bytes`` with ``num_records`` records.

        Raises:
            ShardCorrupt: naming ``where`` and what does not fit.
        """
        if len(self.sizes) != num_records:
            raise ShardCorrupt(
                f"record index {where} lists {len(self.sizes)} records, the manifest says "
                f"{num_records}"
            )
        ends = self.offsets + self.sizes
        if len(self.sizes) and (
            self.offsets[0] != 0
            or (self.sizes < FRAMING_BYTES).any()
            or (self.offsets[1:] != ends[:-1]).any()
        ):
            raise ShardCorrupt(f"record index {where}: its records do not follow one another")
        end = int(ends[-1]) if len(ends) else 0
        if end != num_bytes:
            raise ShardCorrupt(
                f"record index {where} ends at byte {end}, the shard has {num_bytes} bytes"
            )


def index_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_lengths(counts) -> list[list[int]]:
    """Examples per record as ``[[count, times], ...]`` (a shard's blocks are all full
    but the last, so this is one or two runs)."""
    runs: list[list[int]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([int(count), 1])
    return runs


def expand_runs(runs) -> np.ndarray:
    """``[[count, times], ...]`` -> examples of each record (int64)."""
    if not runs:
        return np.zeros(0, np.int64)
    counts, times = np.asarray(runs, np.int64).T
    return np.repeat(counts, times)
