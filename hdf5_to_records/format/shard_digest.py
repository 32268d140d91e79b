"""The digest the manifest records for each shard (format 5): ``framing_sha256``.

It is the sha256 of the shard's record framing, record after record: each record's
8-byte length, the masked CRC32C of the length and the masked CRC32C of its data (16
bytes per record, as TFRecord frames it; of the uncompressed stream in a gzip shard).

Together with the CRCs it covers every byte: a flipped byte of a record fails that
record's CRC, a flipped CRC fails its check, and records swapped, dropped or replaced
change the digest. The size in the manifest catches bytes appended after the last record,
and a gzip shard's own CRC32 its compressed bytes. The writer computes it from the
framing it writes anyway, where a whole-shard sha256 cost 0.57-0.63 s of CPU per GB
(issue 18). Shards of older manifests carry a whole-file ``sha256`` instead, still
checked.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

from .proto import FrameReader, FramingError


class FramingDigest:
    """Accumulates the framing of records, in order."""

    def __init__(self):
        self._sha = hashlib.sha256()

    def add(self, prefix, suffix) -> None:
        """One record's 12-byte prefix (length and its CRC) and 4-byte suffix (data CRC)."""
        self._sha.update(prefix)
        self._sha.update(suffix)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def stream_digest(blocks: Iterable[bytes], *, gzip: bool) -> tuple[str, int]:
    """The framing digest and record count of a shard's bytes, every CRC checked.

    Raises:
        FramingError: a record fails its CRC, the stream ends inside a record, or a
            gzip stream is corrupt.
    """
    digest = FramingDigest()
    frames = FrameReader(digest)
    inflate = zlib.decompressobj(wbits=31) if gzip else None
    records = 0
    try:
        for block in blocks:
            data = inflate.decompress(block) if inflate is not None else block
            records += sum(1 for _ in frames.feed(data))
        if inflate is not None:
            records += sum(1 for _ in frames.feed(inflate.flush()))
            if not inflate.eof:
                raise FramingError("the gzip stream ends early")
    except zlib.error as exc:
        raise FramingError(f"corrupt gzip stream ({exc})") from None
    frames.finish()
    return digest.hexdigest(), records
