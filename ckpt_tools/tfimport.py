"""Importing TensorFlow only where it is truly needed: quietly, and with the extra to install when absent."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from ckpt_tools.errors import MissingDependencyError

INSTALL_HINT = "pip install 'ckpt-tools[tensorflow]'"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null meanwhile: TensorFlow's C++ start-up lines (absl, oneDNN, CUDA
    probes) bypass Python and would break the CLI's one-line error contract. CKPT_DEBUG=1 keeps them."""
    if os.environ.get("CKPT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow(what: str) -> ModuleType:
    """`import tensorflow` without its C++ log noise, or MissingDependencyError naming the extra."""
    first = "tensorflow" not in sys.modules
    if first:
        # Hide TensorFlow's C++ INFO/WARNING/ERROR lines (e.g. CUDA probes on CPU-only machines) unless the user
        # chose a level; real failures still reach us as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with quiet_native_stderr() if first else contextlib.nullcontext():
            import tensorflow
    except ImportError as exc:
        raise MissingDependencyError(f"{what}: needs TensorFlow; {INSTALL_HINT}") from exc
    module: ModuleType = tensorflow
    return module
