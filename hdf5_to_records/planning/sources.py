"""Opening HDF5 sources: globs, clear errors, dataset lookup, filters, layout facts.

Only metadata is touched here; row data is read by :mod:`hdf5_to_records.writing.reading`.
"""

from __future__ import annotations

import difflib
import glob
import os
from dataclasses import dataclass

import h5py

from ..errors import (
    DatasetNotFound,
    FilterUnavailable,
    SchemaError,
    SourceNotFound,
    SourceUnreadable,
)
from .columns import FieldColumn, split_field
from .group_columns import SparseMatrix, open_group_column

# Filter ids that hdf5plugin registers, and the names users know them by.
_FILTER_NAMES = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32026: "blosc2",
}
CHUNK_CACHE_BYTES = 16 << 20  # 16 MiB: holds several 16-row scene chunks (2.4 MB each)


def expand_sources(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Expand files and glob patterns into one sorted, de-duplicated list of paths.

    Raises:
        SourceNotFound: a pattern or file matches nothing.
    """
    paths: set[str] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
            if not matches:
                raise SourceNotFound(f"source pattern {pattern!r} matches no files")
            paths.update(os.path.abspath(p) for p in matches)
        elif os.path.isfile(pattern):
            paths.add(os.path.abspath(pattern))
        elif os.path.isdir(pattern):
            raise SourceNotFound(f"source {pattern}: is a directory; give files or a glob")
        else:
            raise SourceNotFound(f"source {pattern}: no such file")
    return sorted(paths)


def open_h5(path: str) -> h5py.File:
    """Open an HDF5 file read-only with a chunk cache sized for row-run reads.

    Raises:
        SourceNotFound: the file does not exist.
        SourceUnreadable: not an HDF5 file, truncated, or unreadable.
    """
    name = os.path.basename(path)
    try:
        return h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
    except FileNotFoundError:
        raise SourceNotFound(f"source {path}: no such file") from None
    except PermissionError:
        raise SourceUnreadable(f"source {path}: permission denied") from None
    except OSError as exc:
        text = str(exc)
        if "file signature not found" in text:
            reason = "not an HDF5 file"
        elif "truncated" in text or "eof" in text.lower():
            reason = "truncated HDF5 file (its end is missing)"
        else:
            reason = f"cannot open as HDF5 ({text.split('(')[0].strip()})"
        raise SourceUnreadable(f"source {name}: {reason}") from None


def list_datasets(h5obj: h5py.Group) -> list[str]:
    """Absolute paths of all datasets below ``h5obj`` (soft links followed, broken skipped)."""
    found: list[str] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append("/" + name if not name.startswith("/") else name)

    try:
        h5obj.visititems(visit)
    except (KeyError, OSError):
        pass
    prefix = h5obj.name.rstrip("/")
    return [p if p.startswith(prefix + "/") else prefix + p for p in found] if prefix else found


def get_dataset(
    h5obj: h5py.Group,
    path: str,
    *,
    where: str,
    option: str,
    sparse_shape: tuple[int, ...] | None = None,
) -> h5py.Dataset:
    """Look up a dataset, naming the nearest existing names when it is missing.

    ``/table[field]`` is one field of a compound dataset, as a :class:`FieldColumn`; a
    CSR matrix group a :class:`SparseMatrix` (``sparse_shape`` when it has no shape
    attribute), an AnnData categorical a :class:`CategoricalColumn`.

    Raises:
        DatasetNotFound: no dataset at ``path`` (or it is a group or a broken link).
        SchemaError: a field the dataset does not have (naming those it has), or a
            sparse matrix that cannot be read by rows.
    """
    dataset_path, field = split_field(path)
    if field is not None and _missing(h5obj, path):  # a name ending in [..] is itself
        if not _missing(h5obj, dataset_path) and isinstance(h5obj[dataset_path], h5py.Group):
            raise SchemaError(
                f"{option}: [{field}] selects a field, but {dataset_path!r} in {where} is a "
                "group, not a compound dataset"
            )
        ds = get_dataset(h5obj, dataset_path, where=where, option=option)
        return FieldColumn(ds, field, where=f"{option}: dataset {ds.name} in {where}")
    try:
        obj = h5obj[path]
    except (KeyError, OSError, ValueError):
        obj = None
    if isinstance(obj, h5py.Dataset):
        return obj
    if isinstance(obj, h5py.Group):
        column = open_group_column(
            obj, where=f"{option}: group {obj.name} in {where}", sparse_shape=sparse_shape
        )
        if column is not None:
            return column
        raise DatasetNotFound(f"{option}: {path!r} in {where} is a group, not a dataset")
    broken = _broken_link(h5obj, path)
    if broken:
        raise DatasetNotFound(f"{option}: {path!r} in {where} is {broken}")
    existing = list_datasets(h5obj)
    if not path.startswith("/"):
        base = h5obj.name.rstrip("/") + "/"
        existing = [p[len(base) :] if p.startswith(base) else p for p in existing]
    near = difflib.get_close_matches(path, existing, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    if not near and existing:
        hint = f"; it has {', '.join(repr(n) for n in existing[:5])}" + (
            ", ..." if len(existing) > 5 else ""
        )
    raise DatasetNotFound(f"{option}: dataset {path!r} not found in {where}{hint}")


def _missing(h5obj: h5py.Group, path: str) -> bool:
    try:
        return h5obj.get(path) is None
    except (KeyError, OSError, ValueError):
        return True


def _broken_link(h5obj: h5py.Group, path: str) -> str | None:
    """Describe ``path`` when it is a link whose target cannot be opened, else ``None``."""
    try:
        link = h5obj.get(path, getlink=True)
    except (KeyError, OSError, ValueError):
        return None
    if isinstance(link, h5py.SoftLink):
        return f"a soft link to {link.path!r}, which does not exist"
    if isinstance(link, h5py.ExternalLink):
        return (
            f"an external link to {link.path!r} in {link.filename}, which cannot be "
            "opened (missing file, or no such dataset in it)"
        )
    return None


def filter_names(dataset: h5py.Dataset) -> list[str]:
    """Names of the HDF5 filters in a dataset's pipeline, in order."""
    plist = dataset.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, raw_name = plist.get_filter(i)
        names.append(_FILTER_NAMES.get(code) or raw_name.decode(errors="replace") or f"id {code}")
    return names


def ensure_filters(dataset: h5py.Dataset, *, where: str) -> None:
    """Check ``dataset`` can be decoded here: every filter is available (hdf5plugin is
    loaded if needed) and, for a virtual dataset, every source file is present.

    Raises:
        FilterUnavailable: naming the filter, the dataset and the file.
        SourceNotFound: a virtual dataset's source file is missing (HDF5 would silently
            read fill values in its place).
    """
    if isinstance(dataset, SparseMatrix):
        for part in dataset.parts:
            ensure_filters(part, where=where)
        return
    if dataset.is_virtual:
        _ensure_virtual_sources(dataset, where=where)
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _flags, _values, raw_name = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):
            continue
        try:
            import hdf5plugin  # noqa: F401  registers lz4, blosc, bitshuffle, zstd, ...
        except ImportError:
            pass
        if not h5py.h5z.filter_avail(code):
            name = _FILTER_NAMES.get(code) or raw_name.decode(errors="replace") or "unknown"
            raise FilterUnavailable(
                f"dataset {dataset.name} in {where}: compression filter {name!r} (id {code}) "
                "is not available; install hdf5plugin or the HDF5 plugin for it"
            )


