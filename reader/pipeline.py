"""``reader.load``: the parallel tf.data pipeline over a converted dataset.

manifest → shard files (per input pipeline) → seeded file shuffle → parallel
interleave of TFRecordDatasets → optional record shuffle → batch records → vectorised
decode → re-batch to ``batch_size`` → optional ``map_fn`` → prefetch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.errors import ManifestError, UsageError
from hdf5_to_records.format.dataset_spec import DatasetSpec, ShardInfo, load_spec
from hdf5_to_records.format.dtypes import from_stored
from hdf5_to_records.index.source_trust import span_reader
from hdf5_to_records.index.spans import SpanReader

from .decode import make_decoder, sparse_rows
from .files import check_shards, worker_shards
from .options import ReadOptions
from .random_access import dense_example, indexed_elements
from .record_table import indexed
from .records import shard_records
from .service import distribute

tf = import_tensorflow()

READ_BUFFER_BYTES = 1 << 20  # per open shard: one ~1 MiB record per read; 16 MiB cost 180 MB RSS
DECODE_BYTES = 4 << 20  # at least this much decoded per call, so small rows batch up
DEFAULT_SHUFFLE_EXAMPLES = 10_000  # streamed shards: record shuffle buffer, in examples
STREAM_SHUFFLE_BYTES = 256 << 20  # ... and at most this many bytes of records
SHUFFLE_RECORDS_PER_CALL = 4  # index mode, shuffled: records decoded (and mixed) together


def load(
    path: str, split: str = "train", *, options: ReadOptions | None = None, **keywords
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` over one split of an hdf5-to-records output directory.

    Options are keyword arguments, or one :class:`reader.ReadOptions` as ``options=``.
    Elements are dicts of feature tensors (or ``(x, y)`` with ``supervised``): single
    examples without ``batch_size``, else batches of ``batch_size`` (the last one smaller
    unless ``drop_remainder``). Variable-length features come back as ``tf.RaggedTensor``
    when batched. ``shuffle`` shuffles the shard order each epoch and the records through
    a buffer of ``shuffle_buffer`` examples, then the examples within each decoded batch;
    the same ``seed`` gives the same order, no seed a fresh order each run. ``repeat``:
    number of epochs (``True`` for endless). ``cache``: ``True`` for memory or a file
    path; records are cached after the first read (index mode: the decoded examples).
    ``input_context`` (a ``tf.distribute.InputContext``) or
    ``num_workers``/``worker_index`` shard by file. ``autotune`` turns tf.data's
    autotuner on for the returned dataset (off by default: it measured 1.5x slower on
    large rows here).

    Index-mode datasets read their referenced features straight from the HDF5 sources,
    which must be unchanged since the conversion and lie under the dataset's directory,
    the source directories recorded at conversion, or ``allowed_roots``; each pipeline
    keeps at most ``max_open_files`` of them open (128 by default).

    ``service="grpc://HOST:PORT"`` reads through a tf.data service: its workers read
    and decode the shards, this process receives the records (index mode: reads their
    referenced bytes here; see :mod:`reader.service`). ``processing_mode``:
    ``"distributed_epoch"`` (default: each shard file read by one worker, every example
    once per epoch) or ``"parallel_epochs"`` (each worker reads everything);
    ``job_name`` shares one job between several clients; ``service_compression="AUTO"``
    compresses elements on the workers (off by default: see :mod:`reader.service`). The
    dataset's length is then unknown; copy mode forms batches on the workers, so each
    worker's last batch of an epoch may be short.

    Raises:
        ManifestError, UnknownName, ShardMissing, ShardCorrupt, UsageError, and for index
        mode SourceNotFound, SourceChanged, SourceRefused.
    """
    if options is not None and keywords:
        raise UsageError("pass options= or keyword options, not both")
    o = options if options is not None else ReadOptions.from_keywords(keywords)
    source = _open(path, split, o)
    if _random_access(source, o):
        return _finish_indexed(source, o)
    records = _records(source, o)
    if o.address is not None:
        return _through_service(source, records, o)
    return _finish(source, _examples(source, records, o), o)


