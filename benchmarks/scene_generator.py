"""The seed pattern, as people write it: a class that opens HDF5 files, picks subsets,
preprocesses them and yields ``(X, y)`` forever. ``generator_bench.py`` feeds it to
``from_generator`` and to ``convert --generator scene_generator:factory``.

The sources come from ``$H2R_SCENE_FILES`` (paths separated by ``:``).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

NUM_POINT = 2048  # points sampled from each scene


class SceneGenerator:
    """Random scenes of ``files``, ``NUM_POINT`` random points each, centred."""

    def __init__(self, files, seed):
        self.files, self.rng = list(files), np.random.default_rng(seed)

    def generate_data(self):
        handles = [h5py.File(path, "r") for path in self.files]
        try:
            while True:
                h5 = handles[self.rng.integers(len(handles))]
                row = int(self.rng.integers(h5["data"].shape[0]))
                points, labels = h5["data"][row], h5["label"][row]
                pick = self.rng.choice(points.shape[0], NUM_POINT, replace=False)
                xyz = points[pick]
                xyz[:, :3] -= xyz[:, :3].mean(axis=0)
                yield xyz, labels[pick].astype(np.int64)
        finally:
            for h5 in handles:
                h5.close()


def files() -> list[str]:
    return os.environ["H2R_SCENE_FILES"].split(":")


def factory(shard_index, num_shards):
    """What ``convert --generator`` calls: one seeded generator per shard."""
    return SceneGenerator(files(), seed=[0, shard_index]).generate_data()
