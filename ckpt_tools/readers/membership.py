"""What belongs to an artifact: every file and folder of it, for checks that must never touch a source."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ckpt_tools.model import VariableMap
from ckpt_tools.readers.paths import STATE_FILE
from ckpt_tools.readers.registry import reader_of
from ckpt_tools.storage import is_remote, suffixed

COMPANIONS = (".index", ".meta")  # files TensorFlow keeps beside a bundle prefix


@dataclass(frozen=True)
class Members:
    """`files`: every file that is part of the artifacts (data, index, `.meta`, the state file listing them,
    archive and SavedModel files); `folders`: directories that are an artifact as a whole (a SavedModel, an
    unzipped `.keras`, a BackupAndRestore folder), nothing may be written inside them."""

    files: frozenset[Path]
    folders: frozenset[Path]

    def conflict(self, out: Path) -> str:
        """Why writing or replacing `out` would modify one of the artifacts ('' when it would not)."""
        target = _absolute(out)
        for file in sorted(self.files):
            if target == file or target in file.parents:
                return f"the output would replace {file}, part of the source"
            if _same_file(out, file):
                return f"the output is {file}, part of the source (through a link)"
        for folder in sorted(self.folders):
            if target == folder or folder in target.parents or target in folder.parents:
                return f"the output would write inside the source {folder}"
        return ""


def members(vmaps: Iterable[VariableMap], extra: Iterable[Path] = ()) -> Members:
    """The members of the artifacts the maps were read from, plus `extra` paths (what the user named)."""
    files: set[Path] = {_absolute(p) for p in extra}
    folders: set[Path] = set()
    for vmap in vmaps:
        files.update(_absolute(p) for p in vmap.files)
        if vmap.prefix is not None:
            files.add(_absolute(vmap.prefix))
            files.update(_absolute(suffixed(vmap.prefix, suffix)) for suffix in COMPANIONS)
        state_directory = reader_of(vmap).state_directory(vmap)
        if state_directory is not None:
            files.add(_absolute(state_directory / STATE_FILE))
        for folder in (vmap.root, vmap.path if vmap.path.is_dir() and vmap.prefix is None else None):
            if folder is not None:
                folders.add(_absolute(folder))
    return Members(frozenset(files), frozenset(folders))


def _absolute(path: Path) -> Path:
    return path if is_remote(path) else Path(os.path.abspath(path))


def _same_file(a: Path, b: Path) -> bool:
    if is_remote(a) or is_remote(b):
        return a == b
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
