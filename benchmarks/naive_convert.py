"""The naive baseline: one process, one ``tf.train.Example`` per row.

This is the converter people write first: h5py reads row by row (``f["data"][i]``, with
h5py's default 1 MiB chunk cache, smaller than one 2.4 MB scene chunk), each row becomes
an Example with ``float_list`` (``data``, flattened) and ``int64_list`` (``label``), and
``tf.io.TFRecordWriter`` writes them to one file. ``.tolist()`` is used because it is
faster than handing protobuf the NumPy array (10 vs 15 ms a row from the gzip
source, measured here).

Prints one JSON line: rows, bytes (uncompressed data + label), loop_seconds (the row
loop only) and import_seconds, so the caller can separate start-up from steady state.

    python benchmarks/naive_convert.py SRC.h5 OUT.tfrecord [--rows M]
"""

from __future__ import annotations

import argparse
import json
import os
import time

_started = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import tensorflow as tf  # noqa: E402

_imported = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("output")
    parser.add_argument(
        "--rows", type=int, default=0, help="Convert only the first ROWS rows (0: all)."
    )
    args = parser.parse_args()

    nbytes = 0
    with h5py.File(args.source, "r") as f, tf.io.TFRecordWriter(args.output) as writer:
        data, label = f["data"], f["label"]
        n = data.shape[0] if args.rows <= 0 else min(args.rows, data.shape[0])
        loop_started = time.perf_counter()
        for i in range(n):
            points, labels = data[i], label[i]
            nbytes += points.nbytes + labels.nbytes
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "data": tf.train.Feature(
                            float_list=tf.train.FloatList(value=points.ravel().tolist())
                        ),
                        "label": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=labels.ravel().tolist())
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString())
        writer.flush()
        loop_seconds = time.perf_counter() - loop_started
    print(
        json.dumps(
            {
                "rows": n,
                "bytes": nbytes,
                "loop_seconds": loop_seconds,
                "import_seconds": _imported - _started,
            }
        )
    )


if __name__ == "__main__":
    main()
