"""``verify``: check a converted dataset end to end, for CI data checks.

Checks, each problem named with its file (and record number where there is one):

- the manifest: readable, a known format version, consistent fields and counts;
- every shard: present, no stray files beside them, the recorded size and sha256, every
  record's TFRecord framing (length and data CRC), record and example counts, and every
  record decoding to the manifest's dtypes and shapes;
- index mode: every source present, unchanged and allowed, every reference inside its
  file and dataset;
- ``deep`` (or a ``sample`` fraction of the records): the values equal what h5py reads
  from the sources, rows found by rebuilding the conversion plan from the manifest.

It reads without TensorFlow: sha256, CRC32C and parsing run near disk speed.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import default_workers
from .dtypes import from_stored
from .errors import Hdf5ToRecordsError
from .manifest import MANIFEST_NAME, manifest_dir
from .proto import FrameReader, FramingError, parse_example

READ_BLOCK = 16 << 20  # bytes read at a time
MAX_RECORD_PROBLEMS = 10  # per shard; the rest are counted


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
            "notes": self.notes,
        }


def verify(
    directory: str,
    *,
    deep: bool = False,
    sample: float | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check the dataset in ``directory``; never raises for what it checks.

    ``progress(bytes)`` is called as shard bytes are read. ``deep`` compares every
    record's values with the sources, ``sample`` a seeded random fraction of them.
    """
    started = time.perf_counter()
    directory = manifest_dir(directory)
    report = Report(directory)
    try:
        _verify(directory, report, deep, sample, seed, progress)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        report.problems.append(Problem(MANIFEST_NAME, f"malformed manifest: {exc!r}"))
    report.seconds = time.perf_counter() - started
    return report


def _verify(directory, report, deep, sample, seed, progress) -> None:
    from hdf5_to_records.dataset_spec import load_spec

    from .manifest import read_manifest

    try:
        manifest = read_manifest(directory)
        spec = load_spec(directory)
    except Hdf5ToRecordsError as exc:
        report.problems.append(Problem(MANIFEST_NAME, str(exc)))
        return
    report.problems += _check_manifest(manifest)
    report.problems += _stray_files(directory, manifest)
    spans = _sources(directory, spec, report)
    rng = np.random.default_rng(seed)
    fraction = 1.0 if deep else (sample or 0.0)
    expected = _Expected(directory, manifest, report) if fraction > 0 else None
    checks = []
    for split, shards in spec.splits.items():
        entries = manifest["splits"][split]["shards"]
        for shard, entry in zip(shards, entries):
            own = Report(directory)  # merged below, in manifest order
            checks.append(
                (
                    _ShardCheck(spec, entry, spans, expected, rng, fraction, own, progress),
                    shard.path,
                )
            )
    if expected is None:
        # Hashing, CRCs and inflate release the GIL: shards are checked side by side.
        with ThreadPoolExecutor(default_workers()) as pool:
            list(pool.map(lambda item: item[0].run(item[1]), checks))
    else:  # value checks read HDF5 through h5py, which serialises every call anyway
        for check, path in checks:
            check.run(path)
    for check, _ in checks:
        own = check.report
        report.shards += 1
        report.problems += own.problems
        report.records += own.records
        report.examples += own.examples
        report.bytes += own.bytes
        report.source_bytes += own.source_bytes
        report.compared += own.compared


def _check_manifest(manifest: dict) -> list[Problem]:
    out = []
    for split, info in manifest["splits"].items():
        shards = info.get("shards", [])
        for key in ("num_examples", "num_records", "num_bytes"):
            total = sum(int(s.get(key, 0)) for s in shards)
            if int(info.get(key, -1)) != total:
                out.append(
                    Problem(
                        MANIFEST_NAME,
                        f"split {split!r}: {key} is {info.get(key)} but its shards add up "
                        f"to {total}",
                    )
                )
        for shard in shards:
            for key in ("num_examples", "num_records", "num_bytes"):
                if not isinstance(shard.get(key), int) or shard[key] < 0:
                    out.append(
                        Problem(shard.get("file", "?"), f"manifest {key} is {shard.get(key)!r}")
                    )
    return out


