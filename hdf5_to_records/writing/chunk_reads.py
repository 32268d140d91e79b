"""Read rows of gzip-compressed datasets chunk by chunk, past HDF5's filter pipeline.

h5py's own read inflates each chunk with zlib into HDF5's chunk buffer, then copies the
rows out. Here each stored chunk is read raw (``read_direct_chunk``), inflated by
libdeflate and unshuffled straight into the window buffer: index mode's decoder
(``chunk_filters.undo_filters``), at 0.98 s per GB here against h5py's 1.94 s
(``benchmarks/convert_profile.py``). Datasets it does not cover (other filters, byte
orders or types, chunks that split rows or were never written) read through h5py.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..errors import SourceUnreadable
from ..format.reference import Reference
from ..index.chunk_filters import undo_filters
from ..index.references import probe
from ..planning.features import FeatureSchema


def direct_reference(ds: h5py.Dataset, feature: FeatureSchema, path: str) -> Reference | None:
    """How to read ``ds``'s chunks past h5py, or ``None`` where h5py must read it: only
    gzip chunks of whole rows whose bytes are already the stored ones."""
    if not isinstance(ds, h5py.Dataset) or feature.sparse or feature.stored.encoding != "raw":
        return None
    if ds.dtype != feature.stored.memory or ds.dtype.kind not in "iufc":
        return None  # byte order or type conversions: HDF5 does them
    ref = probe(ds, path)
    if not isinstance(ref, Reference) or ref.layout != "chunked" or "gzip" not in ref.filters:
        return None
    return ref


def read_chunk_rows(ds: h5py.Dataset, ref: Reference, lo: int, hi: int, dest: np.ndarray) -> None:
    """Rows ``[lo, hi)`` of ``ds`` into ``dest`` (C-contiguous, ``hi - lo`` rows).

    Chunks wholly inside the range decode straight into ``dest``; the first and last may
    need a part of their rows, and decode into a scratch chunk first.

    Raises:
        SourceUnreadable: a chunk that cannot be read or does not decode, naming the
            chunk (the caller adds the dataset and file, as for h5py's read errors).
    """
    rows = ref.chunk_rows
    flat = dest.reshape(hi - lo, -1).view(np.uint8)
    scratch = None
    tail = (0,) * (ds.ndim - 1)
    for start in range(lo - lo % rows, hi, rows):
        a, b = max(lo, start), min(hi, start + rows)
        whole = a == start and b == start + rows
        if whole:
            out = flat[a - lo : b - lo].reshape(-1)
        else:
            if scratch is None:
                scratch = np.empty((rows, flat.shape[1]), np.uint8)
            out = scratch.reshape(-1)
        chunk = f"the chunk at row {start}"
        try:
            mask, raw = ds.id.read_direct_chunk((start, *tail))
            undo_filters(np.frombuffer(raw, np.uint8), ref, mask, chunk, out)
        except ValueError as exc:  # it names the chunk
            raise SourceUnreadable(str(exc)) from None
        except (OSError, KeyError) as exc:
            raise SourceUnreadable(f"{chunk} cannot be read: {exc}") from None
        if not whole:
            flat[a - lo : b - lo] = scratch[a - start : b - start]
