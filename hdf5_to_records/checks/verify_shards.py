"""``verify``'s check of one shard: its bytes (size, framing digest), every record's framing,
counts and decoding, and for ``deep``/``sample`` the values against h5py's (the rows
found by rebuilding the conversion plan: :class:`Expected`).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import Hdf5ToRecordsError, ShardCorrupt, SourceChanged
from ..format.manifest import Manifest
from ..format.naming import index_name
from ..format.proto import FrameReader, FramingError, parse_example
from ..format.record_index import FRAMING_BYTES, RecordIndex, expand_runs, index_digest
from ..format.record_keys import INDICES_SUFFIX
from ..format.record_values import feature_values, record_count, sparse_indices
from ..format.shard_digest import FramingDigest
from .verify_report import Problem, Report

READ_BLOCK = 16 << 20  # bytes read at a time
MAX_RECORD_PROBLEMS = 10  # per shard; the rest are counted


class Expected:
    """The conversion plan rebuilt from the manifest, to find each example's source row."""

    def __init__(self, directory: str, manifest: Manifest, report: Report):
        from ..converter import choose_storage
        from ..planning.config import build_config
        from ..planning.plan import build_plan
        from ..planning.schema import scan_sources
        from ..writing.reading import ShardReader

        self.shards: dict[str, Any] = {}
        self.reader = None
        config = dict(manifest.config)
        if config.get("transform"):
            report.notes.append("values of --transform outputs are not compared")
            return
        base = os.path.realpath(directory)
        config["sources"] = [
            p if os.path.isabs(p) or "://" in directory else os.path.join(base, p)
            for p in (s.path for s in manifest.sources)
        ]
        config.update(output=directory, overwrite=False, resume=False)
        try:
            rebuilt = build_config(config)
            sources = choose_storage(rebuilt, scan_sources(rebuilt.source_options))
            plan = build_plan(rebuilt.plan_options, sources, sources.features)
        except Hdf5ToRecordsError as exc:
            report.problems.append(Problem("sources", f"cannot rebuild the plan: {exc}"))
            return
        self.shards = {s.filename: s for s in plan.shards}
        self.reader = ShardReader(sources.without_selections(), sources.features)

    def values(self, filename: str, start: int, n: int) -> dict[str, Any] | None:
        spec = self.shards.get(filename)
        if spec is None or self.reader is None:
            return None
        ids, rows = spec.file_ids[start : start + n], spec.rows[start : start + n]
        columns: dict[str, list] = {}
        for window in self.reader.windows(ids, rows):
            for name, column in window.columns.items():
                columns.setdefault(name, []).extend(np.asarray(v).copy() for v in column)
        return columns


@dataclass(frozen=True)
class Sampling:
    """Which records ``verify`` compares with the sources: each with probability
    ``fraction``, drawn from ``rng``; with ``sampled_refs``, index mode reads and checks
    the byte ranges of those records only (``--sample``), else of every record."""

    rng: np.random.Generator
    fraction: float = 0.0
    sampled_refs: bool = False


