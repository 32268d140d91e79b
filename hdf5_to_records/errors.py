"""The project's error hierarchy.

Every error the library raises on bad input derives from :class:`Hdf5ToRecordsError`,
and also from the builtin it resembles, so callers can catch either. The CLI turns
:class:`UsageError` subclasses into exit code 2 and everything else into exit code 1.
Messages say what was expected, what was found, and where.
"""

from __future__ import annotations


class Hdf5ToRecordsError(Exception):
    """Base class for every error this project raises on bad input or environment."""

    def with_context(self, context: str) -> Hdf5ToRecordsError:
        """Return a copy of this error whose message is prefixed with ``context``."""
        new = type(self).__new__(type(self))
        Exception.__init__(new, f"{context}: {self}")
        return new


class UsageError(Hdf5ToRecordsError, ValueError):
    """An option or config value is malformed or contradictory (exit code 2)."""


class SourceNotFound(Hdf5ToRecordsError, FileNotFoundError):
    """A source file or glob pattern matched nothing."""


class SourceUnreadable(Hdf5ToRecordsError, OSError):
    """A source exists but is not a readable HDF5 file (wrong format, truncated)."""


class DatasetNotFound(Hdf5ToRecordsError, KeyError):
    """A dataset or group path does not exist in a source file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SchemaError(Hdf5ToRecordsError, ValueError):
    """Features disagree: axis-0 lengths, shapes or dtypes across files or examples."""


class SelectionError(Hdf5ToRecordsError, ValueError):
    """A row selection is out of range, empty or otherwise unusable."""


class UnsupportedDtype(Hdf5ToRecordsError, TypeError):
    """A dataset's dtype has no stored encoding (compound, vlen numeric, references...)."""


class FilterUnavailable(Hdf5ToRecordsError, OSError):
    """A dataset uses an HDF5 compression filter that is not available here."""


class RecordTooLarge(Hdf5ToRecordsError, ValueError):
    """One example does not fit in a single TFRecord record."""


class UserCodeError(Hdf5ToRecordsError, RuntimeError):
    """The user's code (``--transform``, ``--generator``) failed or broke its schema."""


class TransformError(UserCodeError):
    """The user's ``--transform`` function failed or returned an inconsistent schema."""


class GeneratorError(UserCodeError):
    """The user's ``--generator`` factory failed, or yielded something not an example
    or not of the first example's schema."""


class OutputError(Hdf5ToRecordsError, OSError):
    """The output cannot be written: exists, not writable, disk full, plan mismatch."""


class ManifestError(Hdf5ToRecordsError, ValueError):
    """A manifest is missing, unreadable or of an unknown format version."""


class WorkerDied(Hdf5ToRecordsError, RuntimeError):
    """A worker process died abruptly (killed, out of memory)."""


class ShardMissing(Hdf5ToRecordsError, FileNotFoundError):
    """A shard listed in the manifest is not there."""


class ShardCorrupt(Hdf5ToRecordsError, OSError):
    """A shard's size or checksum does not match the manifest."""


class UnknownName(Hdf5ToRecordsError, KeyError):
    """A split or feature name that the manifest does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotReferenceable(Hdf5ToRecordsError, ValueError):
    """``--mode index``: a feature's HDF5 layout cannot be referenced."""


class SourceChanged(Hdf5ToRecordsError, OSError):
    """An index-mode source differs from the file that was converted."""


class SourceRefused(Hdf5ToRecordsError, PermissionError):
    """A manifest points at a file or byte range the reader will not read."""


class ServiceUnavailable(Hdf5ToRecordsError, ConnectionError):
    """A tf.data service address that nothing answers at, or a port already taken."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's kill), raised by the CLI and handled like Ctrl-C."""


def first_line(exc: BaseException, *, default: str | None = None) -> str:
    """The first line of an exception's message, for one-line reports (``default``, else
    the exception's type name, when the message is empty)."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default
