"""Execute one :class:`ShardSpec`: read its examples, encode records, write the shard.

Runs inside a worker process (or in-process for ``--workers 1`` and ``ram://``). The
shard is written under a temporary name in the output directory and renamed when
complete; the temporary file is removed in a ``finally``.
"""

from __future__ import annotations

import collections
import errno
import functools
import itertools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import fs
from ..errors import Hdf5ToRecordsError, OutputError, UserCodeError
from ..format.naming import index_name, temp_name
from ..format.record_index import FRAMING_BYTES, RecordIndex, index_digest, run_lengths
from ..format.record_keys import FILE_KEY, REF_SUFFIX, TAKE_SUFFIX
from ..format.reference import Reference
from ..format.shard_digest import FramingDigest
from ..index.checksums import RangeChecksums
from ..index.references import encode_refs, read_bytes
from ..planning.limits import DEFAULT_LIMITS, Limits
from ..planning.plan import ShardSpec
from ..planning.schema import FeatureSchema, SourceSet, merge_shapes
from ..planning.sharding import record_sizes
from ..planning.transform import (
    Transform,
    apply_transform,
    check_output,
    example_for_transform,
    load_transform,
)
from .encode import Blocker, encode_block, piece_length, record_framing
from .generated import GeneratorReader
from .memory import keep_freed_memory
from .reading import Column, ShardReader
from .sink import BackgroundSink

Progress = Callable[[int, int], None]  # (examples, bytes) just written
SINK_BATCH_BYTES = 8 << 20  # record bytes handed to the sink's threads at once


@dataclass(frozen=True, eq=False)
class Job:
    """What every shard of one conversion shares; sent once to each worker."""

    output: str
    sources: SourceSet
    read_features: tuple[FeatureSchema, ...]  # as read from HDF5
    features: tuple[FeatureSchema, ...]  # as stored (after the transform, if any)
    rows_per_record: int
    compression: str
    transform: str | None = None
    # Index modes: per source file, the Reference of each referenced feature.
    refs: tuple[dict[str, Reference], ...] = ()
    # Index mode with checksums: the source files as converted (never a staged copy),
    # whose referenced byte ranges each get their CRC32C.
    checksum_paths: tuple[str, ...] = ()
    record_target: int = 0
    limits: Limits = DEFAULT_LIMITS
    generator: str | None = None  # --generator MODULE:FACTORY makes the examples
    names: tuple[str, ...] = ()  # --names of a generator's tuple items

    @property
    def referenced(self) -> tuple[FeatureSchema, ...]:
        return tuple(f for f in self.features if f.storage == "reference")

    @property
    def copied(self) -> tuple[FeatureSchema, ...]:
        return tuple(f for f in self.features if f.storage == "copy")


@dataclass(frozen=True)
class ShardResult:
    """What the manifest records about one written shard."""

    split: str
    index: int
    filename: str
    num_examples: int
    num_records: int
    num_bytes: int
    sha256: str | None  # a whole-file sha256: only shards of older runs (--resume) have one
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    # The record index beside the shard (uncompressed shards): its sha256 and the
    # examples per record as runs (format/record_index.py).
    index_sha256: str | None = None
    record_examples: list[list[int]] = field(default_factory=list)
    framing_sha256: str | None = None  # format/shard_digest.py


def temp_path(job: Job, spec: ShardSpec, *, index: bool = False) -> str:
    """A temporary name of this attempt alone (see :func:`naming.temp_name`); ``index``:
    of the shard's record index (it ends in the temporary suffix too, so that the
    clean-up after a killed worker finds it)."""
    attempt = f"{os.getpid()}-{secrets.token_hex(4)}"
    name = index_name(spec.filename) if index else spec.filename
    return fs.join(job.output, temp_name(name, attempt))


