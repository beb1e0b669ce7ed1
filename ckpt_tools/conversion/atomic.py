"""Atomic output: build beside OUT in a temporary path, fsync, then rename into place in one step."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from ckpt_tools.errors import OutputExistsError, UsageError
from ckpt_tools.readers.membership import Members

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def check_output(out: Path, *, force: bool, protect: Iterable[Path] = (), members: Members | None = None) -> None:
    """Refuse an existing OUT without `force`, and any OUT that would overwrite, delete or write inside a
    protected path or a member of the source artifacts."""
    out_abs = Path(os.path.abspath(out))
    reason = members.conflict(out) if members is not None else ""
    if reason:
        raise UsageError(f"out={os.fspath(out)!r}: {reason}; choose another output", argument="out", detail=reason)
    for path in protect:
        source = Path(os.path.abspath(path))
        if out_abs == source or out_abs in source.parents:
            detail = f"the output would replace the source {path}; choose another output"
            raise UsageError(f"out={os.fspath(out)!r}: {detail}", argument="out", detail=detail)
        with contextlib.suppress(OSError):
            if out.exists() and source.exists() and os.path.samefile(out, source):
                detail = f"the output is the source {path}; choose another output"
                raise UsageError(f"out={os.fspath(out)!r}: {detail}", argument="out", detail=detail)
    if (out.exists() or out.is_symlink()) and not force:
        raise OutputExistsError(f"{out}: already exists; pass force=True to replace it")


class AtomicOutput:
    """A temporary file or directory beside OUT that replaces OUT on `commit()`, or vanishes.

    Use as a context manager: write into `.path`, call `commit()`; leaving the block without committing (an
    error, a failed verification) removes the temporary path and leaves OUT as it was. A file is written inside
    a temporary directory (`.stage`), so that whatever the writer stages beside it (Keras' temporary
    `model.weights.h5`) goes away with it, also after a kill.
    """

    def __init__(
        self,
        out: Path,
        *,
        directory: bool,
        force: bool = False,
        protect: Iterable[Path] = (),
        members: Members | None = None,
    ) -> None:
        self.out = Path(out)
        self.directory = directory
        self.force = force
        self.protect = tuple(protect)
        self.members = members
        token = secrets.token_hex(4)
        # The temporary name carries our pid (to recognise leftovers of killed runs) and ends with OUT's own name,
        # so suffixes that libraries insist on (.keras) survive.
        self.stage = self.out.parent / f".ckpt-tmp-{os.getpid()}-{token}-{self.out.name}"
        self.path = self.stage if directory else self.stage / self.out.name
        self.committed = False

    def __enter__(self) -> AtomicOutput:
        check_output(self.out, force=self.force, protect=self.protect, members=self.members)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        self.stage.mkdir()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            remove(self.stage)

    def commit(self) -> None:
        """fsync everything written, then move it over OUT atomically (replacing OUT only with force)."""
        if not (self.path.is_dir() if self.directory else self.path.is_file()):
            raise UsageError(f"{self.out}: nothing was written")
        check_output(self.out, force=self.force, protect=self.protect, members=self.members)
        fsync_tree(self.path)
        if self.directory and (self.out.exists() or self.out.is_symlink()):
            if self.out.is_dir() and not self.out.is_symlink() and exchange(self.path, self.out):
                remove(self.path)  # now holds the old OUT
            else:
                old = self.out.parent / f".ckpt-old-{secrets.token_hex(4)}-{self.out.name}"
                os.replace(self.out, old)
                os.replace(self.path, self.out)
                remove(old)
        else:
            if self.out.is_dir() and not self.out.is_symlink():
                old = self.out.parent / f".ckpt-old-{secrets.token_hex(4)}-{self.out.name}"
                os.replace(self.out, old)
                os.replace(self.path, self.out)
                remove(old)
            else:
                os.replace(self.path, self.out)
            if not self.directory:
                remove(self.stage)  # what the writer staged beside the file
        fsync_dir(self.out.parent)
        self.committed = True


def remove_stale_temporaries(out: Path) -> None:
    """Delete temporaries for OUT left by convert runs that were killed (their process no longer exists)."""
    pattern = re.compile(rf"^\.ckpt-tmp-(\d+)-[0-9a-f]{{8}}-{re.escape(out.name)}$")
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(1))):
            remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False when the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def fsync_tree(path: Path) -> None:
    """fsync every file under `path` (or `path` itself), then the directories that hold them."""
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                fsync_file(Path(root) / name)
            fsync_dir(Path(root))
    else:
        fsync_file(path)
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Delete a file or tree if it exists (best effort; used only on paths this module created)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
