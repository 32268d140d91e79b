"""``reader.load``'s options: one frozen object that checks itself (as TFDS's ``ReadConfig``).

``reader.load(path, split, batch_size=32, shuffle=True)`` builds it from keyword
arguments; ``reader.load(path, split, options=ReadOptions(...))`` passes it whole. An
invalid combination cannot exist: the constructor raises :class:`UsageError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from hdf5_to_records.errors import UsageError
from hdf5_to_records.index.spans import MAX_OPEN_FILES

from .service import (
    DEFAULT_PROCESSING_MODE,
    DEFAULT_SERVICE_COMPRESSION,
    check_compression,
    check_service,
    processing_mode,
)


@dataclass(frozen=True)
class ReadOptions:
    """Every option of :func:`reader.load` besides the path and the split (see its
    docstring and the README for what each does).

    Raises:
        UsageError: contradictory or out-of-range options; ServiceUnavailable: a
            ``service`` address that nothing answers at.
    """

    batch_size: int | None = None
    features: Sequence[str] | None = None
    supervised: tuple[str | Sequence[str], str | Sequence[str]] | None = None
    shuffle: bool = False
    shuffle_buffer: int | None = None
    window_bytes: int | None = None  # indexed shards: decoded bytes per shuffle window
    seed: int | None = None
    repeat: int | bool | None = None
    drop_remainder: bool = False
    cache: bool | str = False
    deterministic: bool | None = None
    num_parallel_reads: int | None = None
    num_parallel_calls: int | None = None
    map_fn: Callable | None = None
    input_context: Any = None
    num_workers: int | None = None
    worker_index: int | None = None
    verify_checksums: bool = False
    autotune: bool = False
    allowed_roots: Sequence[str] | None = None
    max_open_files: int = MAX_OPEN_FILES  # index mode: source files kept open at once
    sparse: str = "sparse"  # sparse features: "sparse" (tf.SparseTensor) or "dense" rows
    service: str | None = None
    processing_mode: Any = None
    job_name: str | None = None
    service_compression: str | None = DEFAULT_SERVICE_COMPRESSION
    # Derived in __post_init__: the checked dispatcher address and processing mode.
    address: str | None = field(init=False, default=None, repr=False, compare=False)
    mode: Any = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_local(self)
        _check_service(self)
        if self.service is None and self.service_compression is not None:
            raise UsageError("service_compression= needs service=")
        if self.service is not None:
            object.__setattr__(self, "address", check_service(self.service))
        check_compression(self.service_compression)
        if self.service is not None:
            mode = processing_mode(self.processing_mode or DEFAULT_PROCESSING_MODE)
            object.__setattr__(self, "mode", mode)

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any]) -> ReadOptions:
        """Options from ``reader.load``'s keyword arguments.

        Raises:
            TypeError: a keyword that is not an option (as Python does).
        """
        known = {f.name for f in fields(cls) if f.init}
        for name in keywords:
            if name not in known:
                raise TypeError(f"reader.load() got an unexpected keyword argument {name!r}")
        return cls(**keywords)

    @property
    def epochs(self) -> int | None:
        """Epochs to read: ``None`` for endless."""
        return None if self.repeat is True else int(self.repeat or 1)

    @property
    def ordered(self) -> bool:
        """Whether parallel reads keep their order (default: unless shuffling unseeded)."""
        if self.deterministic is None:
            return not self.shuffle or self.seed is not None
        return self.deterministic

    def needed(self) -> list[str] | None:
        """The feature names to decode (``None``: all).

        Raises:
            UsageError: ``supervised`` names outside ``features``.
        """
        if self.supervised is None:
            return list(self.features) if self.features is not None else None
        names = [n for part in self.supervised for n in ([part] if isinstance(part, str) else part)]
        if self.features is not None:
            outside = [n for n in names if n not in self.features]
            if outside:
                raise UsageError(
                    f"supervised names {outside} are not in features={list(self.features)}"
                )
        return list(self.features) if self.features is not None else names


def _check_local(o: ReadOptions) -> None:
    if o.batch_size is not None and o.batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {o.batch_size}")
    if o.drop_remainder and o.batch_size is None:
        raise UsageError("drop_remainder=True needs batch_size=")
    if o.shuffle_buffer is not None and not o.shuffle:
        raise UsageError("shuffle_buffer= needs shuffle=True")
    if o.shuffle_buffer is not None and o.shuffle_buffer < 1:
        raise UsageError(f"shuffle_buffer must be >= 1, got {o.shuffle_buffer}")
    if o.window_bytes is not None and (
        isinstance(o.window_bytes, bool)
        or not isinstance(o.window_bytes, int)
        or o.window_bytes < 1
    ):
        raise UsageError(f"window_bytes must be a number of bytes >= 1, got {o.window_bytes!r}")
    if o.seed is not None and not o.shuffle:
        raise UsageError("seed= has no effect without shuffle=True")
    if isinstance(o.max_open_files, bool) or not isinstance(o.max_open_files, int):
        raise UsageError(f"max_open_files must be a number >= 1, got {o.max_open_files!r}")
    if o.max_open_files < 1:
        raise UsageError(f"max_open_files must be >= 1, got {o.max_open_files}")
    if o.sparse not in ("sparse", "dense"):
        raise UsageError(f"sparse must be 'sparse' or 'dense', got {o.sparse!r}")
    if o.repeat is not None and not isinstance(o.repeat, bool):
        if not isinstance(o.repeat, int) or o.repeat < 1:
            raise UsageError(f"repeat must be a number of epochs >= 1 or True, got {o.repeat!r}")


def _check_service(o: ReadOptions) -> None:
    if o.service is None:
        if o.processing_mode is not None or o.job_name is not None:
            raise UsageError("processing_mode= and job_name= need service=")
        return
    if o.cache:
        raise UsageError("cache= with service=: the service's workers read every epoch")
    if o.input_context is not None or o.num_workers is not None or o.worker_index is not None:
        raise UsageError(
            "input_context=/num_workers= with service=: the service shares the shards "
            "out (processing_mode=, job_name=)"
        )
