"""Index mode against stale and hostile inputs.

Sources changed, moved or deleted since the conversion; manifests edited by hand to
point at other files or byte ranges; corrupted chunks; and refusals surfacing through
the tf.data pipeline. Every refusal is checked by class and message. (Records fed
straight to the span reader: ``test_span_reader.py``.)
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.errors import (
    ManifestError,
    SourceChanged,
    SourceNotFound,
    SourceRefused,
)

from index_sources import (
    assert_values,
    chunk_offsets,
    flip_byte,
    make_dataset,
    read_all,
    reference,
    write_source,
)
from records import convert_small, edit_manifest, load_manifest, tf


@pytest.fixture
def dataset(tmp_path):
    """``tmp/data/src.h5`` converted in index mode into ``tmp/out`` (3-row records)."""
    return make_dataset(tmp_path)


def test_unchanged_sources_read_back(dataset):
    out, source, values = dataset
    manifest = load_manifest(str(out))
    assert manifest["format_version"] == 5  # 3 (checksums) and 5 (framing digests)
    assert {f["storage"] for f in manifest["features"]} == {"reference"}
    assert manifest["source_roots"] == ["../data"]  # relative: moves with the output
    assert_values(out, values)


# ---- stale sources -------------------------------------------------------------------


def test_same_size_other_bytes_new_mtime_is_refused(dataset):
    out, source, _ = dataset
    size = os.path.getsize(source)
    flip_byte(source, reference(out, "x")["offset"] + 5, keep_mtime=False)
    assert os.path.getsize(source) == size
    message = (
        "source ../data/src.h5 changed since the conversion (modified, and its content "
        "fingerprint differs); convert again"
    )
    with pytest.raises(SourceChanged, match=f"^{re.escape(message)}$"):
        reader.load(str(out))


def test_size_change_is_refused(dataset):
    out, source, _ = dataset
    size = os.path.getsize(source)
    with open(source, "ab") as handle:
        handle.write(b"\0" * 100)
    message = (
        f"source ../data/src.h5 changed since the conversion: {size + 100} bytes, "
        f"recorded {size}; convert again"
    )
    with pytest.raises(SourceChanged, match=f"^{re.escape(message)}$"):
        reader.load(str(out))


def test_new_mtime_with_the_same_bytes_is_forgiven(dataset):
    out, source, values = dataset
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_600_000_000_000))
    assert os.stat(source).st_mtime != stat.st_mtime
    assert_values(out, values)


def test_new_mtime_without_a_recorded_fingerprint_reads_under_checksums(dataset):
    """Checksums vouch for every byte read: the fingerprint is an early check only."""
    out, source, values = dataset
    edit_manifest(out, lambda m: m["sources"][0].pop("fingerprint"))
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert_values(out, values)


def test_deleted_source_is_not_found(dataset):
    out, source, _ = dataset
    source.unlink()
    message = f"source ../data/src.h5 of {out} is missing ({os.path.realpath(source)})"
    with pytest.raises(SourceNotFound, match=f"^{re.escape(message)}$"):
        reader.load(str(out))


# ---- relative paths, moved datasets --------------------------------------------------


def test_manifest_stores_the_source_relative_to_the_output(dataset):
    out, _, _ = dataset
    assert load_manifest(str(out))["sources"][0]["path"] == "../data/src.h5"


def test_moving_output_and_sources_together(dataset, tmp_path_factory):
    out, _, values = dataset
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.move(str(out.parent), str(moved))
    assert not out.exists()
    assert_values(moved / "out", values)


def test_sources_moved_elsewhere_read_with_allowed_roots(dataset, tmp_path_factory):
    """Sources moved to another disk and symlinked back resolve outside the roots."""
    out, source, values = dataset
    elsewhere = tmp_path_factory.mktemp("other_disk")
    shutil.move(str(source), str(elsewhere / "src.h5"))
    os.symlink(elsewhere / "src.h5", source)
    with pytest.raises(SourceRefused, match="outside the allowed roots"):
        reader.load(str(out))
    assert_values(out, values, allowed_roots=[str(elsewhere)])


def test_sources_inside_the_dataset_directory_move_with_it(dataset, tmp_path_factory):
    out, source, values = dataset
    (out / "sources").mkdir()
    shutil.move(str(source), str(out / "sources" / "src.h5"))
    point_at(out, "sources/src.h5")
    moved = tmp_path_factory.mktemp("moved") / "out"
    shutil.move(str(out), str(moved))
    assert_values(moved, values)


# ---- hostile manifests -----------------------------------------------------------------


def point_at(out, path, **entry) -> None:
    """Make the manifest's source entry name ``path`` (and other fields)."""

    def change(manifest):
        manifest["sources"][0]["path"] = str(path)
        manifest["sources"][0].update(entry)

    edit_manifest(out, change)


