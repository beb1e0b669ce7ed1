"""The reader registry: cheap sniffing in a fixed order, lazy imports, and one error listing every refusal."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from .errors import FormatNotRecognizedError, MissingFileError, UsageError
from .model import FORMATS, VariableMap
from .readers import magic

# format -> module; sniffed in this order (the most specific markers first).
READERS: dict[str, str] = {
    "saved-model": "ckpt_tools.readers.saved_model",
    "keras-archive": "ckpt_tools.readers.keras_archive",
    "keras-weights-h5": "ckpt_tools.readers.keras_h5",
    "keras2-h5": "ckpt_tools.readers.keras2_h5",
    "tf2-checkpoint": "ckpt_tools.readers.tf2",
    "tf1-checkpoint": "ckpt_tools.readers.tf1",
}
assert set(READERS) == set(FORMATS)

# Checks that run before a reader module is imported, so that sniffing a bundle never imports h5py.
PREFILTERS: dict[str, Callable[[Path], str | None]] = {
    "keras-archive": magic.keras_archive_prefilter,
    "keras-weights-h5": magic.hdf5_prefilter,
    "keras2-h5": magic.hdf5_prefilter,
}


def reader_module(fmt: str) -> ModuleType:
    """The reader module for a format name, imported on first use."""
    try:
        return importlib.import_module(READERS[fmt])
    except KeyError:
        raise UsageError(f"unknown format {fmt!r}; known: {', '.join(READERS)}") from None


def detect(path: Path | str) -> str:
    """The format of the artifact at `path`; raises with every reader's reason when none accepts it."""
    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise MissingFileError(f"{path}: no such file or directory")
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise UsageError(f"{path}: not a regular file or directory (a FIFO, socket or device is never read)")
    reasons = []
    for fmt in READERS:
        prefilter = PREFILTERS.get(fmt)
        reason = prefilter(path) if prefilter is not None else None
        if reason is None:
            reason = reader_module(fmt).sniff(path)
        if reason is None:
            return fmt
        reasons.append(f"{fmt}: {reason}")
    raise FormatNotRecognizedError(f"{path}: not a recognized checkpoint ({'; '.join(reasons)})")


def open_checkpoint(path: Path | str, fmt: str | None = None) -> VariableMap:
    """Read the metadata of any supported artifact into a VariableMap (tensors stay on disk until read())."""
    path = Path(path)
    if fmt is None:
        fmt = detect(path)
        module = reader_module(fmt)
    else:
        module = reader_module(fmt)
        reason = module.sniff(path)
        if reason is not None:
            raise FormatNotRecognizedError(f"{path}: not a {fmt} artifact ({reason})")
    result: VariableMap = module.open(path)
    return result
