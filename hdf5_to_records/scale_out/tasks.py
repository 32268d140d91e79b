"""Task arrays: convert one disjoint part of the plan per task, then ``finalize``.

For SLURM array jobs and Kubernetes indexed jobs. Every task builds the same plan (it
depends only on the options and the sources) and writes the shards ``i`` with
``i % num_tasks == task_index``, then a part file naming them: the part file is the
task's commit point. ``finalize`` rebuilds the plan, checks that every part is there
and agrees with it, and writes the manifest with the same code as a local run, so the
output is byte-identical to one.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .. import fs
from ..errors import OutputError, UsageError
from ..format.manifest import MANIFEST_NAME, write_manifest
from ..format.naming import index_name, is_output_file, is_part_file, is_temp_of, part_name
from ..planning.config import ConvertConfig, build_config
from ..planning.plan import Plan, ShardSpec
from ..writing.commit import RUN_FLAGS, build_manifest
from ..writing.output import SCRATCH_PREFIX, STATE_NAME
from ..writing.writer import ShardResult

log = logging.getLogger(__name__)
PART_VERSION = 1


@dataclass(frozen=True)
class TaskSlice:
    """Task ``index`` of ``count``: the shards ``i`` of the plan with ``i % count == index``.

    Raises:
        UsageError: ``count < 1`` or ``index`` outside ``0..count-1``.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"--num-tasks must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"--task-index must be in 0..{self.count - 1} for --num-tasks {self.count}, "
                f"got {self.index}"
            )

    @property
    def part_name(self) -> str:
        return part_name(self.index, self.count)

    def shards(self, plan: Plan) -> list[ShardSpec]:
        """This task's shards. Round robin over the plan keeps the parts within one shard
        of each other in count, and spreads every split over all tasks."""
        return [s for i, s in enumerate(plan.shards) if i % self.count == self.index]


def plan_id(plan: Plan) -> str:
    """One fingerprint for the whole plan: tasks and finalize must agree on it."""
    import hashlib

    digest = hashlib.sha256()
    for spec in plan.shards:
        digest.update(f"{spec.filename}:{spec.fingerprint}\n".encode())
    return digest.hexdigest()


def prepare_task_output(
    config: ConvertConfig, plan: Plan, task: TaskSlice
) -> tuple[list[ShardSpec], bool]:
    """Make the output directory ready for one task: the shards it must write, and
    whether it is already complete (``--resume`` and a matching part).

    Other tasks write into the same directory at the same time, so a task touches only
    its own files. Refused (unless ``--overwrite``, which removes them) when the
    directory holds a manifest, the state of an interrupted local run, or parts of a
    different conversion or task count (unreadable parts count as different).

    Raises:
        OutputError: the output is not a directory, holds another conversion, or cannot
            be written.
    """
    out = config.output
    expected = plan_id(plan)
    try:
        if fs.exists(out) and not fs.isdir(out):
            raise OutputError(f"--output {out}: exists and is not a directory")
        fs.makedirs(out)
        names = fs.listdir(out)
        parts = {n: _try_read_part(out, n) for n in names if is_part_file(n)}
        foreign = [
            n
            for n, p in parts.items()
            if n != task.part_name
            and (p is None or p["plan"] != expected or p["num_tasks"] != task.count)
        ]
        other_runs = foreign + [n for n in (MANIFEST_NAME, STATE_NAME) if n in names]
        if other_runs and not config.overwrite:
            first = other_runs[0]
            raise OutputError(
                f"--output {out}: holds {'task part ' if first in parts else ''}{first} "
                "of a different, interrupted or "
                "already finalized conversion (other options, sources or --num-tasks?); "
                "use a new directory or --overwrite"
            )
        for name in other_runs:
            fs.remove(fs.join(out, name))
        own = parts.get(task.part_name)
        if config.resume and own is not None and own["plan"] == expected:
            if not _missing_shards(out, own["shards"]):
                log.info("task %d of %d is already complete", task.index, task.count)
                return [], True
        fs.remove(fs.join(out, task.part_name))
    except OutputError:
        raise
    except PermissionError:
        raise OutputError(f"--output {out}: permission denied") from None
    except OSError as exc:
        raise OutputError(f"--output {out}: cannot be written ({exc.strerror or exc})") from None
    return task.shards(plan), False


def write_part(config: ConvertConfig, plan: Plan, task: TaskSlice, results) -> str:
    """Record the task's completed shards, atomically; return the part file's path."""
    part = {
        "version": PART_VERSION,
        "task_index": task.index,
        "num_tasks": task.count,
        "plan": plan_id(plan),
        "cwd": os.getcwd(),  # relative paths in the config mean something only there
        # Every option, --workers included: it sets the default shard count.
        "config": {k: v for k, v in config.to_json().items() if k not in RUN_FLAGS},
        "shards": [asdict(r) for r in sorted(results, key=lambda r: r.filename)],
    }
    return fs.commit_file(config.output, task.part_name, json.dumps(part, indent=1).encode())


def sweep_task(config: ConvertConfig, specs: list[ShardSpec]) -> None:
    """After a failure: remove the temporary files of this task's shards only."""
    names = fs.listdir(config.output)
    for spec in specs:
        for name in names:
            if is_temp_of(name, spec.filename):
                fs.remove(fs.join(config.output, name))


@dataclass(frozen=True)
class Finalized:
    plan: Plan
    manifest: dict[str, Any]
    manifest_path: str
    num_tasks: int