@pytest.mark.parametrize("form", ["absolute", "relative", "symlink", "prefix_sibling"])
def test_sources_outside_the_roots_are_refused(dataset, tmp_path, tmp_path_factory, form):
    out, source, values = dataset
    if form == "prefix_sibling":  # shares a prefix with the recorded root tmp/data
        elsewhere = tmp_path / "data2"
        elsewhere.mkdir()
    else:
        elsewhere = tmp_path_factory.mktemp("elsewhere")
    copy = elsewhere / "src.h5"
    shutil.copy2(source, copy)  # same bytes, size and mtime: a valid source
    listed = {
        "absolute": str(copy),
        "relative": os.path.relpath(copy, out),
        "symlink": "link.h5",
        "prefix_sibling": "../data2/src.h5",
    }[form]
    if form == "symlink":
        os.symlink(copy, out / "link.h5")  # inside the dataset directory, pointing out
    point_at(out, listed)
    message = f"source {listed} resolves to {os.path.realpath(copy)}, outside the allowed roots"
    with pytest.raises(SourceRefused, match=f"^{re.escape(message)} .*pass allowed_roots="):
        reader.load(str(out))
    source.unlink()  # so what loads below can only be the copy
    assert_values(out, values, allowed_roots=[str(elsewhere)])


def test_files_that_are_not_hdf5_are_refused(dataset, tmp_path_factory):
    out, source, _ = dataset
    elsewhere = tmp_path_factory.mktemp("allowed")
    fake = elsewhere / "passwd"
    fake.write_bytes(b"root:x:0:0::/root:/bin/sh\n" * (os.path.getsize(source) // 26 + 1))
    os.truncate(fake, os.path.getsize(source))  # the recorded size, so only the format differs
    point_at(out, fake)
    message = f"source {fake} is not an HDF5 file; refusing to read it"
    with pytest.raises(SourceRefused, match=f"^{re.escape(message)}$"):
        reader.load(str(out), allowed_roots=[str(elsewhere)])


def test_contiguous_dataset_ending_past_the_file_is_refused(dataset):
    out, source, _ = dataset
    size = os.path.getsize(source)
    edit_manifest(out, lambda m: m["sources"][0]["references"]["x"].update(offset=size - 10))
    message = "source ../data/src.h5: dataset /x of feature 'x' would end past the end of the file"
    with pytest.raises(SourceRefused, match=f"^{re.escape(message)}$"):
        reader.load(str(out))
    # reading only other features does not check x
    assert set(read_all(out, features=["g"])) == {"g"}


@pytest.mark.parametrize(
    "name, change, detail",
    [
        ("x", {"num_rows": -1}, "negative size or offset"),
        ("x", {"offset": -8}, "negative size or offset"),
        ("x", {"row_shape": [2, -3]}, "negative size or offset"),
        ("g", {"filters": ["shuffle", "lzf"]}, "filters ['shuffle', 'lzf'] cannot be decoded"),
        ("x", {"filters": ["gzip"]}, "filters ['gzip'] cannot be decoded"),
        ("x", {"layout": "compact"}, "unknown layout 'compact'"),
        ("g", {"chunk_rows": 0}, "chunk_rows must be >= 1"),
        ("x", {"dtype": "<U4"}, "dtype <U4 cannot be referenced"),
        ("x", {"num_rows": "many"}, "invalid literal for int()"),
    ],
)
def test_malformed_references_are_manifest_errors(dataset, name, change, detail):
    out, _, _ = dataset
    edit_manifest(out, lambda m: m["sources"][0]["references"][name].update(change))
    message = f"manifest in {out}: malformed source entry ("
    with pytest.raises(ManifestError, match=f"^{re.escape(message)}.*{re.escape(detail)}"):
        reader.load(str(out))


def test_missing_reference_entry_is_a_manifest_error(dataset):
    out, _, _ = dataset
    edit_manifest(out, lambda m: m["sources"][0]["references"].pop("g"))
    with pytest.raises(ManifestError, match=r"malformed source entry \(KeyError\('g'\)\)"):
        reader.load(str(out))
    assert set(read_all(out, features=["x"])) == {"x"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"storage": "mmap"}, "feature storage 'mmap' is unknown"),
        ({"encoding": "bytes"}, "feature 'x' cannot be referenced"),
        ({"ragged": True}, "feature 'x' cannot be referenced"),
    ],
)
def test_bad_storage_flags_are_manifest_errors(dataset, change, message):
    out, _, _ = dataset

    def edit(manifest):
        next(f for f in manifest["features"] if f["name"] == "x").update(change)

    edit_manifest(out, edit)
    with pytest.raises(ManifestError, match=f"^manifest in {re.escape(str(out))}.*{message}"):
        reader.load(str(out))


