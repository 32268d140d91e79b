"""``verify``: check a converted dataset end to end, for CI data checks.

Checks, each problem named with its file (and record number where there is one):

- the manifest: readable, a known format version, consistent fields and counts;
- every shard: present, no stray files beside them, the recorded size, every record's
  TFRecord framing (length and data CRC) and the digest of that framing (or, in older
  manifests, the whole file's sha256), record and example counts, and every record
  decoding to the manifest's dtypes and shapes;
- index mode: every source present, unchanged and allowed, every reference inside its
  file and dataset, and every referenced byte range read and checked against the CRC32C
  recorded at conversion (only those of the sampled records with ``sample``); a dataset
  without checksums gets a warning;
- ``deep`` (or a ``sample`` fraction of the records): the values equal what h5py reads
  from the sources, rows found by rebuilding the conversion plan from the manifest.

It reads without TensorFlow: CRC32C and parsing run near disk speed, and the
shards (and so the source ranges they reference) are checked side by side in threads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import Hdf5ToRecordsError
from ..format.dataset_spec import spec_of
from ..format.manifest import MANIFEST_NAME, Manifest, load_manifest, manifest_dir
from ..format.naming import index_name
from ..planning.config import default_workers
from .regenerate import Regenerated
from .verify_report import Problem, Report
from .verify_shards import READ_BLOCK, Expected, Sampling, ShardCheck

__all__ = ["Problem", "Report", "verify"]


def verify(
    directory: str,
    *,
    deep: bool = False,
    sample: float | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    read_block: int = READ_BLOCK,
) -> Report:
    """Check the dataset in ``directory``; never raises for what it checks.

    ``progress(bytes)`` is called as shard bytes are read. ``deep`` compares every
    record's values with the sources, ``sample`` a seeded random fraction of them.
    Shards are read ``read_block`` bytes at a time.
    """
    started = time.perf_counter()
    directory = manifest_dir(directory)
    report = Report(directory)
    _verify(directory, report, deep, sample, seed, progress, read_block)
    report.seconds = time.perf_counter() - started
    return report


def _verify(directory, report, deep, sample, seed, progress, read_block) -> None:
    try:
        manifest = load_manifest(directory)
    except Hdf5ToRecordsError as exc:
        report.problems.append(Problem(MANIFEST_NAME, str(exc)))
        return
    spec = spec_of(manifest, directory.rstrip("/") or "/")
    for split, info in manifest.splits.items():
        report.problems += [Problem(MANIFEST_NAME, m) for m in info.inconsistencies(split)]
    report.problems += _stray_files(directory, manifest)
    spans = _sources(directory, spec, report)
    rng = np.random.default_rng(seed)
    fraction = 1.0 if deep else (sample or 0.0)
    sampled = spans is not None and not deep and sample is not None
    if sampled:
        report.notes.append(
            f"source byte ranges of a sampled {sample:g} of the records were checked (--sample)"
        )
    expected = None
    if fraction > 0:
        rebuild = Regenerated if manifest.mode == "generator" else Expected
        expected = rebuild(directory, manifest, report)
    sampling = Sampling(rng, fraction, sampled)
    checks = []
    for split, shards in spec.splits.items():
        for shard, entry in zip(shards, manifest.splits[split].shards):
            own = Report(directory)  # merged below, in manifest order
            checks.append(
                (
                    ShardCheck(spec, entry, spans, expected, sampling, own, progress, read_block),
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
        report.checked_ranges += own.checked_ranges


def _stray_files(directory: str, manifest: Manifest) -> list[Problem]:
    if "://" in directory:
        return []
    shards = [s for info in manifest.splits.values() for s in info.shards]
    listed = {s.file for s in shards} | {index_name(s.file) for s in shards}
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
    if not spec.checksums:
        report.warnings.append(
            "the referenced byte ranges have no checksums (converted with --checksums none, "
            "or before format 3): only the sources' sizes and mtimes are checked, so bytes "
            "changed in place go unnoticed; convert again to record them"
        )
    from hdf5_to_records.index.source_trust import span_reader

    try:
        return span_reader(spec, referenced)
    except Hdf5ToRecordsError as exc:
        report.problems.append(Problem("sources", str(exc)))
        return None
