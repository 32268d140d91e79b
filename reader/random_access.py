"""The pipeline over shards with a record index: positioned reads in a seeded order.

    range(windows of all epochs) -> read window g (one numpy_function: positioned reads,
    checked; raw blocks come out as rows, anything else as records that TensorFlow
    parses) -> cut into batches -> the caller's elements -> prefetch

Window ``g`` is window ``g % W`` of epoch ``g // W`` of :class:`reader.order.EpochOrder`,
so every element is a pure function of (seed, g): with tf.data's symbolic
checkpointing the saved state of an iterator is a few counters, whatever the row size
and however much is prefetched, and a restored iterator goes on with the same batches.
Memory is bounded in bytes: a window holds about ``window_bytes`` of examples, a few
windows are read at once, and the prefetch buffer holds about ``PREFETCH_BYTES``.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.format.dataset_spec import FeatureInfo

from . import shutdown
from .decode import make_decoder, tf_dtype
from .order import EpochOrder
from .positioned import PositionedReader, RawFeature
from .record_table import load_table

tf = import_tensorflow()

DEFAULT_WINDOW_BYTES = 32 << 20  # decoded examples per window (the shuffle's reach)
IN_FLIGHT_BYTES = 128 << 20  # windows read at once: at most this much, at least 2
PREFETCH_BYTES = 64 << 20  # finished elements buffered ahead of the consumer
MAX_PREFETCH = 64  # elements, for tiny ones
UNBATCHED_WINDOW = 256  # examples per window of unbatched one-example records


def raw_features(features: tuple[FeatureInfo, ...]) -> tuple[RawFeature, ...] | None:
    """The features as raw blocks the positioned reader can place itself; None unless
    every one is a copied, fixed-shape, numeric block."""
    out = []
    for f in features:
        if f.storage != "copy" or f.encoding != "raw" or f.ragged or f.variable or f.sparse:
            return None
        stored = np.dtype("u1" if f.dtype == "bool" else f.dtype)
        out.append(RawFeature(f.name, stored, tuple(f.shape), boolean=f.dtype == "bool"))
    return tuple(out)


def indexed_elements(source, o, seed: int | None):
    """The batches (or examples) of ``source``'s shards, in the order of ``seed``; the
    prefetch depth that holds about ``PREFETCH_BYTES``; and the :class:`PositionedReader`."""
    table = load_table(source.shards)
    n = table.num_examples
    # Decoded bytes per example: index-mode shards hold references, not the rows.
    stored = sum(s.num_bytes for s in source.shards) / max(1, n)
    example_bytes = max(1.0, stored, sum(_decoded_bytes(f) for f in source.chosen))
    batch = o.batch_size or 1
    single = bool((table.count <= 1).all())
    window_bytes = o.window_bytes or DEFAULT_WINDOW_BYTES
    if single:  # each example is its own record: the record order already mixes
        window = batch if o.batch_size else UNBATCHED_WINDOW
    else:
        window = batch * max(1, int(window_bytes // (batch * example_bytes)))
        if o.shuffle_buffer is not None:
            window = batch * max(1, math.ceil(o.shuffle_buffer / batch))
    order = EpochOrder(table.count, window, seed if o.shuffle else None)
    raw = raw_features(source.chosen) if source.spans is None else None
    reader = PositionedReader(table, raw or ())
    # One-example records, batched: a window is a batch, handed on as it is (no cut).
    direct = single and o.batch_size is not None
    per_epoch = order.windows_per_epoch
    if direct and o.drop_remainder:
        per_epoch = n // batch  # the short last window is never read
    total = per_epoch * o.epochs if o.epochs is not None else sys.maxsize
    if per_epoch == 0 or (o.drop_remainder and n < batch):
        total = 0  # not one element an epoch (an empty split, or all dropped): no window
    calls = o.num_parallel_calls or min(
        os.cpu_count() or 2, max(2, IN_FLIGHT_BYTES // int(window * example_bytes))
    )
    if raw:
        read = _raw_window(order, reader, raw, per_epoch)
    else:
        read = _record_window(source, order, reader, per_epoch)
    # In order unless asked otherwise: reordering ops cannot be checkpointed symbolically,
    # and the order is already the seed's (unseeded shuffles draw one at load).
    windows = _positions(total, order.seed).map(
        read, num_parallel_calls=calls, deterministic=o.deterministic is not False
    )
    if direct:
        elements = windows.map(_static_batch(batch) if o.drop_remainder else (lambda w: w))
    else:
        elements = windows.flat_map(_cut(o.batch_size, o.drop_remainder, source.ragged))
    depth = max(2, min(MAX_PREFETCH, int(PREFETCH_BYTES // (batch * example_bytes))))
    return elements, depth, reader


def _positions(total: int, seed: int | None):
    """(window g, salt) for g in 0..total-1. Shuffled, the salt is drawn per iteration
    from ``seed`` (tf.data's ``Dataset.random(rerandomize_each_iteration=True)``), so a
    dataset iterated again (a Keras epoch) gets a fresh order, and a checkpoint restores
    the salt with the position."""
    if seed is None:
        return tf.data.Dataset.range(total).map(lambda g: (g, tf.constant(0, tf.int64)))
    salts = tf.data.Dataset.random(seed=seed % (1 << 63), rerandomize_each_iteration=True)
    return salts.take(1).flat_map(
        lambda salt: tf.data.Dataset.range(total).map(lambda g: (g, salt))
    )


def _decoded_bytes(feature: FeatureInfo) -> int:
    if feature.variable or feature.sparse or feature.dtype == "string":
        return 0  # counted in the shards' bytes
    item = np.dtype("u1" if feature.dtype == "bool" else feature.dtype).itemsize
    return int(np.prod(feature.shape, dtype=np.int64)) * item


def _raw_window(order: EpochOrder, reader: PositionedReader, raw: tuple[RawFeature, ...],
                per_epoch: int):  # fmt: skip
    """Window g -> {name: rows}, read straight into arrays by one numpy_function."""
    shutdown.arm()

    def read(g, salt):
        with shutdown.GATE.call():
            epoch, w = divmod(int(g), per_epoch)
            window = order.window(epoch, w, int(salt))
            arrays = reader.rows(window.records, window.start, window.stop)
            if window.permutation is not None:
                arrays = [a[window.permutation] for a in arrays]
            return arrays

    def window(g, salt):
        dtypes = [tf_dtype(str(f.dtype)) for f in raw]
        values = tf.numpy_function(read, [g, salt], dtypes, stateful=False)
        out = {}
        for feature, value in zip(raw, values):
            value.set_shape([None, *feature.shape])
            out[feature.name] = tf.cast(value, tf.bool) if feature.boolean else value
        return out

    return window


def _record_window(source, order: EpochOrder, reader: PositionedReader, per_epoch: int):
    """Window g -> decoded examples: the records read (checked) by one numpy_function,
    parsed and decoded by TensorFlow, then cut to the window and permuted."""
    shutdown.arm()
    decode = make_decoder(source.spec, source.chosen, source.spans)

    def read(g, salt):
        with shutdown.GATE.call():
            epoch, w = divmod(int(g), per_epoch)
            window = order.window(epoch, w, int(salt))
            permutation = window.permutation
            if permutation is None:
                permutation = np.zeros(0, np.int64)
            return (
                reader.records(window.records),
                np.int64(window.start),
                np.int64(window.stop),
                permutation,
            )

    def window(g, salt):
        records, start, stop, permutation = tf.numpy_function(
            read, [g, salt], [tf.string, tf.int64, tf.int64, tf.int64], stateful=False
        )
        records.set_shape([None])
        permutation.set_shape([None])
        start.set_shape([])
        stop.set_shape([])
        examples = {k: v[start:stop] for k, v in decode(records).items()}
        return tf.cond(
            tf.size(permutation) > 0,
            lambda: {k: tf.gather(v, permutation) for k, v in examples.items()},
            lambda: examples,
        )

    return window


def _cut(batch_size: int | None, drop_remainder: bool, ragged: bool):
    """A window -> its batches of ``batch_size`` (the last one short unless dropped), or
    its examples one by one."""

    def cut(window: dict):
        first = next(iter(window.values()))
        n = first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(first, tf.int64)[0]
        if batch_size is None:
            examples = tf.data.Dataset.from_tensor_slices(window)
            if ragged:
                examples = examples.map(dense_example)
            return examples
        count = n // batch_size if drop_remainder else (n + batch_size - 1) // batch_size

        def batch(i):
            out = {k: v[i * batch_size : (i + 1) * batch_size] for k, v in window.items()}
            return _static_batch(batch_size)(out) if drop_remainder else out

        return tf.data.Dataset.range(count).map(batch)

    return cut


def _static_batch(batch_size: int):
    """Every batch is whole (drop_remainder): say so, as ``Dataset.batch`` does."""

    def static(batch: dict) -> dict:
        for v in batch.values():
            if not isinstance(v, tf.RaggedTensor):
                v.set_shape([batch_size, *v.shape[1:]])
        return batch

    return static


def dense_example(example: dict) -> dict:
    """A single example is rectangular: ragged components become dense tensors."""
    return {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in example.items()}
