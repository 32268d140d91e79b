"""Shuffled conversions of chunked sources: decompress the selection once, to scratch.

A shuffled shard gathers its rows from all over the sources. Read straight from
compressed chunks, every 64 MiB window decompresses each chunk its rows touch, so the
work grows with (selection / 64 MiB) x source size: quadratic. Staging first copies the
selected rows, in source order and decompressed, into uncompressed contiguous scratch
files (one sequential pass, each chunk decompressed once), and the shards gather from
those. It costs the selection's size in temporary disk space, next to the output.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import h5py
import numpy as np

from .. import fs
from ..errors import Hdf5ToRecordsError, OutputError
from ..planning.limits import DEFAULT_LIMITS, Limits
from ..planning.plan import ShardSpec
from ..planning.schema import FeatureSchema, SourceFile, SourceSet
from .output import SCRATCH_PREFIX
from .reading import ShardReader

log = logging.getLogger(__name__)


def needs_staging(shuffle: bool, sources: SourceSet, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Staging pays off for shuffled row selections larger than one read window that
    come from chunked (usually compressed) data (not for variable-length or sparse
    rows, which the scratch files' fixed-shape datasets cannot hold)."""
    if not shuffle or sources.mode != "rows":
        return False
    if any(f.ragged or f.sparse for f in sources.features):
        return False  # rows of varying size: gathered from the sources directly
    chunked = any(f.chunk_rows > 1 for f in sources.files)
    return chunked and sources.num_examples * sources.example_bytes > limits.window_bytes


@dataclass(frozen=True, eq=False)
class Staged:
    """Scratch copies of the selected rows, and how to find a source row in them."""

    sources: SourceSet
    unique_rows: tuple[np.ndarray, ...]  # per source file: the staged rows, sorted
    directory: str

    def remap(self, spec: ShardSpec) -> ShardSpec:
        """The same shard, reading row ``r`` of file ``f`` from its scratch position."""
        rows = np.empty_like(spec.rows)
        for file_id in np.unique(spec.file_ids):
            mask = spec.file_ids == file_id
            rows[mask] = np.searchsorted(self.unique_rows[file_id], spec.rows[mask])
        return dataclasses.replace(spec, rows=rows)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def stage(sources: SourceSet, output: str, limits: Limits = DEFAULT_LIMITS) -> Staged:
    """Copy every selected row, decompressed, into scratch files; return the new sources.

    Raises:
        SourceUnreadable and other read errors, as when converting directly.
    """
    base = output if not fs.is_url(output) else None
    directory = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base)
    features = tuple(dataclasses.replace(f, source="/" + f.name) for f in sources.features)
    reader = ShardReader(sources, sources.features, limits)
    files, uniques = [], []
    try:
        for file_id, source in enumerate(sources.files):
            unique = np.unique(source.rows)
            path = os.path.join(directory, f"{file_id:05d}.h5")
            with h5py.File(path, "w") as scratch:
                datasets = {
                    f.name: scratch.create_dataset(f.name, (unique.size, *f.shape), _dtype(f))
                    for f in features
                }
                ids = np.full(unique.size, file_id, np.int32)
                for window in reader.windows(ids, unique):
                    for name, column in window.columns.items():
                        datasets[name][window.start : window.stop] = column
            stat = os.stat(path)
            files.append(SourceFile(path, stat.st_size, stat.st_mtime, unique.size, unique))
            uniques.append(unique)
    except Hdf5ToRecordsError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise OutputError(
            f"cannot stage the shuffle's scratch copy in {directory}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        reader.close()
    log.info("staged %d rows for the shuffle in %s", sum(u.size for u in uniques), directory)
    staged = SourceSet("rows", tuple(files), features)
    return Staged(staged, tuple(uniques), directory)


def _dtype(feature: FeatureSchema):
    if feature.stored.encoding == "bytes":
        return h5py.vlen_dtype(bytes)
    return feature.stored.memory
