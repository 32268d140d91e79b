"""HDF5 files written the way the libraries users write HDF5 with write them by default.

Each ``write_<kind>(path)`` builder writes one small file (well under 2 MB) at ``path``
with that library's own API -- PyTables, pandas, AnnData, netCDF4, or h5py where h5py is
the library in question -- so that the tests can check the converter on real-world
layouts: PyTables compound tables with enum, nested, sub-array and fixed-string columns
and Blosc filters; pandas ``table`` and ``fixed`` stores; AnnData's sparse and
categorical encodings; netCDF-4 dimension scales, unlimited dimensions and big-endian
variables.

Every random choice is drawn from ``numpy.random.default_rng`` with a fixed seed, so two
runs give the same values. Each builder returns a dict of the values it wrote (NumPy
arrays, SciPy sparse matrices for sparse ``X``, or DataFrames for pandas), keyed by the
short names its docstring lists, for the tests to compare against what the converter
produced.

The third-party libraries are imported inside the builders, so that importing this
module needs only NumPy and h5py; a test can ``pytest.importorskip`` the library first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

SEED = 20240611

COLORS = {"red": 0, "green": 1, "blue": 2}  # the PyTables enum column's names -> codes
LABELS = [b"", b"a", b"bb", b"ccc", b"dddd", b"eight_ch", b"\xc3\xa9t\xc3\xa9", b"x y"]
BULK_LABELS = ["B cells", "CD4+ T", "CD8+ T", "Dendritic", "Monocyte", "NK"]


def _rng(salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + salt)


# --------------------------------------------------------------------------- PyTables


def _pytables_description() -> type:
    """A PyTables description. Without ``pos=`` PyTables orders the columns by name."""
    import tables

    class Nested(tables.IsDescription):
        x = tables.Float32Col()
        y = tables.Int16Col()

    class Row(tables.IsDescription):
        int32 = tables.Int32Col()
        float32 = tables.Float32Col()
        vec3 = tables.Float64Col(shape=(3,))
        flag = tables.BoolCol()
        color = tables.EnumCol(tables.Enum(COLORS), "red", base="uint8")
        label = tables.StringCol(8)
        nested = Nested

    return Row


def _pytables_rows(n: int) -> dict[str, np.ndarray]:
    rng = _rng(1)
    return {
        "int32": rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32, endpoint=True),
        "float32": rng.standard_normal(n).astype(np.float32),
        "vec3": rng.standard_normal((n, 3)),
        "flag": rng.random(n) < 0.3,
        "color": rng.integers(0, len(COLORS), n).astype(np.uint8),
        "label": np.array(LABELS, dtype="S8")[rng.integers(0, len(LABELS), n)],
        "nested/x": rng.standard_normal(n).astype(np.float32),
        "nested/y": rng.integers(-(2**15), 2**15, n).astype(np.int16),
    }


def write_pytables_table(
    path: Path, complib: str = "zlib", byteorder: str | None = None, n: int = 1000
) -> dict[str, np.ndarray]:
    """A PyTables ``Table`` at ``/group/table``, Filters(5, complib, shuffle=True).

    ``complib`` is any PyTables complib: "zlib", "blosc", "blosc:lz4", "blosc2", ...
    ``byteorder="big"`` stores the whole table big-endian (PyTables refuses a numpy
    dtype that mixes byte orders, so one big-endian field alone is not possible).

    Returns per column, keyed by PyTables' column path: "int32", "float32", "vec3"
    (n x 3 float64), "flag" (bool; an HDF5 bitfield on disk, which h5py reads as
    uint8), "color" (uint8 enum codes, see ``COLORS``), "label" (S8), "nested/x"
    (float32), "nested/y" (int16); and "table", the whole structured array as PyTables
    reads it (native byte order, fields in on-disk order, which is by name).

    PyTables records object timestamps, so the bytes differ from run to run (the values
    do not).
    """
    import tables

    values = _pytables_rows(n)
    filters = tables.Filters(complevel=5, complib=complib, shuffle=True)
    with tables.open_file(str(path), "w") as h5:
        table = h5.create_table(
            "/group",
            "table",
            _pytables_description(),
            filters=filters,
            expectedrows=n,
            byteorder=byteorder,
            createparents=True,
        )
        rows = np.zeros(n, dtype=table.dtype)
        for name, column in values.items():
            top, _, member = name.partition("/")
            if member:
                rows[top][member] = column
            else:
                rows[top] = column
        table.append(rows)
        table.flush()
        stored = table.read()  # PyTables reads native byte order, whatever is on disk
    return {**values, "table": stored}


def _ragged(n: int, salt: int, dtype: type, max_len: int = 12) -> list[np.ndarray]:
    rng = _rng(salt)
    lengths = rng.integers(0, max_len + 1, n)
    lengths[0] = 0  # always one empty row
    if dtype is np.float32:
        return [rng.standard_normal(k).astype(np.float32) for k in lengths]
    return [rng.integers(-(2**62), 2**62, k, dtype=np.int64) for k in lengths]


def _ragged_values(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    boxed = np.empty(len(rows), dtype=object)
    boxed[:] = rows
    return {
        "rows": boxed,
        "values": np.concatenate(rows),
        "lengths": np.array([len(r) for r in rows], dtype=np.int64),
    }


def write_pytables_vlarray(path: Path, n: int = 200) -> dict[str, np.ndarray]:
    """A PyTables ``VLArray`` of ``Float32Atom`` at ``/ragged``, row 0 empty.

    Returns "rows" (object array of float32 rows), "values" (all rows concatenated)
    and "lengths" (int64 row lengths).
    """
    import tables

    rows = _ragged(n, salt=2, dtype=np.float32)
    with tables.open_file(str(path), "w") as h5:
        vlarray = h5.create_vlarray("/", "ragged", tables.Float32Atom(), expectedrows=n)
        for row in rows:
            vlarray.append(row)
    return _ragged_values(rows)


def write_h5py_vlen(path: Path, n: int = 200) -> dict[str, np.ndarray]:
    """An h5py dataset ``/ragged`` of ``h5py.vlen_dtype(np.int64)``, row 0 empty.

    Returns "rows" (object array of int64 rows), "values" and "lengths" (int64).
    """
    rows = _ragged(n, salt=3, dtype=np.int64)
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("ragged", shape=(n,), dtype=h5py.vlen_dtype(np.int64))
        for i, row in enumerate(rows):
            dataset[i] = row
    return _ragged_values(rows)


# ----------------------------------------------------------------------------- pandas


def _pandas_frame(n: int) -> Any:
    import pandas as pd

    rng = _rng(4)
    words = np.array(["alpha", "beta", "gamma", "delta", "épsilon", ""], dtype=object)
    return pd.DataFrame(
        {
            "int64": rng.integers(-(2**62), 2**62, n, dtype=np.int64),
            "float64": rng.standard_normal(n),
            "float32": rng.standard_normal(n).astype(np.float32),
            "bool": rng.random(n) < 0.5,
            "string": words[rng.integers(0, len(words), n)],
        }
    )


def write_pandas_table(path: Path, n: int = 500) -> dict[str, Any]:
    """One pandas HDFStore file holding three frames, written with ``DataFrame.to_hdf``.

    Keys (both in the file and in the returned dict of DataFrames):
    "frame": ``format="table", complevel=5, complib="zlib"``, with a categorical
    column "category" besides int64, float64, float32, bool and (object) "string";
    "frame_dc": the same with ``data_columns=True``;
    "fixed": ``format="fixed"`` (the default), without "category", which that format
    cannot store.

    The file is about 1.3 MB, mostly the PyTables indexes (``_i_table``) that
    ``format="table"`` builds by default on the index and on each data column.
    """
    import pandas as pd

    frame = _pandas_frame(n)
    levels = ["low", "mid", "high"]
    codes = _rng(5).integers(0, len(levels), n)
    table = frame.assign(category=pd.Categorical.from_codes(codes, categories=levels))
    options = {"format": "table", "complevel": 5, "complib": "zlib"}
    table.to_hdf(path, key="frame", mode="w", **options)
    table.to_hdf(path, key="frame_dc", mode="a", data_columns=True, **options)
    frame.to_hdf(path, key="fixed", mode="a", format="fixed")
    return {"frame": table, "frame_dc": table.copy(), "fixed": frame}


# ---------------------------------------------------------------------------- AnnData


def _sparse(shape: tuple[int, int], salt: int, fmt: str) -> Any:
    import scipy.sparse as sp

    matrix = sp.random(*shape, density=0.1, format=fmt, dtype=np.float32, rng=_rng(salt))
    matrix.sort_indices()
    return matrix


def _anndata(fmt: str, n_obs: int = 300, n_vars: int = 200, n_raw: int = 250) -> Any:
    import anndata as ad
    import pandas as pd

    rng = _rng(6)
    louvain = rng.integers(0, 8, n_obs).astype(str)
    bulk = np.array(BULK_LABELS, dtype=object)[rng.integers(0, len(BULK_LABELS), n_obs)]
    obs = pd.DataFrame(
        {
            "louvain": pd.Categorical(louvain, categories=[str(i) for i in range(8)]),
            "bulk_labels": pd.Categorical(bulk, categories=BULK_LABELS),
            "n_counts": rng.gamma(2.0, 500.0, n_obs).astype(np.float32),
        },
        index=[f"cell_{i:04d}" for i in range(n_obs)],
    )
    var = pd.DataFrame(index=[f"gene_{i:03d}" for i in range(n_vars)])
    adata = ad.AnnData(X=_sparse((n_obs, n_vars), 7, fmt), obs=obs, var=var)
    adata.obsm["X_pca"] = rng.standard_normal((n_obs, 50)).astype(np.float32)
    adata.obsm["X_umap"] = rng.standard_normal((n_obs, 2)).astype(np.float32)
    raw_var = pd.DataFrame(index=[f"gene_{i:03d}" for i in range(n_raw)])
    adata.raw = ad.AnnData(X=_sparse((n_obs, n_raw), 8, fmt), obs=obs, var=raw_var)
    return adata


def _anndata_values(adata: Any) -> dict[str, Any]:
    obs = adata.obs
    return {
        "X": adata.X.copy(),
        "raw_X": adata.raw.X.copy(),
        "X_pca": adata.obsm["X_pca"].copy(),
        "X_umap": adata.obsm["X_umap"].copy(),
        "n_counts": obs["n_counts"].to_numpy(),
        "louvain_codes": obs["louvain"].cat.codes.to_numpy(),
        "louvain_categories": np.array(obs["louvain"].cat.categories, dtype=object),
        "bulk_labels_codes": obs["bulk_labels"].cat.codes.to_numpy(),
        "bulk_labels_categories": np.array(obs["bulk_labels"].cat.categories, dtype=object),
        "obs_names": np.array(adata.obs_names, dtype=object),
        "var_names": np.array(adata.var_names, dtype=object),
        "raw_var_names": np.array(adata.raw.var_names, dtype=object),
    }


def write_anndata(path: Path, compression: str | None = None) -> dict[str, Any]:
    """An ``.h5ad`` with CSR ``X`` (300 x 200 float32, density 0.1) and a CSR ``raw.X``
    (300 x 250), written by ``AnnData.write_h5ad(path, compression=compression)``
    (``None``, the default, or "gzip" / "lzf").

    Returns "X" and "raw_X" (scipy CSR, sorted indices), "X_pca" (300 x 50 float32),
    "X_umap" (300 x 2 float32), "n_counts" (float32 obs column), "louvain_codes" and
    "bulk_labels_codes" (int8 category codes), "louvain_categories" and
    "bulk_labels_categories", "obs_names", "var_names", "raw_var_names" (object str).
    """
    adata = _anndata("csr")
    adata.write_h5ad(path, compression=compression)
    return _anndata_values(adata)


def write_anndata_csc(path: Path, compression: str | None = None) -> dict[str, Any]:
    """As ``write_anndata`` but ``X`` and ``raw.X`` are CSC; "X" and "raw_X" come back as
    scipy CSC matrices (compare with ``.tocsr()`` or ``.toarray()``)."""
    adata = _anndata("csc")
    adata.write_h5ad(path, compression=compression)
    return _anndata_values(adata)


# ---------------------------------------------------------------------------- netCDF4


def write_netcdf4(
    path: Path, n_time: int = 12, n_lat: int = 18, n_lon: int = 36
) -> dict[str, np.ndarray]:
    """A netCDF-4 file (``netCDF4.Dataset``, format NETCDF4): dimensions time
    (unlimited), lat, lon; coordinate variables of the same names; "temperature"
    (time, lat, lon) float32 with ``zlib=True, chunksizes=(1, lat, lon)``; and
    "pressure" (time, lat, lon) float32 stored big-endian (``endian="big"``).

    Returns "time" (float64 hours), "lat", "lon", "temperature", "pressure" (float32,
    native byte order).
    """
    import netCDF4

    rng = _rng(9)
    values = {
        "time": np.arange(n_time, dtype=np.float64) * 6.0,
        "lat": np.linspace(-85.0, 85.0, n_lat, dtype=np.float32),
        "lon": np.linspace(0.0, 350.0, n_lon, dtype=np.float32),
        "temperature": (280 + 10 * rng.standard_normal((n_time, n_lat, n_lon))).astype(np.float32),
        "pressure": (1000 + rng.standard_normal((n_time, n_lat, n_lon))).astype(np.float32),
    }
    with netCDF4.Dataset(str(path), "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", n_lat)
        nc.createDimension("lon", n_lon)
        _netcdf_coordinates(nc, values)
        dims = ("time", "lat", "lon")
        temperature = nc.createVariable(
            "temperature", "f4", dims, zlib=True, chunksizes=(1, n_lat, n_lon)
        )
        temperature.units = "K"
        temperature[:] = values["temperature"]
        pressure = nc.createVariable("pressure", ">f4", dims, endian="big")
        pressure.units = "hPa"
        pressure[:] = values["pressure"]
    return values


def _netcdf_coordinates(nc: Any, values: dict[str, np.ndarray]) -> None:
    units = {
        "time": "hours since 2000-01-01 00:00:00",
        "lat": "degrees_north",
        "lon": "degrees_east",
    }
    for name, unit in units.items():
        variable = nc.createVariable(name, values[name].dtype, (name,))
        variable.units = unit
        variable[:] = values[name]


BUILDERS = {
    "pytables_table": write_pytables_table,
    "pytables_vlarray": write_pytables_vlarray,
    "h5py_vlen": write_h5py_vlen,
    "pandas_table": write_pandas_table,
    "anndata": write_anndata,
    "anndata_csc": write_anndata_csc,
    "netcdf4": write_netcdf4,
}
