"""A random-access source of examples, without TensorFlow: for Grain, PyTorch, NumPy.

``reader.data_source(path, split)`` returns a :class:`DataSource`: ``len(src)`` examples,
``src[i]`` example ``i`` of the split in write order as a dict of NumPy arrays (the
manifest's dtypes and shapes; a sparse feature as its dense row), ``src[[i, j]]`` the
examples stacked (ragged features as lists). It satisfies Grain's
``RandomAccessDataSource`` protocol (``__len__``, ``__getitem__``) and PyTorch's
map-style ``Dataset``.

Example ``i`` is found in the record index (:mod:`reader.record_table`) and read with one
positioned read of its record, checked like every read of the tf.data reader: the
shard's size, the record's CRCs, and in index mode the sources' trust and checksums.
Decoded records are kept in a small cache (``cache_bytes``), so the other rows of a
record (a gzip chunk, in index mode) are not read and inflated again. Nothing here
imports TensorFlow.

The source pickles as its arguments alone; each process (a Grain or PyTorch worker)
opens the files itself on first use, and a process forked from one that had them open
opens its own.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hdf5_to_records import fs
from hdf5_to_records.errors import ManifestError, ShardCorrupt, ShardMissing, UsageError
from hdf5_to_records.format.dataset_spec import DatasetSpec, load_spec
from hdf5_to_records.format.proto import parse_example
from hdf5_to_records.format.record_values import feature_values, record_count, sparse_indices
from hdf5_to_records.index.source_trust import span_reader
from hdf5_to_records.index.spans import MAX_OPEN_FILES

from .positioned import PositionedReader
from .record_table import RecordTable, indexed, load_table

DEFAULT_CACHE_BYTES = 64 << 20  # decoded records kept per process


def data_source(
    path: str,
    split: str = "train",
    *,
    features: Sequence[str] | None = None,
    allowed_roots: Sequence[str] | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> DataSource:
    """A random-access source over one split of a converted dataset (see the module).

    Raises:
        ManifestError, UnknownName, ShardMissing, ShardCorrupt, UsageError, and for index
        mode SourceNotFound, SourceChanged, SourceRefused.
    """
    return DataSource(
        path, split, features=features, allowed_roots=allowed_roots, cache_bytes=cache_bytes
    )


@dataclass(frozen=True)
class _Args:
    path: str
    split: str
    features: tuple[str, ...] | None
    allowed_roots: tuple[str, ...] | None
    cache_bytes: int


@dataclass(eq=False)
class _Opened:
    """One process's open state: the checked shards and sources, and the cache."""

    spec: DatasetSpec
    chosen: tuple
    table: RecordTable
    reader: PositionedReader
    spans: object
    ends: np.ndarray  # examples up to and including each record
    cache_bytes: int
    cache: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    cached: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class DataSource:
    """Examples of one split by index (see the module docstring)."""

    def __init__(
        self,
        path: str,
        split: str = "train",
        *,
        features: Sequence[str] | None = None,
        allowed_roots: Sequence[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise UsageError(f"cache_bytes must be a number of bytes >= 0, got {cache_bytes!r}")
        self._args = _Args(
            str(path),
            split,
            tuple(features) if features is not None else None,
            tuple(allowed_roots) if allowed_roots is not None else None,
            cache_bytes,
        )
        self._pid: int | None = None
        self._state: _Opened | None = None
        self._length = int(self._opened().ends[-1]) if len(self._opened().ends) else 0

    def __getstate__(self) -> dict:
        return {"args": self._args, "length": self._length}

    def __setstate__(self, state: dict) -> None:
        self._args, self._length = state["args"], state["length"]
        self._pid, self._state = None, None

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"DataSource({self._args.path!r}, {self._args.split!r}, {self._length} examples)"

    def __getitem__(self, key):
        """Example ``key`` (an int), or the examples ``key`` (a sequence) stacked.

        Raises:
            IndexError: a key outside ``0..len-1`` (negative keys count from the end).
        """
        if isinstance(key, (int, np.integer)):
            return self._example(self._index(int(key)))
        keys = [self._index(int(k)) for k in np.asarray(key).reshape(-1)]
        examples = [self._example(k) for k in keys]
        opened = self._opened()
        out = {}
        for f in opened.chosen:
            values = [e[f.name] for e in examples]
            out[f.name] = values if f.variable else np.stack(values) if values else values
        return out

    def _index(self, key: int) -> int:
        if key < 0:
            key += self._length
        if not 0 <= key < self._length:
            raise IndexError(f"example {key} is not in 0..{self._length - 1}")
        return key

    def _opened(self) -> _Opened:
        if self._state is None or self._pid != os.getpid():
            self._state, self._pid = _open(self._args), os.getpid()
        return self._state

    def _example(self, key: int) -> dict:
        opened = self._opened()
        record = int(np.searchsorted(opened.ends, key, side="right"))
        first = int(opened.ends[record - 1]) if record else 0
        rows = _decoded(opened, record)
        return {name: np.array(values[key - first]) for name, values in rows.items()}


def _open(args: _Args) -> _Opened:
    spec = load_spec(args.path)
    chosen = spec.select(list(args.features) if args.features is not None else None)
    shards = spec.split(args.split)
    if not indexed(shards):
        raise ManifestError(
            f"split {args.split!r} of {spec.directory} has no record index (gzip shards, or "
            "converted by an older version): convert it again without --compression gzip"
        )
    for shard in shards:
        if not fs.exists(shard.path):
            raise ShardMissing(f"shard {shard.path} listed in the manifest is missing")
        size = fs.size(shard.path)
        if size != shard.num_bytes:
            raise ShardCorrupt(
                f"shard {shard.path} has {size} bytes but the manifest says {shard.num_bytes} "
                "(truncated or overwritten?)"
            )
    table = load_table(shards)
    referenced = [f for f in chosen if f.storage == "reference"]
    spans = None
    if referenced:
        spans = span_reader(
            spec, referenced, allowed_roots=args.allowed_roots, max_open_files=MAX_OPEN_FILES
        )
    return _Opened(
        spec, chosen, table, PositionedReader(table), spans, np.cumsum(table.count),
        args.cache_bytes,
    )  # fmt: skip


def _decoded(opened: _Opened, record: int) -> dict[str, list]:
    """The record's examples, feature by feature (cached)."""
    with opened.lock:
        found = opened.cache.get(record)
        if found is not None:
            opened.cache.move_to_end(record)
            return found[0]
    data = opened.reader.record(record)
    where = opened.table.where(record)
    try:
        example = parse_example(data)
        n = record_count(example, opened.spec)
        if n != int(opened.table.count[record]):
            raise ValueError(f"{n} examples, the manifest says {int(opened.table.count[record])}")
        rows = {}
        for f in opened.chosen:
            values = feature_values(example, f, n, opened.spec, opened.spans)
            if f.sparse:
                values = _dense_rows(f, values, sparse_indices(example, f, values))
            rows[f.name] = values
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardCorrupt(f"{where} does not decode: {exc}") from None
    size = len(data) + sum(np.asarray(v).nbytes for vs in rows.values() for v in vs[:1]) * n
    with opened.lock:
        opened.cache[record] = (rows, size)
        opened.cached += size
        while opened.cached > opened.cache_bytes and opened.cache:
            _, (_, dropped) = opened.cache.popitem(last=False)
            opened.cached -= dropped
    return rows


def _dense_rows(feature, values: list, indices: list) -> list:
    out = []
    for v, i in zip(values, indices):
        row = np.zeros(feature.shape, v.dtype)
        row[i] = v
        out.append(row)
    return out