def finalize(directory: str, *, plan_for: Callable[[ConvertConfig], Plan]) -> Finalized:
    """Write the manifest of a task-array conversion once every part is complete.

    ``plan_for`` rebuilds the plan from the recorded config (the converter's planning).

    Raises:
        OutputError: parts or shards are missing, or disagree with each other or with
            the sources as they are now; each one named.
    """
    try:
        names = fs.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputError(f"finalize {directory}: no such directory") from None
    parts = {n: _read_part(directory, n) for n in names if is_part_file(n)}
    if not parts:
        done = MANIFEST_NAME in names
        raise OutputError(
            f"finalize {directory}: "
            + (
                "already finalized"
                if done
                else "holds no task parts (convert --num-tasks N --task-index I writes them)"
            )
        )
    kinds = collections.Counter((p["num_tasks"], p["plan"]) for p in parts.values())
    if len(kinds) > 1:
        usual = kinds.most_common(1)[0][0]
        odd = sorted(n for n, p in parts.items() if (p["num_tasks"], p["plan"]) != usual)
        raise OutputError(
            f"finalize {directory}: {len(odd)} of {len(parts)} task part(s) come from a "
            f"different conversion ({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''}); "
            "rerun the tasks with the same options"
        )
    count = next(iter(kinds))[0]
    missing = [i for i in range(count) if part_name(i, count) not in parts]
    if missing:
        raise OutputError(
            f"finalize {directory}: {len(missing)} of {count} task(s) have not finished: "
            f"--task-index {_ranges(missing)}"
        )
    first = parts[part_name(0, count)]
    _check_working_directory(directory, first)
    config = build_config(first["config"])
    if not _same_directory(config.output, directory):
        raise OutputError(
            f"finalize {directory}: the tasks wrote to --output {config.output}; run "
            "finalize where that path names this directory"
        )
    plan = plan_for(config)
    if plan_id(plan) != first["plan"]:
        raise OutputError(
            f"finalize {directory}: the plan built from the sources now differs from the "
            "tasks' plan (sources changed since the tasks ran?); rerun the tasks"
        )
    results = [ShardResult(**r) for p in parts.values() for r in p["shards"]]
    gone = _missing_shards(directory, [asdict(r) for r in results])
    wanted = {s.filename for s in plan.shards}
    unlisted = sorted(wanted - {r.filename for r in results})
    if gone or unlisted:
        raise OutputError(
            f"finalize {directory}: shard(s) missing or of the wrong size: "
            f"{', '.join((gone + unlisted)[:5])}"
            + (
                f" and {len(gone) + len(unlisted) - 5} more"
                if len(gone) + len(unlisted) > 5
                else ""
            )
        )
    manifest = build_manifest(config, plan, results)
    path = write_manifest(directory, manifest)
    # Every task is done: what is left of killed attempts (temporary shards, staging
    # scratch) and shards of older plans can go.
    kept = wanted | {index_name(name) for name in wanted}
    for name in names:
        if name in parts or (is_output_file(name) and name not in kept):
            fs.remove(fs.join(directory, name))
        else:
            fs.remove_scratch(directory, name, SCRATCH_PREFIX)
    return Finalized(plan, manifest.to_json(), path, count)


def _check_working_directory(directory: str, part: dict[str, Any]) -> None:
    """Relative paths and transform modules in the tasks' options resolve against the
    directory the tasks ran in: finalize must run there too to rebuild the same plan."""
    cwd = part.get("cwd")
    if not isinstance(cwd, str) or os.path.realpath(cwd) == os.path.realpath(os.getcwd()):
        return
    config = part["config"]
    paths = [*config.get("sources", []), config.get("output", "")]
    rows = config.get("rows") or ""
    if rows.startswith("@") and not rows.startswith("@/"):
        paths.append(rows[1:])
    relative = [
        p for p in paths if isinstance(p, str) and not fs.is_url(p) and not os.path.isabs(p)
    ]
    code = next((f"--{key}" for key in ("transform", "generator") if config.get(key)), None)
    if relative or code:
        what = f"relative paths ({relative[0]})" if relative else code
        raise OutputError(
            f"finalize {directory}: the tasks ran in {cwd} with {what}; run finalize "
            "from that directory"
        )


def _try_read_part(directory: str, name: str) -> dict[str, Any] | None:
    try:
        return _read_part(directory, name)
    except OutputError:
        return None


def _read_part(directory: str, name: str) -> dict[str, Any]:
    path = fs.join(directory, name)
    try:
        with fs.open_read(path) as handle:
            part = json.loads(handle.read())
        if not isinstance(part, dict) or part.get("version") != PART_VERSION:
            raise ValueError("unknown version")
        for key, kind in (("plan", str), ("num_tasks", int), ("config", dict), ("shards", list)):
            if not isinstance(part.get(key), kind):
                raise ValueError(f"no {key!r}")
    except (OSError, ValueError, RecursionError) as exc:
        raise OutputError(f"task part {path} is unreadable ({exc}); rerun that task") from None
    return part


def _missing_shards(directory: str, shards: list[dict]) -> list[str]:
    missing = []
    for shard in shards:
        path = fs.join(directory, shard["filename"])
        if not fs.exists(path) or fs.size(path) != shard["num_bytes"]:
            missing.append(shard["filename"])
    return missing


def _same_directory(recorded: str, directory: str) -> bool:
    if fs.is_url(recorded) or fs.is_url(directory):
        return recorded.rstrip("/") == directory.rstrip("/")
    try:
        return os.path.samefile(recorded, directory)
    except OSError:
        return False


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (what SLURM's --array accepts)."""
    out, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None]):
        if cur is None or cur != prev + 1:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = cur
    return ",".join(out)