@dataclass(frozen=True)
class _Source:
    """What one input pipeline reads: the dataset, its chosen features, this worker's
    checked shards, the reader of referenced bytes, and records decoded per call."""

    spec: DatasetSpec
    chosen: tuple
    shards: tuple[ShardInfo, ...]
    spans: SpanReader | None
    per_call: int

    @property
    def ragged(self) -> bool:
        return any(f.variable or f.sparse for f in self.chosen)


def _open(path: str, split: str, o: ReadOptions) -> _Source:
    """Manifest -> this worker's shards (checked) and how many records a decode takes."""
    spec = load_spec(path)
    chosen = spec.select(o.needed())
    if not spec.split(split):
        raise ManifestError(f"split {split!r} in {spec.directory} lists no shards")
    shards = worker_shards(
        spec.split(split),
        input_context=o.input_context,
        num_workers=o.num_workers,
        worker_index=o.worker_index,
    )
    check_shards(shards, verify=o.verify_checksums, gzip=spec.compression == "gzip")
    spans = _span_reader(spec, chosen, o.allowed_roots, o.max_open_files)
    k = spec.rows_per_record
    record_bytes = max(1, sum(s.num_bytes for s in shards)) / max(
        1, sum(_record_count(s, k) for s in shards)
    )
    if spans is not None:  # records hold references: size calls by the bytes decoded
        record_bytes = max(1.0, (k / 2) * sum(_example_bytes(f) for f in chosen))
    per_call = max(1, math.ceil((o.batch_size or 1) / k), int(DECODE_BYTES // record_bytes))
    if spans is not None and o.shuffle:
        # Index records hold ~8 MiB of consecutive rows: decode several random records per
        # call so that the within-batch shuffle mixes rows from several places.
        per_call = max(per_call, SHUFFLE_RECORDS_PER_CALL)
    return _Source(spec, chosen, shards, spans, per_call)


def _random_access(source: _Source, o: ReadOptions) -> bool:
    """Whether to read by position: every shard has a record index (uncompressed and
    converted by 0.15 or later), and neither a service nor a cache is asked for, which
    read the shards as streams."""
    return o.address is None and not o.cache and indexed(source.shards)


def _finish_indexed(source: _Source, o: ReadOptions):
    """The caller's elements, read by position (:mod:`reader.random_access`), with a
    checkpoint that is the position alone."""
    seed = o.seed
    if o.shuffle and seed is None:  # a fresh order each run, as asked
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
    elements, depth, _ = indexed_elements(source, o, seed)
    ds = _finished(source, o, elements)
    num_examples = sum(s.num_examples for s in source.shards)
    per_epoch = _cardinality(num_examples, o.batch_size, o.drop_remainder)
    endless = o.epochs is None and per_epoch > 0  # repeating nothing ends, as repeat() does
    count = tf.data.INFINITE_CARDINALITY if endless else per_epoch * (o.epochs or 1)
    ds = ds.apply(tf.data.experimental.assert_cardinality(count)).prefetch(depth)
    options = _tf_options(o)
    # Every op above keeps its order, and the reads are marked stateless: a checkpoint
    # then holds the position of the stream of windows, not buffered data.
    options.experimental_symbolic_checkpoint = True
    return ds.with_options(options)


def _cache_decoded(source: _Source, o: ReadOptions) -> bool:
    """Index-mode records are references: caching them would still read every source
    byte each epoch, so the decoded examples are cached instead."""
    return bool(o.cache) and source.spans is not None


def _records(source: _Source, o: ReadOptions):
    """Shard files -> their records: shuffled files, parallel interleave, cache, shuffle."""
    shards = source.shards
    # Service workers may run in another directory: give them absolute paths.
    paths = [
        s.path if o.address is None or "://" in s.path else os.path.abspath(s.path) for s in shards
    ]
    files = tf.data.Dataset.from_tensor_slices((paths, [s.num_records for s in shards]))
    if o.shuffle and not o.cache:
        files = files.shuffle(len(shards), seed=o.seed, reshuffle_each_iteration=True)
    compression = "GZIP" if source.spec.compression == "gzip" else ""
    # Unshuffled, a block as long as the longest shard makes the output the shards'
    # records one file after another (the converter's write order), while the parallel
    # interleave still reads the next files ahead.
    # Each record holds at least one example, so no shard has more records than examples
    # (the manifest's num_records is not trusted for the order).
    block = 1 if o.shuffle else max([s.num_examples for s in shards] + [1])
    parallel_reads = o.num_parallel_reads or tf.data.AUTOTUNE
    records = files.interleave(
        _shard_reader(shards, compression),
        cycle_length=min(len(shards), 64) if o.num_parallel_reads is None else parallel_reads,
        block_length=block,
        num_parallel_calls=parallel_reads,
        deterministic=o.ordered,
    )
    cache_decoded = _cache_decoded(source, o)
    if o.cache and not cache_decoded:
        records = records.cache(o.cache if isinstance(o.cache, str) else "")
    if o.shuffle and not cache_decoded:
        buffer_examples = o.shuffle_buffer or DEFAULT_SHUFFLE_EXAMPLES
        record_bytes = max(1, sum(s.num_bytes for s in shards)) / max(
            1, sum(_record_count(s, source.spec.rows_per_record) for s in shards)
        )
        buffer_records = max(
            2,
            min(
                math.ceil(buffer_examples / source.spec.rows_per_record),
                int(STREAM_SHUFFLE_BYTES // record_bytes),
            ),
        )
        records = records.shuffle(buffer_records, seed=o.seed, reshuffle_each_iteration=True)
    return records


def _decoded(source: _Source, o: ReadOptions, batches):
    """Batches of serialized records -> batches of examples, decoded in parallel."""
    decode = make_decoder(source.spec, source.chosen, source.spans)
    calls = o.num_parallel_calls or tf.data.AUTOTUNE
    return batches.map(decode, num_parallel_calls=calls, deterministic=o.ordered)


def _examples(source: _Source, records, o: ReadOptions):
    """Records -> decoded batches of examples (index mode: cached here, if asked)."""
    examples = _decoded(source, o, records.batch(source.per_call))
    if _cache_decoded(source, o):
        examples = examples.cache(o.cache if isinstance(o.cache, str) else "")
        if o.shuffle:
            # examples per decoded batch, roughly
            per_batch = max(1, source.per_call * source.spec.rows_per_record // 2)
            buffer_examples = o.shuffle_buffer or DEFAULT_SHUFFLE_EXAMPLES
            examples = examples.shuffle(
                max(2, math.ceil(buffer_examples / per_batch)),
                seed=o.seed,
                reshuffle_each_iteration=True,
            )
    return examples


def _batched(source: _Source, o: ReadOptions, examples):
    """Decoded record batches -> the elements the caller asked for."""
    if o.shuffle:
        examples = examples.map(_shuffle_within(o.seed, source.ragged))
    if o.batch_size is None:
        ds = _unbatch(examples, source.chosen)
        if source.ragged:
            ds = ds.map(dense_example)
    elif any(f.variable for f in source.chosen):
        ds = _unbatch(examples, source.chosen).ragged_batch(
            o.batch_size, drop_remainder=o.drop_remainder
        )
    else:
        ds = examples.rebatch(o.batch_size, drop_remainder=o.drop_remainder)
    return _finished(source, o, ds)


def _finished(source: _Source, o: ReadOptions, ds):
    """Batches (or examples) -> the caller's elements: sparse tensors, ``supervised``
    pairs, ``map_fn``."""
    if any(f.sparse for f in source.chosen):
        ds = ds.map(
            sparse_rows(source.chosen, dense=o.sparse == "dense", batched=o.batch_size is not None)
        )
    if o.supervised is not None:
        x_names, y_names = o.supervised
        ds = ds.map(lambda e: (_pick(e, x_names), _pick(e, y_names)))
    if o.map_fn is not None:
        calls = o.num_parallel_calls or tf.data.AUTOTUNE
        ds = ds.map(o.map_fn, num_parallel_calls=calls, deterministic=o.ordered)
    return ds


def _tf_options(o: ReadOptions):
    options = tf.data.Options()
    # Measured on scene rows (benchmarks/read_bench.py): with the autotuner on, each pass
    # settled at random on ~1.1 cores (~6k examples/s) or ~1.7 cores (~9k); off, 16 of
    # 16 passes ran at 8-10.5k. AUTOTUNE parallelism then means "the core count".
    options.autotune.enabled = o.autotune
    return options


def _finish(source: _Source, examples, o: ReadOptions):
    """Local reads: the caller's elements, their asserted count, epochs, prefetch."""
    num_examples = sum(s.num_examples for s in source.shards)
    ds = _batched(source, o, examples)
    ds = ds.apply(
        tf.data.experimental.assert_cardinality(
            _cardinality(num_examples, o.batch_size, o.drop_remainder)
        )
    )
    if o.epochs != 1:
        # Repeating the whole pipeline keeps epochs apart: each one reshuffles the
        # shards and refills the shuffle buffer, and ends with its own last batch.
        ds = ds.repeat(o.epochs)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_tf_options(o))


def _through_service(source: _Source, records, o: ReadOptions):
    """Service workers run pure ops only. Copy mode: everything up to the finished
    batches (and map_fn) runs there. Index mode: the records cross the service as they
    are, and are decoded here, where the numpy_function can run."""
    options = _tf_options(o)
    if source.spans is None:
        stream = _batched(source, o, _decoded(source, o, records.batch(source.per_call)))
    else:
        stream = records.batch(source.per_call)
    stream = stream.repeat(o.epochs) if o.epochs != 1 else stream
    stream = distribute(
        stream.with_options(options), o.address, o.mode, o.job_name, o.service_compression
    )
    ds = _batched(source, o, _decoded(source, o, stream)) if source.spans is not None else stream
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _shard_reader(shards, compression: str) -> Callable:
    """(shard path, its record count) -> its :func:`shard_records` elements; counted
    (a record that does not read names its shard) when the manifest gives every count."""
    counted = all(s.num_records for s in shards)
    return lambda path, count: shard_records(
        path, count, compression=compression, buffer_size=READ_BUFFER_BYTES, counted=counted
    )


def _span_reader(spec, chosen, allowed_roots, max_open_files) -> SpanReader | None:
    """The reader of referenced features, after checking the sources; None if none."""
    referenced = [f for f in chosen if f.storage == "reference"]
    if not referenced:
        return None
    return span_reader(spec, referenced, allowed_roots=allowed_roots, max_open_files=max_open_files)


def _record_count(shard, k: int) -> int:
    """Records in a shard (index-mode records hold fewer than ``k`` examples)."""
    return shard.num_records or math.ceil(shard.num_examples / k)


def _example_bytes(feature) -> int:
    if feature.encoding != "raw" or feature.variable:
        return 64
    return int(np.prod(feature.shape, dtype=np.int64)) * from_stored(feature.dtype).itemsize


def _unbatch(examples, features):
    """Split decoded batches into examples.

    ``unbatch`` crashes TensorFlow 2.21 (segfault) on zero-size features such as shape
    (N, 0); slicing each batch does not.
    """
    if any(0 in f.shape for f in features):
        return examples.flat_map(tf.data.Dataset.from_tensor_slices)
    return examples.unbatch()


def _pick(example: dict, names):
    if isinstance(names, str):
        return example[names]
    return {n: example[n] for n in names}


def _cardinality(num_examples: int, batch_size: int | None, drop_remainder: bool) -> int:
    if batch_size is None:
        return num_examples
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def _shuffle_within(seed: int | None, ragged: bool):
    """Permute the examples of one decoded batch (records hold consecutive rows)."""

    def shuffle(batch: dict) -> dict:
        first = next(iter(batch.values()))
        n = first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(first)[0]
        order = tf.random.shuffle(tf.range(n), seed=seed)
        return {k: tf.gather(v, order) for k, v in batch.items()}

    return shuffle
