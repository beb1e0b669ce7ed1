"""Scanning containers: `.keras` zip members, HDF5 links and storage, and paths that lead out of the artifact."""

from __future__ import annotations

import os
import zipfile
from collections import deque
from pathlib import Path, PurePosixPath
from typing import Any

import h5py

from ckpt_tools.errors import UnsafeInputError
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.scanning.findings import Collector
from ckpt_tools.scanning.rules import ARCHIVE_MEMBERS, CODE_MAGICS, CODE_SUFFIXES, PICKLE_SUFFIXES
from ckpt_tools.storage import is_remote

MAX_MEMBERS = 100_000
MAX_WALK = 1_000_000  # directory entries looked at for symlinks


# -------------------------------------------------------------------------------------------------- zip
def scan_members(path: Path, zf: zipfile.ZipFile, out: Collector) -> None:
    """Member names that escape, hide or carry code/pickles; members the `.keras` format does not have."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsafeInputError(f"{path}: more than {MAX_MEMBERS} archive members")
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        where = f"member {name!r}"
        trick = _name_trick(name, seen)
        seen.add(name)
        if trick:
            out.add("archive.path-trick", path.name, where, trick)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            out.add("archive.path-trick", path.name, where, "a symbolic link member")
        lowered = name.lower()
        if lowered.endswith(PICKLE_SUFFIXES):
            out.add("archive.pickle", path.name, where, f"{PurePosixPath(name).suffix} member")
        elif lowered.endswith(CODE_SUFFIXES) or _starts_like_code(zf, info):
            out.add("archive.executable", path.name, where, "code or an executable")
        elif not (name in ARCHIVE_MEMBERS or name.startswith("assets/") or name.endswith("/")):
            out.add("archive.unexpected-member", path.name, where, f"{info.file_size} bytes")


def _name_trick(name: str, seen: set[str]) -> str:
    pure = PurePosixPath(name.replace("\\", "/"))
    if "\x00" in name:
        return "a NUL byte in the name"
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute name"
    if ".." in pure.parts:
        return "a parent-relative name (..)"
    if "\\" in name:
        return "a backslash in the name (a separator on Windows)"
    if name in seen:
        return "a second member of the same name (readers disagree on which one counts)"
    return ""


def _starts_like_code(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    if info.is_dir() or info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return False
    try:
        with zf.open(info) as fh:
            head = fh.read(4)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return False
    return head.startswith(CODE_MAGICS)


# ------------------------------------------------------------------------------------------------- HDF5
def scan_hdf5(f: h5py.File, file: str, out: Collector) -> None:
    """External/user-defined links, external and virtual storage and a user block, walking hard links only."""
    userblock = int(f.id.get_create_plist().get_userblock())
    if userblock:
        out.add("hdf5.user-block", file, "user block", f"{userblock} bytes before the HDF5 superblock")
    visited: set[int] = set()
    queue: deque[tuple[bytes, h5py.Group, int]] = deque([(b"", f, 0)])
    count = 0
    while queue:
        prefix, group, depth = queue.popleft()
        for name in h5c.names(group):
            count += 1
            if count > h5c.MAX_OBJECTS:
                raise UnsafeInputError(f"{file}: more than {h5c.MAX_OBJECTS} HDF5 links")
            child = _link(group, name, prefix + b"/" + name, file, out)
            if child is None:
                continue
            address = h5c.object_address(child)
            if address in visited:
                continue
            visited.add(address)
            if isinstance(child, h5py.Dataset):
                _check_storage(child, h5c.decode(prefix + b"/" + name), file, out)
            elif isinstance(child, h5py.Group):
                if depth + 1 >= h5c.MAX_DEPTH:
                    raise UnsafeInputError(f"{file}: HDF5 groups nested deeper than {h5c.MAX_DEPTH} levels")
                queue.append((prefix + b"/" + name, child, depth + 1))


def _link(group: h5py.Group, name: bytes, full: bytes, file: str, out: Collector) -> Any:
    kind = int(group.id.links.get_info(name).type)
    where = h5c.decode(full)
    if kind == h5py.h5l.TYPE_SOFT:
        return None
    if kind == h5py.h5l.TYPE_EXTERNAL:
        target = _external_target(group, name)
        out.add("hdf5.external-link", file, where, f"links to {target}")
        return None
    if kind != h5py.h5l.TYPE_HARD:
        out.add("hdf5.external-link", file, where, f"a user-defined link (type {kind})")
        return None
    oid = h5py.h5o.open(group.id, name)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    return None


def _external_target(group: h5py.Group, name: bytes) -> str:
    try:
        value = group.id.links.get_val(name)
    except (OSError, RuntimeError, ValueError):
        return "another file"
    if isinstance(value, tuple) and len(value) == 2:
        return f"{h5c.decode(value[0])!r}:{h5c.decode(value[1])}"
    return "another file"


def _check_storage(dataset: h5py.Dataset, where: str, file: str, out: Collector) -> None:
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        count = plist.get_virtual_count()
        sources = sorted({h5c.decode(plist.get_virtual_filename(i)) for i in range(min(count, 16))})
        out.add("hdf5.virtual-dataset", file, where, f"maps {count} source(s) in {', '.join(map(repr, sources))}")
    external = plist.get_external_count()
    if external:
        names = sorted({h5c.decode(plist.get_external(i)[0]) for i in range(min(external, 16))})
        out.add("hdf5.external-storage", file, where, f"data in {', '.join(map(repr, names))}")


# ------------------------------------------------------------------------------------------------ paths
def read_limited(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refused when it holds more than `limit` (checked on what is read, not on stat)."""
    h5c.require_file(path)
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeInputError(f"{path}: larger than {limit} bytes (refused)")
    return data


def inside(root: Path, target: Path) -> bool:
    """Whether `target` (symlinks resolved) lies inside `root`."""
    if is_remote(root):
        return target.resolve().is_relative_to(root.resolve())  # no links behind a URL: only `..` to fold
    try:
        return Path(os.path.realpath(target)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False


def scan_symlinks(root: Path, out: Collector) -> None:
    """Symbolic links under an artifact directory that point outside it (never followed while walking)."""
    seen = 0
    if is_remote(root):
        return  # an object store has no symbolic links
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            seen += 1
            if seen > MAX_WALK:
                raise UnsafeInputError(f"{root}: more than {MAX_WALK} entries")
            entry = Path(directory) / name
            if entry.is_symlink() and not inside(root, entry):
                relative = entry.relative_to(root).as_posix()
                out.add("path.escape", relative, f"symlink {relative}", f"points to {os.readlink(entry)!r}")
