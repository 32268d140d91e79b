"""``--mode auto``'s mix of references and copies, the refusals of ``--mode index``
(library and CLI), and the size of an index-mode output."""

import os
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import reader
from hdf5_to_records.cli import main
from hdf5_to_records.errors import NotReferenceable

from indexing import N, assert_same, compact, h5_read, read_all, storage, values_for
from records import convert_small, load_manifest

# ---- auto mode's mix, --mode index's refusals ---------------------------------------


def test_auto_mode_mixes_references_and_copies(tmp_path):
    path = tmp_path / "mix.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("ok", data=values_for(">f4", (N, 3), 1))
        h5.create_dataset(
            "small", data=values_for("<i2", (N, 2), 2), chunks=(4, 2), compression="lzf"
        )
        h5["name"] = np.array([f"row{i}".encode() for i in range(N)], dtype="S6")
        h5.create_dataset(
            "text", data=[f"t{i}" * (i % 3 + 1) for i in range(N)], dtype=h5py.string_dtype()
        )
    out = convert_small(path, tmp_path / "out", mode="auto", rows_per_record=5)
    manifest = load_manifest(out)
    assert storage(out) == {"name": "copy", "ok": "reference", "small": "copy", "text": "copy"}
    assert manifest["format_version"] == 5  # 3 (checksums) and 5 (framing digests)
    assert list(manifest["sources"][0]["references"]) == ["ok"]
    got = read_all(out)
    for name in ("ok", "small"):
        assert_same(got[name], h5_read(path, name), name)
    assert got["name"].tolist() == h5_read(path, "name").tolist()
    assert got["text"].tolist() == h5_read(path, "text").tolist()
    assert got["text"][4] == b"t4t4"


def test_copy_mode_manifest_is_version_5_without_source_references(tmp_path):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(N, dtype="<f4")
    manifest = load_manifest(convert_small(path, tmp_path / "out"))
    assert manifest["format_version"] == 5
    assert "source_roots" not in manifest and "references" not in manifest["sources"][0]
    assert storage(tmp_path / "out") == {"x": "copy"}


def _bad(kind: str):
    """Write a dataset that cannot be referenced; return the reason's expected text."""

    def write(h5: h5py.File) -> None:
        data = np.linspace(-3, 3, N * 6, dtype="<f4").reshape(N, 2, 3)  # finite: scaleoffset
        if kind == "compact":
            compact(h5, "bad", data)
        elif kind == "lzf":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), compression="lzf")
        elif kind == "scaleoffset":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), scaleoffset=2)
        elif kind == "blosc":
            hdf5plugin = pytest.importorskip("hdf5plugin")
            h5.create_dataset("bad", data=data, chunks=(4, 2, 3), **hdf5plugin.Blosc())
        elif kind == "split_rows":
            h5.create_dataset("bad", data=data, chunks=(4, 2, 1))
        elif kind == "strings":
            h5["bad"] = np.array([b"s%d" % i for i in range(N)])
        elif kind == "partial":
            ds = h5.create_dataset("bad", shape=data.shape, dtype="<f4", chunks=(4, 2, 3))
            ds[:8] = data[:8]

    return write


_FILTER = (
    "filter '{}' (is not gzip, shuffle or fletcher32|only gzip, shuffle and fletcher32 are decoded)"
)
NOT_REFERENCEABLE = {  # kind -> the reason, a regular expression
    "compact": re.escape("compact layout (stored in the object header)"),
    "lzf": _FILTER.format("lzf"),
    "scaleoffset": _FILTER.format("scaleoffset"),
    "blosc": _FILTER.format("blosc"),
    "split_rows": re.escape("chunks (4, 2, 1) split rows of shape (2, 3)"),
    "strings": re.escape("strings are stored by value"),
    "partial": re.escape("some chunks were never written (they read as fill values)"),
}


@pytest.mark.parametrize("kind", NOT_REFERENCEABLE)
def test_index_mode_refuses_what_it_cannot_reference(tmp_path, kind):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["ok"] = np.arange(N, dtype=">i4")
        _bad(kind)(h5)
    reason = NOT_REFERENCEABLE[kind]
    message = (
        re.escape("--mode index: cannot reference feature(s) 'bad': ")
        + reason
        + re.escape(" (/bad in src.h5); use --mode auto to copy them")
    )
    with pytest.raises(NotReferenceable, match=f"^{message}$"):
        convert_small(path, tmp_path / "index", mode="index")
    assert not (tmp_path / "index" / "manifest.json").exists()
    # auto copies the feature and references the rest
    out = convert_small(path, tmp_path / "auto", mode="auto")
    assert storage(out) == {"bad": "copy", "ok": "reference"}
    got = read_all(out)
    assert_same(got["ok"], h5_read(path, "ok"), "ok")
    if kind == "strings":
        assert got["bad"].tolist() == h5_read(path, "bad").tolist()
    else:
        assert_same(got["bad"], h5_read(path, "bad"), "bad")


