"""What the index-mode trust tests share: a source with one dataset per kind of
reference, converted in index mode, and helpers that read it back or damage it."""

from __future__ import annotations

import os

import h5py
import numpy as np

import reader

from records import convert_small, load_manifest

N = 10
ROW_BYTES = 2 * 3 * 4  # rows of (2, 3) 4-byte values


def write_source(path) -> dict[str, np.ndarray]:
    """A source with one dataset per kind of reference; returns h5py's reads."""
    x = np.arange(N * 6, dtype="<f4").reshape(N, 2, 3) / 8
    with h5py.File(path, "w") as h5:
        h5["x"] = x  # contiguous
        h5.create_dataset(  # every decodable filter
            "g",
            data=np.arange(N * 6, dtype=">i4").reshape(N, 2, 3) * 7,
            chunks=(4, 2, 3),
            compression="gzip",
            shuffle=True,
            fletcher32=True,
        )
        h5.create_dataset("z", data=x * 3, chunks=(4, 2, 3), compression="gzip")  # gzip only
        h5.create_dataset("f", data=x * 5, chunks=(4, 2, 3), fletcher32=True)  # checksum only
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def make_dataset(tmp_path, checksums: str = "crc32c"):
    """``tmp/data/src.h5`` converted in index mode into ``tmp/out`` (3-row records):
    (output directory, source path, the values h5py reads)."""
    (tmp_path / "data").mkdir()
    source = tmp_path / "data" / "src.h5"
    values = write_source(source)
    out = convert_small(
        source, tmp_path / "out", mode="index", rows_per_record=3, checksums=checksums
    )
    return tmp_path / os.path.basename(out), source, values


def read_all(out, **options) -> dict[str, np.ndarray]:
    """Every example of the train split through ``reader.load``, stacked per feature."""
    ds = reader.load(str(out), **options)
    examples = list(ds)
    return {name: np.stack([e[name].numpy() for e in examples]) for name in ds.element_spec}


def assert_values(out, values, **options) -> None:
    got = read_all(out, **options)
    assert set(got) == set(values)
    for name, expected in values.items():
        expected = expected.astype(expected.dtype.newbyteorder("="))
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def reference(out, name: str) -> dict:
    return load_manifest(str(out))["sources"][0]["references"][name]


def chunk_offsets(path, name: str) -> list[tuple[int, int]]:
    """(byte offset, size) of each chunk of a dataset, as HDF5 reports them."""
    with h5py.File(path, "r") as h5:
        ds = h5[name]
        infos = [ds.id.get_chunk_info_by_coord((row, 0, 0)) for row in range(0, N, ds.chunks[0])]
        return [(info.byte_offset, info.size) for info in infos]


def flip_byte(path, offset: int, *, keep_mtime: bool) -> None:
    """Invert one byte of a file, keeping its mtime or making sure it changes."""
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    mtime = stat.st_mtime_ns if keep_mtime else stat.st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(stat.st_atime_ns, mtime))
