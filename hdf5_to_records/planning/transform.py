"""The user's ``--transform module:function``: load it, probe its schema, check its output.

The function takes one example (a dict of NumPy arrays) and returns a dict of NumPy
arrays. It runs inside the worker processes. Its output schema is what it returns for
the first selected example: the same keys and dtypes and the same number of dimensions
must come back for every example; dimension sizes may vary (recorded as unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..errors import Hdf5ToRecordsError, TransformError, first_line
from ..format.record_keys import INDICES_SUFFIX
from ..writing.reading import Column
from . import user_code
from .schema import FeatureSchema
from .user_code import load_callable

Transform = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


def load_transform(spec: str) -> Transform:
    """Import ``module:function`` (the current directory is on the import path).

    Raises:
        UsageError: the module or function cannot be found or is not callable.
    """
    return load_callable(spec, option="--transform")


def example_for_transform(
    columns: dict[str, Column], index: int, features: tuple[FeatureSchema, ...]
) -> dict[str, np.ndarray]:
    """Example ``index`` of a window as the transform sees it: source-like dtypes.

    Bools come back as bool (stored as uint8), strings as ``S`` arrays (held as
    objects while reading), so an identity transform stores what it was given.
    """
    example = {}
    for feature in features:
        value = np.asarray(columns[feature.name][index])
        if feature.sparse:  # a CSR row, as the dense row it stands for
            dense = np.zeros(feature.shape, value.dtype)
            dense[np.asarray(columns[feature.name + INDICES_SUFFIX][index])] = value
            value = dense
        if feature.stored.dtype == "bool":
            value = value.astype(bool)
        elif value.dtype == object:
            value = value.astype(np.bytes_)
        example[feature.name] = value
    return example


def apply_transform(
    func: Transform, spec: str, example: dict[str, np.ndarray], where: str
) -> dict[str, np.ndarray]:
    """Call the transform on one example, naming the example when it fails.

    Raises:
        TransformError: the function raised or did not return a dict of arrays.
    """
    try:
        result = func(example)
    except Hdf5ToRecordsError:
        raise
    except Exception as exc:
        raise TransformError(
            f"--transform {spec} failed on {where}: {type(exc).__name__}: "
            f"{first_line(exc, default='')}"
        ) from None
    if not isinstance(result, Mapping) or not result:
        raise TransformError(
            f"--transform {spec} returned {type(result).__name__} for {where}; "
            "expected a non-empty dict of NumPy arrays"
        )
    return {str(k): np.asarray(v) for k, v in result.items()}


def schema_of(output: dict[str, np.ndarray], spec: str) -> tuple[FeatureSchema, ...]:
    """The output schema from the transform's result on the first example."""
    return user_code.schema_of(output, f"--transform {spec}", f"transform:{spec}")


def check_output(
    output: dict[str, np.ndarray], schema: tuple[FeatureSchema, ...], spec: str, where: str
) -> None:
    """Check one example's output against the schema of the first.

    Raises:
        TransformError: naming the example and what differs.
    """
    user_code.check_output(output, schema, f"--transform {spec}", where, TransformError)
