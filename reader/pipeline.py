"""``reader.load``: the parallel tf.data pipeline over a converted dataset.

manifest → shard files (per input pipeline) → seeded file shuffle → parallel
interleave of TFRecordDatasets → optional record shuffle → batch records → vectorised
decode → re-batch to ``batch_size`` → optional ``map_fn`` → prefetch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.dataset_spec import load_spec
from hdf5_to_records.dtypes import from_stored
from hdf5_to_records.errors import ManifestError, UsageError
from hdf5_to_records.source_trust import resolve_sources
from hdf5_to_records.spans import SpanReader

from .decode import make_decoder
from .files import check_shards, worker_shards
from .records import shard_records
from .service import (
    DEFAULT_PROCESSING_MODE,
    DEFAULT_SERVICE_COMPRESSION,
    check_compression,
    check_service,
    distribute,
)
from .service import processing_mode as service_mode

tf = import_tensorflow()

READ_BUFFER_BYTES = 1 << 20  # per open shard: one ~1 MiB record per read; 16 MiB cost 180 MB RSS
DECODE_BYTES = 4 << 20  # at least this much decoded per call, so small rows batch up
DEFAULT_SHUFFLE_EXAMPLES = 10_000  # record shuffle buffer, in examples
SHUFFLE_RECORDS_PER_CALL = 4  # index mode, shuffled: records decoded (and mixed) together


def load(
    path: str,
    split: str = "train",
    *,
    batch_size: int | None = None,
    features: Sequence[str] | None = None,
    supervised: tuple[str | Sequence[str], str | Sequence[str]] | None = None,
    shuffle: bool = False,
    shuffle_buffer: int | None = None,
    seed: int | None = None,
    repeat: int | bool | None = None,
    drop_remainder: bool = False,
    cache: bool | str = False,
    deterministic: bool | None = None,
    num_parallel_reads: int | None = None,
    num_parallel_calls: int | None = None,
    map_fn: Callable | None = None,
    input_context=None,
    num_workers: int | None = None,
    worker_index: int | None = None,
    verify_checksums: bool = False,
    autotune: bool = False,
    allowed_roots: Sequence[str] | None = None,
    service: str | None = None,
    processing_mode=None,
    job_name: str | None = None,
    service_compression: str | None = DEFAULT_SERVICE_COMPRESSION,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` over one split of an hdf5-to-records output directory.

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
    the source directories recorded at conversion, or ``allowed_roots``.

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
    _check_options(batch_size, shuffle, shuffle_buffer, seed, repeat, drop_remainder)
    _check_service_options(
        service, processing_mode, job_name, cache, input_context, num_workers, worker_index
    )
    if service is None and service_compression is not None:
        raise UsageError("service_compression= needs service=")
    address = check_service(service) if service is not None else None
    service_compression = check_compression(service_compression)
    mode = service_mode(processing_mode or DEFAULT_PROCESSING_MODE) if service else None
    spec = load_spec(path)
    chosen = spec.select(_needed(features, supervised))
    if not spec.split(split):
        raise ManifestError(f"split {split!r} in {spec.directory} lists no shards")
    shards = worker_shards(
        spec.split(split),
        input_context=input_context,
        num_workers=num_workers,
        worker_index=worker_index,
    )
    check_shards(shards, verify=verify_checksums)
    spans = _span_reader(spec, chosen, allowed_roots)
    if deterministic is None:
        deterministic = not shuffle or seed is not None
    parallel_reads = num_parallel_reads or tf.data.AUTOTUNE
    parallel_calls = num_parallel_calls or tf.data.AUTOTUNE
    k = spec.rows_per_record
    num_examples = sum(s.num_examples for s in shards)
    epochs = None if repeat is True else int(repeat or 1)

    # Service workers may run in another directory: give them absolute paths.
    paths = [
        s.path if address is None or "://" in s.path else os.path.abspath(s.path) for s in shards
    ]
    files = tf.data.Dataset.from_tensor_slices((paths, [s.num_records for s in shards]))
    if shuffle and not cache:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    compression = "GZIP" if spec.compression == "gzip" else ""
    # Unshuffled, a block as long as the longest shard makes the output the shards'
    # records one file after another (the converter's write order), while the parallel
    # interleave still reads the next files ahead.
    # Each record holds at least one example, so no shard has more records than examples
    # (the manifest's num_records is not trusted for the order).
    block = 1 if shuffle else max([s.num_examples for s in shards] + [1])
    records = files.interleave(
        _shard_reader(shards, compression),
        cycle_length=min(len(shards), 64) if num_parallel_reads is None else parallel_reads,
        block_length=block,
        num_parallel_calls=parallel_reads,
        deterministic=deterministic,
    )
    cache_file = cache if isinstance(cache, str) else ""
    # Index-mode records are references: caching them would still read every source
    # byte each epoch, so the decoded examples are cached instead.
    cache_decoded = bool(cache) and spans is not None
    if cache and not cache_decoded:
        records = records.cache(cache_file)
    buffer_examples = shuffle_buffer or DEFAULT_SHUFFLE_EXAMPLES
    if shuffle and not cache_decoded:
        buffer_records = max(2, math.ceil(buffer_examples / k))
        records = records.shuffle(buffer_records, seed=seed, reshuffle_each_iteration=True)

    decode = make_decoder(spec, chosen, spans)
    ragged = any(f.variable for f in chosen)
    record_bytes = max(1, sum(s.num_bytes for s in shards)) / max(
        1, sum(_records(s, k) for s in shards)
    )
    if spans is not None:  # records hold references: size calls by the bytes decoded
        record_bytes = max(1.0, (k / 2) * sum(_example_bytes(f) for f in chosen))
    per_call = max(1, math.ceil((batch_size or 1) / k), int(DECODE_BYTES // record_bytes))
    if spans is not None and shuffle:
        # Index records hold ~8 MiB of consecutive rows: decode several random records per
        # call so that the within-batch shuffle mixes rows from several places.
        per_call = max(per_call, SHUFFLE_RECORDS_PER_CALL)

    def decoded(batches):
        return batches.map(decode, num_parallel_calls=parallel_calls, deterministic=deterministic)

    def batched(examples):
        """Decoded record batches -> the elements the caller asked for."""
        if shuffle:
            examples = examples.map(_shuffle_within(seed, ragged))
        if batch_size is None:
            ds = _unbatch(examples, chosen)
            if ragged:
                ds = ds.map(_dense_example)
        elif ragged:
            ds = _unbatch(examples, chosen).ragged_batch(batch_size, drop_remainder=drop_remainder)
        else:
            ds = examples.rebatch(batch_size, drop_remainder=drop_remainder)
        if supervised is not None:
            x_names, y_names = supervised
            ds = ds.map(lambda e: (_pick(e, x_names), _pick(e, y_names)))
        if map_fn is not None:
            ds = ds.map(map_fn, num_parallel_calls=parallel_calls, deterministic=deterministic)
        return ds

    options = tf.data.Options()
    # Measured on scene rows (benchmarks/read_bench.py): with the autotuner on, each pass
    # settled at random on ~1.1 cores (~6k examples/s) or ~1.7 cores (~9k); off, 16 of
    # 16 passes ran at 8-10.5k. AUTOTUNE parallelism then means "the core count".
    options.autotune.enabled = autotune
    if address is not None:
        # Service workers run pure ops only. Copy mode: everything up to the finished
        # batches (and map_fn) runs there. Index mode: the records cross the service as
        # they are, and are decoded here, where the numpy_function can run.
        if spans is None:
            stream = batched(decoded(records.batch(per_call)))
        else:
            stream = records.batch(per_call)
        stream = stream.repeat(epochs) if epochs != 1 else stream
        stream = distribute(
            stream.with_options(options), address, mode, job_name, service_compression
        )
        ds = batched(decoded(stream)) if spans is not None else stream
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    examples = decoded(records.batch(per_call))
    if cache_decoded:
        examples = examples.cache(cache_file)
        if shuffle:
            per_batch = max(1, per_call * k // 2)  # examples per decoded batch, roughly
            examples = examples.shuffle(
                max(2, math.ceil(buffer_examples / per_batch)),
                seed=seed,
                reshuffle_each_iteration=True,
            )
    ds = batched(examples)
    ds = ds.apply(
        tf.data.experimental.assert_cardinality(
            _cardinality(num_examples, batch_size, drop_remainder)
        )
    )
    if epochs != 1:
        # Repeating the whole pipeline keeps epochs apart: each one reshuffles the
        # shards and refills the shuffle buffer, and ends with its own last batch.
        ds = ds.repeat(epochs)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _shard_reader(shards, compression: str) -> Callable:
    """(shard path, its record count) -> its :func:`shard_records` elements; counted
    (a record that does not read names its shard) when the manifest gives every count."""
    counted = all(s.num_records for s in shards)
    return lambda path, count: shard_records(
        path, count, compression=compression, buffer_size=READ_BUFFER_BYTES, counted=counted
    )


def _span_reader(spec, chosen, allowed_roots) -> SpanReader | None:
    """The reader of referenced features, after checking the sources; None if none."""
    referenced = [f for f in chosen if f.storage == "reference"]
    if not referenced:
        return None
    names = [f.name for f in referenced]
    sources = resolve_sources(
        spec.directory, list(spec.sources), spec.source_roots, names, allowed_roots=allowed_roots
    )
    stored = {f.name: (from_stored(f.dtype), tuple(f.shape)) for f in referenced}
    return SpanReader(sources, stored, spec.rows_per_record)


def _records(shard, k: int) -> int:
    """Records in a shard (index-mode records hold fewer than ``k`` examples)."""
    return shard.num_records or math.ceil(shard.num_examples / k)


def _example_bytes(feature) -> int:
    if feature.encoding != "raw" or feature.variable:
        return 64
    return int(np.prod(feature.shape, dtype=np.int64)) * from_stored(feature.dtype).itemsize


def _check_options(batch_size, shuffle, shuffle_buffer, seed, repeat, drop_remainder) -> None:
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if drop_remainder and batch_size is None:
        raise UsageError("drop_remainder=True needs batch_size=")
    if shuffle_buffer is not None and not shuffle:
        raise UsageError("shuffle_buffer= needs shuffle=True")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise UsageError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    if seed is not None and not shuffle:
        raise UsageError("seed= has no effect without shuffle=True")
    if repeat is not None and not isinstance(repeat, bool):
        if not isinstance(repeat, int) or repeat < 1:
            raise UsageError(f"repeat must be a number of epochs >= 1 or True, got {repeat!r}")


def _check_service_options(
    service, processing_mode, job_name, cache, input_context, num_workers, worker_index
) -> None:
    if service is None:
        if processing_mode is not None or job_name is not None:
            raise UsageError("processing_mode= and job_name= need service=")
        return
    if cache:
        raise UsageError("cache= with service=: the service's workers read every epoch")
    if input_context is not None or num_workers is not None or worker_index is not None:
        raise UsageError(
            "input_context=/num_workers= with service=: the service shares the shards "
            "out (processing_mode=, job_name=)"
        )


def _unbatch(examples, features):
    """Split decoded batches into examples.

    ``unbatch`` crashes TensorFlow 2.21 (segfault) on zero-size features such as shape
    (N, 0); slicing each batch does not.
    """
    if any(0 in f.shape for f in features):
        return examples.flat_map(tf.data.Dataset.from_tensor_slices)
    return examples.unbatch()


def _dense_example(example: dict) -> dict:
    """A single example is rectangular: ragged components become dense tensors."""
    return {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in example.items()}


def _needed(features, supervised) -> list[str] | None:
    if supervised is None:
        return list(features) if features is not None else None
    names = [n for part in supervised for n in ([part] if isinstance(part, str) else part)]
    if features is not None:
        outside = [n for n in names if n not in features]
        if outside:
            raise UsageError(f"supervised names {outside} are not in features={list(features)}")
    return list(features) if features is not None else names


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
