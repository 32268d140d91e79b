import numpy as np
import pytest

from hdf5_to_records.planning.sharding import (
    DEFAULT_SHARD_BYTES,
    choose_num_shards,
    choose_rows_per_record,
    parse_size,
    record_sizes,
    shard_bounds,
    split_counts,
)


@pytest.mark.parametrize(
    "n, k, expected",
    [
        (10, 1, [(0, 10)]),
        (10, 3, [(0, 3), (3, 7), (7, 10)]),
        (10, 4, [(0, 2), (2, 5), (5, 8), (8, 10)]),  # remainders spread, sizes differ by <= 1
        (3, 5, [(0, 1), (1, 1), (1, 2), (2, 2), (2, 3)]),  # more shards than examples
        (0, 2, [(0, 0), (0, 0)]),  # empty split
    ],
)
def test_shard_bounds(n, k, expected):
    assert shard_bounds(n, k) == expected


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 12345])
@pytest.mark.parametrize("k", [1, 2, 3, 16])
def test_shard_bounds_cover_everything_once(n, k):
    bounds = shard_bounds(n, k)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_rejects_zero_shards():
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        shard_bounds(5, 0)


@pytest.mark.parametrize(
    "examples, nbytes, shard_bytes, num_shards, min_shards, expected",
    [
        (1000, 10 * DEFAULT_SHARD_BYTES, None, None, 1, 10),  # ~128 MiB shards
        (1000, 10 * DEFAULT_SHARD_BYTES + 1, None, None, 1, 11),
        (1000, 1000, None, None, 4, 4),  # at least one shard per worker
        (3, 1000, None, None, 8, 3),  # never more shards than examples
        (0, 0, None, None, 4, 1),  # empty split still gets one (empty) shard
        (1000, 1000, None, 7, 1, 7),  # explicit count wins
        (5, 1000, None, 7, 1, 5),
        (1000, 1000 << 20, 256 << 20, None, 8, 4),  # explicit size ignores the worker floor
        (1000, 9 * DEFAULT_SHARD_BYTES, None, None, 2, 10),  # a multiple of the workers
        (1000, 5 * DEFAULT_SHARD_BYTES, None, None, 4, 8),
    ],
)
def test_choose_num_shards(examples, nbytes, shard_bytes, num_shards, min_shards, expected):
    got = choose_num_shards(
        examples, nbytes, shard_bytes=shard_bytes, num_shards=num_shards, min_shards=min_shards
    )
    assert got == expected


@pytest.mark.parametrize(
    "example_bytes, expected",
    [(64, 16384), (60_000, 17), (147456 + 4096, 1), (2 << 20, 1), (0, 1)],
)
def test_rows_per_record_targets_one_mib_and_one_large_row(example_bytes, expected):
    assert choose_rows_per_record(example_bytes) == expected


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (10, [0.8, 0.2], [8, 2]),
        (10, [0.5], [5]),  # fractions may leave examples out
        (3, [0.5, 0.5], [2, 1]),
        (7, [1 / 3, 1 / 3, 1 / 3], [2, 3, 2]),
        (0, [0.5, 0.5], [0, 0]),
    ],
)
def test_split_counts(n, fractions, expected):
    assert split_counts(n, fractions) == expected
    assert sum(split_counts(n, fractions)) <= n


@pytest.mark.parametrize(
    "text, expected",
    [
        ("256MB", 256 * 10**6),
        ("1GiB", 1 << 30),
        ("1.5k", 1536),
        ("1048576", 1 << 20),
        ("64 MiB", 64 << 20),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12XB", "-5MB", "0"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def _rows(*runs):
    return np.concatenate([np.arange(a, b) for a, b in runs])


@pytest.mark.parametrize(
    "file_ids, rows, target, align, expected",
    [
        # Unchunked: records of exactly `target`, the rest at the end.
        ([0] * 100, _rows((0, 100)), 27, [1], [27, 27, 27, 19]),
        # Chunked by 16, starting mid-chunk: records end just before a chunk start.
        ([0] * 100, _rows((5, 105)), 27, [16], [27, 32, 32, 9]),
        # A record never spans two files; each file has its own alignment.
        ([0] * 50 + [1] * 50, _rows((0, 50), (0, 50)), 27, [16, 1], [32, 18, 27, 23]),
        # No chunk start within 2 * target: cut at target (the last record takes <= 2x).
        ([0] * 40, _rows((1, 41)), 5, [64], [5, 5, 5, 5, 5, 5, 10]),
        # Fewer rows than target.
        ([0] * 3, _rows((0, 3)), 10, [4], [3]),
        ([], np.array([], np.int64), 10, [4], []),
    ],
)
def test_record_sizes(file_ids, rows, target, align, expected):
    sizes = record_sizes(np.array(file_ids, np.int64), rows, target, align)
    assert sizes == expected


@pytest.mark.parametrize("seed", range(5))
def test_record_sizes_cover_everything_within_bounds(seed):
    rng = np.random.default_rng(seed)
    file_ids = np.sort(rng.integers(0, 3, 500))
    rows = rng.permutation(2000)[:500]
    sizes = record_sizes(file_ids, rows, 20, [16, 1, 7])
    assert sum(sizes) == 500 and min(sizes) >= 1 and max(sizes) <= 40
    edges = np.cumsum([0] + sizes)
    for a, b in zip(edges[:-1], edges[1:]):
        assert len(set(file_ids[a:b].tolist())) == 1
