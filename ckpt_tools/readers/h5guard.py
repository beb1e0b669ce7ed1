"""libhdf5 is not safe on hostile bytes: a forked child reads an HDF5 file's metadata first, and a crash or hang
there refuses the file before the reading process touches it."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import h5py

from ckpt_tools.errors import CorruptCheckpointError

# The child's budgets. Reading the metadata of a real checkpoint (thousands of datasets) takes well under a
# second; the CPU limit is what a hang is told apart by, the wall limit (a multiple of it) only covers a child
# that blocks without spending CPU. CKPT_HDF5_CHECK_SECONDS overrides the CPU limit (the fuzz tests lower it).
CPU_SECONDS = 20
WALL_FACTOR = 3
MEMORY_BYTES = 2 << 30  # address space the child may add to what it inherits
_MEMORY_EXIT = 3
_ERROR_EXIT = 4  # the child raised: the reading process will raise the same error, in its own words
# How libhdf5 (through h5py) and numpy word a failed allocation; "address past end of allocation" is not one.
_OUT_OF_MEMORY = re.compile(r"memory allocation failed|unable to allocate|can't allocate|out of memory", re.I)


@dataclass(frozen=True)
class Outcome:
    """How the metadata-reading child ended: None when it finished, else why the file is refused."""

    refusal: str | None


_SEEN: dict[tuple[Any, ...], Outcome] = {}


def cpu_seconds() -> int:
    """The child's CPU budget in seconds (CKPT_HDF5_CHECK_SECONDS, else CPU_SECONDS)."""
    try:
        return max(1, int(os.environ.get("CKPT_HDF5_CHECK_SECONDS", "") or CPU_SECONDS))
    except ValueError:
        return CPU_SECONDS


def check(target: Path | IO[bytes], label: str, touch: Callable[[h5py.File, str], None]) -> None:
    """Refuse `target` when libhdf5 crashes, hangs or exhausts memory while `touch` reads its metadata in a forked
    child. Each file (by path, device, inode, size, mtime and ctime; a window by its archive and range) is checked
    once per process. Without fork (not POSIX), or for a target that cannot be reopened in the child, nothing is
    checked."""
    key, fresh = _identity(target)
    if key is None or fresh is None or not hasattr(os, "fork"):
        return
    outcome = _SEEN.get(key)
    if outcome is None:
        outcome = _SEEN[key] = _run_child(fresh, label, touch)
    if outcome.refusal is not None:
        raise CorruptCheckpointError(f"{label}: unreadable HDF5 metadata ({outcome.refusal}; refused)")


def _identity(target: Path | IO[bytes]) -> tuple[tuple[Any, ...] | None, Callable[[], Path | IO[bytes]] | None]:
    """A cache key for the bytes `target` reads and a way to open them anew in the child (never the parent's file
    object: its descriptor's offset is shared across fork)."""
    if isinstance(target, (str, Path)):
        try:
            st = os.stat(target)
        except OSError:
            return None, None
        path = Path(target)
        return (
            "file",
            str(path.absolute()),
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ), lambda: path
    reopen = getattr(target, "reopened", None)
    identity = getattr(target, "identity", None)
    if callable(reopen) and callable(identity):
        try:
            return ("window", *identity()), reopen
        except (OSError, ValueError):  # a window over a remote file has no descriptor (io.UnsupportedOperation)
            return None, None
    return None, None


def _run_child(fresh: Callable[[], Path | IO[bytes]], label: str, touch: Callable[[h5py.File, str], None]) -> Outcome:
    cpu = cpu_seconds()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os._exit(_child(fresh, label, touch, cpu))
    status = _wait(pid, cpu * WALL_FACTOR)
    if status is None:
        return Outcome(f"libhdf5 did not finish reading it within {cpu * WALL_FACTOR} s")
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return Outcome(f"libhdf5 spent more than {cpu} s of CPU reading it")
        return Outcome(f"libhdf5 crashed reading it ({signal.Signals(number).name})")
    if os.WEXITSTATUS(status) == _MEMORY_EXIT:
        return Outcome(f"libhdf5 needed more than {MEMORY_BYTES >> 30} GiB of memory to read it")
    return Outcome(None)


def _child(fresh: Callable[[], Path | IO[bytes]], label: str, touch: Callable[[h5py.File, str], None], cpu: int) -> int:
    """Runs in the forked child: silence its output, cap CPU and memory, read the metadata; the exit code."""
    try:
        faulthandler.disable()  # a crash here is the expected outcome, not a report for the terminal
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        with contextlib.suppress(ValueError, OSError):  # a lower hard limit than ours is kept as it is
            resource.setrlimit(resource.RLIMIT_AS, (_address_space() + MEMORY_BYTES, resource.RLIM_INFINITY))
        target = fresh()
        with h5py.File(target, "r", locking=False) as f:
            touch(f, label)
    except MemoryError:
        return _MEMORY_EXIT
    except BaseException as exc:
        return _MEMORY_EXIT if _OUT_OF_MEMORY.search(str(exc)) else _ERROR_EXIT
    return 0


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _wait(pid: int, seconds: float) -> int | None:
    """The child's wait status, or None after killing it when it outlives `seconds`."""
    deadline = time.monotonic() + seconds
    pidfd = _pidfd(pid)
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    with contextlib.suppress(OSError):
        return int(opener(pid))
    return None
