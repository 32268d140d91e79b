"""Measure ``reader.load`` on a converted dataset: what ``hdf5-to-records bench`` prints."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hdf5_to_records.errors import UsageError
from hdf5_to_records.format.dataset_spec import load_spec
from hdf5_to_records.format.dtypes import from_stored

from .pipeline import load


@dataclass(frozen=True)
class Throughput:
    """One measurement: counts and seconds of the timed passes (after the first batch)."""

    examples: int
    batches: int
    nbytes: int  # shard bytes (and, index mode, referenced source bytes) read
    seconds: float
    cpu_seconds: float

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds if self.seconds else 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    path: str,
    split: str = "train",
    *,
    batch_size: int = 32,
    epochs: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Throughput:
    """Iterate ``epochs`` passes of ``reader.load(path, split, batch_size=...)``.

    The clock starts after the first batch, so pipeline start-up is not counted;
    ``progress(examples)`` is called per batch.
    """
    spec = load_spec(path)
    shards = spec.split(split)
    total_examples = sum(s.num_examples for s in shards) or 1
    bytes_per_example = sum(s.num_bytes for s in shards) / total_examples
    for feature in spec.features:  # index mode: the bytes read from the HDF5 sources
        if feature.storage == "reference":
            count = int(np.prod(feature.shape, dtype=np.int64))
            bytes_per_example += count * from_stored(feature.dtype).itemsize
    ds = load(path, split, batch_size=batch_size, repeat=epochs)
    examples = batches = 0
    started = cpu_started = None
    for batch in ds:
        n = int(next(iter(batch.values())).shape[0])
        if started is None:
            started, cpu_started = time.perf_counter(), _cpu_seconds()
        else:
            examples += n
            batches += 1
        if progress is not None:
            progress(n)
    if batches == 0:
        raise UsageError(
            f"{path} [{split}] gave {1 if started else 0} batch(es) of {batch_size}: timing "
            "needs at least 2; lower --batch-size or raise --epochs"
        )
    return Throughput(
        examples,
        batches,
        int(examples * bytes_per_example),
        time.perf_counter() - started,
        _cpu_seconds() - cpu_started,
    )
