"""One read pipeline, measured in this (fresh) process; the worker of ``read_bench.py``.

    python benchmarks/read_pipelines.py run WORKLOAD PIPELINE --source SRC.h5 \
        --records DIR [--naive DIR] [--batch N] [--set KEY=VALUE ...]
    python benchmarks/read_pipelines.py write-naive SRC.h5 DIR --shards N

``run`` builds the pipeline, drains it once untimed (warm-up: page cache, thread pools,
tf.data autotuning state), then once timed, and prints one JSON line: examples and
batches of the timed pass, its wall seconds, this process's CPU seconds over it
(``getrusage(RUSAGE_SELF)``: every thread, user + system) and the whole machine's busy
CPU seconds over it (``/proc/stat``), so the caller can tell how busy other processes were.

Pipelines (``WORKLOAD`` is ``scene`` or ``small``; every element is a dict of batched
tensors keyed by feature name):

- ``A``: the classic answer: ``from_generator`` over an h5py row generator,
  ``.map(identity, num_parallel_calls=5).prefetch(1000).batch(B)``.
- ``B``: naive TFRecords: one ``tf.train.Example`` per row (``write-naive``),
  ``TFRecordDataset(files, num_parallel_reads=len(files))``,
  ``.map(parse_single_example, AUTOTUNE).batch(B).prefetch(AUTOTUNE)``.
- ``C``: ``reader.load(DIR, "train", batch_size=B)``, default options.
- ``Cx``: the reader's pipeline rebuilt inline with the knobs of ``--set`` (see
  :data:`CX_DEFAULTS`), to find where ``C``'s time goes.
- ``D``: the ceiling: the arrays read into memory first (untimed), as tensors,
  ``from_tensor_slices(...).batch(B).prefetch(AUTOTUNE)``.
- ``H``: no pipeline: h5py reads every dataset of the source whole into memory, on one
  thread (index mode's baseline for compressed sources).

The drain loop (``--loop``) is ``python`` (``for _ in ds: pass``, what a hand-written
training loop does) or ``graph`` (``ds.reduce``: the whole pass in one op, no Python
per batch, closer to ``model.fit`` with many steps per execution).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import resource
import time

import h5py
import measure
import numpy as np

from hdf5_to_records._tf import import_tensorflow

NAIVE_PATTERN = "naive.tfrecord-*"

# Knobs of the inline reader pipeline (Cx); the defaults are reader/pipeline.py's.
CX_DEFAULTS: dict[str, str] = {
    "decode_bytes": str(4 << 20),  # records per decode call: at least this many bytes' worth
    "decode_examples": "0",  # if > 0: instead, this many examples per call (the old default)
    "read_buffer": str(16 << 20),  # TFRecordDataset buffer_size, bytes
    "cycle": "shards",  # interleave cycle_length: "shards" = min(shards, 64), or a number
    "reads": "autotune",  # interleave num_parallel_calls: "autotune" or a number
    "calls": "autotune",  # decode map num_parallel_calls: "autotune" or a number
    "records": "batch",  # batch: records.batch(n).map(decode); single: records.map(decode_one)
    "batching": "rebatch",  # rebatch | unbatch (unbatch().batch(B))
    "deterministic": "1",
    "prefetch": "autotune",  # final prefetch buffer: "autotune" or a number
    "autotune": "1",  # tf.data.Options().autotune.enabled
    "min_parallelism": "0",  # if > 0: tf.data.Options().autotune.min_parallelism
    "inject_prefetch": "default",  # 0/1: Options().experimental_optimization.inject_prefetch
    "algorithm": "default",  # tf.data.experimental.AutotuneAlgorithm name, e.g. MAX_PARALLELISM
    "checked": "0",  # 1: each shard through reader.records.shard_records (counted, named errors)
}


def tensorflow():
    return import_tensorflow()


def scene_or_small_signature(source: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per feature of the source file: per-row shape and dtype."""
    with h5py.File(source, "r") as f:
        return {name: (f[name].shape[1:], f[name].dtype) for name in f}


def build_a(source: str, batch: int):
    tf = tensorflow()
    signature = scene_or_small_signature(source)

    def rows():
        with h5py.File(source, "r") as f:
            datasets = {name: f[name] for name in signature}
            n = next(iter(datasets.values())).shape[0]
            for i in range(n):
                yield {name: d[i] for name, d in datasets.items()}

    ds = tf.data.Dataset.from_generator(
        rows,
        output_signature={
            name: tf.TensorSpec(shape, tf.as_dtype(dtype))
            for name, (shape, dtype) in signature.items()
        },
    )
    return ds.map(lambda x: x, num_parallel_calls=5).prefetch(1000).batch(batch)


