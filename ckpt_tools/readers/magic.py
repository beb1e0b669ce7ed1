"""Magic-byte checks that need no third-party import: the registry's first, cheapest filter."""

from __future__ import annotations

from pathlib import Path

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def hdf5_magic_offset(path: Path) -> int | None:
    """Where the HDF5 superblock starts (0, 512, 1024, 2048, ... after a user block), or None."""
    if not path.is_file():  # never open FIFOs or devices: reading them can block forever
        return None
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            offset = 0
            while offset + len(HDF5_MAGIC) <= size:
                fh.seek(offset)
                if fh.read(len(HDF5_MAGIC)) == HDF5_MAGIC:
                    return offset
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return None
    return None


def has_zip_magic(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            return fh.read(4) == ZIP_MAGIC
    except OSError:
        return False


def saved_model_root(path: Path) -> Path | None:
    """The SavedModel directory `path` names (the directory itself, or its `saved_model.pb[txt]`), or None."""
    if path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()):
        return path
    if path.name in ("saved_model.pb", "saved_model.pbtxt") and path.is_file():
        return path.parent
    return None


def saved_model_prefilter(path: Path) -> str | None:
    """None when `path` is a SavedModel; else why not (so sniffing anything else never imports its reader)."""
    return None if saved_model_root(path) is not None else "no saved_model.pb or saved_model.pbtxt"


def hdf5_prefilter(path: Path) -> str | None:
    """None when `path` may be an HDF5 file; else why not (so h5py is never imported for it)."""
    if path.is_dir():
        return "a directory, not an HDF5 file"
    if not path.is_file():
        return "not a regular file"
    return None if hdf5_magic_offset(path) is not None else "not an HDF5 file (magic bytes)"


def keras_archive_prefilter(path: Path) -> str | None:
    """None when `path` may be a `.keras` zip or an unzipped Keras directory."""
    if path.is_dir():
        return None if (path / "model.weights.h5").is_file() else "directory without model.weights.h5"
    if not path.is_file():
        return "not a regular file"
    return None if has_zip_magic(path) else "not a zip file (magic bytes)"
