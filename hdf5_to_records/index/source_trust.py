"""The HDF5 sources of an index-mode dataset: resolved, confined and checked unchanged.

Trust model: the reader reads only files that the manifest lists as sources, only under
the allowed roots (the dataset's directory tree, the source directories recorded at
conversion, and what the caller adds with ``allowed_roots=``), only files that are HDF5
files (signature and superblock: its end-of-file address must be the file's size, so an
archive holding an HDF5 file is refused), and only byte ranges inside them (checked
again on every read, see :mod:`hdf5_to_records.index.spans`). A source whose size
changed since the conversion is refused here. So is one with a new mtime, unless the
dataset has checksums (format 3, the default): then every byte range read is checked
against its CRC32C, so a copy with the same bytes reads (a copy to another machine keeps
the bytes, not the mtime) and an edit is refused when its bytes are read. A new mtime
with a content fingerprint that differs is refused here in any case. Without checksums
(``--checksums none``, format 2) the sampled fingerprint cannot vouch for the bytes it
does not sample, so nothing waves a new mtime through. Each file's identity (device,
inode, size) is kept, and the span reader refuses a file that is no longer the one
checked here (replaced, or swapped for a symlink).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from stat import S_ISREG

from ..errors import (
    Hdf5ToRecordsError,
    ManifestError,
    SourceChanged,
    SourceNotFound,
    SourceRefused,
    SourceUnreadable,
)
from ..format.dtypes import from_stored
from ..format.manifest_entries import FeatureEntry, SourceEntry
from .fingerprint import fingerprint_fd
from .spans import MAX_OPEN_FILES, OPEN_FLAGS, SourceFile, SpanReader

log = logging.getLogger(__name__)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def span_reader(
    spec,
    referenced: Sequence[FeatureEntry],
    *,
    allowed_roots: Sequence[str] | None = None,
    max_open_files: int = MAX_OPEN_FILES,
) -> SpanReader:
    """The reader of the ``referenced`` features of dataset ``spec`` (a
    :class:`~hdf5_to_records.format.dataset_spec.DatasetSpec`), its sources checked.

    Raises: what :func:`resolve_sources` raises.
    """
    sources = resolve_sources(
        spec.directory,
        list(spec.sources),
        spec.source_roots,
        [f.name for f in referenced],
        allowed_roots=allowed_roots,
        checksums=spec.checksums,
    )
    stored = {f.name: (from_stored(f.dtype), tuple(f.shape)) for f in referenced}
    return SpanReader(
        sources, stored, spec.rows_per_record, max_open_files, checksums=spec.checksums
    )


def resolve_sources(
    directory: str,
    manifest_sources: Sequence[SourceEntry],
    recorded_roots: Sequence[str],
    names: Sequence[str],
    *,
    allowed_roots: Sequence[str] | None = None,
    checksums: bool = False,
) -> tuple[SourceFile, ...]:
    """Check every source of an index-mode dataset and say where its features live.

    ``names`` are the referenced features to be read; ``checksums``: the dataset's
    byte ranges carry their CRC32C (a new mtime is then no reason to refuse).

    Raises:
        SourceRefused: a source outside the allowed roots, or not an HDF5 file.
        SourceNotFound: a source is missing.
        SourceUnreadable: a source cannot be opened or read.
        SourceChanged: a source's size or content changed since the conversion.
        ManifestError: a malformed source entry.
    """
    local = directory[len("file://") :] if directory.startswith("file://") else directory
    base = None if "://" in local else os.path.realpath(local)
    recorded = [r if os.path.isabs(r) else _join(base, r, directory) for r in recorded_roots]
    roots = [r for r in [base, *recorded, *(allowed_roots or ())] if r]
    roots = [os.path.realpath(os.path.expanduser(str(r))) for r in roots]
    out = []
    for entry in manifest_sources:
        listed, size, mtime, recorded_fingerprint = (
            entry.path,
            entry.size,
            entry.mtime,
            entry.fingerprint,
        )
        try:
            refs = {n: entry.reference(n) for n in names}
        except ManifestError as exc:
            raise ManifestError(f"manifest in {directory}: {exc}") from None
        path = listed if os.path.isabs(listed) else _join(base, listed, directory)
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
            raise SourceRefused(
                f"source {listed} resolves to {real}, outside the allowed roots "
                f"{roots}; pass allowed_roots=[...] to read it"
            )
        identity = _check_file(
            real, listed, directory, (size, mtime, recorded_fingerprint), checksums=checksums
        )
        for name, ref in refs.items():
            if ref.layout == "contiguous" and ref.offset + ref.num_rows * ref.row_bytes > size:
                raise SourceRefused(
                    f"source {listed}: dataset {ref.dataset} of feature {name!r} would end "
                    f"past the end of the file"
                )
        out.append(SourceFile(listed, real, size, refs, identity))
    return tuple(out)


def _join(base: str | None, path: str, directory: str) -> str:
    if base is None:
        raise SourceRefused(
            f"source path {path} in {directory} is relative, but the dataset is not on a "
            "local file system; index-mode sources must be local files"
        )
    return os.path.join(base, path)


def _check_file(
    real: str,
    listed: str,
    directory: str,
    recorded: tuple[int, float, str | None],
    *,
    checksums: bool,
) -> tuple[int, int]:
    """Open ``real`` (not through a final symlink), check it against its ``recorded``
    size, mtime and fingerprint, return (device, inode)."""
    size, mtime, fingerprint = recorded
    try:
        fd = os.open(real, OPEN_FLAGS)
    except FileNotFoundError:
        raise SourceNotFound(f"source {listed} of {directory} is missing ({real})") from None
    except OSError as exc:
        raise SourceUnreadable(f"source {listed} cannot be opened: {exc.strerror}") from None
    try:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode):
            raise SourceRefused(f"source {listed} is not a regular file")
        if stat.st_size != size:
            raise SourceChanged(
                f"source {listed} changed since the conversion: {stat.st_size} bytes, "
                f"recorded {size}; convert again"
            )
        _check_hdf5(fd, size, listed)
        if stat.st_mtime != mtime:
            _check_modified(fd, listed, fingerprint, checksums)
        return stat.st_dev, stat.st_ino
    except OSError as exc:
        if isinstance(exc, Hdf5ToRecordsError):
            raise
        raise SourceUnreadable(f"source {listed} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _check_modified(fd: int, listed: str, fingerprint: str | None, checksums: bool) -> None:
    """A source with a new mtime: refused unless checksums will vouch for its bytes."""
    if not checksums:
        raise SourceChanged(
            f"source {listed} changed since the conversion (modified); the dataset has no "
            "checksums to tell an identical copy from an edit; convert again"
        )
    if fingerprint is not None and fingerprint_fd(fd) != fingerprint:
        raise SourceChanged(
            f"source {listed} changed since the conversion (modified, and its "
            "content fingerprint differs); convert again"
        )
    log.debug("source %s has a new mtime; its byte ranges are checked as they are read", listed)


def _check_hdf5(fd: int, size: int, listed: str) -> None:
    """Refuse a file that is not an HDF5 file: a hand-edited manifest cannot make the
    reader read other files, not even an archive or image that embeds an HDF5 file.

    The superblock sits at 0, 512, 1024, ... and records the end-of-file address, which
    must be where the file ends.
    """
    offset = 0
    while offset < min(size, 1 << 30):
        head = os.pread(fd, 64, offset)
        if head[:8] == HDF5_SIGNATURE:
            if size in _superblock_ends(head, offset):
                return
            break
        offset = 512 if offset == 0 else offset * 2
    raise SourceRefused(f"source {listed} is not an HDF5 file; refusing to read it")


def _superblock_ends(head: bytes, offset: int) -> tuple[int, ...]:
    """Where a superblock at ``offset`` says the file ends, if it parses: its end-of-file
    address, also taken relative to the base address (HDF5 writes it absolute, with a
    user block included)."""
    version = head[8] if len(head) > 8 else None
    if version in (0, 1):
        width = head[13] if len(head) > 13 else 0
        start = 24 if version == 0 else 28
    elif version in (2, 3):
        width = head[9] if len(head) > 9 else 0
        start = 12
    else:
        return ()
    if width not in (2, 4, 8) or len(head) < start + 3 * width:
        return ()
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
    base = struct.unpack_from(fmt, head, start)[0]
    eof = struct.unpack_from(fmt, head, start + 2 * width)[0]
    return (eof, base + eof) if base == offset else ()
