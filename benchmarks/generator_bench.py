"""Keep your generator (issue 17): the classic ``from_generator`` + ``map`` pipeline
against ``convert --generator`` plus reading the result, on the same generator.

The generator is ``scene_generator.SceneGenerator``: random scenes of the 16-row gzip
scene source, 2048 random points each, centred, yielding ``(X, y)`` forever.

- G: ``from_generator(SceneGenerator(...).generate_data)`` + ``map(jitter,
  num_parallel_calls=AUTOTUNE)`` + ``batch`` + ``prefetch``: ``--examples`` examples.
- convert: ``hdf5-to-records convert --generator scene_generator:factory
  --num-examples N --workers W``, timed whole in its own process (wall and CPU).
- R: ``reader.load(..., supervised=("x", "y"))`` over its output, the same ``map``,
  one epoch of the N examples, timed from building the pipeline; then a second epoch
  over the same dataset (what each later epoch costs).

Every pass runs in its own fresh process; the order alternates over ``--rounds``;
medians are quoted. G and R are timed from building the pipeline to its last batch.

    .venv/bin/python benchmarks/generator_bench.py [--rounds 3] [--rows 1200] [--examples 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

import measure
from convert_bench import ensure_source

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.path.join(os.path.dirname(sys.executable), "hdf5-to-records")
BATCH = 32

PASS = r"""
import json, sys, time
kind, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import tensorflow as tf
from scene_generator import NUM_POINT, SceneGenerator, files

def jitter(x, y):
    return x + tf.random.stateless_normal(tf.shape(x), [1, 2], stddev=0.01), y

started = time.perf_counter()
if kind == "G":
    signature = (tf.TensorSpec((NUM_POINT, 9), tf.float32), tf.TensorSpec((NUM_POINT,), tf.int64))
    ds = tf.data.Dataset.from_generator(
        SceneGenerator(files(), seed=0).generate_data, output_signature=signature)
    ds = ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE).batch(32)
    ds = ds.prefetch(tf.data.AUTOTUNE).take(-(-n // 32))
else:
    import reader
    ds = reader.load(out, batch_size=32, supervised=("x", "y"), drop_remainder=False)
    ds = ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
rows = 0
for x, y in ds:
    rows += int(x.shape[0])
seconds = time.perf_counter() - started
again = None
if kind == "R":  # a later epoch: the pipeline is built, the shards are in the page cache
    started = time.perf_counter()
    for x, y in ds:
        pass
    again = time.perf_counter() - started
print(json.dumps({"rows": rows, "seconds": seconds, "again": again}))
"""


def run_pass(kind: str, examples: int, out: str, env: dict[str, str]) -> dict:
    argv = [sys.executable, "-c", PASS, kind, str(examples), out]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env, cwd=HERE)
    if done.returncode:
        raise SystemExit(f"{kind}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_convert(examples: int, out: str, workers: int, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    argv = [CLI, "convert", "--generator", "scene_generator:factory", "--num-examples",
            str(examples), "--workers", str(workers), "--output", out]  # fmt: skip
    got = measure.run(argv, env=env, cwd=HERE)
    if got.returncode:
        raise SystemExit(f"convert: {got.stderr[-3000:]}")
    return {"seconds": got.seconds, "cpu": got.user_s + got.sys_s, "rss": got.peak_rss_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1200, help="rows of the scene source")
    parser.add_argument("--examples", type=int, default=1500, help="examples per pass")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10, help="for the amortised figure")
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    source = ensure_source(workdir, args.rows, "gzip")
    env = {**os.environ, "H2R_SCENE_FILES": source, "PYTHONPATH": HERE,
           "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    out = os.path.join(workdir, "generator_records")
    measure.become_subreaper()
    g, conv, r = [], [], []
    for rnd in range(args.rounds):
        steps = ["G", "convert"] if rnd % 2 == 0 else ["convert", "G"]
        for step in steps:
            if step == "G":
                g.append(run_pass("G", args.examples, out, env))
                print(f"round {rnd + 1} G: {g[-1]['rows'] / g[-1]['seconds']:,.0f} rows/s",
                      flush=True)  # fmt: skip
            else:
                conv.append(run_convert(args.examples, out, args.workers, env))
                r.append(run_pass("R", args.examples, out, env))
                print(f"round {rnd + 1} convert: {conv[-1]['seconds']:.1f} s, R: "
                      f"{r[-1]['rows'] / r[-1]['seconds']:,.0f} rows/s", flush=True)  # fmt: skip
    g_s = statistics.median(p["seconds"] * args.examples / p["rows"] for p in g)
    c_s = statistics.median(c["seconds"] for c in conv)
    c_cpu = statistics.median(c["cpu"] for c in conv)
    c_rss = max(c["rss"] for c in conv)
    r_s = statistics.median(p["seconds"] * args.examples / p["rows"] for p in r)
    r2_s = statistics.median(p["again"] * args.examples / p["rows"] for p in r)
    n = args.examples
    print(f"\n{n} examples of SceneGenerator over {source}, batch {BATCH}, "
          f"{args.rounds} rounds, medians")  # fmt: skip
    print(f"G  from_generator + map       {g_s:7.1f} s  {n / g_s:8,.0f} rows/s")
    print(f"   convert --workers {args.workers}          {c_s:7.1f} s  {n / c_s:8,.0f} rows/s  "
          f"{c_cpu:.1f} CPU s, peak RSS {c_rss / 1e6:.0f} MB")  # fmt: skip
    print(f"R  reader.load + map          {r_s:7.1f} s  {n / r_s:8,.0f} rows/s  "
          f"{g_s / r_s:.0f}x G (first epoch, building the pipeline included)")  # fmt: skip
    print(f"   a later epoch              {r2_s:7.1f} s  {n / r2_s:8,.0f} rows/s  "
          f"{g_s / r2_s:.0f}x G")  # fmt: skip
    print(f"one epoch: G {g_s:.1f} s against convert + R {c_s + r_s:.1f} s: "
          f"{g_s / (c_s + r_s):.2f}x")  # fmt: skip
    e = args.epochs
    ours = c_s + r_s + (e - 1) * r2_s
    print(f"{e} epochs: G {e * g_s:.1f} s against convert + R {ours:.1f} s: "
          f"{e * g_s / ours:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