def _stray_files(directory: str, manifest: dict) -> list[Problem]:
    if "://" in directory:
        return []
    listed = {s["file"] for info in manifest["splits"].values() for s in info["shards"]}
    listed.add(MANIFEST_NAME)
    return [
        Problem(name, "stray file: not listed in the manifest")
        for name in sorted(os.listdir(directory))
        if name not in listed
    ]


def _sources(directory: str, spec, report: Report):
    """The span reader of an index-mode dataset (sources checked), or None."""
    referenced = [f for f in spec.features if f.storage == "reference"]
    if not referenced:
        return None
    from hdf5_to_records.source_trust import resolve_sources
    from hdf5_to_records.spans import SpanReader

    try:
        sources = resolve_sources(
            directory, list(spec.sources), spec.source_roots, [f.name for f in referenced]
        )
    except Hdf5ToRecordsError as exc:
        report.problems.append(Problem("sources", str(exc)))
        return None
    stored = {f.name: (from_stored(f.dtype), tuple(f.shape)) for f in referenced}
    return SpanReader(sources, stored, spec.rows_per_record)


class _Expected:
    """The conversion plan rebuilt from the manifest, to find each example's source row."""

    def __init__(self, directory: str, manifest: dict, report: Report):
        from .config import build_config
        from .converter import choose_storage
        from .plan import build_plan
        from .reading import ShardReader
        from .schema import scan_sources

        self.shards: dict[str, Any] = {}
        self.reader = None
        config = dict(manifest["config"])
        if config.get("transform"):
            report.notes.append("values of --transform outputs are not compared")
            return
        base = os.path.realpath(directory)
        config["sources"] = [
            p if os.path.isabs(p) or "://" in directory else os.path.join(base, p)
            for p in (s["path"] for s in manifest["sources"])
        ]
        config.update(output=directory, overwrite=False, resume=False)
        try:
            rebuilt = build_config(config)
            sources = choose_storage(rebuilt, scan_sources(rebuilt))
            plan = build_plan(rebuilt, sources, sources.features)
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


class _ShardCheck:
    """Stream one shard: hash, framing, records, counts, and optionally values."""

    def __init__(self, spec, entry, spans, expected, rng, fraction, report, progress):
        self.spec, self.entry, self.spans, self.expected = spec, entry, spans, expected
        self.rng, self.fraction, self.report, self.progress = rng, fraction, report, progress
        self.name = entry["file"]
        self.shown = self.hidden = 0

    def problem(self, message: str, record: int | None = None) -> None:
        self.shown += 1
        if record is None or self.shown <= MAX_RECORD_PROBLEMS:
            self.report.problems.append(Problem(self.name, message, record))
        else:
            self.hidden += 1

    def run(self, path: str) -> None:
        records = examples = 0
        digest = hashlib.sha256()
        size = 0
        inflate = zlib.decompressobj(wbits=31) if self.spec.compression == "gzip" else None
        framing = FrameReader()
        broken = False
        try:
            with open(path, "rb") as handle:
                while block := handle.read(READ_BLOCK):
                    digest.update(block)
                    size += len(block)
                    if self.progress is not None:
                        self.progress(len(block))
                    if broken:
                        continue
                    try:
                        data = inflate.decompress(block) if inflate is not None else block
                        for record in framing.feed(data):
                            examples += self._record(records, record, examples)
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
        except FileNotFoundError:
            self.problem("missing: listed in the manifest, not on disk")
            return
        except OSError as exc:
            self.problem(f"unreadable: {exc.strerror or exc}")
            return
        self.report.bytes += size
        if size != self.entry.get("num_bytes"):
            self.problem(f"{size} bytes, the manifest says {self.entry.get('num_bytes')}")
        if digest.hexdigest() != self.entry.get("sha256"):
            self.problem("sha256 differs from the manifest (corrupt or rewritten)")
        if self.hidden:
            self.problem(f"{self.hidden} more record problem(s) like the ones above")
        self.report.records += records
        self.report.examples += examples
        if records != self.entry.get("num_records"):
            self.problem(f"{records} records, the manifest says {self.entry.get('num_records')}")
        if examples != self.entry.get("num_examples"):
            self.problem(f"{examples} examples, the manifest says {self.entry.get('num_examples')}")

    def _record(self, index: int, record: memoryview, position: int) -> int:
        """Check one record; return its example count (0 if it does not parse)."""
        try:
            example = parse_example(record)
            n = _count(example, self.spec)
        except (ValueError, KeyError, TypeError) as exc:
            self.problem(f"does not decode: {exc}", index)
            return 0
        try:
            decoded = {
                f.name: _decode(example, f, n, self.spec, self.spans) for f in self.spec.features
            }
            self.report.source_bytes += sum(
                sum(np.asarray(v).nbytes for v in decoded[f.name])
                for f in self.spec.features
                if f.storage == "reference"
            )
        except (ValueError, KeyError, TypeError, Hdf5ToRecordsError) as exc:
            self.problem(f"does not decode: {exc}", index)
            return n
        if self.expected is not None and self.rng.random() < self.fraction:
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
        for feature in self.spec.features:
            got, want = decoded[feature.name], expected.get(feature.name)
            if want is None or len(got) != len(want):
                self.problem(
                    f"feature {feature.name!r}: {len(got)} examples, source has {len(want or [])}",
                    index,
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
                        f"feature {feature.name!r}, example {position + i}: values differ "
                        "from the source",
                        index,
                    )
                    break


