"""The shard files one input pipeline reads: split, worker sharding, sanity checks."""

from __future__ import annotations

import hashlib

from hdf5_to_records._tf import import_tensorflow
from hdf5_to_records.errors import ShardCorrupt, ShardMissing, UsageError
from hdf5_to_records.format.dataset_spec import ShardInfo
from hdf5_to_records.format.proto import FramingError
from hdf5_to_records.format.shard_digest import stream_digest

_HASH_BLOCK = 8 << 20  # 8 MiB reads when verifying checksums


def worker_shards(
    shards: tuple[ShardInfo, ...],
    *,
    input_context=None,
    num_workers: int | None = None,
    worker_index: int | None = None,
) -> tuple[ShardInfo, ...]:
    """The shards of one input pipeline: every ``num_workers``-th, from ``worker_index``.

    Sharding by file keeps every example in exactly one pipeline.

    Raises:
        UsageError: contradictory or out-of-range options, or fewer shards than workers.
    """
    if input_context is not None:
        if num_workers is not None or worker_index is not None:
            raise UsageError("pass input_context= or num_workers=/worker_index=, not both")
        num_workers = input_context.num_input_pipelines
        worker_index = input_context.input_pipeline_id
    if (num_workers is None) != (worker_index is None):
        raise UsageError("num_workers= and worker_index= go together")
    if num_workers is None:
        return shards
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise UsageError(f"worker_index={worker_index} is not in 0..{num_workers - 1}")
    if len(shards) < num_workers:
        raise UsageError(
            f"{len(shards)} shard(s) cannot feed {num_workers} workers; convert again with "
            f"--num-shards {num_workers} (or a multiple)"
        )
    return shards[worker_index::num_workers]


def _check_digest(shard: ShardInfo, gfile, *, gzip: bool) -> None:
    """The shard's bytes against its digest: every record's CRCs and the framing digest
    (format 5), or the whole file's sha256 (older manifests).

    Raises:
        ShardCorrupt: naming the file and what differs.
    """

    def blocks():
        with gfile.GFile(shard.path, "rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                yield block

    if shard.sha256 is not None:
        digest = hashlib.sha256()
        for block in blocks():
            digest.update(block)
        if digest.hexdigest() != shard.sha256:
            raise ShardCorrupt(f"shard {shard.path} does not match its sha256 in the manifest")
        return
    try:
        framing, records = stream_digest(blocks(), gzip=gzip)
    except FramingError as exc:
        raise ShardCorrupt(f"shard {shard.path}: {exc}") from None
    if framing != shard.framing_sha256 or records != shard.num_records:
        raise ShardCorrupt(f"shard {shard.path} does not match its framing_sha256 in the manifest")


def check_shards(
    shards: tuple[ShardInfo, ...], *, verify: bool = False, gzip: bool = False
) -> None:
    """Check each shard exists with the manifest's size (and, with ``verify``, every
    record's CRCs and the shard's digest; ``gzip``: the shards are gzip streams).

    Raises:
        ShardMissing: naming the file.
        ShardCorrupt: naming the file and what differs.
    """
    gfile = import_tensorflow().io.gfile
    for shard in shards:
        if not gfile.exists(shard.path):
            raise ShardMissing(f"shard {shard.path} listed in the manifest is missing")
        size = gfile.stat(shard.path).length
        if size != shard.num_bytes:
            raise ShardCorrupt(
                f"shard {shard.path} has {size} bytes but the manifest says {shard.num_bytes} "
                "(truncated or overwritten?)"
            )
        if verify:
            _check_digest(shard, gfile, gzip=gzip)
