"""Build the immutable conversion plan before a byte is written.

The plan is a tuple of frozen :class:`ShardSpec`: which source items go to which shard
file, in which order. It is what ``--dry-run`` prints, what ``--resume`` compares
against, and what the executors run, one spec per task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import numpy.random  # noqa: F401  imported now: numpy's lazy import of it can swallow a Ctrl-C

from .._version import __version__
from ..errors import RecordTooLarge
from ..format.naming import ShardedFileTemplate
from . import sharding
from .limits import DEFAULT_LIMITS, Limits
from .schema import FeatureSchema, SourceSet
from .sharding import choose_num_shards, choose_rows_per_record, shard_bounds, split_counts
from .stage_options import PlanOptions
from .user_code import code_fingerprint

_SPLIT_STREAM, _SHUFFLE_STREAM = 1, 2  # independent random streams derived from --seed
_REF_EXAMPLE_BYTES = 4  # index mode: stored bytes per referenced example (take list, refs)


@dataclass(frozen=True, eq=False)
class ShardSpec:
    """One shard to write: its file and the source items it holds, in order.

    ``file_ids[i]``/``rows[i]`` locate example ``i`` of the shard: the index of the
    source file in the plan's source list and the row (or group ordinal) within it.
    """

    split: str
    index: int
    num_shards: int
    filename: str
    file_ids: np.ndarray
    rows: np.ndarray
    num_records: int
    est_bytes: int
    fingerprint: str
    # --generator: the (shard_index, num_shards) its factory is called with, and
    # whether the shard takes all the factory yields (no --num-examples; then ``rows``
    # is empty and the counts are known once it is written).
    factory_args: tuple[int, int] | None = None
    open_ended: bool = False

    @property
    def num_examples(self) -> int:
        return int(self.rows.size)

    def runs(self) -> list[tuple[int, int, int]]:
        """Maximal ``(file_id, start, stop)`` runs of consecutive source rows."""
        if self.rows.size == 0:
            return []
        breaks = np.flatnonzero((np.diff(self.rows) != 1) | (np.diff(self.file_ids) != 0)) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [self.rows.size]])
        return [
            (int(self.file_ids[a]), int(self.rows[a]), int(self.rows[b - 1]) + 1)
            for a, b in zip(starts, stops)
        ]


@dataclass(frozen=True, eq=False)
class Plan:
    """The full plan: sources, schema, record layout and every shard of every split."""

    name: str
    sources: SourceSet
    features: tuple[FeatureSchema, ...]
    rows_per_record: int
    compression: str
    shards: tuple[ShardSpec, ...]
    split_names: tuple[str, ...]
    record_target: int = 0  # index mode: examples a record aims for (see record_sizes)
    limits: Limits = DEFAULT_LIMITS

    def split_shards(self, split: str) -> tuple[ShardSpec, ...]:
        return tuple(s for s in self.shards if s.split == split)

    def summary(self) -> dict:
        """What ``--dry-run`` prints: per split, shards, examples and estimated bytes."""
        splits = {}
        for split in self.split_names:
            shards = self.split_shards(split)
            splits[split] = {
                "shards": len(shards),
                "examples": None
                if any(s.open_ended for s in shards)
                else sum(s.num_examples for s in shards),
                "records": sum(s.num_records for s in shards),
                "est_bytes": sum(s.est_bytes for s in shards),
                "files": [s.filename for s in shards],
            }
        return {
            "name": self.name,
            "rows_per_record": self.rows_per_record,
            "features": {
                f.name: {"dtype": f.stored.dtype, "shape": list(f.shape)} for f in self.features
            },
            "sources": len(self.sources.files),
            "generator": self.features[0].source.partition(":")[2]
            if self.sources.mode == "generator"
            else None,
            "splits": splits,
        }


def build_plan(
    options: PlanOptions,
    sources: SourceSet,
    features: tuple[FeatureSchema, ...],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Plan:
    """Assign examples to splits and shards, deterministically from ``options.seed``.

    Splits take a seeded random subset each and keep source order, unless ``--shuffle``
    gives each split a seeded random order. ``features`` is the output schema (after any
    transform), which sets the record size. ``limits`` travel with the plan to every
    executor and worker.
    """
    file_ids = np.concatenate(
        [np.full(f.rows.size, i, np.int32) for i, f in enumerate(sources.files)]
    )
    rows = np.concatenate([f.rows for f in sources.files])
    total = rows.size
    example_bytes = max(1, sum(f.example_bytes() for f in features))
    rows_per_record, record_target, stored_bytes = record_layout(options, features)
    template = ShardedFileTemplate(options.name)

    check_record_limit(features, limits.max_record_bytes)
    if len(options.splits) == 1 and options.splits[0].fraction == 1.0:
        assignments = [np.arange(total)]
    else:
        assignments = _assign_splits(options, file_ids, rows)

    shuffle_rng = np.random.default_rng([options.seed, _SHUFFLE_STREAM])
    base = _plan_digest(options, sources, features, rows_per_record)
    shards = []
    for split, members in zip(options.splits, assignments):
        if options.shuffle:
            members = members[shuffle_rng.permutation(members.size)]
        num_shards = choose_num_shards(
            members.size,
            members.size * example_bytes,
            shard_bytes=options.shard_size,
            num_shards=options.num_shards,
            min_shards=options.workers,
        )
        for index, (a, b) in enumerate(shard_bounds(members.size, num_shards)):
            ids, sel = file_ids[members[a:b]], rows[members[a:b]]
            filename = template.filename(split.name, index, num_shards)
            digest = hashlib.sha256(base.encode())
            digest.update(filename.encode())
            digest.update(ids.tobytes())
            digest.update(sel.tobytes())
            shards.append(
                ShardSpec(
                    split.name,
                    index,
                    num_shards,
                    filename,
                    ids,
                    sel,
                    -(-(b - a) // record_target),
                    (b - a) * stored_bytes,
                    digest.hexdigest(),
                )
            )
    return Plan(
        template.name,
        sources,
        features,
        rows_per_record,
        options.compression,
        tuple(shards),
        tuple(s.name for s in options.splits),
        record_target,
        limits,
    )


def record_layout(
    options: PlanOptions, features: tuple[FeatureSchema, ...]
) -> tuple[int, int, int]:
    """(most examples per record, examples a record aims for, bytes written per example)."""
    example_bytes = max(1, sum(f.example_bytes() for f in features))
    rows_per_record = options.rows_per_record or choose_rows_per_record(example_bytes)
    if not any(f.storage == "reference" for f in features):
        return rows_per_record, rows_per_record, example_bytes
    # Records hold references; each one is read and decoded as one span.
    record_target = options.rows_per_record or max(1, sharding.SPAN_BYTES // example_bytes)
    if not options.rows_per_record and example_bytes >= sharding.LARGE_EXAMPLE_BYTES:
        # A record per example (per chunk of chunked data), as in copy mode: the reader
        # then shuffles large rows one by one, not in runs of 8 MiB (issue 15).
        record_target = 1
    # Shards are sized by the data they hold or reference (readers and workers get as
    # many as in copy mode); the disk estimate counts what is written.
    stored_bytes = _REF_EXAMPLE_BYTES + sum(
        f.example_bytes() for f in features if f.storage == "copy"
    )
    return 2 * record_target, record_target, stored_bytes  # 2x: see record_sizes


def _assign_splits(options: PlanOptions, file_ids: np.ndarray, rows: np.ndarray) -> list:
    """Seeded random split of the examples, by distinct source row.

    Repeated rows (oversampling index lists) all land in the same split, so no row
    leaks from train into test. Each split keeps selection order.
    """
    keys = file_ids.astype(np.int64) << np.int64(40) | rows
    unique, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng([options.seed, _SPLIT_STREAM]).permutation(unique.size)
    counts = split_counts(unique.size, [s.fraction for s in options.splits])
    split_of_unique = np.full(unique.size, -1, np.int64)
    edges = np.cumsum([0] + counts)
    for index, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        split_of_unique[order[a:b]] = index
    split_of_example = split_of_unique[inverse.ravel()]
    return [np.flatnonzero(split_of_example == i) for i in range(len(options.splits))]


def check_record_limit(features: tuple[FeatureSchema, ...], max_record_bytes: int) -> None:
    """Refuse at plan time an example that cannot fit in one record.

    Raises:
        RecordTooLarge: naming the feature and its size.
    """
    fixed = [f for f in features if f.stored.encoding == "raw" and None not in f.shape]
    total = sum(f.example_bytes() for f in fixed)
    if total > max_record_bytes:
        biggest = max(fixed, key=lambda f: f.example_bytes())
        raise RecordTooLarge(
            f"one example takes {total} bytes (feature {biggest.name!r}: "
            f"{biggest.example_bytes()} bytes), over the {max_record_bytes}-byte "
            "limit of one TFRecord record"
        )


def _plan_digest(
    options: PlanOptions,
    sources: SourceSet,
    features: tuple[FeatureSchema, ...],
    rows_per_record: int,
) -> str:
    """Everything besides the row lists that changes a shard's bytes."""
    return json.dumps(
        {
            "sources": [[f.path, f.size, f.mtime] for f in sources.files],
            "mode": sources.mode,
            "groups": sources.group_pattern,
            "features": [
                [f.name, f.source, f.stored.dtype, list(f.shape), f.ragged, f.storage]
                for f in features
            ],
            "rows_per_record": rows_per_record,
            "compression": options.compression,
            "transform": code_fingerprint(options.transform),
            "tool_version": __version__,
            # Index mode: whether the byte ranges carry their CRC32C (format 3).
            **(
                {"checksums": options.checksums}
                if any(f.storage == "reference" for f in features)
                else {}
            ),
        },
        sort_keys=True,
    )
