"""Fixtures of the verify tests: every dataset of ``DATASETS`` converted once per
session, and fresh copies of them to damage."""

from __future__ import annotations

import shutil

import pytest

from records import convert_small
from verifying import DATASETS, write_rows, write_scenes


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Every dataset of ``DATASETS``, converted once into one directory."""
    root = tmp_path_factory.mktemp("verify")
    write_rows(root / "rows.h5")
    write_scenes(root / "scenes.h5")
    for name, (source, options) in DATASETS.items():
        convert_small(root / source, root / name, **options)
    return root


@pytest.fixture
def dataset(built, tmp_path):
    """``dataset(name)``: a fresh copy of a built dataset (and its sources) to damage."""

    def copy(name: str) -> str:
        source = DATASETS[name][0]
        if not (tmp_path / source).exists():
            shutil.copy2(built / source, tmp_path / source)
        shutil.copytree(built / name, tmp_path / name)
        return str(tmp_path / name)

    return copy
