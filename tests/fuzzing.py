"""Shared by the fuzz tests (test_fuzz_*.py): derandomized Hypothesis settings, text
strategies that UTF-8 can hold, and writing a mutated manifest. The real small manifests
they mutate come from the ``manifests`` fixture in conftest.py.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

N = 12

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: no flaky CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NO_SHRINK = [Phase.explicit, Phase.generate]  # fail fast, do not minimise (CI time)
# Text that becomes bytes (a file's contents): no lone surrogates, which UTF-8 cannot hold.
UTF8 = st.characters(codec="utf-8")

SPECIAL_INTS = [-1, 0, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]


def write_manifest(directory: str, document) -> None:
    with open(os.path.join(directory, "manifest.json"), "w") as handle:
        json.dump(document, handle)
