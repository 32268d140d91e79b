"""A small committed shard and manifest pin the on-disk format.

If this fails, the format changed: bump FORMAT_VERSION in manifest.py, document it in
the README, and regenerate with ``H2R_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
"""

import json
import os
from pathlib import Path

import h5py
import numpy as np

from hdf5_to_records.converter import convert
from hdf5_to_records.planning.config import build_config

from records import read_split

GOLDEN = Path(__file__).parent / "golden"
SHARD = "golden-train.tfrecord-00000-of-00001"
PINNED_KEYS = ("format", "format_version", "name", "mode", "compression", "records", "features")


def _write_source(path):
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(15, dtype=">i2").reshape(5, 3) - 7
        h5["f"] = np.linspace(-1, 1, 5, dtype="<f4")
        h5["flag"] = np.array([True, False, True, True, False])
        h5["name"] = np.array([b"a", b"bb", b"", b"dddd", b"e"], dtype="S4")


def test_golden_shard_and_manifest(tmp_path):
    source = tmp_path / "golden.h5"
    _write_source(source)
    out = tmp_path / "golden"
    convert(
        build_config(
            {"sources": [str(source)], "output": str(out), "workers": 1, "rows_per_record": 2}
        )
    )
    shard = (out / SHARD).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    pinned = {k: manifest[k] for k in PINNED_KEYS}
    pinned["splits"] = manifest["splits"]
    for entry in pinned["splits"]["train"]["shards"]:
        entry.pop("fingerprint")  # depends on the temporary source's path and mtime
    if os.environ.get("H2R_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / SHARD).write_bytes(shard)
        (GOLDEN / "manifest.json").write_text(json.dumps(pinned, indent=2) + "\n")
    assert shard == (GOLDEN / SHARD).read_bytes()
    assert pinned == json.loads((GOLDEN / "manifest.json").read_text())


def test_golden_shard_decodes_to_known_values():
    directory = GOLDEN
    got = read_split(str(directory), "train")
    np.testing.assert_array_equal(np.stack(got["x"]), np.arange(15).reshape(5, 3) - 7)
    np.testing.assert_array_equal(np.stack(got["f"]), np.linspace(-1, 1, 5, dtype="f4"))
    assert [int(v) for v in got["flag"]] == [1, 0, 1, 1, 0]
    assert [v.item() for v in got["name"]] == [b"a", b"bb", b"", b"dddd", b"e"]
