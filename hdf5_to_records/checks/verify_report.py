"""What ``verify`` found: problems, each named with its file (and record), and the
report that gathers them with the sizes and speed (text and ``--json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (``manifest``, a shard file, a source) and what."""

    where: str
    message: str
    record: int | None = None

    def __str__(self) -> str:
        at = f" record {self.record}" if self.record is not None else ""
        return f"{self.where}{at}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.where, "record": self.record, "message": self.message}


@dataclass
class Report:
    """What ``verify`` checked and found."""

    directory: str
    problems: list[Problem] = field(default_factory=list)
    shards: int = 0
    records: int = 0
    examples: int = 0
    bytes: int = 0
    seconds: float = 0.0
    compared: int = 0  # records whose values were compared with the sources
    notes: list[str] = field(default_factory=list)  # what was not checked, and why
    source_bytes: int = 0  # index mode: referenced bytes read and decoded
    checked_ranges: int = 0  # index mode: byte ranges read and checked against their CRC32C
    warnings: list[str] = field(default_factory=list)  # what was checked less than usual

    @property
    def total_mb_per_s(self) -> float:
        return (self.bytes + self.source_bytes) / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
            "shards": self.shards,
            "records": self.records,
            "examples": self.examples,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "source_bytes": self.source_bytes,
            "compared_records": self.compared,
            "checked_ranges": self.checked_ranges,
            "notes": self.notes,
            "warnings": self.warnings,
        }