def _count(example: dict, spec) -> int:
    kind, values = example.get(spec.count_key, (None, []))
    if kind != "int64" or len(values) != 1 or not 0 < values[0] <= spec.rows_per_record:
        raise ValueError(
            f"{spec.count_key} is {values!r}, not a count in 1..{spec.rows_per_record}"
        )
    return values[0]


def _decode(example: dict, feature, n: int, spec, spans) -> list:
    """The record's ``n`` values of ``feature`` as NumPy arrays, shape-checked."""
    name = feature.name
    if feature.storage == "reference":
        return _referenced(example, feature, n, spec, spans)
    kind, values = example.get(name, (None, None))
    if kind != "bytes":
        raise ValueError(f"feature {name!r} is missing or not a bytes list")
    if feature.ragged:
        dims_kind, dims = example.get(name + spec.shape_suffix, (None, []))
        ndim = len(feature.shape)
        if dims_kind != "int64" or len(dims) != n * ndim:
            raise ValueError(f"feature {name!r}: {len(dims)} shape values for {n} examples")
        shapes = [tuple(dims[i * ndim : (i + 1) * ndim]) for i in range(n)]
    else:
        shapes = [tuple(feature.shape)] * n
    for shape in shapes:
        if any(d < 0 or (f is not None and d != f) for d, f in zip(shape, feature.shape)):
            raise ValueError(f"feature {name!r}: example shape {shape}, manifest {feature.shape}")
    counts = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if feature.encoding == "bytes":
        if len(values) != sum(counts):
            raise ValueError(f"feature {name!r}: {len(values)} strings, expected {sum(counts)}")
        flat = np.array([bytes(v) for v in values], dtype=object)
    else:
        dtype = from_stored(feature.dtype)
        payload = b"".join(bytes(v) for v in values) if len(values) != 1 else values[0]
        if len(payload) != sum(counts) * dtype.itemsize:
            raise ValueError(
                f"feature {name!r}: {len(payload)} bytes, expected {sum(counts) * dtype.itemsize}"
                f" for {n} example(s) of {feature.dtype} {feature.shape}"
            )
        flat = np.frombuffer(payload, dtype)
        if feature.dtype == "bool":
            flat = flat.astype(bool)
    out, at = [], 0
    for shape, count in zip(shapes, counts):
        out.append(flat[at : at + count].reshape(shape))
        at += count
    return out


def _referenced(example: dict, feature, n: int, spec, spans) -> list:
    if spans is None:
        raise ValueError(f"feature {feature.name!r}: its sources could not be checked")
    file_kind, file_ids = example.get(spec.file_key, (None, []))
    ref_kind, refs = example.get(feature.name + spec.ref_suffix, (None, None))
    take_kind, takes = example.get(feature.name + spec.take_suffix, ("int64", []))
    if file_kind != "int64" or len(file_ids) != 1 or ref_kind != "int64" or take_kind != "int64":
        raise ValueError(f"feature {feature.name!r}: malformed references")
    values = spans.read(
        feature.name,
        np.array(file_ids, np.int64),
        np.array([n], np.int64),
        np.array(refs, np.int64),
        np.array([0, len(refs)], np.int64),
        np.array(takes, np.int64),
        np.array([0, len(takes)], np.int64),
    )
    if feature.dtype == "bool":
        values = values.astype(bool)
    return list(values)
