"""``--generator MODULE:FACTORY``: the user's own generator as the source of examples.

``FACTORY(shard_index, num_shards)`` returns an iterable of examples for one shard. An
example is a dict of arrays (its keys are the feature names), a tuple or list of arrays
(named by ``--names``; a pair defaults to ``x, y``, as Keras' ``fit`` takes them) or a
single array; scalars and Python numbers become 0-d features, ``str`` values UTF-8
bytes. The schema is the first example's: keys, dtypes and ranks must stay the same;
sizes may vary (ragged, as with ``--transform``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import GeneratorError, Hdf5ToRecordsError, UsageError, first_line
from . import user_code
from .features import FeatureSchema
from .stage_options import check_feature_name

PAIR_NAMES = ("x", "y")  # a pair's default names: reader.load(..., supervised=("x", "y"))
SINGLE_NAME = "x"  # a bare array's default name
Factory = Callable[[int, int], Iterable]
END = object()  # what next_example returns once the examples are exhausted


def check_generator_options(config) -> None:
    """Refuse what a ``--generator`` :class:`config.ConvertConfig` cannot have: the
    generator makes the examples, so options that select or reference source data have
    nothing to act on, and are refused rather than ignored.

    Raises:
        UsageError: naming the first such option.
    """
    spec = config.generator
    if ":" not in spec:
        raise UsageError(f"--generator {spec!r}: expected MODULE:FACTORY")
    conflicts = {
        "SOURCES": bool(config.sources),
        "--feature": bool(config.features),
        "--rows": config.rows is not None,
        "--groups": config.groups is not None,
        "--sparse-shape": bool(config.sparse_shapes),
        "--transform": config.transform is not None,
        "--shuffle": config.shuffle,
        f"--mode {config.mode}": config.mode != "copy",
    }
    given = [option for option, present in conflicts.items() if present]
    if given:
        why = {
            "--transform": "; do the preprocessing in the factory's examples",
            "--shuffle": "; reader.load(..., shuffle=True) shuffles the whole split",
        }.get(given[0], "")
        raise UsageError(f"--generator {spec}: {given[0]} cannot be used with it{why}")
    if config.num_examples is not None and config.num_examples < 0:
        raise UsageError(f"--num-examples must be >= 0, got {config.num_examples}")
    if config.num_examples is None and len(config.splits) > 1:
        raise UsageError(
            f"--generator {spec}: several --split need --num-examples (the fractions divide it)"
        )
    if config.num_examples is None and config.shard_size is not None:
        raise UsageError(
            f"--generator {spec}: --shard-size needs --num-examples; give --num-shards"
        )
    for name in config.names:
        check_feature_name(name, option="--names")
    if len(set(config.names)) != len(config.names):
        raise UsageError(f"--names must be unique, got {','.join(config.names)}")


def load_factory(spec: str) -> Factory:
    """Import ``MODULE:FACTORY`` (the current directory is on the import path).

    Raises:
        UsageError: the module or factory cannot be found.
    """
    return user_code.load_callable(spec, option="--generator")


def label(spec: str) -> str:
    return f"--generator {spec}"


def open_examples(factory: Factory, spec: str, shard: int, num_shards: int) -> Iterator:
    """An iterator over ``FACTORY(shard, num_shards)``.

    Raises:
        GeneratorError: the factory raised, or returned something not iterable.
    """
    call = f"{spec.partition(':')[2]}({shard}, {num_shards})"
    try:
        examples = factory(shard, num_shards)
    except Hdf5ToRecordsError:
        raise
    except Exception as exc:
        raise GeneratorError(
            f"{label(spec)}: {call} for shard {shard} raised {type(exc).__name__}: "
            f"{first_line(exc, default='')}"
        ) from None
    try:
        return iter(examples)
    except TypeError:
        raise GeneratorError(
            f"{label(spec)}: {call} for shard {shard} returned "
            f"{type(examples).__name__}, not an iterable of examples"
        ) from None


def next_example(examples: Iterator, spec: str, where: str):
    """The next item of ``examples``, or :data:`END` when they are exhausted.

    Raises:
        GeneratorError: the iterable raised, naming ``where`` (shard and example).
    """
    try:
        return next(examples)
    except StopIteration:
        return END
    except Hdf5ToRecordsError:
        raise
    except Exception as exc:
        raise GeneratorError(
            f"{label(spec)} failed on {where}: {type(exc).__name__}: {first_line(exc, default='')}"
        ) from None


def close(examples: Iterator) -> None:
    """Run a generator's ``finally`` blocks (its files close) once we stop reading."""
    closer = getattr(examples, "close", None)
    if callable(closer):
        closer()


