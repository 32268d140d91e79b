"""The HDF5 sources of an index-mode dataset: resolved, confined and checked unchanged.

Trust model: the reader reads only files that the manifest lists as sources, only under
the allowed roots (the dataset's directory tree, the source directories recorded at
conversion, and what the caller adds with ``allowed_roots=``), only files that are HDF5
files, and only byte ranges inside them (checked again on every read, see
:mod:`reader.spans`). A source whose size or content changed since the conversion is
refused: mtime differing alone is forgiven when the content fingerprint still matches
(a copy to another machine keeps the bytes, not the mtime).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from hdf5_to_records.errors import ManifestError, SourceChanged, SourceNotFound, SourceRefused
from hdf5_to_records.fingerprint import fingerprint
from hdf5_to_records.references import Reference

from .spans import SourceFile

log = logging.getLogger(__name__)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def resolve_sources(
    directory: str,
    manifest_sources: list[dict],
    recorded_roots: Sequence[str],
    names: Sequence[str],
    *,
    allowed_roots: Sequence[str] | None = None,
) -> tuple[SourceFile, ...]:
    """Check every source of an index-mode dataset and say where its features live.

    ``names`` are the referenced features to be read.

    Raises:
        SourceRefused: a source outside the allowed roots, or not an HDF5 file.
        SourceNotFound: a source is missing.
        SourceChanged: a source's size or content changed since the conversion.
        ManifestError: a malformed source entry.
    """
    if "://" in directory:
        base = None
    else:
        base = os.path.realpath(directory)
    recorded = [
        r if os.path.isabs(r) or base is None else os.path.join(base, r) for r in recorded_roots
    ]
    roots = [r for r in [base, *recorded, *(allowed_roots or ())] if r]
    roots = [os.path.realpath(os.path.expanduser(str(r))) for r in roots]
    out = []
    for entry in manifest_sources:
        try:
            listed = str(entry["path"])
            size, mtime = int(entry["size"]), float(entry["mtime"])
            recorded = entry.get("fingerprint")
            refs = {n: Reference.from_json(entry["references"][n]) for n in names}
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"manifest in {directory}: malformed source entry ({exc!r})"
            ) from None
        path = listed if os.path.isabs(listed) or base is None else os.path.join(base, listed)
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
            raise SourceRefused(
                f"source {listed} resolves to {real}, outside the allowed roots "
                f"{roots}; pass allowed_roots=[...] to read it"
            )
        try:
            stat = os.stat(real)
        except FileNotFoundError:
            raise SourceNotFound(f"source {listed} of {directory} is missing ({real})") from None
        if stat.st_size != size:
            raise SourceChanged(
                f"source {listed} changed since the conversion: {stat.st_size} bytes, "
                f"recorded {size}; convert again"
            )
        _check_hdf5(real, listed)
        if stat.st_mtime != mtime:
            if recorded is None or fingerprint(real) != recorded:
                raise SourceChanged(
                    f"source {listed} changed since the conversion (modified, and its "
                    "content fingerprint differs); convert again"
                )
            log.info("source %s has a new mtime but the same content fingerprint", listed)
        for name, ref in refs.items():
            if ref.layout == "contiguous" and ref.offset + ref.num_rows * ref.row_bytes > size:
                raise SourceRefused(
                    f"source {listed}: dataset {ref.dataset} of feature {name!r} would end "
                    f"past the end of the file"
                )
        out.append(SourceFile(listed, real, size, refs))
    return tuple(out)


def _check_hdf5(path: str, listed: str) -> None:
    """Refuse a file that is not HDF5: a hand-edited manifest cannot read other files."""
    with open(path, "rb") as handle:
        for offset in _SIGNATURE_OFFSETS:
            if os.pread(handle.fileno(), 8, offset) == HDF5_SIGNATURE:
                return
    raise SourceRefused(f"source {listed} is not an HDF5 file; refusing to read it")