def build_b(source: str, naive_dir: str, batch: int):
    tf = tensorflow()
    signature = scene_or_small_signature(source)
    spec = {}
    for name, (shape, dtype) in signature.items():
        kind = tf.float32 if np.dtype(dtype).kind == "f" else tf.int64
        spec[name] = tf.io.FixedLenFeature(shape, kind)
    files = sorted(glob.glob(os.path.join(naive_dir, NAIVE_PATTERN)))
    if not files:
        raise SystemExit(f"no {NAIVE_PATTERN} files in {naive_dir}")
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=len(files))
    ds = ds.map(lambda r: tf.io.parse_single_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def build_c(records: str, batch: int):
    import reader

    return reader.load(records, "train", batch_size=batch)


def build_d(source: str, batch: int):
    tf = tensorflow()
    with h5py.File(source, "r") as f:
        arrays = {name: f[name][...] for name in f}
    tensors = {name: tf.convert_to_tensor(a) for name, a in arrays.items()}
    del arrays
    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch).prefetch(tf.data.AUTOTUNE)


def _auto(value: str):
    tf = tensorflow()
    return tf.data.AUTOTUNE if value == "autotune" else int(value)


def _single_decoder(spec, features):
    """One record -> {name: [n, *shape]}: ``decode_raw`` of exactly the record's bytes.

    Fixed-shape raw features only. Without a batch of records there is no padding to a
    full block (``fixed_length``), no mask for a short last record, and no copy of the
    serialized records into a batch.
    """
    tf = tensorflow()
    parse_spec = {f.name: tf.io.FixedLenFeature([], tf.string) for f in features}

    def decode(serialized):
        parsed = tf.io.parse_single_example(serialized, parse_spec)
        out = {}
        for f in features:
            values = tf.io.decode_raw(parsed[f.name], tf.as_dtype(f.dtype), little_endian=True)
            out[f.name] = tf.reshape(values, [-1, *f.shape])
        return out

    return decode


