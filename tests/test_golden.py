"""A small committed shard and manifest pin the on-disk format.

If this fails, the format changed: bump the format version in manifest.py, document it in
the README, and regenerate with ``H2R_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
Index mode's format (3: every referenced byte range carries its CRC32C) is pinned by its
version and record layout; ``golden/index_v2`` is a format-2 dataset, with its source,
as the release before checksums wrote it: it must still read.
"""

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hdf5_to_records.checks.verify import verify
from hdf5_to_records.converter import convert
from hdf5_to_records.errors import ManifestError, SourceChanged
from hdf5_to_records.format.manifest import load_manifest
from hdf5_to_records.planning.config import build_config

from records import read_split

GOLDEN = Path(__file__).parent / "golden"
SHARD = "golden-train.tfrecord-00000-of-00001"
INDEX = SHARD + ".idx"
PINNED_KEYS = ("format", "format_version", "name", "mode", "compression", "records", "features")


def _write_source(path):
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(15, dtype=">i2").reshape(5, 3) - 7
        h5["f"] = np.linspace(-1, 1, 5, dtype="<f4")
        h5["flag"] = np.array([True, False, True, True, False])
        h5["name"] = np.array([b"a", b"bb", b"", b"dddd", b"e"], dtype="S4")


def _convert(source, out, **options) -> None:
    config = {"sources": [str(source)], "output": str(out), "workers": 1, "rows_per_record": 2}
    convert(build_config({**config, **options}))


