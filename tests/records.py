"""Test helper: decode written shards back to NumPy with TensorFlow, independently of
the reader package, straight from the documented on-disk format."""

from __future__ import annotations

import json
import os

import numpy as np

from hdf5_to_records._tf import import_tensorflow

tf = import_tensorflow()


def load_manifest(directory: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(directory, "manifest.json"), "rb") as handle:
        return json.loads(handle.read())


def _np_dtype(name: str) -> np.dtype:
    return np.dtype("u1") if name == "bool" else np.dtype(name).newbyteorder("<")


def read_split(directory: str, split: str = "train") -> dict[str, list]:
    """Every example of a split, in file order: feature name -> list of per-example values.

    Numeric values come back as arrays of the stored dtype (bool as uint8); strings as
    arrays of bytes objects.
    """
    manifest = load_manifest(directory)
    compression = "GZIP" if manifest["compression"] == "gzip" else ""
    features = manifest["features"]
    out: dict[str, list] = {f["name"]: [] for f in features}
    for shard in manifest["splits"][split]["shards"]:
        path = directory.rstrip("/") + "/" + shard["file"]
        seen = 0
        for raw in tf.data.TFRecordDataset(path, compression_type=compression):
            example = tf.train.Example.FromString(raw.numpy())
            fmap = example.features.feature
            n = fmap["__rows__"].int64_list.value[0]
            seen += n
            for f in features:
                values = fmap[f["name"]].bytes_list.value
                if f["ragged"]:
                    dims = list(fmap[f["name"] + "/shape"].int64_list.value)
                    ndim = len(f["shape"])
                    shapes = [tuple(dims[i * ndim : (i + 1) * ndim]) for i in range(n)]
                else:
                    shapes = [tuple(f["shape"])] * n
                if f["encoding"] == "bytes":
                    flat = np.array(list(values), dtype=object)
                else:
                    assert len(values) == 1
                    flat = np.frombuffer(values[0], dtype=_np_dtype(f["dtype"]))
                offset = 0
                for shape in shapes:
                    count = int(np.prod(shape, dtype=np.int64))
                    out[f["name"]].append(flat[offset : offset + count].reshape(shape))
                    offset += count
                assert offset == flat.size, (f["name"], offset, flat.size)
        assert seen == shard["num_examples"], (shard["file"], seen)
    return out


def convert_small(path, out, *, limits=None, **options) -> str:
    """Convert one test source in-process (one worker); return the output directory.
    ``limits``: the converter's :class:`Limits`, if not the defaults."""
    from hdf5_to_records.converter import convert
    from hdf5_to_records.planning.config import build_config

    config = build_config({"sources": [str(path)], "output": str(out), "workers": 1, **options})
    convert(config, **({} if limits is None else {"limits": limits}))
    return str(out)


def edit_manifest(directory, change) -> None:
    """Rewrite ``directory/manifest.json`` after ``change(manifest)`` edits it in place
    (hand-edited-manifest tests)."""
    path = os.path.join(str(directory), "manifest.json")
    with open(path) as handle:
        manifest = json.load(handle)
    change(manifest)
    with open(path, "w") as handle:
        json.dump(manifest, handle)
