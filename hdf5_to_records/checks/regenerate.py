"""``verify --deep`` of a ``--generator`` conversion: run the factory again and compare.

The plan is rebuilt from the manifest's config, and each shard's examples are drawn
from ``FACTORY(shard_index, num_shards)`` once more. A factory that is not
deterministic therefore fails the check, which is what ``--resume`` and byte-identical
reruns rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import Hdf5ToRecordsError
from ..format.manifest import Manifest
from .verify_report import Problem, Report


class Regenerated:
    """The examples each shard should hold, from the factory (as ``Expected`` gives
    the HDF5 rows of a file conversion)."""

    def __init__(self, directory: str, manifest: Manifest, report: Report):
        from ..converter import plan_conversion
        from ..planning.config import build_config
        from ..writing.generated import GeneratorReader

        self.shards: dict[str, Any] = {}
        self._open: dict[str, tuple[Iterator, int]] = {}
        config = dict(manifest.config)
        config.update(output=directory, overwrite=False, resume=False)
        try:
            rebuilt = build_config(config)
            plan = plan_conversion(rebuilt)
            self._reader = GeneratorReader(
                rebuilt.generator, rebuilt.names, plan.features, plan.limits
            )
        except Hdf5ToRecordsError as exc:
            report.problems.append(Problem("generator", f"cannot rebuild the plan: {exc}"))
            return
        self.shards = {s.filename: s for s in plan.shards}
        report.notes.append(
            f"values were compared with a new run of --generator {rebuilt.generator}"
        )

    def values(self, filename: str, start: int, n: int) -> dict[str, list] | None:
        """Examples ``[start, start + n)`` of shard ``filename``, by feature.

        Raises:
            GeneratorError: the factory failed on them.
        """
        spec = self.shards.get(filename)
        if spec is None:
            return None
        examples, position = self._open.pop(filename, (None, 0))
        for other, _ in self._open.values():  # shards are checked one after another:
            other.close()  # only one factory iterable stays open
        self._open.clear()
        if examples is None or position > start:
            if examples is not None:
                examples.close()
            examples, position = self._reader.examples(spec), 0
        for _ in range(start - position):  # records verify skips (--sample)
            next(examples, None)
        columns: dict[str, list] = {}
        for _ in range(n):
            example = next(examples, None)
            if example is None:
                break
            for name, value in example.items():
                columns.setdefault(name, []).append(value)
        self._open[filename] = (examples, start + n)
        return columns
