"""The output directory: refuse, overwrite or resume, and the state file for ``--resume``.

The state file records the plan's shard fingerprints and each shard as it completes, so
an interrupted run can skip the shards that are complete and match the new plan.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from .. import fs
from ..errors import ManifestError, OutputError
from ..format.manifest import MANIFEST_NAME, load_manifest
from ..format.naming import TEMP_SUFFIX, index_name, is_output_file, is_part_file
from ..planning.plan import Plan
from ..planning.stage_options import OutputOptions
from .commit import shard_state
from .writer import ShardResult

log = logging.getLogger(__name__)
SCRATCH_PREFIX = ".hdf5-to-records-scratch-"  # staging directories (see staging.py)
STATE_NAME = ".hdf5-to-records-state.json"
SAVE_INTERVAL_S = 1.0


class OutputState:
    """Shards known complete in the output directory, persisted after each one."""

    def __init__(self, output: str, plan: Plan, done: dict[str, dict]):
        self._output, self._plan, self._done = output, plan, done
        self._fingerprints = {s.filename: s.fingerprint for s in plan.shards}
        self._saved_at = 0.0

    def completed(self) -> list[ShardResult]:
        """Results of shards already complete and matching the plan (to skip)."""
        results = []
        for spec in self._plan.shards:
            prev = self._done.get(spec.filename)
            if prev is None or prev.get("fingerprint") != spec.fingerprint:
                continue
            path = fs.join(self._output, spec.filename)
            indexed = prev.get("index_sha256") is None or fs.exists(
                fs.join(self._output, index_name(spec.filename))
            )
            if fs.exists(path) and fs.size(path) == prev["num_bytes"] and indexed:
                fields = {k: v for k, v in prev.items() if k != "fingerprint"}
                results.append(ShardResult(**fields))
        return results

    def record(self, result: ShardResult) -> None:
        """Note a completed shard (called in the parent as each shard finishes)."""
        fingerprint = self._fingerprints[result.filename]
        self._done[result.filename] = {**asdict(result), "fingerprint": fingerprint}
        # Rewriting the whole state after each of thousands of shards took 42 s for
        # 4000 shards; once a second loses at most a second of work to a crash.
        if time.monotonic() - self._saved_at >= SAVE_INTERVAL_S:
            self.save()

    def sweep(self) -> None:
        """After a failure: save what completed, and remove temporary files that a
        failed or killed worker could not remove itself."""
        try:
            self.save()
        except OutputError:
            log.warning("could not save the resume state in %s", self._output)
        for name in fs.listdir(self._output):
            if name.endswith(TEMP_SUFFIX):
                fs.remove(fs.join(self._output, name))
            else:
                fs.remove_scratch(self._output, name, SCRATCH_PREFIX)

    def finish(self) -> None:
        """The manifest is written: the state file has served its purpose."""
        fs.remove(fs.join(self._output, STATE_NAME))

    def save(self) -> None:
        """Write the resume state now (atomically)."""
        state = json.dumps({"version": 1, "done": self._done}).encode()
        fs.commit_file(self._output, STATE_NAME, state)
        self._saved_at = time.monotonic()


def prepare_output(target: OutputOptions, plan: Plan) -> OutputState:
    """Make the output directory ready for this plan.

    A non-empty directory is refused unless ``--overwrite`` (our files are removed) or
    ``--resume`` (complete shards matching the plan are kept). Any old manifest is
    removed first, so a run that stops half-way never looks complete.

    Raises:
        OutputError: the output exists and is not a directory, is not empty, or cannot
            be written.
    """
    out = target.path
    try:
        if fs.exists(out) and not fs.isdir(out):
            raise OutputError(f"--output {out}: exists and is not a directory")
        existing = fs.listdir(out) if fs.exists(out) else []
        done: dict[str, dict] = {}
        if existing and not (target.overwrite or target.resume):
            raise OutputError(
                f"--output {out}: directory is not empty; pass --overwrite to "
                "replace its contents or --resume to finish an interrupted run"
            )
        if target.resume:
            done = _previous_results(out, existing)
        fs.makedirs(out)
        # The state is saved before the old manifest goes: a crash at any point leaves
        # a manifest or a state file, and --resume can always go on.
        state = OutputState(out, plan, {} if target.overwrite else done)
        state.save()
        fs.remove(fs.join(out, MANIFEST_NAME))
        wanted = {s.filename for s in plan.shards}
        wanted |= {index_name(name) for name in wanted}
        for name in existing:
            # Task-array parts describe another run's shards: a later finalize must not
            # put them back in charge.
            stale = (is_output_file(name) and (target.overwrite or name not in wanted)) or (
                is_part_file(name)
            )
            if stale and name != STATE_NAME:
                fs.remove(fs.join(out, name))
            else:  # a killed run's staging scratch: its name is random, so none is reused
                fs.remove_scratch(out, name, SCRATCH_PREFIX)
    except PermissionError:
        raise OutputError(f"--output {out}: permission denied") from None
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"--output {out}: cannot be written ({exc.strerror or exc})") from None
    return state


def _previous_results(out: str, existing: list[str]) -> dict[str, dict]:
    """Completed shards recorded by an interrupted run (state file) or a finished one."""
    if STATE_NAME in existing:
        with fs.open_read(fs.join(out, STATE_NAME)) as handle:
            try:
                return json.loads(handle.read()).get("done", {})
            except ValueError:
                return {}
    if MANIFEST_NAME in existing:
        try:
            manifest = load_manifest(out)
        except ManifestError:
            return {}  # not one this version wrote: every shard is written again
        return {
            shard.file: shard_state(split, i, shard)
            for split, info in manifest.splits.items()
            for i, shard in enumerate(info.shards)
            if shard.fingerprint is not None
        }
    if all(name.endswith(TEMP_SUFFIX) for name in existing):
        return {}  # nothing, or only the temporary files of a run killed at its start
    raise OutputError(
        f"--resume: {out} holds no interrupted or finished conversion to resume "
        "(no manifest or state file); use --overwrite"
    )
