"""The ``hdf5-to-records`` command group and what every command shares: one-line errors,
exit codes, ``--debug``, logging and SIGTERM handling.

Each command parses options, builds a config, calls one library function, and turns
the project's errors into one line on stderr: exit 2 for usage errors, 1 otherwise.
``--debug`` shows the traceback instead. The library is imported inside the commands,
so ``--help`` stays as fast as importing click.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys

import click

from .._version import __version__

log = logging.getLogger("hdf5_to_records")


class _Main(click.Group):
    """Prints click's own usage errors as one line too, for scripts and CI logs."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM: exit 128 + the signal number, the shell convention."""

    exit_code = 130

    @classmethod
    def of(cls, exc: KeyboardInterrupt, message: str) -> Interrupted:
        """The exit for ``exc``: 143 for SIGTERM (:class:`Terminated`), else 130."""
        from ..errors import Terminated

        interrupted = cls(message)
        interrupted.exit_code = 143 if isinstance(exc, Terminated) else 130
        return interrupted


def debug_option(func):
    return click.option("--debug", is_flag=True, help="Show tracebacks for errors.")(func)


@contextlib.contextmanager
def reported_errors(debug: bool, *, interrupted_hint: str | None = None):
    """Turn library errors into click errors: one line, no traceback."""
    from ..errors import Hdf5ToRecordsError, UsageError, first_line

    try:
        yield
    except Hdf5ToRecordsError as exc:
        if debug:
            raise
        message = " | ".join(line for line in str(exc).splitlines() if line.strip())
        if isinstance(exc, UsageError):
            raise click.UsageError(message) from None
        raise click.ClickException(message) from None
    except KeyboardInterrupt as exc:
        if debug:
            raise
        hint = f"interrupted; {interrupted_hint}" if interrupted_hint else "interrupted"
        raise Interrupted.of(exc, hint) from None
    except (click.ClickException, click.exceptions.Exit):
        raise
    except Exception as exc:
        if debug:
            raise
        named = _named_shard_error(exc)
        if named is not None:  # a corrupt shard met while reading: bad input, not a bug
            raise click.ClickException(named) from None
        detail = first_line(exc, default="")
        raise click.ClickException(
            f"internal error: {type(exc).__name__}: {detail} (rerun with --debug for the traceback)"
        ) from None


def _named_shard_error(exc: Exception) -> str | None:
    """The reader's message naming a corrupt shard, from TensorFlow's error around it."""
    if not type(exc).__module__.startswith("tensorflow"):
        return None
    from reader.records import shard_error_message

    return shard_error_message(str(exc))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hdf5-to-records")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Convert selected HDF5 data into sharded TFRecord files for fast tf.data input."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=level, handlers=[handler])


class _LogFormat(logging.Formatter):
    """Ours as ``hdf5-to-records: message``; another library's (Beam, Dask) under its
    logger's name, so that nobody takes an engine's line for ours."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.name.partition(".")[0] == "hdf5_to_records":
            return f"hdf5-to-records: {message}"
        return f"{record.name}: {message}"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a job scheduler's kill) cleans up like Ctrl-C: workers stopped, temp
    files removed, the resume state saved."""

    def interrupt(signum, frame):
        from ..errors import Terminated

        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
