"""The ``hdf5-to-records`` command line: a thin layer over the library.

Each command parses options, builds a config, calls one library function, and turns
the project's errors into one line on stderr: exit 2 for usage errors, 1 otherwise.
``--debug`` shows the traceback instead. The library is imported inside the commands,
so ``--help`` stays as fast as importing click.

``app`` holds the group and what the commands share; ``convert``, ``checks`` and
``service`` register their commands on it when imported.
"""

from . import checks, convert, service  # noqa: F401 - each registers its commands
from .app import main

__all__ = ["main"]
