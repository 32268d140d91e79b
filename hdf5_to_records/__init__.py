"""hdf5-to-records: convert selected HDF5 subsets into sharded TFRecord files.

The public names are re-exported here, lazily, so that ``hdf5-to-records --help``
imports neither h5py nor TensorFlow. See the README for the on-disk format.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_EXPORTS = {
    "ConvertConfig": "planning.config",
    "FeatureSpec": "planning.config",
    "SplitSpec": "planning.config",
    "build_config": "planning.config",
    "convert": "converter",
    "ConvertResult": "converter",
    "read_manifest": "format.manifest",
    "describe_file": "checks.inspect",
    "finalize": "converter",
    **{
        name: "errors"
        for name in (
            "Hdf5ToRecordsError",
            "UsageError",
            "SourceNotFound",
            "SourceUnreadable",
            "DatasetNotFound",
            "SchemaError",
            "SelectionError",
            "UnsupportedDtype",
            "FilterUnavailable",
            "RecordTooLarge",
            "TransformError",
            "OutputError",
            "ManifestError",
            "WorkerDied",
            "ShardMissing",
            "ShardCorrupt",
            "UnknownName",
            "NotReferenceable",
            "SourceChanged",
            "SourceRefused",
            "ServiceUnavailable",
        )
    },
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
