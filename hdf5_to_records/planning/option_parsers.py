"""Parsers of ``convert``'s option values, one per input kind, so that errors name the
option at fault; :func:`config.build_config` applies them to flags and YAML alike."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .stage_options import FeatureSpec, SplitSpec, check_feature_name


def parse_feature(text: str) -> FeatureSpec:
    """Parse ``NAME=/path/in/file`` (``--feature``)."""
    name, sep, path = text.partition("=")
    if not sep:
        raise UsageError(f"--feature {text!r}: expected NAME=/path/in/file")
    return FeatureSpec(name.strip(), path.strip())


def parse_sparse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=ROWS,COLUMNS`` or ``NAME=COLUMNS`` (``--sparse-shape``)."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        if not sep or not 1 <= len(shape) <= 2 or min(shape) < 0:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"--sparse-shape {text!r}: expected NAME=ROWS,COLUMNS or NAME=COLUMNS"
        ) from None
    return check_feature_name(name.strip(), option="--sparse-shape"), shape


def parse_names(value: Any) -> tuple[str, ...]:
    """Parse ``X,Y,...`` or a YAML list (``--names``): the feature names of a
    generator's tuple items, in order."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise UsageError(f"--names: expected NAME,NAME,..., got {value!r}")
    if not isinstance(value, str) and not items:
        return ()  # a manifest's record of no names
    names = tuple(str(item).strip() for item in items)
    if not names or not all(names):
        raise UsageError(f"--names {value!r}: expected NAME,NAME,... with no empty names")
    return names


def parse_split(text: str) -> SplitSpec:
    """Parse ``NAME=FRACTION`` (``--split``)."""
    name, sep, fraction = text.partition("=")
    try:
        if not sep:
            raise ValueError
        value = float(fraction)
    except ValueError:
        raise UsageError(f"--split {text!r}: expected NAME=FRACTION, e.g. train=0.8") from None
    return SplitSpec(name.strip(), value)


def as_pairs(value: Any, *, key: str) -> list[str]:
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    raise UsageError(f"config key {key!r}: expected a mapping or a list of NAME=VALUE")


def resolve_path(path: str, base_dir: str | None) -> str:
    if base_dir is None or "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def as_int(value: Any, key: str) -> int:
    option = "--" + key.replace("_", "-")
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise UsageError(f"{option}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: expected an integer, got {value!r}") from None


def load_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: file not found") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
