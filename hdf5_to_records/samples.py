"""Scene-like sample HDF5 files for the demo, the tests and the benchmarks.

``python -m hdf5_to_records.samples OUT.h5 --rows 300`` writes ``data`` float32
(N, 4096, 9) and ``label`` uint8 (N, 4096), written a block at a time so memory stays
bounded whatever N is.
"""

from __future__ import annotations

import argparse
import os

import h5py
import numpy as np

POINTS = 4096
CHANNELS = 9
ROW_BYTES = POINTS * CHANNELS * 4 + POINTS  # 151,552 bytes: one row of data (f4) + label (u1)
CHUNK_ROWS = 16  # rows per chunk in the chunked layouts: 2.4 MB per data chunk
LAYOUTS = ("contiguous", "chunked", "gzip")
_BLOCK_ROWS = 64


def scene_rows(start: int, stop: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic scene rows ``[start, stop)``: points plus per-point labels."""
    rng = np.random.default_rng([seed, start])
    n = stop - start
    data = rng.standard_normal((n, POINTS, CHANNELS), dtype=np.float32)
    data[:, :, :3] *= 10.0
    label = (np.abs(data[:, :, 0]) // 4).astype(np.uint8) % 13
    return data, label


def write_scene_file(path: str, num_rows: int, *, layout: str = "gzip", seed: int = 0) -> str:
    """Write a scene-like file.

    ``layout`` is ``contiguous``, ``chunked`` (16 rows, no filter) or ``gzip`` (16-row
    chunks, shuffle + gzip level 4).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kwargs: dict = {}
    if layout in ("chunked", "gzip"):
        kwargs["chunks"] = True
    if layout == "gzip":
        kwargs.update(compression="gzip", compression_opts=4, shuffle=True)
    chunk_rows = min(CHUNK_ROWS, max(num_rows, 1))
    with h5py.File(path, "w") as h5:
        data = h5.create_dataset(
            "data",
            (num_rows, POINTS, CHANNELS),
            np.float32,
            **({**kwargs, "chunks": (chunk_rows, POINTS, CHANNELS)} if kwargs else {}),
        )
        label = h5.create_dataset(
            "label",
            (num_rows, POINTS),
            np.uint8,
            **({**kwargs, "chunks": (chunk_rows, POINTS)} if kwargs else {}),
        )
        for start in range(0, num_rows, _BLOCK_ROWS):
            stop = min(num_rows, start + _BLOCK_ROWS)
            data[start:stop], label[start:stop] = scene_rows(start, stop, seed=seed)
    return path


def scene_file_layout(path: str) -> tuple[int, str] | None:
    """``(rows, layout)`` of a file written by :func:`write_scene_file`, else ``None``.

    ``None`` also for a missing, truncated or differently shaped file, so callers that
    cache samples (the benchmarks) can tell whether an existing file can be reused.
    """
    try:
        with h5py.File(path, "r") as h5:
            data, label = h5["data"], h5["label"]
            rows = data.shape[0]
            if (data.shape[1:], data.dtype, label.shape, label.dtype) != (
                (POINTS, CHANNELS),
                np.float32,
                (rows, POINTS),
                np.uint8,
            ):
                return None
            if data.chunks is None:
                kind = "contiguous"
            elif data.chunks[0] != CHUNK_ROWS:
                return None
            elif data.compression == "gzip" and data.shuffle:
                kind = "gzip"
            elif data.compression is None:
                kind = "chunked"
            else:
                return None
            return rows, kind
    except (OSError, KeyError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--layout", choices=LAYOUTS, default="gzip")
    args = parser.parse_args()
    write_scene_file(args.path, args.rows, layout=args.layout)
    print(f"wrote {args.path}: {args.rows} scene rows ({args.layout})")


if __name__ == "__main__":
    main()
