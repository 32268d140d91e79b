"""Read one shard's records, and name the shard when a record does not read.

TensorFlow's own error for a corrupt or truncated TFRecord file is
``DataLossError: corrupted record at 3069192``: it names no file, so a training job over
thousands of shards cannot tell which one to re-convert. Here each shard is read as

    TFRecordDataset(shard).ignore_errors() + a failure element, cut at num_records

``TFRecordDataset`` stops a file at its first bad record (checksum, length, truncation,
a gzip stream that does not inflate), and ``ignore_errors`` turns that stop into a short
file. ``take(num_records)`` ends a whole shard before it asks for the element after
its last record; only a short shard reaches the failure element, whose ``map`` reads
the shard again up to its first bad record and raises an error naming the shard, that
record and its byte offset.

So a sound shard costs nothing more (no function runs per record: a ``map``,
``filter``, ``scan`` or a ``tf.cond`` per batch measured 5-70 % slower on 900 KB records
here), nothing runs in Python, and a shard that stops early always raises. Records past
``num_records`` are not read; the split's example count (``assert_cardinality``) then
fails at the end of the epoch.
"""

from __future__ import annotations

import re

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.format.record_index import FRAMING_BYTES

tf = import_tensorflow()

# The message of _refuse, inside the text of the TensorFlow error that carries it.
_MESSAGE = re.compile(
    r"assertion failed: \[(shard .*?(?:convert that shard again|an I/O error\?\)))\]"
)


# ... and of a ShardCorrupt raised by a positioned read (reader/positioned.py).
_RAISED = re.compile(r"ShardCorrupt: ((?:record|shard) [^\n]*)")


def shard_error_message(text: str) -> str | None:
    """The one-line message naming a corrupt shard in a TensorFlow error's text, if any."""
    found = _MESSAGE.search(text) or _RAISED.search(text)
    return found.group(1) if found else None


def shard_records(
    path,
    num_records,
    *,
    compression: str = "",
    buffer_size: int | None = None,
    counted: bool = True,
):
    """The records of shard ``path`` (a string tensor), which the manifest says holds
    ``num_records``. Not ``counted`` (a manifest without record counts): the records as
    they come, with TensorFlow's own errors.

    Raises (when iterated):
        tf.errors.InvalidArgumentError: "shard PATH is corrupt or truncated: record K of
            N (at byte B) does not read; ..." when the shard ends before ``num_records``.
    """
    records = tf.data.TFRecordDataset(path, compression, buffer_size)
    if not counted:
        return records
    count = tf.cast(num_records, tf.int64)
    failure = tf.data.Dataset.from_tensors(path).map(_refuse(count, compression))
    return records.ignore_errors(log_warning=False).concatenate(failure).take(count)


def _refuse(count, compression: str):
    """The failure element's function: find where ``path`` stops reading, and raise."""
    where = "byte" if not compression else "byte of the uncompressed stream"

    def refuse(path):
        read, offset = (
            tf.data.TFRecordDataset(path, compression)
            .ignore_errors(log_warning=False)
            .reduce(
                (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
                lambda state, r: (
                    state[0] + 1,
                    state[1] + tf.cast(tf.strings.length(r), tf.int64) + FRAMING_BYTES,
                ),
            )
        )
        numbers = [tf.strings.as_string(v) for v in (read, count, offset)]
        stopped = tf.strings.join(
            ["shard ", path, " is corrupt or truncated: record ", numbers[0], " of ",
             numbers[1], f" (at {where} ", numbers[2], ") does not read; run "
             "`hdf5-to-records verify` on the dataset, then convert that shard again"]
        )  # fmt: skip
        # Whole on the second reading: the first one failed for another reason.
        flaky = tf.strings.join(
            ["shard ", path, ": reading it failed, but it reads whole now (an I/O error?)"]
        )
        message = tf.where(read < count, stopped, flaky)
        with tf.control_dependencies([tf.debugging.Assert(False, [message], summarize=1)]):
            return tf.identity(path)

    return refuse
