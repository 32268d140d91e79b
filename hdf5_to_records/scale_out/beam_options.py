"""Beam's side of ``convert --runner beam``: importing it quietly, naming a runner, checking
``--beam-option KEY=VALUE`` pairs, and keeping the engines' logs at the CLI's level.

A runner's options are defined in its own module (``DaskOptions`` in Beam's
``dask_runner``, ``FlinkRunnerOptions`` in ``flink_runner``, ...), and Beam checks
options against the option classes imported so far; so the runner is resolved and its
module imported before any option is checked.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from ..errors import UsageError

_root = logging.getLogger()
_quiet = _root.getEffectiveLevel() >= logging.WARNING
_level = _root.level
if _quiet:  # Beam warns on import about Google Cloud clients it does not need here
    _root.setLevel(logging.ERROR)
    # and logs the traceback of a failed step, which the CLI reports in one line.
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
try:
    import apache_beam as beam
except ImportError:  # an optional extra: `pip install 'hdf5-to-records[beam]'`
    beam = None
finally:
    _root.setLevel(_level)

DEFAULT_RUNNER = "DirectRunner"
# Runners that ship with Beam but are missing from its table of short names
# (StandardOptions.ALL_KNOWN_RUNNERS in Beam 2.77).
_UNLISTED_RUNNERS = ("apache_beam.runners.dask.dask_runner.DaskRunner",)
# What each runner needs beyond Beam, for the message when its module does not import.
_RUNNER_EXTRAS = {
    "dask": "pip install 'hdf5-to-records[dask]'",
    "dataflow": "pip install 'apache-beam[gcp]'",
    "interactive": "pip install 'apache-beam[interactive]'",
}
# The DaskRunner puts up to 128 elements in one partition (one task): one shard an
# element, that would write every shard of a small plan on one worker, one after another.
_DASK_PARTITIONING = ("dask_partition_size", "dask_npartitions")
# Loggers of the engines a pipeline runs on; they follow -v (silent without it: a failed
# pipeline is reported in one line).
ENGINE_LOGGERS = ("apache_beam", "distributed", "dask", "tornado", "bokeh", "py4j", "fsspec")


def import_beam():
    """The ``apache_beam`` module; raises :class:`UsageError` naming the extra if absent."""
    if beam is None:
        raise UsageError("--runner beam needs Apache Beam: pip install 'hdf5-to-records[beam]'")
    return beam


def known_runners() -> dict[str, str]:
    """Every runner that ships with Beam: lower-case class name -> module.Class path."""
    paths = (*import_beam().options.pipeline_options.StandardOptions.ALL_KNOWN_RUNNERS,)
    return {p.rsplit(".", 1)[-1].lower(): p for p in (*paths, *_UNLISTED_RUNNERS)}


def resolve_runner(name: str) -> str:
    """A runner as the user names it (``DaskRunner``, ``dask``, ``Flink``, or a
    ``module.Class`` path) -> the class's full path, with its module imported so that
    its pipeline options are known.

    Raises:
        UsageError: no such runner, or its module (or what it needs) is not installed.
    """
    table = known_runners()
    key = name.strip().lower()
    path = table.get(key) or table.get(key + "runner") or name.strip()
    where = f"--beam-option runner={name}"
    if "." not in path:
        names = ", ".join(sorted(p.rsplit(".", 1)[-1] for p in table.values()))
        raise UsageError(f"{where}: not a Beam runner; expected one of {names} or module.Class")
    module, _, cls = path.rpartition(".")
    try:
        runner = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        extra = next((v for k, v in _RUNNER_EXTRAS.items() if k in path.lower()), None)
        hint = f"; {extra}" if extra else ""
        raise UsageError(f"{where}: cannot import {module} ({exc}){hint}") from None
    except AttributeError:
        raise UsageError(f"{where}: {module} has no runner {cls!r}") from None
    runner_base = import_beam().runners.runner.PipelineRunner
    if not (isinstance(runner, type) and issubclass(runner, runner_base)):
        raise UsageError(f"{where}: {path} is not a Beam PipelineRunner")
    return path


def parse_beam_options(pairs: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) -> Beam's ``--KEY=VALUE`` arguments, with
    the runner given by its full path (``DirectRunner`` unless ``runner=`` is given) and,
    on Dask, one shard per task unless the partitioning is given.

    Raises:
        UsageError: Beam is not installed, an unknown runner, or a key that is not an
            option of Beam or of the chosen runner, or a value Beam refuses.
    """
    beam = import_beam()
    flags, keys = [], []
    runner = DEFAULT_RUNNER
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UsageError(f"--beam-option {pair!r}: expected KEY=VALUE")
        if key == "runner":
            runner = value
            continue
        flags.append(f"--{key}={value}" if sep else f"--{key}")
        keys.append((key.replace("-", "_"), pair))
    flags.append(f"--runner={resolve_runner(runner)}")
    if flags[-1].endswith(".DaskRunner") and not any(k in _DASK_PARTITIONING for k, _ in keys):
        flags.append("--dask_partition_size=1")
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):  # argparse prints Beam's whole usage text
            options = beam.options.pipeline_options.PipelineOptions(flags)
            known = options.get_all_options(retain_unknown_options=False)
            given = options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        message = usage.getvalue().strip().splitlines()[-1:] or ["invalid value"]
        raise UsageError(
            f"--beam-option: {message[0].removeprefix(os.path.basename(sys.argv[0]) + ': ')}"
        ) from None
    # Options no class knows are kept only when asked to: those are the unknown keys.
    unknown = set(given) - set(known)
    for key, pair in keys:
        if key in unknown:
            raise UsageError(f"--beam-option {pair!r}: {key!r} is not a Beam pipeline option")
    return flags


@contextlib.contextmanager
def engine_logs() -> Iterator[None]:
    """Keep the engines' loggers at the level the CLI was asked for (``-v``): silent at
    the default level, the same as ours with ``-v``/``-vv``. Restored afterwards."""
    level = logging.getLogger().getEffectiveLevel()
    engine_level = logging.CRITICAL + 1 if level >= logging.WARNING else level
    loggers = [logging.getLogger(name) for name in ENGINE_LOGGERS]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(engine_level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, saved):
            logger.setLevel(old)