def test_golden_shard_and_manifest(tmp_path):
    source = tmp_path / "golden.h5"
    _write_source(source)
    out = tmp_path / "golden"
    _convert(source, out)
    shard = (out / SHARD).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    pinned = {k: manifest[k] for k in PINNED_KEYS}
    pinned["splits"] = manifest["splits"]
    for entry in pinned["splits"]["train"]["shards"]:
        entry.pop("fingerprint")  # depends on the temporary source's path and mtime
    index = (out / INDEX).read_bytes()
    if os.environ.get("H2R_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / SHARD).write_bytes(shard)
        (GOLDEN / INDEX).write_bytes(index)
        (GOLDEN / "manifest.json").write_text(json.dumps(pinned, indent=2) + "\n")
    assert shard == (GOLDEN / SHARD).read_bytes()
    # The record index: DALI's "offset size" lines (format/record_index.py).
    assert index == (GOLDEN / INDEX).read_bytes() == b"0 114\n114 115\n229 99\n"
    assert pinned == json.loads((GOLDEN / "manifest.json").read_text())


def test_golden_shard_decodes_to_known_values():
    directory = GOLDEN
    got = read_split(str(directory), "train")
    np.testing.assert_array_equal(np.stack(got["x"]), np.arange(15).reshape(5, 3) - 7)
    np.testing.assert_array_equal(np.stack(got["f"]), np.linspace(-1, 1, 5, dtype="f4"))
    assert [int(v) for v in got["flag"]] == [1, 0, 1, 1, 0]
    assert [v.item() for v in got["name"]] == [b"a", b"bb", b"", b"dddd", b"e"]


# ---- index mode: format 3 pins its checksums; format 2 datasets still read ------------

INDEX_V2 = GOLDEN / "index_v2"  # converted by 4d76a93 (format 2: no checksums)


def test_index_format_pins_its_version_and_record_layout(tmp_path):
    source = tmp_path / "golden.h5"
    _write_source(source)
    out = tmp_path / "golden"
    _convert(source, out, mode="auto")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 5  # 3 (checksums), and 5 (framing digests)
    assert manifest["records"] == {
        "rows_per_record": 4,  # index mode: records of K to 2K examples
        "count_key": "__rows__",
        "shape_suffix": "/shape",
        "byte_order": "little",
        "file_key": "__file__",
        "ref_suffix": "/ref",
        "take_suffix": "/take",
        "checksums": "crc32c",
    }


@pytest.fixture
def index_v2(tmp_path):
    """A copy of the committed format-2 dataset, its source's mtime the recorded one
    (a checkout gives files new mtimes)."""
    root = tmp_path / "index_v2"
    shutil.copytree(INDEX_V2, root)
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    recorded = manifest["sources"][0]["mtime"]
    os.utime(root / "data" / "src.h5", (recorded, recorded))
    assert os.stat(root / "data" / "src.h5").st_mtime == recorded
    return root


def test_format_2_index_dataset_reads_as_it_did(index_v2):
    import reader

    with h5py.File(index_v2 / "data" / "src.h5", "r") as h5:
        expected = {name: h5[name][()] for name in h5}
    got = list(reader.load(str(index_v2 / "out"), batch_size=12))
    assert len(got) == 1
    for name, values in expected.items():
        np.testing.assert_array_equal(got[0][name].numpy(), values)
    report = verify(str(index_v2 / "out"))
    assert report.ok, report.problems
    assert report.warnings and "no checksums" in report.warnings[0]


def test_format_2_index_dataset_with_a_touched_source_is_refused(index_v2):
    import reader

    stat = os.stat(index_v2 / "data" / "src.h5")
    os.utime(index_v2 / "data" / "src.h5", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(SourceChanged, match="the dataset has no checksums"):
        reader.load(str(index_v2 / "out"))


def test_newer_format_is_refused_with_a_hint(tmp_path):
    shutil.copytree(INDEX_V2 / "out", tmp_path / "out")
    path = tmp_path / "out" / "manifest.json"
    path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 6'))
    refused = r"format version 6; this tool reads versions 1, 2, 3, 4, 5"
    with pytest.raises(ManifestError, match=refused):
        load_manifest(str(tmp_path / "out"))


# ---- shard digests: format 5's framing_sha256; format 1-4's whole-file sha256 --------


def _copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("index_v2", "copy_v1"))
    return out


def _messages(directory: Path) -> list[str]:
    return [p.message for p in verify(str(directory)).problems]


def test_the_framing_digest_catches_records_swapped_with_a_consistent_index(tmp_path):
    import hashlib

    out = _copy(GOLDEN, tmp_path)
    assert _messages(out) == []
    data = (out / SHARD).read_bytes()
    # Records 0 and 1 (114 and 115 bytes, 2 examples each) swapped; the index, its
    # sha256, the size and the counts all stay consistent: only the digest can tell.
    (out / SHARD).write_bytes(data[114:229] + data[:114] + data[229:])
    index = b"0 115\n115 114\n229 99\n"
    (out / INDEX).write_bytes(index)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["index_sha256"] = hashlib.sha256(index).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    messages = _messages(out)
    assert messages == ["framing_sha256 differs from the manifest (records changed or reordered)"]


def test_a_flipped_byte_fails_its_record_crc_in_every_format(tmp_path):
    for version, source in (("5", GOLDEN), ("1", GOLDEN / "copy_v1")):
        out = _copy(source, tmp_path / version)
        assert _messages(out) == [], version
        data = bytearray((out / SHARD).read_bytes())
        data[150] ^= 0x01  # inside record 1's payload
        (out / SHARD).write_bytes(bytes(data))
        messages = _messages(out)
        assert any("data CRC mismatch" in m for m in messages), (version, messages)
        if version == "1":
            assert "sha256 differs from the manifest (corrupt or rewritten)" in messages


def test_format_1_with_a_whole_file_sha256_still_reads_and_verifies(tmp_path):
    import reader

    out = _copy(GOLDEN / "copy_v1", tmp_path)
    assert json.loads((out / "manifest.json").read_text())["format_version"] == 1
    ds = reader.load(str(out), batch_size=5, verify_checksums=True)
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["x"].numpy(), np.arange(15).reshape(5, 3) - 7)
    (out / SHARD).write_bytes((out / SHARD).read_bytes()[:-1] + b"\x00")
    with pytest.raises(Exception, match="does not match its sha256"):
        reader.load(str(out), batch_size=5, verify_checksums=True)
