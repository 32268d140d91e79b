"""Resolve sources, features and row selections into one :class:`SourceSet`.

This is the "selection" stage of config → selection → plan → read → encode → write.
It reads metadata only (shapes, dtypes, layouts, index/mask datasets).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import glob
import logging
import os
from dataclasses import dataclass
from typing import Literal

import h5py
import numpy as np

from ..errors import SchemaError, SelectionError
from ..format.dtypes import stored_type
from ..format.reference import Reference
from ..index.references import probe
from .columns import FieldColumn
from .features import (
    FeatureSchema,
    Shape,
    check_consistent,
    enum_labels,
    expand_fields,
    row_schema,
)
from .group_columns import SparseMatrix
from .selection import RowSpec, parse_rows, resolve_rows
from .sources import ensure_filters, expand_sources, get_dataset, layout, open_h5
from .stage_options import FeatureSpec, SourceOptions, check_feature_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SourceFile:
    """One source file and the items (rows or groups) selected from it."""

    path: str
    size: int
    mtime: float
    num_items: int  # rows (row mode) or matched groups (group mode)
    rows: np.ndarray  # selected item indices, in selection order
    groups: tuple[str, ...] = ()  # group paths (group mode)
    chunk_rows: int = 1  # largest chunk extent along axis 0 over the features
    # Index modes: per feature, how its dataset can be referenced, or why it cannot.
    refs: dict[str, Reference | str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class SourceSet:
    """Everything the planner needs to know about the inputs."""

    mode: Literal["rows", "groups", "generator"]
    files: tuple[SourceFile, ...]
    features: tuple[FeatureSchema, ...]
    group_pattern: str | None = None

    def without_selections(self) -> SourceSet:
        """The same sources without their row arrays: all a worker needs, much smaller."""
        empty = np.empty(0, np.int64)
        files = tuple(dataclasses.replace(f, rows=empty) for f in self.files)
        return dataclasses.replace(self, files=files)

    @property
    def num_examples(self) -> int:
        return sum(int(f.rows.size) for f in self.files)

    @property
    def example_bytes(self) -> int:
        return max(1, sum(f.example_bytes() for f in self.features))


def scan_sources(options: SourceOptions) -> SourceSet:
    """Open every source, resolve features and selections, and check they agree.

    Raises:
        SourceNotFound, SourceUnreadable, DatasetNotFound, SchemaError, SelectionError,
        UnsupportedDtype, FilterUnavailable: each naming the file and dataset at fault.
    """
    paths = expand_sources(options.sources)
    row_spec = parse_rows(options.rows) if options.rows is not None else None
    if options.groups is not None:
        return _scan_groups(options, paths, row_spec)
    return _scan_rows(options, paths, row_spec)


def _scan_rows(options: SourceOptions, paths: list[str], row_spec: RowSpec | None) -> SourceSet:
    features: tuple[FeatureSpec, ...] = options.features
    schemas: dict[str, FeatureSchema] = {}
    files = []
    for path in paths:
        name = os.path.basename(path)
        with open_h5(path) as h5:
            if not features:
                exclude = row_spec.dataset if row_spec is not None else None
                features = _auto_features(h5, name, exclude=exclude)
            features = expand_fields(h5, features, where=name)
            datasets = {
                f.name: get_dataset(
                    h5,
                    f.path,
                    where=name,
                    option=f"feature {f.name!r}",
                    sparse_shape=options.sparse_shapes.get(f.name),
                )
                for f in features
            }
            lengths = {}
            refs: dict[str, Reference | str] = {}
            chunk_rows, biggest_chunk = 1, 0
            for spec in features:
                ds = datasets[spec.name]
                where = f"feature {spec.name!r}: dataset {spec.path} in {name}"
                if ds.ndim == 0 or (isinstance(ds, FieldColumn) and ds.dataset.ndim == 0):
                    raise SchemaError(
                        f"{where} is scalar; row features need at least one axis "
                        "(use --groups for one example per group)"
                    )
                ensure_filters(ds, where=name)
                schema = row_schema(spec, ds, where)
                check_consistent(schemas.setdefault(spec.name, schema), schema, where)
                lengths[spec.path] = ds.shape[0]
                if options.mode != "copy":
                    refs[spec.name] = probe(ds, path)
                chunk_bytes = _chunk_bytes(ds)
                if chunk_bytes > biggest_chunk:
                    biggest_chunk, chunk_rows = chunk_bytes, layout(ds).chunk_rows
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{p} has {n}" for p, n in lengths.items())
                raise SchemaError(f"features must share the axis-0 length in {name}: {detail}")
            num_rows = next(iter(lengths.values()))
            if num_rows == 0:
                raise SelectionError(
                    f"source {name} has no rows: its features have axis-0 length 0"
                )
            rows = resolve_rows(row_spec, num_rows, h5file=h5, where=name)
        stat = os.stat(path)
        files.append(
            SourceFile(
                path, stat.st_size, stat.st_mtime, num_rows, rows, chunk_rows=chunk_rows, refs=refs
            )
        )
    return SourceSet("rows", tuple(files), tuple(schemas.values()))


def _auto_features(
    h5: h5py.File, name: str, *, exclude: str | None = None
) -> tuple[FeatureSpec, ...]:
    """Every root dataset whose first axis has the length most root datasets share.

    ``exclude`` is the ``--rows @/mask`` dataset, which selects rows and is no feature.
    """
    candidates = {}
    for key in sorted(h5.keys()):
        if exclude is not None and "/" + key == "/" + exclude.strip("/"):
            continue
        obj = h5.get(key)
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 1:
            candidates[key] = obj.shape[0]
    if not candidates:
        raise SchemaError(f"{name} has no datasets with rows at its root; use --feature NAME=/path")
    counts = collections.Counter(candidates.values())
    common = max(counts, key=lambda length: (counts[length], length))
    chosen = [k for k, n in candidates.items() if n == common]
    skipped = sorted(set(candidates) - set(chosen))
    if skipped:
        log.info("skipping root datasets whose length is not %d: %s", common, skipped)
    for key in chosen:
        check_feature_name(key, option=f"dataset /{key} (name it with --feature NAME=/{key})")
    return tuple(FeatureSpec(k, "/" + k) for k in chosen)


def _chunk_bytes(ds: h5py.Dataset) -> int:
    """Bytes of one chunk (0 for unchunked data), to pick the chunking that matters."""
    if not ds.chunks:
        return 0
    return int(np.prod(ds.chunks, dtype=np.int64)) * ds.dtype.itemsize


def match_groups(h5: h5py.File, pattern: str) -> list[str]:
    """Paths of the groups matching a glob pattern (``*`` never crosses ``/``), sorted."""
    current = ["/"]
    for part in [p for p in pattern.strip("/").split("/") if p]:
        found = []
        for base in current:
            group = h5[base]
            names = sorted(group.keys()) if glob.has_magic(part) else [part]
            for key in names:
                if fnmatch.fnmatchcase(key, part) and isinstance(group.get(key), h5py.Group):
                    found.append(base.rstrip("/") + "/" + key)
        current = found
    return sorted(current) if current != ["/"] else []


def _scan_groups(options: SourceOptions, paths: list[str], row_spec: RowSpec | None) -> SourceSet:
    features = options.features
    shapes: dict[str, list[tuple[int, ...]]] = collections.defaultdict(list)
    schemas: dict[str, FeatureSchema] = {}
    files = []
    for path in paths:
        name = os.path.basename(path)
        with open_h5(path) as h5:
            groups = match_groups(h5, options.groups)
            if not groups:
                raise SelectionError(f"--groups {options.groups!r} matches no groups in {name}")
            if not features:
                first = h5[groups[0]]
                features = tuple(
                    FeatureSpec(k, k)
                    for k in sorted(first.keys())
                    if isinstance(first.get(k), h5py.Dataset)
                )
                if not features:
                    raise SchemaError(
                        f"group {groups[0]} in {name} holds no datasets; "
                        "name them with --feature NAME=relative/path"
                    )
            features = expand_fields(h5[groups[0]], features, where=f"{groups[0]} of {name}")
            rows = resolve_rows(row_spec, len(groups), h5file=h5, where=name)
            for index in np.unique(rows):
                group = h5[groups[index]]
                gwhere = f"group {groups[index]} of {name}"
                for spec in features:
                    ds = get_dataset(
                        group, spec.path.lstrip("/"), where=gwhere, option=f"feature {spec.name!r}"
                    )
                    _check_group_dataset(schemas, spec, ds, name)
                    shapes[spec.name].append(ds.shape)
        stat = os.stat(path)
        files.append(
            SourceFile(path, stat.st_size, stat.st_mtime, len(groups), rows, groups=tuple(groups))
        )
    merged = tuple(
        FeatureSchema(
            s.name,
            s.source,
            s.source_dtype,
            s.stored,
            merge_shapes(shapes[s.name]),
            True,
            float(np.mean([np.prod(shape) for shape in shapes[s.name]])),
            enum=s.enum,
        )
        for s in schemas.values()
    )
    return SourceSet("groups", tuple(files), merged, group_pattern=options.groups)


def _check_group_dataset(
    schemas: dict[str, FeatureSchema], spec: FeatureSpec, ds: h5py.Dataset, name: str
) -> None:
    """Check one group example's dataset against the feature's first (recorded in
    ``schemas``): same enum labels, stored dtype and number of dimensions.

    Raises:
        SchemaError: naming the feature, dataset and file.
    """
    where = f"feature {spec.name!r}: dataset {ds.name} in {name}"
    if isinstance(ds, SparseMatrix):
        raise SchemaError(
            f"{where} is a sparse matrix: its rows are examples, so select it "
            "as a row feature (without --groups)"
        )
    ensure_filters(ds, where=name)
    if spec.name not in schemas:
        schemas[spec.name] = FeatureSchema(
            spec.name,
            spec.path,
            ds.dtype.str,
            stored_type(ds.dtype, where=where),
            ds.shape,
            True,
            enum=enum_labels(ds.dtype),
        )
    known = schemas[spec.name]
    if enum_labels(ds.dtype) != known.enum:
        raise SchemaError(
            f"{where} is an enum with labels {dict(enum_labels(ds.dtype) or ())}"
            f", but other examples have {dict(known.enum or ())}"
        )
    if stored_type(ds.dtype, where=where).dtype != known.stored.dtype:
        raise SchemaError(
            f"{where} has dtype {ds.dtype}, but other examples have {known.stored.dtype}"
        )
    if ds.ndim != len(known.shape):
        raise SchemaError(
            f"{where} has {ds.ndim} dimensions, but other examples have {len(known.shape)}"
        )


def merge_shapes(shapes: list[tuple[int | None, ...]]) -> Shape:
    """One shape for many: dimensions that differ (or are already unknown) become None."""
    first = shapes[0]
    return tuple(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(first))
