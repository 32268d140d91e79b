"""reader: a parallel tf.data pipeline over hdf5-to-records shards.

``reader.load(path, split, batch_size=..., ...)`` returns a ``tf.data.Dataset`` ready for
``model.fit`` and ``tf.distribute``. See the README for every option.
"""

from hdf5_to_records.errors import (
    Hdf5ToRecordsError,
    ManifestError,
    ShardCorrupt,
    ShardMissing,
    UnknownName,
    UsageError,
)

from .pipeline import load
from .spec import DatasetSpec, load_spec

__all__ = [
    "load",
    "load_spec",
    "DatasetSpec",
    "Hdf5ToRecordsError",
    "ManifestError",
    "ShardCorrupt",
    "ShardMissing",
    "UnknownName",
    "UsageError",
]