class ShardCheck:
    """Stream one shard: hash, framing, records, counts, and optionally values."""

    def __init__(
        self, spec, entry, spans, expected, sampling, report, progress, read_block=READ_BLOCK
    ):
        self.spec, self.entry, self.spans, self.expected = spec, entry, spans, expected
        self.read_block = read_block
        self.sampling, self.report, self.progress = sampling, report, progress
        self.name = entry.file
        self.shown = self.hidden = 0
        self.layout: list[tuple[int, int]] = []  # (framed size, examples) of each record

    def problem(self, message: str, record: int | None = None) -> None:
        self.shown += 1
        if record is None or self.shown <= MAX_RECORD_PROBLEMS:
            self.report.problems.append(Problem(self.name, message, record))
        else:
            self.hidden += 1

    def run(self, path: str) -> None:
        records = examples = 0
        # Older manifests: the whole file's sha256; format 5: the framing's (shard_digest).
        digest = hashlib.sha256() if self.entry.sha256 is not None else None
        framed = FramingDigest()
        size = 0
        inflate = zlib.decompressobj(wbits=31) if self.spec.compression == "gzip" else None
        framing = FrameReader(framed)
        broken = False
        try:
            with open(path, "rb") as handle:
                while block := handle.read(self.read_block):
                    if digest is not None:
                        digest.update(block)
                    size += len(block)
                    if self.progress is not None:
                        self.progress(len(block))
                    if broken:
                        continue
                    try:
                        data = inflate.decompress(block) if inflate is not None else block
                        for record in framing.feed(data):
                            n = self._record(records, record, examples)
                            self.layout.append((len(record) + FRAMING_BYTES, n))
                            examples += n
                            records += 1
                    except (FramingError, zlib.error) as exc:
                        self.problem(f"bad TFRecord framing: {exc}", records)
                        broken = True
            if not broken:
                try:
                    if inflate is not None:
                        for record in framing.feed(inflate.flush()):
                            examples += self._record(records, record, examples)
                            records += 1
                    framing.finish()
                except (FramingError, zlib.error) as exc:
                    self.problem(f"bad TFRecord framing: {exc}", records)
                    broken = True
        except FileNotFoundError:
            self.problem("missing: listed in the manifest, not on disk")
            return
        except OSError as exc:
            self.problem(f"unreadable: {exc.strerror or exc}")
            return
        self.report.bytes += size
        if size != self.entry.num_bytes:
            self.problem(f"{size} bytes, the manifest says {self.entry.num_bytes}")
        if digest is not None and digest.hexdigest() != self.entry.sha256:
            self.problem("sha256 differs from the manifest (corrupt or rewritten)")
        elif digest is None and not broken and framed.hexdigest() != self.entry.framing_sha256:
            self.problem("framing_sha256 differs from the manifest (records changed or reordered)")
        if self.hidden:
            self.problem(f"{self.hidden} more record problem(s) like the ones above")
        self.report.records += records
        self.report.examples += examples
        if records != self.entry.num_records:
            self.problem(f"{records} records, the manifest says {self.entry.num_records}")
        if examples != self.entry.num_examples:
            self.problem(f"{examples} examples, the manifest says {self.entry.num_examples}")
        if self.entry.index_sha256 is not None and not self.shown:
            self._check_index(path)

    def _check_index(self, path: str) -> None:
        """The record index against its sha256, the framing just read, and the counts."""
        where = index_name(path)
        try:
            with open(where, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            self.problem(f"record index {index_name(self.name)}: {exc.strerror or exc}")
            return
        if index_digest(data) != self.entry.index_sha256:
            self.problem(f"record index {index_name(self.name)}: sha256 differs from the manifest")
        try:
            index = RecordIndex.parse(data, index_name(self.name))
        except ShardCorrupt as exc:
            self.problem(str(exc))
            return
        sizes = [size for size, _ in self.layout]
        framed = RecordIndex.of_sizes(sizes)
        if len(index.sizes) != len(sizes) or not (
            np.array_equal(index.offsets, framed.offsets)
            and np.array_equal(index.sizes, framed.sizes)
        ):
            self.problem(
                f"record index {index_name(self.name)} does not match the shard's framing "
                f"({len(index.sizes)} entries, {len(sizes)} records)"
            )
        counts = [n for _, n in self.layout]
        if not np.array_equal(expand_runs(self.entry.record_examples), counts):
            self.problem("the manifest's record_examples do not match the records' counts")

    def _record(self, index: int, record: memoryview, position: int) -> int:
        """Check one record; return its example count (0 if it does not parse)."""
        try:
            example = parse_example(record)
            n = record_count(example, self.spec)
        except (ValueError, KeyError, TypeError) as exc:
            self.problem(f"does not decode: {exc}", index)
            return 0
        sampling = self.sampling
        chosen = self.expected is not None and sampling.rng.random() < sampling.fraction
        features = [
            f
            for f in self.spec.features
            if chosen or f.storage != "reference" or not sampling.sampled_refs
        ]
        try:
            decoded = {
                f.name: feature_values(example, f, n, self.spec, self.spans) for f in features
            }
            for f in features:
                if f.sparse:
                    decoded[f.name + INDICES_SUFFIX] = sparse_indices(example, f, decoded[f.name])
        except SourceChanged as exc:
            self.problem(str(exc), index)
            return n
        except (ValueError, KeyError, TypeError, Hdf5ToRecordsError) as exc:
            self.problem(f"does not decode: {exc}", index)
            return n
        for f in features:
            if f.storage == "reference":
                self.report.source_bytes += sum(np.asarray(v).nbytes for v in decoded[f.name])
                ranges = len(example[f.name + self.spec.ref_suffix][1])
                self.report.checked_ranges += ranges // 4 if self.spec.checksums else 0
        if chosen:
            self._compare(index, decoded, position, n)
        return n

    def _compare(self, index: int, decoded: dict, position: int, n: int) -> None:
        try:
            expected = self.expected.values(self.name, position, n)
        except Hdf5ToRecordsError as exc:
            self.problem(f"cannot read its source rows: {exc}", index)
            return
        if expected is None:
            return
        self.report.compared += 1
        keys = [f.name for f in self.spec.features]
        keys += [f.name + INDICES_SUFFIX for f in self.spec.features if f.sparse]
        for key in keys:
            got, want = decoded[key], expected.get(key)
            if want is None or len(got) != len(want):
                self.problem(
                    f"feature {key!r}: {len(got)} examples, source has {len(want or [])}", index
                )
                continue
            for i, (g, w) in enumerate(zip(got, want)):
                w = np.asarray(w)
                if w.dtype.kind in "biufc":
                    w = w.astype(np.asarray(g).dtype)
                if np.shape(g) != np.shape(w) or not np.array_equal(
                    g, w, equal_nan=w.dtype.kind in "fc"
                ):
                    self.problem(
                        f"feature {key!r}, example {position + i}: values differ from the source",
                        index,
                    )
                    break