def test_storage_flag_errors_are_not_wrapped_twice(dataset):
    out, _, _ = dataset
    edit_manifest(out, lambda m: m["features"][0].update(storage="mmap"))
    message = f"manifest in {out}: feature storage 'mmap' is unknown"
    with pytest.raises(ManifestError, match=f"^{re.escape(message)}$"):
        reader.load(str(out))


# ---- hostile values through the tf.data pipeline ---------------------------------------


def collect(out, **options) -> list:
    return list(reader.load(str(out), **options))


def test_hostile_reference_surfaces_when_iterating(dataset):
    out, _, _ = dataset
    # fewer rows than the records reference: loading passes, reading a record does not
    edit_manifest(out, lambda m: m["sources"][0]["references"]["x"].update(num_rows=2))
    ds = reader.load(str(out), features=["x"])
    with pytest.raises(tf.errors.OpError, match=r"feature 'x': byte range \d+\+\d+ of "):
        list(ds)
    with pytest.raises(tf.errors.OpError, match=r"is outside dataset /x"):
        collect(out, features=["x"], batch_size=4)


def test_reference_row_shape_must_match_the_feature(dataset):
    out, _, _ = dataset
    edit_manifest(out, lambda m: m["sources"][0]["references"]["g"].update(row_shape=[3, 2]))
    with pytest.raises(tf.errors.OpError, match=r"feature 'g': rows in \.\./data/src\.h5 are "):
        collect(out, features=["g"])


@pytest.mark.parametrize(
    "name, message",
    [("z", "does not inflate"), ("f", "fletcher32 checksum mismatch"), ("g", "fletcher32")],
)
def test_corrupt_chunk_surfaces_when_iterating(tmp_path, name, message):
    """Without checksums, the decoder's own refusal (with them: test_source_changes)."""
    out, source, values = make_dataset(tmp_path, checksums="none")
    offset, size = chunk_offsets(source, name)[1]
    flip_byte(source, offset + size // 2, keep_mtime=True)  # so loading does not notice
    ds = reader.load(str(out), features=[name])
    where = rf"chunk at byte {offset} of /{name} in \.\./data/src\.h5: {message}"
    with pytest.raises(tf.errors.OpError, match=where):
        list(ds)
    # other features of the same source still read
    assert_values(out, {"x": values["x"]}, features=["x"])


# ---- review findings: swaps after load, archives, open files, big chunks, paths ------


def test_source_swapped_for_a_symlink_after_load_is_refused(dataset, tmp_path):
    """The file read is the file checked at load: a same-size secret swapped in later
    (here through a symlink) is refused, never served."""
    out, source, _ = dataset
    ds = reader.load(str(out))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"K" * os.path.getsize(source))
    os.replace(source, tmp_path / "moved.h5")
    os.symlink(secret, source)
    with pytest.raises(
        tf.errors.OpError, match="was replaced since reader.load checked it|cannot be opened"
    ):
        list(ds)


