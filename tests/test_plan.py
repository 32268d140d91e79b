"""The plan: a pure, deterministic function of the config and the sources."""

import numpy as np
import pytest

from hdf5_to_records.errors import RecordTooLarge, UsageError
from hdf5_to_records.format.dtypes import stored_type
from hdf5_to_records.planning.config import ConvertConfig, SplitSpec
from hdf5_to_records.planning.limits import DEFAULT_LIMITS, Limits
from hdf5_to_records.planning.plan import build_plan
from hdf5_to_records.planning.schema import FeatureSchema, SourceFile, SourceSet


def sources(*row_lists, shape=(4,)):
    files = tuple(
        SourceFile(f"/data/f{i}.h5", 100, 1.0, 1000, np.asarray(rows, np.int64))
        for i, rows in enumerate(row_lists)
    )
    feature = FeatureSchema("x", "/x", "<f4", stored_type(np.dtype("<f4"), where="x"), shape, False)
    return SourceSet("rows", files, (feature,))


def plan(source_set, *, limits=DEFAULT_LIMITS, **kwargs):
    config = ConvertConfig(("a.h5",), "/out/ds", workers=1, **kwargs)
    return build_plan(config.plan_options, source_set, source_set.features, limits=limits)


def examples(p, split):
    return [(int(f), int(r)) for s in p.split_shards(split) for f, r in zip(s.file_ids, s.rows)]


def test_in_order_plan_keeps_selection_order_across_files():
    p = plan(sources([5, 1, 2], [0, 9]), num_shards=2)
    assert examples(p, "train") == [(0, 5), (0, 1), (0, 2), (1, 0), (1, 9)]
    assert [s.filename for s in p.shards] == [
        "ds-train.tfrecord-00000-of-00002",
        "ds-train.tfrecord-00001-of-00002",
    ]
    assert [s.runs() for s in p.shards] == [  # round(5 / 2) = 2 examples in shard 0
        [(0, 5, 6), (0, 1, 2)],
        [(0, 2, 3), (1, 0, 1), (1, 9, 10)],
    ]


def test_same_seed_same_plan_and_fingerprints():
    kwargs = {
        "shuffle": True,
        "seed": 4,
        "num_shards": 3,
        "splits": (SplitSpec("a", 0.7), SplitSpec("b", 0.3)),
    }
    one, two = (
        plan(sources(range(50), range(20)), **kwargs),
        plan(sources(range(50), range(20)), **kwargs),
    )
    assert examples(one, "a") == examples(two, "a")
    assert [s.fingerprint for s in one.shards] == [s.fingerprint for s in two.shards]
    other = plan(sources(range(50), range(20)), **{**kwargs, "seed": 5})
    assert examples(other, "a") != examples(one, "a")


def test_splits_partition_and_shuffle_permutes():
    p = plan(
        sources(range(100)),
        splits=(SplitSpec("a", 0.6), SplitSpec("b", 0.4)),
        shuffle=True,
        num_shards=2,
    )
    a, b = examples(p, "a"), examples(p, "b")
    assert len(a) == 60 and len(b) == 40
    assert sorted(a + b) == [(0, r) for r in range(100)]
    assert a != sorted(a)


def test_fingerprint_changes_with_what_changes_bytes():
    base = plan(sources(range(10)), num_shards=1).shards[0].fingerprint
    assert plan(sources(range(10)), num_shards=1, compression="gzip").shards[0].fingerprint != base
    assert plan(sources(range(9)), num_shards=1).shards[0].fingerprint != base
    assert plan(sources(range(10)), num_shards=1, rows_per_record=3).shards[0].fingerprint != base


def test_records_per_shard_and_estimates():
    p = plan(sources(range(10)), num_shards=3, rows_per_record=2)
    assert [s.num_examples for s in p.shards] == [3, 4, 3]
    assert [s.num_records for s in p.shards] == [2, 2, 2]
    assert [s.est_bytes for s in p.shards] == [48, 64, 48]


def test_an_example_too_large_for_a_record_is_refused_up_front():
    with pytest.raises(RecordTooLarge, match="feature 'x': 400 bytes.*over the 100-byte limit"):
        plan(sources(range(3), shape=(100,)), limits=Limits(max_record_bytes=100))


@pytest.mark.parametrize(
    "field", ["window_bytes", "gap_bytes", "max_record_bytes", "max_read_bytes"]
)
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_limits_are_positive_byte_counts(field, value):
    with pytest.raises(UsageError, match=f"limits: {field} must be a positive byte count"):
        Limits(**{field: value})
