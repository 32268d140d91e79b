"""Shard arithmetic: pure functions, tested from a table of cases."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_SHARD_BYTES = 128 << 20  # 128 MiB: large sequential reads, yet many shards to interleave
DEFAULT_RECORD_BYTES = 1 << 20  # 1 MiB: block records parse at ~4.6M small rows/s (issue 2)
# One record per example from here: the reader then reads (and shuffles) each example on
# its own, so a batch of 32 scene rows comes from 32 places, not from 6 records of 6
# consecutive rows; a record's fixed cost is nothing beside 64 KiB (issue 15).
LARGE_EXAMPLE_BYTES = 64 << 10
MAX_RECORD_BYTES = (2 << 30) - (64 << 20)  # protobuf parsers refuse messages >= 2 GiB
# Index mode: decoded bytes a record aims for (one positioned read and decode per record
# and feature). reader.load on 10,000 scene rows (151 KB each), examples/s: gzip+shuffle
# 16-row chunks, records of 16 / 32 / 64 / 128 rows: 7.4k / 7.3-8.6k / 8.3-10k / 9.2-9.6k;
# contiguous, 16 / 27 / 54 / 108 rows: 18k / 21-29k / 22-32k / 26-30k.
SPAN_BYTES = 8 << 20
MAX_READ_BYTES = 4 * SPAN_BYTES  # index mode: most bytes one record makes the reader decode


def shard_bounds(num_examples: int, num_shards: int) -> list[tuple[int, int]]:
    """Split ``num_examples`` into ``num_shards`` contiguous ``(start, stop)`` ranges.

    Boundaries are ``round(n * i / k)`` as in TFDS, so sizes differ by at most one.
    """
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    cuts = [round(num_examples * i / num_shards) for i in range(num_shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def choose_num_shards(
    num_examples: int,
    total_bytes: int,
    *,
    shard_bytes: int | None,
    num_shards: int | None,
    min_shards: int = 1,
) -> int:
    """How many shards one split gets.

    An explicit ``num_shards`` wins. Otherwise aim at ``shard_bytes`` per shard; by
    default at 128 MiB shards in a multiple of ``min_shards`` (the worker count). Never
    more shards than examples, and one shard even for an empty split.
    """
    if num_shards is not None:
        return max(1, min(num_shards, max(num_examples, 1)))
    target = shard_bytes or DEFAULT_SHARD_BYTES
    wanted = max(1, math.ceil(total_bytes / target) if total_bytes else 1)
    if shard_bytes is None and min_shards > 1:
        # A multiple of the worker count, so no worker writes the last shard alone
        # (9 shards on 2 workers left one worker idle for a ninth of the run).
        wanted = math.ceil(wanted / min_shards) * min_shards
    return max(1, min(wanted, max(num_examples, 1)))


def choose_rows_per_record(example_bytes: int, *, record_bytes: int = DEFAULT_RECORD_BYTES) -> int:
    """Examples per record so that a record holds about ``record_bytes`` (at least 1);
    examples of ``LARGE_EXAMPLE_BYTES`` or more get a record each."""
    if example_bytes <= 0:
        return 1
    if example_bytes >= LARGE_EXAMPLE_BYTES:
        return 1
    return max(1, record_bytes // example_bytes)


def split_counts(num_examples: int, fractions: list[float]) -> list[int]:
    """Examples per split for fractions summing to at most 1, by cumulative rounding."""
    counts, taken, cumulative = [], 0, 0.0
    for fraction in fractions:
        cumulative += fraction
        end = min(num_examples, round(num_examples * cumulative))
        counts.append(end - taken)
        taken = end
    return counts


def parse_size(text: str | int) -> int:
    """Parse a byte size such as ``256MB``, ``1.5GiB`` or ``1048576`` into bytes.

    Decimal units (KB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.

    Raises:
        ValueError: if the text is not a positive size.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"expected a size such as 256MB, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        units = {
            "": 1,
            "b": 1,
            "kb": 10**3,
            "mb": 10**6,
            "gb": 10**9,
            "tb": 10**12,
            "k": 1 << 10,
            "m": 1 << 20,
            "g": 1 << 30,
            "kib": 1 << 10,
            "mib": 1 << 20,
            "gib": 1 << 30,
            "tib": 1 << 40,
        }
        stripped = text.strip().lower()
        number = stripped.rstrip("kmgtib")
        unit = stripped[len(number) :]
        try:
            scaled = float(number) * units[unit]
            if not math.isfinite(scaled):
                raise ValueError
            value = int(scaled)
        except (ValueError, KeyError):
            raise ValueError(f"expected a size such as 256MB or 1GiB, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def record_sizes(
    file_ids: np.ndarray, rows: np.ndarray, target: int, align: Sequence[int]
) -> list[int]:
    """Cut a shard's examples into index-mode records of ``target`` to ``2 * target``
    examples (fewer at the end of a source file's run; a record never spans two files).

    ``align[f]`` is the chunk rows of source ``f`` (1 if unchunked). A record of a chunked
    source ends just before a row that starts a chunk, once it holds ``target`` examples,
    so consecutive records do not decode the same chunk twice.
    """
    n = int(rows.size)
    if n == 0:
        return []
    target = max(1, target)
    breaks = np.flatnonzero(np.diff(file_ids) != 0) + 1
    sizes: list[int] = []
    for a, b in zip(np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [n]]).tolist()):
        step = int(align[int(file_ids[a])])
        if step <= 1:
            cuts = list(range(a + target, b, target)) + [b]
        else:
            cuts, last = [], a
            for cut in (np.flatnonzero(rows[a:b] % step == 0) + a).tolist() + [b]:
                while cut - last > 2 * target:
                    last += target
                    cuts.append(last)
                if cut - last >= target or cut == b:
                    cuts.append(cut)
                    last = cut
        sizes.extend(np.diff([a, *cuts]).tolist())
    return [s for s in sizes if s]
