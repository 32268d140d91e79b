"""Read one shard's examples from the user's ``--generator`` factory, in windows.

Each worker imports the factory's module itself and calls ``FACTORY(shard_index,
num_shards)`` for each shard it writes: no generator is pickled. A shard takes the
first ``n`` examples of its iterable (or all of them, without ``--num-examples``);
every example is checked against the schema of the first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from ..planning.generator import (
    END,
    as_example,
    check_example,
    close,
    load_factory,
    next_example,
    open_examples,
)
from ..planning.limits import DEFAULT_LIMITS, Limits
from ..planning.plan import ShardSpec
from ..planning.schema import FeatureSchema
from .reading import Window

log = logging.getLogger(__name__)
_ARRAY_OVERHEAD_BYTES = 112  # a small NumPy array object: windows of tiny examples too
# stay bounded in memory, not just in payload bytes


class GeneratorReader:
    """Yields a shard's examples from the factory; one per worker process."""

    def __init__(
        self,
        spec: str,
        names: tuple[str, ...],
        features: tuple[FeatureSchema, ...],
        limits: Limits = DEFAULT_LIMITS,
    ):
        self._spec, self._names, self._features = spec, names, features
        self._limits = limits
        self._factory = load_factory(spec)

    def shard_windows(self, shard: ShardSpec) -> Iterator[Window]:
        """The shard's examples in order, about ``limits.window_bytes`` at a time.

        Raises:
            GeneratorError: the factory failed or yielded a non-example or another
                schema, naming the shard and the example.
        """
        start = position = held = 0
        columns = self._empty()
        for example in self.examples(shard):
            for name, value in example.items():
                columns[name].append(value)
                held += value.nbytes + _ARRAY_OVERHEAD_BYTES
            position += 1
            if held >= self._limits.window_bytes:
                yield Window(start, position, columns)
                start, columns, held = position, self._empty(), 0
        if position > start:
            yield Window(start, position, columns)

    def examples(self, shard: ShardSpec) -> Iterator[dict[str, np.ndarray]]:
        """The shard's examples one by one, each checked against the schema; the
        factory's iterable is closed when they end or the caller stops.

        Raises:
            GeneratorError: as :meth:`shard_windows`.
        """
        index, num_shards = shard.factory_args
        wanted = None if shard.open_ended else shard.num_examples
        examples = open_examples(self._factory, self._spec, index, num_shards)
        position = 0
        try:
            while wanted is None or position < wanted:
                where = f"example {position} of shard {index} ({shard.filename})"
                item = next_example(examples, self._spec, where)
                if item is END:
                    break
                example = as_example(item, self._names, self._spec, where)
                check_example(example, self._features, self._spec, where)
                yield example
                position += 1
        finally:
            close(examples)
        if wanted is not None and position < wanted:
            log.info(
                "--generator %s: shard %d yielded %d of its %d examples",
                self._spec, index, position, wanted,
            )  # fmt: skip

    def _empty(self) -> dict[str, list]:
        return {f.name: [] for f in self._features}

    def close(self) -> None:
        """Nothing stays open between shards: each shard's iterable is closed."""
