"""The order of examples in each epoch: a pure function of (seed, epoch, position).

Unshuffled, examples come in the converter's write order. Shuffled, epoch ``e`` first
permutes the split's records (``PCG64([seed, salt, e])``), then cuts the examples of
the records, in that order, into windows of ``window_examples``; the examples of window
``w`` are permuted again (``PCG64([seed, salt, e, w])``) unless every record holds one
example, where the record permutation already is a uniform one. A window is decoded as
one unit, so it is also what a pipeline holds in memory; its size is set in bytes by
the reader. ``salt`` tells apart the iterations over one dataset (Keras iterates a
dataset afresh each epoch): the reader draws it per iteration from the seed. Nothing
here has state beyond a cache, so the position in the stream of
windows is all a checkpoint needs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_EPOCHS_CACHED = 2  # a pipeline reads at most the end of one epoch and the next at once


@dataclass(frozen=True)
class Window:
    """Records ``records`` (in order), of whose examples, concatenated, the window is
    ``[start, stop)``, taken in the order ``permutation`` (None: as they are)."""

    records: np.ndarray
    start: int
    stop: int
    permutation: np.ndarray | None


class EpochOrder:
    """Windows of each epoch over records holding ``counts`` examples each."""

    def __init__(self, counts: np.ndarray, window_examples: int, seed: int | None):
        self.counts = np.asarray(counts, np.int64)
        self.window_examples = max(1, int(window_examples))
        self.seed = seed
        self.num_examples = int(self.counts.sum())
        self._single = bool((self.counts <= 1).all())
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    @property
    def windows_per_epoch(self) -> int:
        return -(-self.num_examples // self.window_examples)

    def window_size(self, w: int) -> int:
        """Examples in window ``w`` (all full but an epoch's last)."""
        return min(self.window_examples, self.num_examples - w * self.window_examples)

    def _epoch(self, epoch: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's record order and the cumulative example count along it."""
        with self._lock:
            found = self._cache.get((salt, epoch))
            if found is None:
                if self.seed is None:
                    order = np.arange(len(self.counts), dtype=np.int64)
                else:
                    rng = np.random.Generator(np.random.PCG64([self.seed, salt, epoch]))
                    order = rng.permutation(len(self.counts)).astype(np.int64)
                found = order, np.cumsum(self.counts[order])
                self._cache[(salt, epoch)] = found
                while len(self._cache) > _EPOCHS_CACHED:
                    self._cache.pop(next(iter(self._cache)))
            return found

    def window(self, epoch: int, w: int, salt: int = 0) -> Window:
        """Window ``w`` of ``epoch`` (0-based) of the iteration drawn as ``salt``.

        Raises:
            IndexError: ``w`` is not a window of an epoch.
        """
        if not 0 <= w < self.windows_per_epoch:
            raise IndexError(f"window {w} of {self.windows_per_epoch}")
        order, ends = self._epoch(epoch, salt)
        first = w * self.window_examples
        last = first + self.window_size(w)  # exclusive
        a = int(np.searchsorted(ends, first, side="right"))
        b = int(np.searchsorted(ends, last - 1, side="right")) + 1
        start = first - (int(ends[a - 1]) if a else 0)
        permutation = None
        if self.seed is not None and not self._single and last - first > 1:
            rng = np.random.Generator(np.random.PCG64([self.seed, salt, epoch, w]))
            permutation = rng.permutation(last - first).astype(np.int64)
        return Window(order[a:b], start, start + (last - first), permutation)