def test_source_replaced_by_another_file_after_load_is_refused(dataset, tmp_path):
    out, source, _ = dataset
    ds = reader.load(str(out))
    copy = tmp_path / "copy.h5"
    shutil.copy2(source, copy)
    os.replace(copy, source)  # same bytes, another inode
    with pytest.raises(tf.errors.OpError, match="was replaced since reader.load checked it"):
        list(ds)


def test_archive_embedding_an_hdf5_file_is_refused(dataset, tmp_path):
    """A tar whose first member is the source has the HDF5 signature at byte 512."""
    out, source, _ = dataset
    archive = tmp_path / "out" / "bundle.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(source, arcname="src.h5")
    with open(archive, "rb") as handle:
        assert handle.read()[512:520] == b"\x89HDF\r\n\x1a\n"
    stat = os.stat(archive)
    point_at(out, "bundle.tar", size=stat.st_size, mtime=stat.st_mtime)
    with pytest.raises(SourceRefused, match="bundle.tar is not an HDF5 file"):
        reader.load(str(out))


def test_hdf5_file_with_a_user_block_is_accepted(tmp_path):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=1024) as h5:
        h5["x"] = np.arange(12.0).reshape(6, 2)
    out = convert_small(path, tmp_path / "out", mode="index")
    np.testing.assert_array_equal(read_all(out)["x"], np.arange(12.0).reshape(6, 2))


def test_many_sources_with_few_open_files(tmp_path, monkeypatch):
    """More sources than the open-file budget: descriptors are recycled, values right."""
    monkeypatch.setattr("hdf5_to_records.index.spans.MAX_OPEN_FILES", 2)
    for i in range(6):
        with h5py.File(tmp_path / f"s{i}.h5", "w") as h5:
            h5.create_dataset("x", data=np.arange(8.0) + 100 * i, chunks=(3,), compression=1)
    out = convert_small(str(tmp_path / "s*.h5"), tmp_path / "out", mode="index")
    ds = reader.load(out, num_parallel_calls=2)
    got = np.sort(np.concatenate([e["x"].numpy().ravel() for e in ds]))
    np.testing.assert_array_equal(
        got, np.sort(np.concatenate([np.arange(8.0) + 100 * i for i in range(6)]))
    )


def test_incompressible_gzip_chunks_read_back(tmp_path):
    """Deflate stores random data a little larger than the chunk itself."""
    path = tmp_path / "random.h5"
    values = np.random.default_rng(0).integers(0, 256, (4, 1 << 20), dtype=np.uint8)
    with h5py.File(path, "w") as h5:
        h5.create_dataset(
            "x", data=values, chunks=(4, 1 << 20), compression="gzip", fletcher32=True
        )
        assert h5["x"].id.get_chunk_info(0).size > values.nbytes
    out = convert_small(path, tmp_path / "out", mode="index")
    np.testing.assert_array_equal(read_all(out)["x"], values)


def test_output_reached_through_a_symlink(tmp_path):
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    os.symlink(tmp_path / "real" / "deep", tmp_path / "home" / "out")
    source = tmp_path / "real" / "src.h5"
    values = write_source(source)
    out = convert_small(source, tmp_path / "home" / "out", mode="index")
    assert load_manifest(out)["sources"][0]["path"] == "../src.h5"
    assert_values(out, values)


def test_file_url_datasets_resolve_against_their_directory(dataset, monkeypatch, tmp_path):
    out, _, values = dataset
    monkeypatch.chdir(tmp_path / "data")  # relative paths must not follow the cwd
    assert_values(f"file://{out}", values)


def test_zero_size_rows_in_a_reference_are_a_manifest_error(dataset):
    out, _, _ = dataset
    edit_manifest(out, lambda m: m["sources"][0]["references"]["x"].update(row_shape=[0, 3]))
    with pytest.raises(ManifestError, match="zero bytes"):
        reader.load(str(out))


def test_source_that_is_a_directory_is_a_clean_error(dataset, tmp_path):
    out, _, _ = dataset
    (out / "adir").mkdir()
    point_at(out, "adir")
    with pytest.raises(SourceRefused, match="adir is not a regular file"):
        reader.load(str(out))
