"""The one place TensorFlow is imported: quietly, and only when needed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null.

    TensorFlow 2.21 logs through absl before ``absl::InitializeLog()`` runs, which
    ignores ``TF_CPP_MIN_LOG_LEVEL``; the only way to keep that start-up noise (oneDNN,
    CUDA probing) from the user is to mute the descriptor while the import runs.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow with its start-up log noise silenced."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    return tf
