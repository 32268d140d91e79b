"""Every record of one input pipeline's shards: which file, where, how long, how many
examples. Built from the shards' record indexes (format/record_index.py), each checked
against its sha256 in the manifest and against the shard's size before it is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdf5_to_records import fs
from hdf5_to_records.errors import ShardCorrupt, ShardMissing
from hdf5_to_records.format.dataset_spec import ShardInfo
from hdf5_to_records.format.record_index import RecordIndex, expand_runs, index_digest


@dataclass(frozen=True, eq=False)
class RecordTable:
    """Parallel int64 arrays, one entry per record, in shard then file order."""

    paths: tuple[str, ...]  # the shard files; ``file`` indexes them
    file: np.ndarray
    offset: np.ndarray
    size: np.ndarray  # framed size
    count: np.ndarray  # examples in the record

    @property
    def num_records(self) -> int:
        return len(self.count)

    @property
    def num_examples(self) -> int:
        return int(self.count.sum())

    def where(self, record: int) -> str:
        """'record R of SHARD (at byte B)', for error messages."""
        file = int(self.file[record])
        first = int(np.searchsorted(self.file, file))
        at = int(self.offset[record])
        return f"record {record - first} of shard {self.paths[file]} (at byte {at})"


def indexed(shards: tuple[ShardInfo, ...]) -> bool:
    """Whether every shard has a record index (uncompressed, written by 0.15 or later)."""
    return bool(shards) and all(s.index_sha256 is not None for s in shards)


def load_table(shards: tuple[ShardInfo, ...]) -> RecordTable:
    """The records of ``shards``, from their index files.

    Raises:
        ShardMissing: an index file is missing.
        ShardCorrupt: an index does not match its sha256, the shard, or the manifest.
    """
    columns: list[list[np.ndarray]] = [[], [], [], []]
    for i, shard in enumerate(shards):
        path = shard.index_path
        if not fs.exists(path):
            raise ShardMissing(f"record index {path} of shard {shard.path} is missing")
        with fs.open_read(path) as handle:
            data = handle.read()
        if index_digest(data) != shard.index_sha256:
            raise ShardCorrupt(f"record index {path} does not match its sha256 in the manifest")
        index = RecordIndex.parse(data, path)
        index.check(num_records=shard.num_records, num_bytes=shard.num_bytes, where=path)
        counts = expand_runs(shard.record_examples)
        if len(counts) != len(index.sizes) or int(counts.sum()) != shard.num_examples:
            raise ShardCorrupt(f"record index {path}: the manifest's record_examples do not fit")
        for column, values in zip(
            columns, (np.full(len(counts), i, np.int64), index.offsets, index.sizes, counts)
        ):
            column.append(values)
    joined = [np.concatenate(c) if c else np.zeros(0, np.int64) for c in columns]
    return RecordTable(tuple(s.path for s in shards), *joined)
