"""The reader contract and registry: cheap sniffing in a fixed order, lazy imports, one error listing refusals."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ckpt_tools.errors import FormatNotRecognizedError, MissingFileError, UsageError
from ckpt_tools.model import VariableMap
from ckpt_tools.readers import magic
from ckpt_tools.storage import as_path, not_found, suffixed

Sniff = Callable[[Path], "str | None"]


def no_state_directory(vmap: VariableMap) -> Path | None:
    """The default hook: the format keeps no `checkpoint` state file."""
    return None


@dataclass(frozen=True)
class Reader:
    """What one format module provides (its module-level `READER`), and all that operations may ask of it.

    `sniff(path)` returns None when the path is this format, else a short reason; it must be cheap and never
    raise. `open(path)` reads metadata into a VariableMap (tensors stay lazy). `verify(vmap)` checks every byte
    of the artifact, raising a CkptToolsError naming the first problem, and says what it verified.
    `state_directory(vmap)` is the folder whose `checkpoint` state file lists the artifact, if the format has
    one. `group` names the family of formats (`bundle`, `hdf5`, `zip`) for help texts and docs.
    """

    name: str
    sniff: Sniff
    open: Callable[[Path], VariableMap]
    verify: Callable[[VariableMap], str]
    state_directory: Callable[[VariableMap], Path | None] = no_state_directory
    group: str = ""


@dataclass(frozen=True)
class _Entry:
    """A registered reader: either loaded, or a module to import on first use, behind a prefilter."""

    name: str
    module: str | None = None
    reader: Reader | None = None
    prefilter: Sniff | None = None


# Built-in readers, sniffed in this order (the most specific markers first). The prefilters run before a
# reader module is imported, so that sniffing a bundle never imports h5py.
_REGISTRY: list[_Entry] = [
    _Entry("saved-model", "ckpt_tools.readers.saved_model", prefilter=magic.saved_model_prefilter),
    _Entry("backup-and-restore", "ckpt_tools.readers.backup"),
    _Entry("keras-archive", "ckpt_tools.readers.keras_archive", prefilter=magic.keras_archive_prefilter),
    _Entry("keras-weights-h5", "ckpt_tools.readers.keras_h5", prefilter=magic.hdf5_prefilter),
    _Entry("keras2-h5", "ckpt_tools.readers.keras2_h5", prefilter=magic.hdf5_prefilter),
    _Entry("tf2-checkpoint", "ckpt_tools.readers.tf2"),
    _Entry("tf1-checkpoint", "ckpt_tools.readers.tf1"),
]


def register_reader(reader: Reader, *, before: str | None = None, prefilter: Sniff | None = None) -> None:
    """Add a third-party format: sniffed before `before` (a registered name), else after every built-in."""
    if any(e.name == reader.name for e in _REGISTRY):
        raise UsageError(f"a reader named {reader.name!r} is already registered")
    entry = _Entry(reader.name, reader=reader, prefilter=prefilter)
    names = formats()
    if before is None:
        _REGISTRY.append(entry)
    elif before in names:
        _REGISTRY.insert(names.index(before), entry)
    else:
        raise UsageError(f"unknown format {before!r}; known: {', '.join(names)}")


def formats() -> tuple[str, ...]:
    """Every registered format name, in sniffing order."""
    return tuple(e.name for e in _REGISTRY)


def reader(fmt: str) -> Reader:
    """The reader of a format name, its module imported on first use."""
    for entry in _REGISTRY:
        if entry.name == fmt:
            if entry.reader is not None:
                return entry.reader
            assert entry.module is not None
            found: Reader = importlib.import_module(entry.module).READER
            return found
    raise UsageError(f"unknown format {fmt!r}; known: {', '.join(formats())}")


def reader_of(vmap: VariableMap) -> Reader:
    """The reader that produced a variable map, for its hooks."""
    return reader(vmap.format)


def detect(path: Path | str) -> str:
    """The format of the artifact at `path`; raises with every reader's reason when none accepts it."""
    path = as_path(path)
    if not path.exists() and not suffixed(path, ".index").exists():
        raise MissingFileError(not_found(path))
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise UsageError(f"{path}: not a regular file or directory (a FIFO, socket or device is never read)")
    reasons = []
    for entry in _REGISTRY:
        reason = entry.prefilter(path) if entry.prefilter is not None else None
        if reason is None:
            reason = reader(entry.name).sniff(path)
        if reason is None:
            return entry.name
        reasons.append(f"{entry.name}: {reason}")
    raise FormatNotRecognizedError(f"{path}: not a recognized checkpoint ({'; '.join(reasons)})")


def open_checkpoint(path: Path | str, fmt: str | None = None) -> VariableMap:
    """Read the metadata of any supported artifact into a VariableMap (tensors stay on disk until read())."""
    path = as_path(path)
    if fmt is None:
        fmt = detect(path)
    else:
        reason = reader(fmt).sniff(path)
        if reason is not None:
            raise FormatNotRecognizedError(f"{path}: not a {fmt} artifact ({reason})")
    return reader(fmt).open(path)
