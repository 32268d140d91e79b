"""The user's own code (``--transform``, ``--generator``): import it, fingerprint its
source, and hold its outputs to the schema of the first example.

A schema comes from the first example: its keys, dtypes and number of dimensions must
come back for every example; dimension sizes may vary (recorded as unknown).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable

import numpy as np

from ..errors import UnsupportedDtype, UsageError, UserCodeError
from ..format.dtypes import stored_type
from .features import FeatureSchema
from .stage_options import check_feature_name


def load_callable(spec: str, *, option: str) -> Callable:
    """Import ``module:name`` (the current directory is on the import path).

    Raises:
        UsageError: the module or callable cannot be found, naming ``option``.
    """
    module_name, _, func_name = spec.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"{option} {spec}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UsageError(f"{option} {spec}: module {module_name!r} has no function {func_name!r}")
    return func


def code_fingerprint(spec: str | None) -> str | None:
    """``spec`` and the sha256 of its module's source file, so that ``--resume``
    notices edited code (the modules it imports are not covered)."""
    if spec is None:
        return None
    module_name = spec.partition(":")[0]
    try:
        module_spec = importlib.util.find_spec(module_name)
        origin = module_spec.origin if module_spec is not None else None
        with open(origin, "rb") as handle:
            return spec + ":" + hashlib.sha256(handle.read()).hexdigest()
    except (ImportError, OSError, TypeError, ValueError):
        return spec


def schema_of(output: dict[str, np.ndarray], label: str, source: str) -> tuple[FeatureSchema, ...]:
    """The stored schema of the first example's ``output``; ``label`` names the code in
    errors (``--transform m:f``), ``source`` is the features' recorded origin.

    Raises:
        UsageError: a key that is not a feature name.
        UnsupportedDtype: a value with no stored encoding (object arrays).
    """
    schemas = []
    for name, value in output.items():
        check_feature_name(name, option=f"{label} output key")
        if value.dtype == object:
            raise UnsupportedDtype(
                f"{label} output {name!r}: object arrays are not "
                "supported; return numeric arrays or bytes (dtype S)"
            )
        stored = stored_type(value.dtype, where=f"{label} output {name!r}")
        schemas.append(FeatureSchema(name, source, value.dtype.str, stored, value.shape, True))
    return tuple(schemas)


def check_output(
    output: dict[str, np.ndarray],
    schema: tuple[FeatureSchema, ...],
    label: str,
    where: str,
    error: type[UserCodeError],
) -> None:
    """Check one example's ``output`` against the schema of the first.

    Raises:
        ``error``: naming the code, the example (``where``) and what differs.
    """
    expected = {f.name for f in schema}
    if set(output) != expected:
        raise error(
            f"{label} returned keys {sorted(output)} for {where}, "
            f"but {sorted(expected)} for the first example"
        )
    for feature in schema:
        value = output[feature.name]
        if value.ndim != len(feature.shape):
            raise error(
                f"{label} output {feature.name!r} has {value.ndim} dimensions for "
                f"{where}, but {len(feature.shape)} for the first example"
            )
        kind = stored_type(value.dtype, where=f"{label} output {feature.name!r}").dtype
        if kind != feature.stored.dtype:
            raise error(
                f"{label} output {feature.name!r} has dtype {kind} for {where}, "
                f"but {feature.stored.dtype} for the first example"
            )