def build_cx(records: str, batch: int, knobs: dict[str, str]):
    """reader/pipeline.py's default path (no shuffle, one epoch), with its knobs exposed."""
    tf = tensorflow()
    from hdf5_to_records.format.dataset_spec import load_spec
    from reader.decode import make_decoder

    spec = load_spec(records)
    shards = spec.split("train")
    k = spec.rows_per_record
    features = spec.features
    num_examples = sum(s.num_examples for s in shards)
    cycle = min(len(shards), 64) if knobs["cycle"] == "shards" else int(knobs["cycle"])
    deterministic = knobs["deterministic"] == "1"
    files = tf.data.Dataset.from_tensor_slices(
        ([s.path for s in shards], [s.num_records for s in shards])
    )
    buffer = int(knobs["read_buffer"])
    checked = knobs["checked"] == "1"
    if checked:
        from reader.records import shard_records

        def read_shard(f, n):
            return shard_records(f, n, buffer_size=buffer)
    else:

        def read_shard(f, _n):
            return tf.data.TFRecordDataset(f, "", buffer)

    records_ds = files.interleave(
        read_shard,
        cycle_length=cycle,
        num_parallel_calls=_auto(knobs["reads"]),
        deterministic=deterministic,
    )
    if int(knobs["decode_examples"]) > 0:
        per_call = max(1, math.ceil(max(batch, int(knobs["decode_examples"])) / k))
    else:
        record_bytes = sum(s.num_bytes for s in shards) / sum(
            math.ceil(s.num_examples / k) for s in shards
        )
        per_call = max(1, math.ceil(batch / k), int(int(knobs["decode_bytes"]) // record_bytes))
    calls = _auto(knobs["calls"])
    if knobs["records"] == "single":
        if any(f.ragged or f.encoding != "raw" or f.dtype == "bool" for f in features):
            raise SystemExit("records=single handles fixed-shape raw numeric features only")
        examples = records_ds.map(
            _single_decoder(spec, features), num_parallel_calls=calls, deterministic=deterministic
        )
    else:
        examples = records_ds.batch(per_call).map(
            make_decoder(spec, features), num_parallel_calls=calls, deterministic=deterministic
        )
    if knobs["batching"] == "unbatch":
        ds = examples.unbatch().batch(batch)
    else:
        ds = examples.rebatch(batch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(num_examples / batch)))
    ds = ds.prefetch(_auto(knobs["prefetch"]))
    options = tf.data.Options()
    options.autotune.enabled = knobs["autotune"] == "1"
    if int(knobs["min_parallelism"]) > 0:
        options.autotune.min_parallelism = int(knobs["min_parallelism"])
    if knobs["inject_prefetch"] != "default":
        options.experimental_optimization.inject_prefetch = knobs["inject_prefetch"] == "1"
    if knobs["algorithm"] != "default":
        algorithm = getattr(tf.data.experimental.AutotuneAlgorithm, knobs["algorithm"])
        options.autotune.autotune_algorithm = algorithm
    return ds.with_options(options)


def drain_python(ds) -> tuple[int, int]:
    """Iterate every batch; touch only the leading dimension of one tensor."""
    batches = examples = 0
    for element in ds:
        examples += next(iter(element.values())).shape[0]
        batches += 1
    return batches, examples


def drain_graph(ds) -> tuple[int, int]:
    """The whole pass in one ``reduce`` op: counts batches and examples, no Python per batch."""
    tf = tensorflow()

    def step(state, element):
        first = tf.nest.flatten(element)[0]
        return state[0] + 1, state[1] + tf.shape(first, out_type=tf.int64)[0]

    batches, examples = ds.reduce((np.int64(0), np.int64(0)), step)
    return int(batches), int(examples)


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def read_h5py(source: str) -> tuple[int, int]:
    """Every dataset of ``source`` read whole into memory by h5py, one thread."""
    with h5py.File(source, "r") as f:
        arrays = [f[name][...] for name in f]
    return 1, int(arrays[0].shape[0])


def timed_pass(drain) -> dict:
    """``drain() -> (batches, examples)`` once untimed (warm-up: page cache, thread pools,
    tf.data state), then once timed: what the timed pass did and cost."""
    started = time.perf_counter()
    _, warm_examples = drain()
    warmed = time.perf_counter()
    cpu_before, busy_before = cpu_seconds(), measure.machine_busy_seconds()
    t0 = time.perf_counter()
    batches, examples = drain()
    seconds = time.perf_counter() - t0
    user, system = (b - a for a, b in zip(cpu_before, cpu_seconds()))
    busy_after = measure.machine_busy_seconds()
    if examples != warm_examples:
        raise SystemExit(f"timed pass saw {examples} examples, warm-up {warm_examples}")
    return {
        "examples": examples,
        "batches": batches,
        "seconds": seconds,
        "cpu_s": user + system,
        "user_s": user,
        "sys_s": system,
        "machine_busy_s": None
        if busy_before is None or busy_after is None
        else busy_after - busy_before,
        "warmup_s": warmed - started,
    }


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    if args.pipeline == "H":  # h5py's own read of the whole source: no TensorFlow
        report = timed_pass(lambda: read_h5py(args.source))
        print(json.dumps({"workload": args.workload, "pipeline": "H", "knobs": None, **report}))
        return
    tensorflow()
    imported = time.perf_counter()
    knobs = dict(CX_DEFAULTS)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in knobs:
            raise SystemExit(f"--set {item}: unknown knob; known: {sorted(knobs)}")
        knobs[key] = value
    if args.pipeline == "A":
        ds = build_a(args.source, args.batch)
    elif args.pipeline == "B":
        ds = build_b(args.source, args.naive, args.batch)
    elif args.pipeline == "C":
        ds = build_c(args.records, args.batch)
    elif args.pipeline == "Cx":
        ds = build_cx(args.records, args.batch, knobs)
    else:
        ds = build_d(args.source, args.batch)
    built = time.perf_counter()
    drain = drain_graph if args.loop == "graph" else drain_python
    report = timed_pass(lambda: drain(ds))
    print(
        json.dumps(
            {
                "workload": args.workload,
                "pipeline": args.pipeline,
                "knobs": knobs if args.pipeline == "Cx" else None,
                **report,
                "import_s": imported - started,
                "build_s": built - imported,
            }
        )
    )


def write_naive(args: argparse.Namespace) -> None:
    """One ``tf.train.Example`` per row (``float_list`` / ``int64_list``), over N shards."""
    tf = tensorflow()
    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, NAIVE_PATTERN)):
        os.remove(old)
    with h5py.File(args.source, "r") as f:
        arrays = {name: f[name][...] for name in f}
    n = next(iter(arrays.values())).shape[0]
    for index in range(args.shards):
        lo, hi = round(n * index / args.shards), round(n * (index + 1) / args.shards)
        path = os.path.join(args.out, f"naive.tfrecord-{index:05d}-of-{args.shards:05d}")
        with tf.io.TFRecordWriter(path + ".partial") as writer:
            columns = {
                name: (a[lo:hi].reshape(hi - lo, -1).tolist(), a.dtype.kind == "f")
                for name, a in arrays.items()
            }
            for i in range(hi - lo):
                feature = {}
                for name, (rows, is_float) in columns.items():
                    row = rows[i] if isinstance(rows[i], list) else [rows[i]]
                    feature[name] = (
                        tf.train.Feature(float_list=tf.train.FloatList(value=row))
                        if is_float
                        else tf.train.Feature(int64_list=tf.train.Int64List(value=row))
                    )
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        os.replace(path + ".partial", path)
    print(json.dumps({"rows": n, "shards": args.shards}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="Measure one pipeline.")
    p.add_argument("workload", choices=("scene", "small"))
    p.add_argument("pipeline", choices=("A", "B", "C", "Cx", "D", "H"))
    p.add_argument("--source", required=True, help="The HDF5 source (A, B's schema, D).")
    p.add_argument("--records", help="Converted output directory (C, Cx).")
    p.add_argument("--naive", help="Directory of the naive TFRecord shards (B).")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--loop", choices=("python", "graph"), default="python")
    p.add_argument("--set", action="append", default=[], help="Cx knob KEY=VALUE.")
    w = sub.add_parser("write-naive", help="Write B's one-Example-per-row shards.")
    w.add_argument("source")
    w.add_argument("out")
    w.add_argument("--shards", type=int, default=4)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "run":
        run(args)
    else:
        write_naive(args)


if __name__ == "__main__":
    main()
