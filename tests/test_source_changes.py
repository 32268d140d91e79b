"""Index mode never serves a byte that changed since the conversion (checksums).

A contiguous and a gzip-chunked source of 2,000 rows of 1 KiB (2 MB: the sampled content
fingerprint reads only part of it), converted in index mode. Each change below must be
refused by ``reader.load`` (when it loads, or when the changed bytes are read) and by
``verify`` (exit 1), naming the file; an identical copy with a new mtime still reads.
"""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from crc32c import crc32c

import reader
from hdf5_to_records.checks.verify import verify
from hdf5_to_records.cli import main
from hdf5_to_records.errors import SourceChanged

from records import convert_small, tf

ROWS, WIDTH = 2000, 256  # float32 rows of 1 KiB
EDITED = 1234
CHUNK_ROWS = 50


def write_source(path, layout: str, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal((ROWS, WIDTH)).astype("<f4")
    with h5py.File(path, "w") as h5:
        if layout == "contiguous":
            h5["x"] = values
        else:
            h5.create_dataset(
                "x", data=values, chunks=(CHUNK_ROWS, WIDTH), compression="gzip", shuffle=True
            )
    return values


def convert(tmp_path, layout: str, **options):
    (tmp_path / "data").mkdir()
    source = tmp_path / "data" / "src.h5"
    values = write_source(source, layout)
    out = convert_small(source, tmp_path / "out", mode="index", num_shards=2, **options)
    return out, source, values


@pytest.fixture(params=["contiguous", "gzip"])
def dataset(request, tmp_path):
    """(output directory, source, values, layout), converted with checksums."""
    return (*convert(tmp_path, request.param), request.param)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_x(out, **options) -> np.ndarray:
    return np.concatenate(
        [b["x"].numpy() for b in reader.load(str(out), batch_size=256, **options)]
    )


def refusal(out) -> str:
    """The refusal ``reader.load`` gives a changed source (at load, or while reading:
    tf.data carries the SourceChanged raised in the span reader in its message)."""
    try:
        read_x(out)
    except SourceChanged as exc:
        return str(exc)
    except tf.errors.OpError as exc:
        assert "SourceChanged: " in exc.message, exc.message
        return exc.message.split("SourceChanged: ", 1)[1].splitlines()[0]
    pytest.fail("a changed source was served")


def assert_verify_fails(out, *expected: str) -> str:
    result = run("verify", out)
    assert result.exit_code == 1, result.output
    assert "PROBLEM " in result.output and "src.h5" in result.output, result.output
    for text in expected:
        assert text in result.output, result.output
    return result.output


def referenced_range(source, layout: str) -> tuple[int, int]:
    """(offset, size) of the bytes row EDITED lives in: its row, or its chunk as stored."""
    with h5py.File(source, "r") as h5:
        ds = h5["x"]
        if layout == "contiguous":
            return ds.id.get_offset() + EDITED * WIDTH * 4, WIDTH * 4
        info = ds.id.get_chunk_info_by_coord((EDITED // CHUNK_ROWS * CHUNK_ROWS, 0))
        return info.byte_offset, info.size


def flip_byte(path, offset: int) -> None:
    """Invert one byte, keeping the file's mtime (bit rot, or a copy tool)."""
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ---- changes that must be refused ----------------------------------------------------


def test_unchanged_source_reads_back_and_verifies(dataset):
    out, _, values, _ = dataset
    np.testing.assert_array_equal(read_x(out), values)
    report = verify(out)
    assert report.ok, report.problems
    assert report.checked_ranges > 0 and not report.warnings


def test_row_rewritten_in_place_is_refused(dataset):
    out, source, _, layout = dataset
    size = os.path.getsize(source)
    with h5py.File(source, "r+") as h5:
        h5["x"][EDITED] = np.arange(WIDTH, dtype="<f4")
    if layout == "contiguous":  # the case that used to be served
        assert os.path.getsize(source) == size
        message = refusal(out)
        offset, length = referenced_range(source, layout)
        assert message.startswith("source ../data/src.h5: dataset /x, bytes "), message
        assert message.endswith("); convert again"), message
        start, end = (int(v) for v in message.split("bytes ")[1].split(" ")[0].split(".."))
        assert start <= offset < offset + length <= end  # the range holding row 1234
        assert_verify_fails(out, "dataset /x", " record ")
    else:  # a rewritten chunk is compressed anew: here the file grew
        assert "src.h5 changed since the conversion" in refusal(out)
        assert_verify_fails(out, "changed since the conversion")


def test_flipped_byte_with_the_same_mtime_is_refused(dataset):
    out, source, _, layout = dataset
    offset, length = referenced_range(source, layout)
    flip_byte(source, offset + length // 2)
    message = refusal(out)
    assert message.startswith("source ../data/src.h5: dataset /x, bytes "), message
    assert "changed since the conversion (CRC32C " in message
    output = assert_verify_fails(out, "dataset /x", " record ")
    assert "FAILED" in output


def test_changed_bytes_are_never_yielded(dataset):
    """Batches read before the changed range may come out; none holds a changed byte."""
    out, source, values, layout = dataset
    offset, length = referenced_range(source, layout)
    flip_byte(source, offset + length // 2)
    original = {row.tobytes() for row in values}
    served = []
    with pytest.raises(tf.errors.OpError, match="SourceChanged"):
        for batch in reader.load(str(out), batch_size=1):
            served.append(batch["x"].numpy()[0])
    assert all(row.tobytes() in original for row in served)


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_truncated_or_appended_source_is_refused(dataset, change):
    out, source, _, _ = dataset
    size = os.path.getsize(source)
    if change == "truncate":
        os.truncate(source, size - 4096)
    else:
        with open(source, "ab") as handle:
            handle.write(b"\0" * 100)
    with pytest.raises(SourceChanged, match=r"^source \.\./data/src\.h5 changed since the conv"):
        reader.load(str(out))
    assert_verify_fails(out, "PROBLEM sources: source ../data/src.h5 changed since")


def test_swapped_for_a_file_of_the_same_size_and_mtime_is_refused(dataset, tmp_path):
    out, source, _, layout = dataset
    stat = os.stat(source)
    other = tmp_path / "other.h5"
    if layout == "contiguous":  # another file written alike: same size, other values
        write_source(other, layout, seed=1)
    else:  # a compressed file of other values has another size: change a chunk's bytes
        shutil.copyfile(source, other)
        offset, length = referenced_range(source, layout)
        flip_byte(other, offset + length // 3)
    assert os.path.getsize(other) == stat.st_size
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, source)
    assert "changed since the conversion" in refusal(out)
    assert_verify_fails(out, "dataset /x")


# ---- what must still read ----------------------------------------------------------


def test_touched_identical_copy_still_reads(dataset, tmp_path):
    out, source, values, _ = dataset
    copy = tmp_path / "copy.h5"
    shutil.copyfile(source, copy)  # same bytes, a new mtime
    stat = os.stat(copy)
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 7_000_000_000))
    os.replace(copy, source)
    assert (
        os.stat(source).st_mtime != json.load(open(f"{out}/manifest.json"))["sources"][0]["mtime"]
    )
    np.testing.assert_array_equal(read_x(out), values)
    result = run("verify", out)
    assert result.exit_code == 0, result.output
    assert "byte ranges checked against CRC32C" in result.output


def test_a_moved_copy_of_dataset_and_sources_reads(dataset, tmp_path):
    out, _, values, _ = dataset
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "data", moved / "data", copy_function=shutil.copyfile)
    shutil.copytree(out, moved / "out")
    np.testing.assert_array_equal(read_x(moved / "out"), values)
    assert verify(str(moved / "out")).ok


def test_cache_checks_the_first_pass_only(dataset):
    """With cache=True the second pass is served from the cache that the checked first
    pass filled; a new pipeline reads (and checks) the source again."""
    out, source, values, layout = dataset
    ds = reader.load(str(out), batch_size=256, cache=True)
    first = np.concatenate([b["x"].numpy() for b in ds])
    offset, length = referenced_range(source, layout)
    flip_byte(source, offset + length // 2)
    second = np.concatenate([b["x"].numpy() for b in ds])
    np.testing.assert_array_equal(first, values)
    np.testing.assert_array_equal(second, values)
    assert "CRC32C" in refusal(out)


# ---- the format -----------------------------------------------------------------------


def test_every_range_carries_the_crc32c_of_its_stored_bytes(dataset):
    out, source, _, layout = dataset
    manifest = json.load(open(f"{out}/manifest.json"))
    assert manifest["format_version"] == 5  # 3 (checksums) and 5 (framing digests)
    assert manifest["records"]["checksums"] == "crc32c"
    data = open(source, "rb").read()
    ranges = 0
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(out, shard["file"])):
            refs = tf.train.Example.FromString(raw.numpy()).features.feature["x/ref"]
            for offset, size, _mask, crc in np.array(refs.int64_list.value).reshape(-1, 4):
                assert crc == crc32c(data[offset : offset + size])
                ranges += 1
    assert ranges == (2 if layout == "contiguous" else -(-ROWS // CHUNK_ROWS))


# ---- --checksums none ------------------------------------------------------------------


@pytest.fixture
def unchecked(tmp_path):
    return convert(tmp_path, "contiguous", checksums="none")


def test_without_checksums_it_is_recorded_shown_and_warned_about(unchecked):
    out, _, values = unchecked
    manifest = json.load(open(f"{out}/manifest.json"))
    assert manifest["format_version"] == 5 and manifest["records"]["checksums"] == "none"
    assert manifest["config"]["checksums"] == "none"
    np.testing.assert_array_equal(read_x(out), values)
    info = run("info", out)
    assert "no checksums: bytes changed in place go unnoticed" in info.output
    result = run("verify", out)
    assert result.exit_code == 0, result.output
    assert "WARNING the referenced byte ranges have no checksums" in result.stderr


def test_without_checksums_a_new_mtime_is_refused(unchecked):
    """The sampled fingerprint still matches after this touch, and no longer vouches."""
    out, source, _ = unchecked
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    message = (
        "source ../data/src.h5 changed since the conversion (modified); the dataset has no "
        "checksums to tell an identical copy from an edit; convert again"
    )
    with pytest.raises(SourceChanged, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        reader.load(str(out))
    assert run("verify", out).exit_code == 1


# ---- verify --sample and --deep ---------------------------------------------------------


def test_verify_sample_checks_a_seeded_fraction_of_the_ranges(tmp_path):
    out, _, _ = convert(tmp_path, "gzip", rows_per_record=CHUNK_ROWS)
    full = verify(out)
    sampled = [verify(out, sample=0.3, seed=seed).checked_ranges for seed in (4, 4, 5)]
    assert full.checked_ranges == ROWS // CHUNK_ROWS
    assert 0 < sampled[0] < full.checked_ranges and sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]
    report = verify(out, sample=0.3, seed=4)
    assert report.compared == report.checked_ranges  # one chunk per record here
    assert any("--sample" in note for note in report.notes)


def test_verify_deep_compares_index_mode_values_with_h5py(dataset):
    out, _, _, _ = dataset
    report = verify(out, deep=True)
    assert report.ok and report.compared == report.records > 0


def test_resume_with_other_checksums_rewrites_the_shards(unchecked, tmp_path):
    """Whether ranges carry checksums is part of each shard's plan: --resume keeps no
    shard of the other kind (its records would not match the manifest)."""
    out, source, values = unchecked
    convert_small(source, out, mode="index", num_shards=2, checksums="crc32c", resume=True)
    report = verify(out)
    assert report.ok, report.problems
    assert report.checked_ranges == 2 and not report.warnings
    np.testing.assert_array_equal(read_x(out), values)
