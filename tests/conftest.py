"""Fixtures for the round-trip tests: tiny HDF5 files with known values in every layout
the converter claims to handle, one call to convert them, and an exact comparison of the
decoded records with what h5py reads from the source.

The helpers are session-scoped so that hypothesis tests can use them too.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import settings

from hdf5_to_records import build_config, convert

# Hypothesis: the same examples on every run and no examples database, so `make test`
# and CI give one result (HYPOTHESIS_PROFILE=explore searches afresh, locally only;
# its database lies in .hypothesis/, which git ignores).
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

PLUGIN_LAYOUTS = ("lz4", "blosc", "bitshuffle", "zstd")  # need hdf5plugin, else skipped


def _plugin_filter(name: str) -> dict:
    hdf5plugin = pytest.importorskip("hdf5plugin")
    return {
        "lz4": hdf5plugin.LZ4,
        "blosc": hdf5plugin.Blosc,
        "bitshuffle": hdf5plugin.Bitshuffle,
        "zstd": hdf5plugin.Zstd,
    }[name]()


def write_dataset(
    group: h5py.Group, name: str, data: np.ndarray, layout: str = "contiguous"
) -> h5py.Dataset:
    """Write ``data`` under ``name`` in one storage layout.

    Layouts: ``contiguous``, ``compact``, ``chunked``, ``gzip`` (with shuffle),
    ``shuffle``, ``lzf``, ``fletcher32``, and the hdf5plugin filters ``lz4``, ``blosc``,
    ``bitshuffle`` and ``zstd``.

    Chunks hold 3 rows, so any dataset of more than 3 rows spans several chunks and the
    last chunk is partial.
    """
    data = np.asarray(data)
    if layout == "compact":
        return _write_compact(group, name, data)
    kwargs: dict = {}
    if layout != "contiguous" and data.ndim:
        kwargs["chunks"] = (min(3, data.shape[0]) or 1, *data.shape[1:])
        if 0 in kwargs["chunks"]:  # zero-sized rows: let h5py choose
            kwargs.pop("chunks")
    if layout == "gzip":
        kwargs.update(compression="gzip", compression_opts=4, shuffle=True)
    elif layout == "shuffle":
        kwargs.update(shuffle=True)
    elif layout == "lzf":
        kwargs.update(compression="lzf")
    elif layout == "fletcher32":
        kwargs.update(fletcher32=True)
    elif layout in PLUGIN_LAYOUTS:
        kwargs.update(_plugin_filter(layout))
    elif layout not in ("contiguous", "chunked"):
        raise ValueError(f"unknown layout {layout!r}")
    return group.create_dataset(name, data=data, **kwargs)


def _write_compact(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """The compact layout (data inside the object header) through h5py's low-level API."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(data.shape)
    tid = h5py.h5t.py_create(data.dtype, logical=True)
    h5py.h5d.create(group.id, name.encode(), tid, space, dcpl=dcpl)
    dataset = group[name]
    if data.size:
        dataset[...] = data
    assert dataset.id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    return dataset


def as_stored(value) -> np.ndarray:
    """What the records must hold for an h5py read: little-endian numbers, bool as
    uint8 0/1, strings as bytes (in an object array)."""
    value = np.asarray(value)
    if value.dtype.kind in "SOU":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in value.ravel().tolist()]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(value.shape)
    if value.dtype.kind == "b":
        return value.astype(np.uint8)
    return value.astype(value.dtype.newbyteorder("<"))


def assert_examples_equal(got: Sequence[np.ndarray], expected: Sequence, *, what: str = "") -> None:
    """Every decoded example equals its source value: shape, dtype and exact bytes.

    Numbers compare bit for bit (so NaN payloads and -0.0 count), strings by value.
    """
    assert len(got) == len(expected), f"{what}: {len(got)} examples, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), as_stored(e)
        assert g.shape == e.shape, f"{what}[{i}]: shape {g.shape}, expected {e.shape}"
        if e.dtype == object:
            assert g.tolist() == e.tolist(), f"{what}[{i}]: {g.tolist()!r} != {e.tolist()!r}"
        else:
            assert g.dtype == e.dtype, f"{what}[{i}]: dtype {g.dtype}, expected {e.dtype}"
            assert g.tobytes() == e.tobytes(), f"{what}[{i}]: {g!r} != {e!r}"


@pytest.fixture(scope="session")
def write_h5() -> Callable[..., str]:
    """``write_h5(path, {name: array}, layout=...)``: a file of datasets in one layout."""

    def write(path, datasets: dict[str, np.ndarray], layout: str = "contiguous") -> str:
        with h5py.File(path, "w") as h5:
            for name, data in datasets.items():
                parent, _, base = name.rpartition("/")
                write_dataset(h5.require_group(parent or "/"), base, data, layout)
        return str(path)

    return write


@pytest.fixture(scope="session")
def convert_h5(tmp_path_factory) -> Callable[..., str]:
    """``convert_h5(sources, **options)``: run a conversion into a fresh directory.

    Options are ``build_config`` keys; ``workers`` defaults to 1 (in-process);
    ``limits`` are the converter's :class:`Limits`. Returns the output directory.
    """
    counter = itertools.count()

    def run(sources, *, limits=None, **options) -> str:
        out = options.pop("output", None)
        if out is None:
            out = tmp_path_factory.mktemp("records") / f"out{next(counter)}"
        if isinstance(sources, (str, Path)):
            sources = [sources]
        config = build_config(
            {"sources": [str(s) for s in sources], "output": str(out), "workers": 1, **options}
        )
        convert(config, **({} if limits is None else {"limits": limits}))
        return str(out)

    return run


@pytest.fixture(scope="session")
def check_examples() -> Callable[..., None]:
    """``check_examples(got, expected, what=...)``: see :func:`assert_examples_equal`."""
    return assert_examples_equal


@pytest.fixture(scope="session")
def stored() -> Callable[[object], np.ndarray]:
    """``stored(value)``: the value as the records hold it (see :func:`as_stored`)."""
    return as_stored


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """For the fuzz tests: mode -> (work directory, its original manifest). Each example
    rewrites only the work directory's manifest.json; the shards (and index mode's
    source, referenced as ``../rows.h5``) stay intact."""
    from fuzzing import N as n  # the rows the fuzz tests expect
    from records import convert_small

    root = tmp_path_factory.mktemp("fuzz")
    with h5py.File(root / "rows.h5", "w") as h5:
        h5["x"] = np.arange(n * 3, dtype="<f4").reshape(n, 3)
        h5.create_dataset("y", data=np.arange(n, dtype="<i8"), chunks=(4,), compression="gzip")
        h5["name"] = np.array([f"r{i}".encode() for i in range(n)], dtype="S3")
    options = {
        "copy": dict(num_shards=2, rows_per_record=3),
        "index": dict(num_shards=2, rows_per_record=3, mode="index", features=["x=/x", "y=/y"]),
    }
    out = {}
    for mode, kwargs in options.items():
        convert_small(root / "rows.h5", root / mode, **kwargs)
        work = root / f"{mode}_work"
        shutil.copytree(root / mode, work)
        with open(work / "manifest.json") as handle:
            out[mode] = (str(work), json.load(handle))
    return out
