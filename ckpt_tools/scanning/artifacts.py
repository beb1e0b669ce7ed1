"""One scanner per artifact kind: SavedModel, `.meta` graph, `.keras`, HDF5, Keras config, checkpoint state."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path

from ckpt_tools.errors import CkptToolsError, UnsafeInputError
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.readers import keras_archive, magic
from ckpt_tools.readers.paths import STATE_FILE, is_state_file, read_state
from ckpt_tools.scanning import containers
from ckpt_tools.scanning.findings import ArtifactScan, Collector
from ckpt_tools.scanning.graph_artifacts import (
    SAVED_MODEL_PB,
    SAVED_MODEL_PBTXT,
    has_saved_model,
    scan_meta_file,
    scan_saved_model,
)
from ckpt_tools.scanning.keras_config import parse_config, scan_config
from ckpt_tools.scanning.rules import Severity
from ckpt_tools.storage import is_remote, openable, suffixed

H5_CONFIG_ATTRS = ("model_config", "training_config")
H5_SUFFIXES = (".h5", ".hdf5", ".keras")

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"

Scanner = Callable[[Path, Collector], list[str]]


def kind_of(path: Path) -> str | None:
    """The artifact kind at `path` (never opening a FIFO or device), or None when ckpt scan does not know it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return _directory_kind(path)
    if not stat.S_ISREG(mode):
        return None
    if path.name == STATE_FILE:
        return "checkpoint-directory" if is_state_file(path) else None
    if path.suffix == ".meta":
        return "meta-graph"
    if path.name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
        return "saved-model"
    is_zip, is_h5 = _is_zip(path), magic.hdf5_magic_offset(path) is not None
    if is_zip and is_h5:
        return "polyglot"
    if is_zip:
        return "keras-archive" if path.suffix == ".keras" or _looks_keras(path) else None
    if is_h5:
        return "hdf5"
    if path.name == keras_archive.CONFIG:
        return "keras-config"
    return None


def _directory_kind(path: Path) -> str | None:
    """A SavedModel, an unzipped `.keras` (Keras loads any folder with a config.json), both at once, or a
    checkpoint folder (a `checkpoint` state file)."""
    saved_model = has_saved_model(path)
    keras = (path / keras_archive.CONFIG).is_file()
    if saved_model and keras:
        return "saved-model+keras-directory"
    if saved_model:
        return "saved-model"
    if keras:
        return "keras-directory"
    if (path / BACKUP_WEIGHTS).is_file() and (path / BACKUP_METADATA).is_file():
        return "backup-directory"
    return "checkpoint-directory" if is_state_file(path / STATE_FILE) else None


def _is_zip(path: Path) -> bool:
    """What Keras asks (`zipfile.is_zipfile`): an end-of-central-directory record, wherever the file starts."""
    try:
        if is_remote(path):
            with path.open("rb") as fh:
                return zipfile.is_zipfile(fh)
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _looks_keras(path: Path) -> bool:
    try:
        with zipfile.ZipFile(openable(path)) as zf:
            return keras_archive.CONFIG in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def scan_artifact(path: Path, kind: str, shown: str, limit: int) -> ArtifactScan:
    """Scan one artifact; an error that stops the scan is kept in the result (and makes the exit code 2)."""
    out = Collector(limit)
    try:
        scanned = SCANNERS[kind](path, out)
    except CkptToolsError as exc:
        return ArtifactScan(shown, kind, out.result(), error=str(exc))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        return ArtifactScan(shown, kind, out.result(), error=f"{path}: unreadable ({h5c.first_line(exc)})")
    except (RecursionError, MemoryError) as exc:
        return ArtifactScan(
            shown, kind, out.result(), error=f"{path}: too deeply nested or too large ({type(exc).__name__})"
        )
    return ArtifactScan(shown, kind, out.result(), tuple(scanned))


# ---------------------------------------------------------------------------------------- Keras and HDF5
def _keras_archive(path: Path, out: Collector) -> list[str]:
    with zipfile.ZipFile(openable(path)) as zf:
        containers.scan_members(path, zf, out)
        names = set(zf.namelist())
        scanned = ["members"]
        if keras_archive.CONFIG in names:
            info = zf.getinfo(keras_archive.CONFIG)
            if info.file_size > keras_archive.MAX_JSON_BYTES:
                raise UnsafeInputError(f"{path}: config.json declares {info.file_size} bytes (refused)")
            with zf.open(info) as fh:
                data = fh.read(keras_archive.MAX_JSON_BYTES + 1)
            scan_config(parse_config(data, f"{path}:config.json"), keras_archive.CONFIG, "config.json", out)
            scanned.append(keras_archive.CONFIG)
    if keras_archive.WEIGHTS in names:
        with keras_archive.open_member_h5(path, keras_archive.WEIGHTS) as f:
            containers.scan_hdf5(f, keras_archive.WEIGHTS, out)
        scanned.append(keras_archive.WEIGHTS)
    return scanned


