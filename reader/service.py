"""Reading through tf.data service: where each stage of ``reader.load`` runs.

On the service workers (pure TensorFlow ops, so any worker process can run them): the
shard file list, its shuffle, the parallel interleave of TFRecordDatasets, the record
shuffle, batching records, and the repetition of epochs. For copy-mode datasets also
parsing and decoding, the within-batch shuffle, re-batching, ``supervised`` and
``map_fn`` (which must then be TensorFlow ops: no ``py_function``). In the client (the
process that called ``reader.load``): for index-mode datasets everything from parsing
on, since reading the referenced bytes is a ``numpy_function`` and Python cannot run on
a worker in another process; and the final prefetch.
"""

from __future__ import annotations

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.errors import UsageError
from hdf5_to_records.scale_out.data_service import check_reachable, parse_address

tf = import_tensorflow()

# distribute's names, plus the sharding policies by name (lower case).
PROCESSING_MODES = ("distributed_epoch", "parallel_epochs", "dynamic", "off")
DEFAULT_PROCESSING_MODE = "distributed_epoch"  # every example once per epoch, like a local read
# Measured (benchmarks/scale_bench.py, float32 scene rows): tf.data's default snappy
# compression ("AUTO") cost the client 280 us of CPU per example against 107 without,
# and cut throughput from 5.3k to 3.1k examples/s; float data hardly compresses.
DEFAULT_SERVICE_COMPRESSION = None


def check_service(service: str) -> str:
    """The dispatcher address as ``grpc://HOST:PORT``, once it accepts a connection.

    tf.data's client retries an unreachable dispatcher for an hour; a training script
    pointed at the wrong address should fail at once instead.

    Raises:
        UsageError: a malformed address.
        ServiceUnavailable: nothing listening there.
    """
    what = f"service={service!r}"
    address = parse_address(service, what=what, expected="'grpc://HOST:PORT'")
    check_reachable(address, what=what)
    return f"grpc://{address}"


def processing_mode(mode):
    """``distribute``'s processing mode for a name (or a ``ShardingPolicy``, passed on).

    ``distributed_epoch`` (``dynamic``): the shard files are handed out to the workers
    one at a time, each read once per epoch. ``parallel_epochs`` (``off``): every worker
    reads the whole split, so a client receives each example once per worker per epoch.
    Static sharding (``ShardingPolicy.FILE`` and others, passed as such) needs a cluster
    started with a fixed worker list through TensorFlow's own API.

    Raises:
        UsageError: an unknown name.
    """
    policy = tf.data.experimental.service.ShardingPolicy
    if isinstance(mode, policy):
        return mode
    names = {
        "distributed_epoch": policy.DYNAMIC,
        "dynamic": policy.DYNAMIC,
        "parallel_epochs": policy.OFF,
        "off": policy.OFF,
    }
    if not isinstance(mode, str) or mode.lower() not in names:
        raise UsageError(
            f"processing_mode={mode!r}: expected one of {', '.join(PROCESSING_MODES)} "
            "or a tf.data.experimental.service.ShardingPolicy"
        )
    return names[mode.lower()]


def check_compression(compression) -> str | None:
    """``service_compression``: ``None`` or ``"AUTO"`` (tf.data's snappy).

    Raises:
        UsageError: anything else.
    """
    if compression not in (None, "AUTO"):
        raise UsageError(f"service_compression={compression!r}: expected None or 'AUTO'")
    return compression


def distribute(dataset, service: str, mode, job_name: str | None, compression: str | None):
    """``dataset``, produced by the service's workers and consumed here."""
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=processing_mode(mode),
            service=service,
            job_name=job_name,
            compression=compression,
        )
    )
