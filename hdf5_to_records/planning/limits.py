"""The byte limits of a conversion: how much a worker reads at once, which gaps it reads
through, and how big a record may get.

The defaults are what measurements chose (see each comment); a :class:`Limits` travels
with the plan to every executor and worker, so a caller (a test on tiny files) can pass
small ones without touching module state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import UsageError
from .sharding import MAX_READ_BYTES, MAX_RECORD_BYTES

WINDOW_BYTES = 64 << 20  # 64 MiB per read window: big sequential reads, bounded worker RSS
# Gaps of at least 1 MiB between selected rows are skipped, smaller ones read through
# (copy mode's reads and index mode's byte ranges alike).
GAP_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Byte limits; every one must be positive."""

    window_bytes: int = WINDOW_BYTES  # examples a worker reads and encodes at a time
    gap_bytes: int = GAP_BYTES  # a gap between selected rows this big is skipped
    max_record_bytes: int = MAX_RECORD_BYTES  # one TFRecord record (protobuf's 2 GiB cap)
    max_read_bytes: int = MAX_READ_BYTES  # index mode: bytes one record makes a reader decode

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"limits: {f.name} must be a positive byte count, got {value!r}")


DEFAULT_LIMITS = Limits()