def test_index_mode_names_every_feature_and_the_first_file_at_fault(tmp_path):
    for name, lzf in (("a.h5", False), ("b.h5", True), ("c.h5", True)):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["ok"] = np.arange(N, dtype="<i4")
            options = {"chunks": (4,), "compression": "lzf"} if lzf else {}
            h5.create_dataset("later", data=np.arange(N, dtype="<f8"), **options)
            h5["text"] = np.array([b"t"] * N)
    message = (
        re.escape("--mode index: cannot reference feature(s) 'later': ")
        + NOT_REFERENCEABLE["lzf"]
        + re.escape(
            " (/later in b.h5); 'text': strings are stored by value (/text in a.h5); "
            "use --mode auto to copy them"
        )
    )
    with pytest.raises(NotReferenceable, match=f"^{message}$"):
        convert_small(str(tmp_path / "*.h5"), tmp_path / "out", mode="index")
    out = convert_small(str(tmp_path / "*.h5"), tmp_path / "auto", mode="auto")
    assert storage(out) == {"later": "copy", "ok": "reference", "text": "copy"}
    got = read_all(out)
    expected = np.concatenate([h5_read(tmp_path / n, "later") for n in ("a.h5", "b.h5", "c.h5")])
    assert_same(got["later"], expected, "later")


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"transform": "builtins:dict"}, "--transform outputs are stored by value"),
        ({"groups": "/s/*", "features": {"v": "v"}}, "--groups examples are stored by value"),
    ],
)
def test_index_mode_refuses_transforms_and_groups(tmp_path, options, reason):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["v"] = np.arange(N, dtype="<f4")
        for i in range(3):
            h5[f"s/{i}/v"] = np.arange(4, dtype="<f4") + i
    name = next(iter(options.get("features", {"v": None})))
    with pytest.raises(NotReferenceable, match=re.escape(f"feature(s) {name!r}: {reason}; ")):
        convert_small(path, tmp_path / "out", mode="index", **options)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_mode_index_refusal_is_one_line(tmp_path):
    path = tmp_path / "src.h5"
    with h5py.File(path, "w") as h5:
        h5["ok"] = np.arange(N, dtype="<i4")
        h5.create_dataset("packed", data=np.arange(N, dtype="<f4"), chunks=(4,), compression="lzf")
    out = tmp_path / "out"
    args = ["convert", str(path), "-o", str(out), "--workers", "1", "--mode", "index"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: --mode index: cannot reference feature(s) 'packed': ")
    assert "filter 'lzf'" in lines[0] and "(/packed in src.h5)" in lines[0]
    assert "Traceback" not in result.output
    assert not (out / "manifest.json").exists()

    result = CliRunner().invoke(main, [*args[:-1], "auto"])
    assert result.exit_code == 0, result.output
    assert storage(out) == {"ok": "reference", "packed": "copy"}
    assert_same(read_all(out)["packed"], h5_read(path, "packed"), "packed")


# ---- size of the output ------------------------------------------------------------


def test_index_output_is_a_small_fraction_of_the_source(tmp_path):
    rows, width = 2000, 1024  # 4 KiB rows
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5["x"] = rng.standard_normal((rows, width)).astype("<f4")
        y = np.arange(rows * width, dtype=">i4").reshape(rows, width)
        h5.create_dataset("y", data=y, chunks=(16, width))
    out = convert_small(path, tmp_path / "out", mode="index", num_shards=2)
    manifest = load_manifest(out)
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    index_bytes = sum(os.path.getsize(os.path.join(out, s["file"])) for s in shards)
    assert index_bytes == sum(s["num_bytes"] for s in shards)
    source_bytes = os.path.getsize(path)
    assert source_bytes > 2 * rows * width * 4
    assert index_bytes * 500 < source_bytes, (index_bytes, source_bytes)
    for name in ("x", "y"):
        got = np.concatenate([b[name].numpy() for b in reader.load(out, batch_size=512)])
        assert_same(got, h5_read(path, name), name)

    # rows far apart: contiguous reads split at gaps over 1 MiB, rows still right
    sparse = convert_small(path, tmp_path / "sparse", mode="index", rows="7::300")
    got = read_all(sparse)
    for name in ("x", "y"):
        assert_same(got[name], h5_read(path, name, np.arange(7, rows, 300)), name)
