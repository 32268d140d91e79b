"""Decode a batch of block records in one vectorised step.

One ``parse_example`` over the batch of serialized records, then per feature one
``decode_raw`` (padded to a full block with ``fixed_length``), a reshape, and a mask
that drops the padding of short last records. Nothing runs in Python per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.format.dataset_spec import DatasetSpec, FeatureInfo
from hdf5_to_records.format.record_keys import INDICES_SUFFIX
from hdf5_to_records.index.spans import SpanReader

from . import shutdown

tf = import_tensorflow()


def tf_dtype(name: str):
    """The TensorFlow dtype a stored dtype decodes to (bool is stored as uint8)."""
    return tf.string if name == "string" else tf.as_dtype("uint8" if name == "bool" else name)


def element_spec(feature: FeatureInfo):
    """Static shape and dtype of one decoded example of ``feature``."""
    dtype = tf.bool if feature.dtype == "bool" else tf_dtype(feature.dtype)
    return tf.TensorShape(feature.shape), dtype


def make_decoder(
    spec: DatasetSpec, features: tuple[FeatureInfo, ...], spans: SpanReader | None = None
) -> Callable:
    """A function: serialized records [R] -> {name: [N, *shape]} (ragged where varies).

    Referenced features (index mode) are read by ``spans``, one Python call per batch
    of records.
    """
    parse_spec = {spec.count_key: tf.io.FixedLenFeature([1], tf.int64)}
    referenced = tuple(f for f in features if f.storage == "reference")
    if referenced:
        parse_spec[spec.file_key] = tf.io.FixedLenFeature([1], tf.int64)
    for feature in features:
        if feature.storage == "reference":
            for suffix in (spec.ref_suffix, spec.take_suffix):
                parse_spec[feature.name + suffix] = tf.io.RaggedFeature(
                    tf.int64, row_splits_dtype=tf.int64
                )
        elif feature.encoding == "bytes":
            parse_spec[feature.name] = tf.io.VarLenFeature(tf.string)
        else:
            parse_spec[feature.name] = tf.io.FixedLenFeature([], tf.string)
        if feature.ragged or feature.sparse:
            parse_spec[feature.name + spec.shape_suffix] = tf.io.VarLenFeature(tf.int64)
        if feature.sparse:
            parse_spec[feature.name + INDICES_SUFFIX] = tf.io.FixedLenFeature([], tf.string)
    k = spec.rows_per_record

    def decode(serialized):
        parsed = tf.io.parse_example(serialized, parse_spec)
        counts = parsed[spec.count_key][:, 0]
        out = _read_referenced(spec, referenced, spans, parsed, counts) if referenced else {}
        for feature in features:
            if feature.storage == "reference":
                continue
            value = parsed[feature.name]
            if feature.sparse:
                counts_of = parsed[feature.name + spec.shape_suffix].values
                out.update(_decode_sparse(feature, value, counts_of, parsed))
            elif feature.ragged and not feature.variable:
                # Per-example shapes were stored (groups, transforms) but never varied.
                flat = _flat_values(feature, value)
                out[feature.name] = tf.reshape(flat, [-1, *feature.shape])
            elif feature.ragged:
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


def _read_referenced(spec: DatasetSpec, referenced, spans: SpanReader, parsed, counts) -> dict:
    """Referenced features of a batch of records, read by one ``numpy_function`` call."""
    args = [parsed[spec.file_key][:, 0], counts]
    for feature in referenced:
        for suffix in (spec.ref_suffix, spec.take_suffix):
            ragged = parsed[feature.name + suffix]
            args += [ragged.values, ragged.row_splits]

    shutdown.arm()

    names = [f.name for f in referenced]

    def read(file_ids, counts, *arrays):
        with shutdown.GATE.call():
            return spans.read_many(names, file_ids, counts, *arrays)

    values = tf.numpy_function(read, args, [tf_dtype(f.dtype) for f in referenced], stateful=False)
    out = {}
    for feature, value in zip(referenced, values):
        value.set_shape([None, *feature.shape])
        out[feature.name] = tf.cast(value, tf.bool) if feature.dtype == "bool" else value
    return out


def _decode_block(feature: FeatureInfo, raw, counts, k: int):
    """[R] block strings -> [sum(counts), *shape]."""
    dtype = tf_dtype(feature.dtype)
    per_example = int(np.prod(feature.shape, dtype=np.int64))
    item = np.dtype("u1" if feature.dtype == "bool" else feature.dtype).itemsize
    if per_example == 0:
        return tf.zeros([tf.reduce_sum(counts), *feature.shape], dtype)
    # decode_raw pads or cuts to fixed_length: a record whose size does not match the
    # manifest's dtype and shape (an edited manifest) must fail, not decode as garbage.
    expected = counts * (per_example * item)
    check = tf.debugging.assert_equal(
        tf.cast(tf.strings.length(raw), tf.int64),
        expected,
        message=f"feature {feature.name!r}: a record's size does not match the manifest's "
        f"dtype {feature.dtype} and shape {feature.shape} (edited manifest?)",
    )
    with tf.control_dependencies([check]):
        raw = tf.identity(raw)
    values = _decode_raw(raw, feature.dtype, fixed_length=k * per_example * item)
    if k == 1:
        return tf.reshape(values, [-1, *feature.shape])
    blocks = tf.reshape(values, [-1, k, *feature.shape])
    full = tf.reduce_all(tf.equal(counts, k))
    return tf.cond(
        full,
        lambda: tf.reshape(blocks, [-1, *feature.shape]),
        lambda: tf.boolean_mask(blocks, tf.sequence_mask(counts, k)),
    )


# decode_raw's padded kernel lacks these dtypes: decode bytes, then bitcast.
_BITCAST = {"float16", "complex64", "complex128", "uint32", "uint64"}


def _decode_raw(raw, dtype_name: str, *, fixed_length: int | None = None):
    """Raw little-endian bytes -> values of the stored dtype (bool as uint8)."""
    dtype = tf_dtype(dtype_name)
    if dtype_name not in _BITCAST:
        if fixed_length is None:
            return tf.io.decode_raw(raw, dtype, little_endian=True)
        return tf.io.decode_raw(raw, dtype, little_endian=True, fixed_length=fixed_length)
    item = np.dtype(dtype_name).itemsize
    if fixed_length is None:
        octets = tf.io.decode_raw(raw, tf.uint8)
    else:
        octets = tf.io.decode_raw(raw, tf.uint8, fixed_length=fixed_length)
    shape = tf.concat([tf.shape(octets)[:-1], [-1, item]], axis=0)
    return tf.bitcast(tf.reshape(octets, shape), dtype)


def _flat_values(feature: FeatureInfo, value):
    """All values of a ragged-encoded feature in a batch of records, flattened."""
    if feature.encoding == "bytes":
        return value.values
    return _decode_raw(tf.strings.reduce_join(value), feature.dtype)


def _decode_sparse(feature: FeatureInfo, value, counts, parsed) -> dict:
    """A sparse feature's values and column indices, as RaggedTensors [N, None]; the
    pipeline turns them into a ``tf.SparseTensor`` once batched (:func:`sparse_rows`)."""
    values = _decode_raw(tf.strings.reduce_join(value), feature.dtype)
    indices = tf.io.decode_raw(
        tf.strings.reduce_join(parsed[feature.name + INDICES_SUFFIX]), tf.int64, little_endian=True
    )
    return {
        feature.name: tf.RaggedTensor.from_row_lengths(values, counts),
        feature.name + INDICES_SUFFIX: tf.RaggedTensor.from_row_lengths(indices, counts),
    }


def sparse_rows(features: tuple[FeatureInfo, ...], *, dense: bool, batched: bool) -> Callable:
    """A map function: each sparse feature's (values, indices) -> ``tf.SparseTensor`` of
    dense shape ``[batch, columns]`` (``[columns]`` unbatched), or dense rows."""
    sparse = [f for f in features if f.sparse]

    def convert(example: dict) -> dict:
        example = dict(example)
        for feature in sparse:
            values = example[feature.name]
            indices = example.pop(feature.name + INDICES_SUFFIX)
            columns = tf.constant(feature.shape[0], tf.int64)
            if batched:
                coords = tf.stack([indices.value_rowids(), indices.flat_values], axis=1)
                shape = tf.stack([indices.nrows(), columns])
                matrix = tf.SparseTensor(coords, values.flat_values, shape)
            else:
                matrix = tf.SparseTensor(indices[:, None], values, columns[None])
            if feature.dtype == "bool":
                matrix = tf.SparseTensor(
                    matrix.indices, tf.cast(matrix.values, tf.bool), matrix.dense_shape
                )
            example[feature.name] = tf.sparse.to_dense(matrix) if dense else matrix
        return example

    return convert


def _decode_ragged(feature: FeatureInfo, value, dims):
    """Concatenated per-example values and their shapes -> a RaggedTensor [N, ...]."""
    ndim = len(feature.shape)
    flat = _flat_values(feature, value)
    dims = tf.reshape(dims, [-1, ndim])
    last_varying = max(i for i, d in enumerate(feature.shape) if d is None)
    inner = list(feature.shape[last_varying + 1 :])
    # The row count is explicit: with a zero-size inner dimension, -1 cannot infer it.
    rows = tf.reduce_sum(tf.reduce_prod(dims[:, : last_varying + 1], axis=1))
    values = tf.reshape(flat, [rows, *inner])
    lengths = [dims[:, 0]]
    repeats = tf.ones_like(dims[:, 0])
    for level in range(1, last_varying + 1):
        repeats = repeats * dims[:, level - 1]
        lengths.append(tf.repeat(dims[:, level], repeats))
    return tf.RaggedTensor.from_nested_row_lengths(values, lengths, validate=False)
