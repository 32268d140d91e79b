"""reader: a parallel tf.data pipeline over hdf5-to-records shards.

``reader.load(path, split, batch_size=..., ...)`` returns a ``tf.data.Dataset`` ready for
``model.fit`` and ``tf.distribute``; ``reader.data_source(path, split)`` a random-access
source for Grain, PyTorch or NumPy, without TensorFlow. See the README for every option.
"""

from hdf5_to_records.errors import (
    Hdf5ToRecordsError,
    ManifestError,
    ShardCorrupt,
    ShardMissing,
    UnknownName,
    UsageError,
)


def __getattr__(name: str):
    """``load``, ``ReadOptions`` (TensorFlow), ``load_spec`` and ``DatasetSpec`` (h5py): on first
    use, so that ``import reader`` is quick and quiet."""
    if name == "load":
        from .pipeline import load

        return load
    if name == "ReadOptions":
        from .options import ReadOptions

        return ReadOptions
    if name in ("data_source", "DataSource"):  # no TensorFlow
        from . import random_source

        return getattr(random_source, name)
    if name in ("load_spec", "DatasetSpec"):
        from hdf5_to_records.format import dataset_spec

        return getattr(dataset_spec, name)
    raise AttributeError(f"module 'reader' has no attribute {name!r}")


__all__ = [
    "load",
    "ReadOptions",
    "data_source",
    "DataSource",
    "load_spec",
    "DatasetSpec",
    "Hdf5ToRecordsError",
    "ManifestError",
    "ShardCorrupt",
    "ShardMissing",
    "UnknownName",
    "UsageError",
]
