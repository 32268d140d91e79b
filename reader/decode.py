"""Decode a batch of block records in one vectorised step.

One ``parse_example`` over the batch of serialized records, then per feature one
``decode_raw`` (padded to a full block with ``fixed_length``), a reshape, and a mask
that drops the padding of short last records. Nothing runs in Python per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hdf5_to_records._tf import import_tensorflow

from .spec import DatasetSpec, FeatureInfo

tf = import_tensorflow()


def tf_dtype(name: str):
    """The TensorFlow dtype a stored dtype decodes to (bool is stored as uint8)."""
    return tf.string if name == "string" else tf.as_dtype("uint8" if name == "bool" else name)


def element_spec(feature: FeatureInfo):
    """Static shape and dtype of one decoded example of ``feature``."""
    dtype = tf.bool if feature.dtype == "bool" else tf_dtype(feature.dtype)
    return tf.TensorShape(feature.shape), dtype


def make_decoder(spec: DatasetSpec, features: tuple[FeatureInfo, ...]) -> Callable:
    """A function: serialized records [R] -> {name: [N, *shape]} (ragged where varies)."""
    parse_spec = {spec.count_key: tf.io.FixedLenFeature([1], tf.int64)}
    for feature in features:
        if feature.encoding == "bytes":
            parse_spec[feature.name] = tf.io.VarLenFeature(tf.string)
        else:
            parse_spec[feature.name] = tf.io.FixedLenFeature([], tf.string)
        if feature.ragged:
            parse_spec[feature.name + spec.shape_suffix] = tf.io.VarLenFeature(tf.int64)
    k = spec.rows_per_record

    def decode(serialized):
        parsed = tf.io.parse_example(serialized, parse_spec)
        counts = parsed[spec.count_key][:, 0]
        out = {}
        for feature in features:
            value = parsed[feature.name]
            if feature.ragged:
                dims = parsed[feature.name + spec.shape_suffix].values
                out[feature.name] = _decode_ragged(feature, value, dims)
            elif feature.encoding == "bytes":
                out[feature.name] = tf.reshape(value.values, [-1, *feature.shape])
            else:
                out[feature.name] = _decode_block(feature, value, counts, k)
            if feature.dtype == "bool":
                out[feature.name] = tf.cast(out[feature.name], tf.bool)
        return out

    return decode


def _decode_block(feature: FeatureInfo, raw, counts, k: int):
    """[R] block strings -> [sum(counts), *shape]."""
    dtype = tf_dtype(feature.dtype)
    per_example = int(np.prod(feature.shape, dtype=np.int64))
    item = np.dtype("u1" if feature.dtype == "bool" else feature.dtype).itemsize
    if per_example == 0:
        return tf.zeros([tf.reduce_sum(counts), *feature.shape], dtype)
    values = tf.io.decode_raw(raw, dtype, little_endian=True, fixed_length=k * per_example * item)
    if k == 1:
        return tf.reshape(values, [-1, *feature.shape])
    blocks = tf.reshape(values, [-1, k, *feature.shape])
    full = tf.reduce_all(tf.equal(counts, k))
    return tf.cond(
        full,
        lambda: tf.reshape(blocks, [-1, *feature.shape]),
        lambda: tf.boolean_mask(blocks, tf.sequence_mask(counts, k)),
    )


def _decode_ragged(feature: FeatureInfo, value, dims):
    """Concatenated per-example values and their shapes -> a RaggedTensor [N, ...]."""
    ndim = len(feature.shape)
    if feature.encoding == "bytes":
        flat = value.values
    else:
        flat = tf.io.decode_raw(tf.strings.reduce_join(value), tf_dtype(feature.dtype))
    dims = tf.reshape(dims, [-1, ndim]) if ndim else tf.zeros([tf.size(dims), 0], tf.int64)
    if ndim == 0:
        return flat
    last_varying = max(i for i, d in enumerate(feature.shape) if d is None)
    inner = list(feature.shape[last_varying + 1 :])
    values = tf.reshape(flat, [-1, *inner])
    lengths = [dims[:, 0]]
    repeats = tf.ones_like(dims[:, 0])
    for level in range(1, last_varying + 1):
        repeats = repeats * dims[:, level - 1]
        lengths.append(tf.repeat(dims[:, level], repeats))
    return tf.RaggedTensor.from_nested_row_lengths(values, lengths, validate=False)
