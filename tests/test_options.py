"""reader.ReadOptions: reader.load's options as one frozen object that checks itself."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import reader
from hdf5_to_records.errors import UsageError

from records import convert_small


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"seed": 1}, "seed= has no effect without shuffle=True"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"drop_remainder": True}, "drop_remainder=True needs batch_size="),
        ({"repeat": 0}, "repeat must be a number of epochs >= 1 or True, got 0"),
        ({"job_name": "x"}, "processing_mode= and job_name= need service="),
        ({"service_compression": "AUTO"}, "service_compression= needs service="),
        ({"max_open_files": 0}, "max_open_files must be >= 1, got 0"),
        ({"max_open_files": "8"}, "max_open_files must be a number >= 1, got '8'"),
    ],
)
def test_an_invalid_combination_cannot_be_built(options, match):
    with pytest.raises(UsageError, match=match):
        reader.ReadOptions(**options)


def test_options_are_frozen_and_derive_epochs_and_order():
    options = reader.ReadOptions(shuffle=True, repeat=True)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        options.batch_size = 3
    assert options.epochs is None and options.ordered is False
    assert reader.ReadOptions(repeat=3).epochs == 3 and reader.ReadOptions().ordered


def test_load_takes_options_whole_or_as_keywords(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5["x"] = np.arange(50, dtype="i4")
    directory = convert_small(tmp_path / "a.h5", tmp_path / "out", num_shards=2)
    whole = reader.load(directory, options=reader.ReadOptions(batch_size=8, shuffle=True, seed=2))
    keywords = reader.load(directory, batch_size=8, shuffle=True, seed=2)
    assert [b["x"].numpy().tolist() for b in whole] == [b["x"].numpy().tolist() for b in keywords]
    with pytest.raises(UsageError, match="pass options= or keyword options, not both"):
        reader.load(directory, options=reader.ReadOptions(), batch_size=8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        reader.load(directory, batchsize=8)
