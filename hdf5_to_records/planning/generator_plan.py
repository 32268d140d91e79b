"""The plan of a ``--generator`` conversion: shards of a factory's examples.

Shard ``g`` of the ``K`` shards of all splits (numbered across splits, in split order)
holds the first ``n_g`` examples of ``FACTORY(g, K)``, where ``n_g`` is its share of
its split's examples under the usual shard arithmetic (:func:`sharding.shard_bounds`).
With no ``--num-examples`` there is one split, and each shard holds every example its
factory yields.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .._version import __version__
from ..format.naming import ShardedFileTemplate
from .features import FeatureSchema
from .limits import DEFAULT_LIMITS, Limits
from .plan import Plan, ShardSpec, check_record_limit, record_layout
from .schema import SourceSet
from .sharding import choose_num_shards, shard_bounds, split_counts
from .stage_options import PlanOptions
from .user_code import code_fingerprint


def probe_shards(options: PlanOptions, num_examples: int | None) -> int | None:
    """The total shard count when it is known before the schema, else ``None``
    (the default count of a sized conversion follows from the example size)."""
    if options.num_shards is not None and num_examples is None:
        return options.num_shards
    if num_examples is None:
        return options.workers
    if options.num_shards is not None:
        counts = split_counts(num_examples, [s.fraction for s in options.splits])
        return sum(choose_num_shards(n, 0, shard_bytes=None, num_shards=options.num_shards)
                   for n in counts)  # fmt: skip
    return None


def build_generator_plan(
    options: PlanOptions,
    generator: str,
    names: tuple[str, ...],
    num_examples: int | None,
    features: tuple[FeatureSchema, ...],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Plan:
    """Assign the factory's examples to splits and shards; no source is read."""
    rows_per_record, record_target, stored_bytes = record_layout(options, features)
    check_record_limit(features, limits.max_record_bytes)
    example_bytes = max(1, sum(f.example_bytes() for f in features))
    template = ShardedFileTemplate(options.name)
    if num_examples is None:
        per_split = [(options.splits[0].name, None, probe_shards(options, None))]
    else:
        counts = split_counts(num_examples, [s.fraction for s in options.splits])
        per_split = [
            (split.name, n, choose_num_shards(
                n, n * example_bytes, shard_bytes=options.shard_size,
                num_shards=options.num_shards, min_shards=options.workers))
            for split, n in zip(options.splits, counts)
        ]  # fmt: skip
    total = sum(k for _, _, k in per_split)
    base = json.dumps(
        {
            "generator": code_fingerprint(generator),
            "names": list(names),
            "features": [[f.name, f.stored.dtype, list(f.shape)] for f in features],
            "rows_per_record": rows_per_record,
            "compression": options.compression,
            "tool_version": __version__,
        },
        sort_keys=True,
    )
    shards, first = [], 0
    for split, count, num_shards in per_split:
        bounds = shard_bounds(count, num_shards) if count is not None else [(0, 0)] * num_shards
        for index, (a, b) in enumerate(bounds):
            filename = template.filename(split, index, num_shards)
            shard = first + index
            digest = hashlib.sha256(base.encode())
            digest.update(json.dumps([filename, shard, total, b - a, count is None]).encode())
            shards.append(
                ShardSpec(
                    split, index, num_shards, filename,
                    np.zeros(b - a, np.int32), np.arange(b - a, dtype=np.int64),
                    -(-(b - a) // record_target), (b - a) * stored_bytes, digest.hexdigest(),
                    factory_args=(shard, total), open_ended=count is None,
                )
            )  # fmt: skip
        first += num_shards
    sources = SourceSet("generator", (), features)
    return Plan(
        template.name,
        sources,
        features,
        rows_per_record,
        options.compression,
        tuple(shards),
        tuple(s.name for s in options.splits),
        record_target,
        limits,
    )