def write_shard(
    job: Job,
    spec: ShardSpec,
    reader: ShardReader,
    *,
    progress: Progress | None = None,
    transform=None,
) -> ShardResult:
    """Write one shard and return what the manifest needs to know about it.

    Raises:
        OutputError: the shard cannot be written (permissions, disk full).
        Hdf5ToRecordsError: from reading, transforming or encoding, with the shard named.
    """
    temp, final = temp_path(job, spec), fs.join(job.output, spec.filename)
    index_temp = temp_path(job, spec, index=True)
    observed: dict[str, list[tuple[int, ...]]] = {f.name: [] for f in job.features if f.ragged}
    layout = _RecordLog()
    try:
        with fs.open_write(temp) as raw, RangeChecksums(job.checksum_paths) as checksums:
            sink = BackgroundSink(raw, compress=job.compression == "gzip")
            try:
                records = _write_records(
                    job, spec, (reader, checksums), sink, (observed, layout), progress, transform
                )
                size = sink.close()
            except BaseException:
                sink.abandon()
                raise
        index_sha256 = None
        if job.compression != "gzip":
            # The index goes in place first: a shard never stands without its index.
            index_sha256 = _write_index(
                layout, index_temp, fs.join(job.output, index_name(spec.filename))
            )
        fs.rename(temp, final)
    except UserCodeError:
        raise  # it names the shard and the example already
    except Hdf5ToRecordsError as exc:
        raise exc.with_context(f"shard {spec.filename}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(
                f"no space left on device while writing {spec.filename} in {job.output}"
            ) from None
        raise OutputError(
            f"cannot write {spec.filename} in {job.output}: {exc.strerror or exc}"
        ) from None
    finally:
        fs.remove(temp)
        fs.remove(index_temp)
    shapes = {name: list(merge_shapes(s)) for name, s in observed.items() if s}
    runs = run_lengths(layout.counts) if index_sha256 is not None else []
    # What was written: a generator's shard may end before its planned count.
    examples = sum(layout.counts)
    return ShardResult(
        spec.split, spec.index, spec.filename, examples, records, size, None, shapes,
        index_sha256, runs, layout.digest.hexdigest(),
    )  # fmt: skip


@dataclass
class _RecordLog:
    """The framed size and example count of each record written, for the index, and the
    digest of their framing, for the manifest."""

    sizes: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    digest: FramingDigest = field(default_factory=FramingDigest)


def _write_index(layout: _RecordLog, temp: str, final: str) -> str:
    """Write a shard's record index (temporary name, then renamed); its sha256."""
    data = RecordIndex.of_sizes(layout.sizes).to_bytes()
    with fs.open_write(temp) as handle:
        handle.write(data)
    fs.rename(temp, final)
    return index_digest(data)


def _write_records(job: Job, spec: ShardSpec, readers, sink, logs, progress,
                   transform) -> int:  # fmt: skip
    """Read the shard's rows window by window, encode them into records and hand the
    pieces to ``sink``; returns the record count. ``logs``: the ragged shapes observed,
    and the :class:`_RecordLog`. ``readers``: the shard reader, and the checksums of
    referenced byte ranges."""
    reader = readers[0]
    observed, layout = logs
    referenced, copied = job.referenced, job.copied
    if referenced:
        sizes = _record_sizes(job, spec)
        blocker = Blocker(iter(sizes))
    else:
        sizes, blocker = [], Blocker(itertools.repeat(job.rows_per_record))
    records = position = 0

    def write_blocks(blocks) -> None:
        nonlocal records, position
        # Pieces go to the sink's threads in batches: one queue hand-off per piece cost
        # 1.9 s of 4.8 on the gzip scene source (7,200 records of 6 pieces, 2 threads).
        batch, held = [], 0
        for block, count in blocks:
            extra = _reference_lists(job, spec, position, count, readers) if referenced else None
            position += count
            pieces = encode_block(block, count, copied, extra, job.limits.max_record_bytes)
            prefix, suffix = record_framing(pieces)
            layout.digest.add(prefix, suffix)
            length = piece_length(pieces)
            batch += [prefix, *pieces, suffix]
            held += length
            if held >= SINK_BATCH_BYTES:
                sink.write_all(batch)
                batch, held = [], 0
            records += 1
            layout.sizes.append(length + FRAMING_BYTES)
            layout.counts.append(count)
            if progress is not None:
                progress(count, length)
        if batch:
            sink.write_all(batch)

    pending: collections.deque = collections.deque()
    if not job.read_features:  # nothing to read: every feature is referenced
        write_blocks(({}, n) for n in sizes)
    windows = reader.shard_windows(spec) if job.read_features else ()
    for window in windows:
        columns, n = window.columns, window.stop - window.start
        if transform is not None:
            columns = _transform_window(job, spec, window.start, columns, n, transform)
        for name, shapes in observed.items():
            shapes.extend(np.shape(v) for v in columns[name])
        write_blocks(blocker.add(columns, n))
        # The reader reuses this window's arrays two windows later.
        pending.append(sink.barrier())
        if len(pending) > 1:
            pending.popleft().wait()
    write_blocks(blocker.flush())
    return records