def _keras_directory(path: Path, out: Collector) -> list[str]:
    config = path / keras_archive.CONFIG
    data = containers.read_limited(config, keras_archive.MAX_JSON_BYTES)
    scan_config(parse_config(data, str(config)), keras_archive.CONFIG, "config.json", out)
    scanned = [keras_archive.CONFIG]
    weights = path / keras_archive.WEIGHTS
    if weights.is_file():
        with h5c.open_h5(weights, str(weights)) as f:
            containers.scan_hdf5(f, keras_archive.WEIGHTS, out)
        scanned.append(keras_archive.WEIGHTS)
    containers.scan_symlinks(path, out)
    return scanned


def _backup_directory(path: Path, out: Collector) -> list[str]:
    """A Keras 3 BackupAndRestore folder: its weights file and the links inside it (its metadata is two ints)."""
    weights = path / BACKUP_WEIGHTS
    with h5c.open_h5(weights, str(weights)) as f:
        containers.scan_hdf5(f, BACKUP_WEIGHTS, out)
    containers.scan_symlinks(path, out)
    return [BACKUP_WEIGHTS]


def _saved_model(path: Path, out: Collector) -> list[str]:
    return scan_saved_model(path if path.is_dir() else path.parent, out)


def _saved_model_and_keras(path: Path, out: Collector) -> list[str]:
    """A folder TensorFlow loads as a SavedModel and Keras as an unzipped `.keras`: both views are scanned."""
    scanned = scan_saved_model(path, out)
    return scanned + [name for name in _keras_directory(path, out) if name not in scanned]


def _polyglot(path: Path, out: Collector) -> list[str]:
    out.add("file.polyglot", path.name, "whole file", "both an HDF5 file and a zip archive")
    return _hdf5(path, out) + _keras_archive(path, out)


def _keras_config(path: Path, out: Collector) -> list[str]:
    data = containers.read_limited(path, keras_archive.MAX_JSON_BYTES)
    scan_config(parse_config(data, str(path)), path.name, path.name, out)
    return [path.name]


def _hdf5(path: Path, out: Collector) -> list[str]:
    h5c.require_file(path)
    scanned = [path.name]
    with h5c.open_h5(path, str(path)) as f, h5c.translate_errors(str(path)):
        containers.scan_hdf5(f, path.name, out)
        for name in H5_CONFIG_ATTRS:
            text = h5c.attr_text(f, name)
            if text:
                scan_config(parse_config(text, f"{path}:{name}"), path.name, f"attribute {name}", out)
                scanned.append(name)
    return scanned


# ------------------------------------------------------------------------------------ checkpoint state
def _checkpoint_directory(path: Path, out: Collector) -> list[str]:
    directory = path if path.is_dir() else path.parent
    containers.scan_symlinks(directory, out)  # first: a state file that links outside is a finding, not an error
    if not containers.inside(directory, directory / STATE_FILE):
        return ["symlinks"]
    state = read_state(directory)
    scanned = [STATE_FILE] if state is not None else []
    if state is not None:
        entries = list(state.all) + ([state.latest] if state.latest and state.latest not in state.all else [])
        for entry in entries:
            _state_entry(directory, entry, out)
    for meta in sorted(directory.glob("*.meta")):
        if meta.is_file() and not meta.is_symlink():
            scanned += scan_meta_file(meta, out)
    return scanned


def _state_entry(directory: Path, entry: str, out: Collector) -> None:
    """A relative entry leaving the folder is high. An absolute one elsewhere is medium when the folder holds a
    checkpoint of that base name (TF1 Savers record the training machine's paths; the folder was moved), else
    high: TensorFlow opens absolute entries as written."""
    where = f"entry {entry!r}"
    if "\x00" in entry:
        out.add("path.escape", STATE_FILE, where, "a NUL byte in the entry")
        return
    target = Path(entry) if Path(entry).is_absolute() else directory / entry
    if _plainly_inside(directory, entry) or containers.inside(directory, target):
        return
    if not Path(entry).is_absolute():
        out.add("path.escape", STATE_FILE, where, "a relative path that leaves the directory")
    elif _has_local_copy(directory, Path(entry).name):
        detail = "an absolute path outside the directory, whose checkpoint is also here (a moved folder)"
        out.add("path.escape", STATE_FILE, where, detail, Severity.MEDIUM)
    else:
        out.add("path.escape", STATE_FILE, where, "an absolute path outside the directory, to nothing here")


def _plainly_inside(directory: Path, entry: str) -> bool:
    """A bare name (no separator, not `.`/`..`) that is no symlink: inside without resolving every component
    (a state file may list 250,000 entries)."""
    if not entry or "/" in entry or "\\" in entry or entry in (".", ".."):
        return False
    return is_remote(directory) or not os.path.islink(directory / entry)


def _has_local_copy(directory: Path, base: str) -> bool:
    if not base or base in (".", ".."):
        return False
    local = directory / base
    return any(suffixed(local, suffix).is_file() for suffix in ("", ".index", ".meta")) or any(
        directory.glob(f"{glob_escape(base)}.data-*")
    )


SCANNERS: dict[str, Scanner] = {
    "saved-model": _saved_model,
    "saved-model+keras-directory": _saved_model_and_keras,
    "polyglot": _polyglot,
    "backup-directory": _backup_directory,
    "meta-graph": scan_meta_file,
    "keras-archive": _keras_archive,
    "keras-directory": _keras_directory,
    "keras-config": _keras_config,
    "hdf5": _hdf5,
    "checkpoint-directory": _checkpoint_directory,
}