def _ensure_virtual_sources(dataset: h5py.Dataset, *, where: str) -> None:
    base = os.path.dirname(os.path.abspath(dataset.file.filename))
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    for source in dataset.virtual_sources():
        name = source.file_name
        if name == "." or "%" in name:  # this file, or a printf-style pattern
            continue
        candidates = [name] if os.path.isabs(name) else [os.path.join(base, name), name]
        if prefix and not os.path.isabs(name):
            candidates.append(os.path.join(prefix, name))
        if not any(os.path.isfile(c) for c in candidates):
            raise SourceNotFound(
                f"virtual dataset {dataset.name} in {where}: its source file {name} (dataset "
                f"{source.dset_name}) is missing; HDF5 would read fill values in its place"
            )


@dataclass(frozen=True)
class Layout:
    """Storage facts of one dataset, for reads and for ``inspect``."""

    kind: str  # "contiguous", "chunked", "compact" or "virtual"
    chunks: tuple[int, ...] | None
    filters: tuple[str, ...]

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk along axis 0 (1 for unchunked data)."""
        return self.chunks[0] if self.chunks else 1


def layout(dataset: h5py.Dataset) -> Layout:
    """The storage layout of a dataset."""
    kinds = {
        h5py.h5d.CONTIGUOUS: "contiguous",
        h5py.h5d.CHUNKED: "chunked",
        h5py.h5d.COMPACT: "compact",
    }
    plist = dataset.id.get_create_plist()
    kind = kinds.get(plist.get_layout(), "virtual")
    if dataset.is_virtual:
        kind = "virtual"
    return Layout(kind, dataset.chunks, tuple(filter_names(dataset)))
