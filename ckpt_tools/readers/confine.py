"""Keeping reads inside the artifact: a file of it that resolves (through symlinks) elsewhere is refused."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ckpt_tools.errors import UnsafeInputError
from ckpt_tools.storage import RemotePath

# Off by default; `--follow-symlinks` (every command) and `following_symlinks()` turn it on for one call.
FOLLOW_SYMLINKS: contextvars.ContextVar[bool] = contextvars.ContextVar("ckpt_follow_symlinks", default=False)


@contextmanager
def following_symlinks(enabled: bool = True) -> Iterator[None]:
    """Within the block, files of an artifact may resolve outside it (the user vouches for the links)."""
    token = FOLLOW_SYMLINKS.set(enabled)
    try:
        yield
    finally:
        FOLLOW_SYMLINKS.reset(token)


def is_inside(root: Path | str, path: Path | str) -> bool:
    """Whether `path`, symlinks resolved, lies in `root` (also resolved). Nothing is opened: the links are read.
    A remote path (no symlinks) lies in a remote root when its URL continues the root's, component by component."""
    if isinstance(root, RemotePath) or isinstance(path, RemotePath):
        return isinstance(path, RemotePath) and path.is_relative_to(root) and ".." not in path.parts
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def confine(root: Path | str, path: Path | str, what: str = "file") -> Path:
    """`path` itself, after refusing it when it resolves outside `root` (unless following symlinks is on).

    `root` is the folder the artifact lives in (a bundle's directory, a SavedModel or BackupAndRestore folder);
    an artifact the user names directly may itself be a link: only what it contains is confined.
    """
    if not FOLLOW_SYMLINKS.get() and not is_inside(root, path):
        target = str(path) if isinstance(path, RemotePath) else os.path.realpath(path)
        raise UnsafeInputError(
            f"{path}: this {what} of the artifact resolves to {target!r}, outside {os.fspath(root)!r} "
            "(a symbolic link; refused, use --follow-symlinks if you trust it)"
        )
    return path if isinstance(path, RemotePath) else Path(path)