def _record_sizes(job: Job, spec: ShardSpec) -> list[int]:
    """Index-mode records: ~``record_target`` examples each, cut at the chunk starts of
    the referenced data, and split further until no record reads more than
    ``limits.max_read_bytes`` (sparse rows read through gaps; shuffled rows whole chunks)."""
    align = [
        max([r.chunk_rows for r in refs.values() if r.layout == "chunked"], default=1)
        for refs in job.refs
    ]
    sizes = record_sizes(spec.file_ids, spec.rows, job.record_target, align)

    def bounded(a: int, b: int) -> list[int]:
        refs = job.refs[int(spec.file_ids[a])]
        rows = spec.rows[a:b]
        gap, cap = job.limits.gap_bytes, job.limits.max_read_bytes
        # The fields of one table share its records: one check per distinct layout.
        distinct = {(r.dataset, r.layout, r.chunk_rows, r.row_bytes): r for r in refs.values()}
        if b - a > 1 and any(read_bytes(r, rows, gap) > cap for r in distinct.values()):
            middle = (a + b) // 2
            return bounded(a, middle) + bounded(middle, b)
        return [b - a]

    out, start = [], 0
    for size in sizes:
        out += bounded(start, start + size)
        start += size
    return out


def _reference_lists(
    job: Job, spec: ShardSpec, start: int, n: int, readers
) -> dict[str, list[int]]:
    """The reference entries of the record holding examples ``[start, start + n)``
    (each byte range with its CRC32C when the job records checksums)."""
    reader, checksums = readers
    file_id = int(spec.file_ids[start])
    rows = spec.rows[start : start + n]
    entries = {FILE_KEY: [file_id]}
    add = None
    if job.checksum_paths:
        add = functools.partial(checksums.with_checksums, file_id)
    for feature in job.referenced:
        ref = job.refs[file_id][feature.name]
        table = reader.chunk_table(file_id, ref) if ref.layout == "chunked" else None
        pieces, take = encode_refs(ref, rows, table, job.limits.gap_bytes, add)
        entries[feature.name + REF_SUFFIX] = pieces
        entries[feature.name + TAKE_SUFFIX] = take
    return entries


def _transform_window(
    job: Job, spec: ShardSpec, start: int, columns: dict[str, Column], n: int, transform
) -> dict[str, list]:
    out: dict[str, list] = {f.name: [] for f in job.features}
    for j in range(n):
        example = example_for_transform(columns, j, job.read_features)
        source = job.sources.files[int(spec.file_ids[start + j])]
        item = (
            "group " + source.groups[int(spec.rows[start + j])]
            if source.groups
            else (f"row {int(spec.rows[start + j])}")
        )
        where = f"example {start + j} of shard {spec.filename} ({os.path.basename(source.path)} "
        where += f"{item})"
        result = apply_transform(transform, job.transform, example, where)
        check_output(result, job.features, job.transform, where)
        for name, value in result.items():
            out[name].append(value)
    return out


# Per-process worker state, set once by ``init_worker``.
_STATE: dict = {}


def open_inputs(job: Job) -> tuple[ShardReader | GeneratorReader, Transform | None]:
    """What a process writing shards reads with: the HDF5 reader (files open on first
    use) or the generator's, and the transform, each imported in this process.

    Raises:
        UsageError: the transform or generator module cannot be imported.
    """
    if job.generator is not None:
        return GeneratorReader(job.generator, job.names, job.features, job.limits), None
    reader = ShardReader(job.sources, job.read_features, job.limits)
    return reader, load_transform(job.transform) if job.transform else None


def init_worker(job: Job, queue) -> None:
    """Pool initializer: keep the job, open nothing yet (files open on first use)."""
    keep_freed_memory()  # a worker process is ours: see memory.py
    _STATE.clear()
    reader, transform = open_inputs(job)
    _STATE.update(job=job, queue=queue, reader=reader, transform=transform)


def run_in_worker(spec: ShardSpec) -> ShardResult:
    """Pool task: write one shard, reporting progress through the queue."""
    queue = _STATE["queue"]
    pending = [0, 0]

    def progress(examples: int, nbytes: int) -> None:
        pending[0] += examples
        pending[1] += nbytes
        if pending[1] >= 4 << 20 or pending[0] >= 4096:
            queue.put(tuple(pending))
            pending[:] = [0, 0]

    result = write_shard(
        _STATE["job"], spec, _STATE["reader"], progress=progress, transform=_STATE["transform"]
    )
    if pending[0]:
        queue.put(tuple(pending))
    return result
