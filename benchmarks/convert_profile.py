"""Where one conversion worker's time goes (issue 18): each stage timed alone, per GB.

On one scene source (``contiguous`` or ``gzip``), on one thread, in this process:

- ``read``: the converter's own ``ShardReader`` over every row, window by window (h5py
  ``read_direct`` into the window buffers; gzip chunks read raw, inflated by libdeflate
  and unshuffled into them: ``writing/chunk_reads.py``);
- ``read, h5py's filter pipeline``: the same reader with gzip inflated by h5py (zlib),
  as before issue 18; ``read, direct chunks alone``: the raw chunk loop without the
  reader, into one reused buffer;
- ``encode``: ``Blocker`` + ``encode_block`` over the windows (headers, views);
- ``crc32c``: the TFRecord data CRC over every record's bytes;
- ``sha256`` and ``blake3`` (1 and all threads): the whole-shard digest candidates;
- ``write``: every record's bytes written to a file in the output directory (page cache),
  then ``fsync``-free close, as the converter writes.

Stages other than the reads reuse the bytes of the last windows read, so each measures
its own cost only. Figures are seconds per GB of source data (decimal GB), medians over
``--repeats``.

    .venv/bin/python benchmarks/convert_profile.py [--layout gzip] [--rows 7200]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import statistics
import tempfile
import time

import h5py
import numpy as np
from convert_bench import ensure_source

from hdf5_to_records.planning.config import build_config
from hdf5_to_records.planning.schema import scan_sources
from hdf5_to_records.planning.sharding import choose_rows_per_record
from hdf5_to_records.writing.encode import Blocker, encode_block, record_framing
from hdf5_to_records.writing.memory import keep_freed_memory
from hdf5_to_records.writing.reading import ShardReader

HERE = os.path.dirname(os.path.abspath(__file__))
GB = 1e9


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def read_all(source: str, *, h5py_filters: bool = False) -> tuple[float, int, list]:
    """The converter's reader over every row; its seconds, bytes and the last window.
    ``h5py_filters``: gzip chunks inflate in h5py's filter pipeline (as before issue 18)."""
    from hdf5_to_records.writing import reading

    reading_direct = reading.direct_reference
    if h5py_filters:
        reading.direct_reference = lambda *args: None
    config = build_config({"sources": [source], "output": tempfile.mkdtemp()})
    sources = scan_sources(config.source_options)
    reader = ShardReader(sources, sources.features)
    rows = sources.files[0].rows
    ids = np.zeros(rows.size, np.int32)
    total, last = 0, None
    started = time.perf_counter()
    for window in reader.windows(ids, rows):
        total += sum(np.asarray(c).nbytes for c in window.columns.values())
        last = window
    seconds = time.perf_counter() - started
    reader.close()
    reading.direct_reference = reading_direct
    return seconds, total, (last, sources.features)


def read_direct_chunks(source: str) -> float:
    """Every chunk of ``data`` and ``label`` read raw and inflated with libdeflate."""
    from deflate import zlib_decompress

    from hdf5_to_records.index.chunk_filters import unshuffle

    started = time.perf_counter()
    with h5py.File(source, "r") as h5:
        for name in ("data", "label"):
            ds = h5[name]
            chunk = ds.chunks
            full = np.empty(chunk, ds.dtype)
            raw_out = np.empty(full.nbytes, np.uint8)
            for start in range(0, ds.shape[0], chunk[0]):
                _, raw = ds.id.read_direct_chunk((start,) + (0,) * (ds.ndim - 1))
                inflated = np.frombuffer(zlib_decompress(raw, full.nbytes), np.uint8)
                raw_out[: inflated.size] = inflated
                unshuffle(raw_out, ds.dtype.itemsize, full.reshape(-1).view(np.uint8))
    return time.perf_counter() - started


def pieces_of(window, features) -> list[list]:
    rows_per_record = choose_rows_per_record(sum(f.example_bytes() for f in features))
    n = window.stop - window.start
    blocker = Blocker(itertools.repeat(rows_per_record))
    blocks = list(blocker.add(window.columns, n)) + list(blocker.flush())
    return [encode_block(block, count, features) for block, count in blocks]


def profile_once(source: str, layout: str, workdir: str, note) -> None:
    """Every stage once; ``note(stage, seconds, bytes)`` records each."""
    seconds, total, (window, features) = read_all(source)
    note("read (the worker's ShardReader)", seconds, total)
    if layout == "gzip":
        note("read, h5py's filter pipeline", read_all(source, h5py_filters=True)[0], total)
        note("read, direct chunks alone", read_direct_chunks(source), total)
    records = pieces_of(window, features)
    window_bytes = sum(np.asarray(c).nbytes for c in window.columns.values())
    note("encode", timed(lambda: pieces_of(window, features)), window_bytes)
    flat = [p for record in records for p in record]
    nbytes = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in flat)
    note("crc32c (record framing)", timed(lambda: [record_framing(r) for r in records]),
         nbytes)  # fmt: skip

    def digest(make):
        h = make()
        for piece in flat:
            h.update(piece)
        return h.digest()

    note("sha256", timed(lambda: digest(hashlib.sha256)), nbytes)
    try:
        import blake3

        note("blake3, 1 thread", timed(lambda: digest(blake3.blake3)), nbytes)
        auto = blake3.blake3.AUTO
        threaded = lambda: blake3.blake3(max_threads=auto)  # noqa: E731
        note("blake3, all threads", timed(lambda: digest(threaded)), nbytes)
    except ImportError:
        pass

    def write() -> None:
        with tempfile.NamedTemporaryFile(dir=workdir) as handle:
            for piece in flat:
                handle.write(piece)
            handle.flush()

    note("write (page cache)", timed(write), nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="gzip", choices=["contiguous", "gzip"])
    parser.add_argument("--rows", type=int, default=7200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(HERE, "_work"))
    args = parser.parse_args()
    keep_freed_memory()  # as a worker does
    os.makedirs(args.workdir, exist_ok=True)
    source = ensure_source(os.path.abspath(args.workdir), args.rows, args.layout)
    per_gb: dict[str, list[float]] = {}

    def note(stage: str, seconds: float, nbytes: float) -> None:
        per_gb.setdefault(stage, []).append(seconds / (nbytes / GB))

    for _ in range(args.repeats):
        profile_once(source, args.layout, args.workdir, note)
    print(f"one worker's stages on {source} ({args.layout}), seconds per GB, "
          f"medians of {args.repeats}:")  # fmt: skip
    for stage, values in per_gb.items():
        print(f"  {stage:<34} {statistics.median(values):6.3f} s/GB  "
              f"({' '.join(f'{v:.3f}' for v in values)})")  # fmt: skip


if __name__ == "__main__":
    main()