def as_example(item, names: Sequence[str], spec: str, where: str) -> dict[str, np.ndarray]:
    """One yielded item as a dict of arrays.

    Raises:
        GeneratorError: ``item`` is not an example, or its items do not match ``names``.
    """
    if isinstance(item, Mapping):
        if names:
            raise GeneratorError(
                f"{label(spec)} yielded a dict for {where}: its keys name the features, "
                "so --names does not apply"
            )
        values = {str(key): value for key, value in item.items()}
    elif isinstance(item, (tuple, list)):
        keys = tuple(names) or (PAIR_NAMES if len(item) == 2 else ())
        if len(keys) != len(item):
            given = f"{len(names)} --names" if names else "no --names"
            raise GeneratorError(
                f"{label(spec)} yielded a {type(item).__name__} of {len(item)} items for "
                f"{where}, with {given}; give --names with {len(item)} names"
            )
        values = dict(zip(keys, item))
    elif isinstance(item, (np.ndarray, np.generic, numbers.Number)):
        if len(names) > 1:
            raise GeneratorError(
                f"{label(spec)} yielded one array for {where}, with {len(names)} --names"
            )
        values = {(names[0] if names else SINGLE_NAME): item}
    else:
        raise GeneratorError(
            f"{label(spec)} yielded {type(item).__name__} for {where}; expected an example: "
            "a dict of arrays, a tuple of arrays or an array"
        )
    if not values:
        raise GeneratorError(f"{label(spec)} yielded an empty example for {where}")
    return {key: _as_array(value, key, spec, where) for key, value in values.items()}


def _as_array(value, key: str, spec: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as exc:  # e.g. a list of arrays of different lengths
        raise GeneratorError(
            f"{label(spec)} yielded {key!r} for {where}, which is not an array: {first_line(exc)}"
        ) from None
    if array.dtype == object:
        raise GeneratorError(
            f"{label(spec)} yielded {key!r} for {where} as {type(value).__name__}, which "
            "holds Python objects; yield numbers, arrays, str or bytes"
        )
    if array.dtype.kind == "U":  # text as UTF-8 bytes, as TFRecord stores it
        array = np.char.encode(array, "utf-8")
    return array


def first_schema(
    factory: Factory, spec: str, names: Sequence[str], num_shards: int
) -> tuple[FeatureSchema, ...]:
    """The stored schema: that of the first example of ``FACTORY(0, num_shards)``.

    Raises:
        GeneratorError: the factory fails, yields nothing, or yields a non-example.
        UnsupportedDtype: a value with no stored encoding, naming its key.
    """
    examples = open_examples(factory, spec, 0, num_shards)
    where = "the first example of shard 0"
    try:
        item = next_example(examples, spec, where)
    finally:
        close(examples)
    if item is END:
        raise GeneratorError(
            f"{label(spec)}: shard 0 yielded no example, so there is no schema to write"
        )
    example = as_example(item, names, spec, where)
    return user_code.schema_of(example, label(spec), f"generator:{spec}")


def check_example(
    example: dict[str, np.ndarray], schema: tuple[FeatureSchema, ...], spec: str, where: str
) -> None:
    """Hold a later example to the first one's keys, dtypes and ranks.

    Raises:
        GeneratorError: naming the example and what differs.
    """
    user_code.check_output(example, schema, label(spec), where, GeneratorError)
