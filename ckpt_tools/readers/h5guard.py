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
import threading
import time
from collections.abc import Callable, Iterator
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
_CHANGED_EXIT = 5  # the child opened other bytes than the ones identified (the file was replaced meanwhile)
# How libhdf5 (through h5py) and numpy word a failed allocation; "address past end of allocation" is not one.
_OUT_OF_MEMORY = re.compile(
    r"memory allocation failed|unable to allocate|can't allocate|cannot allocate memory|out of memory", re.I
)
_UNOPENED_EXIT = 6  # the child could not open what it was to check
_PR_SET_PDEATHSIG = 1
_UNKNOWN = -1  # a wait status standing for "reaped by someone else"


@dataclass(frozen=True)
class Stamp:
    """What identifies the bytes of an open file: device, inode, size, modification and change times."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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


def out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is a failed allocation (MemoryError, or libhdf5/numpy saying so)."""
    return isinstance(exc, MemoryError) or bool(_OUT_OF_MEMORY.search(str(exc)))


def check(
    target: Path | IO[bytes], label: str, touch: Callable[[h5py.File, str], None], identity: tuple[Any, ...] = ()
) -> Stamp | None:
    """Refuse `target` when libhdf5 crashes, hangs or exhausts memory while `touch` reads its metadata in a forked
    child; returns the Stamp of what was checked (see `verify`). Each file (by path and Stamp; a window by its
    archive's Stamp and range; or by `identity` when given, for a private copy) is checked once per process.
    Without fork, or for a target that cannot be reopened in the child (a remote file), nothing is checked."""
    found = _identify(target)
    if found is None or not hasattr(os, "fork"):
        return None
    key, stamp, fresh = found
    key = ("copy", *identity) if identity else key
    outcome = _SEEN.get(key)
    if outcome is None:
        outcome = _SEEN[key] = _run_child(fresh, stamp, label, touch)
    if outcome.refusal is not None:
        raise CorruptCheckpointError(f"{label}: unreadable HDF5 metadata ({outcome.refusal}; refused)")
    return stamp


def verify(f: h5py.File, stamp: Stamp | None, label: str) -> None:
    """Refuse a file h5py opened by path when it is not the one the child checked (replaced in between)."""
    if stamp is not None and _descriptor_stamp(f) not in (stamp, None):
        raise CorruptCheckpointError(f"{label}: the file changed while it was being checked (refused)")


def stamp_of_open(f: h5py.File, target: Path | IO[bytes]) -> Stamp | None:
    """The Stamp of what an h5py File (or the window it reads through) has open."""
    stamp = getattr(target, "stamp", None)
    if callable(stamp):
        value: Stamp | None = stamp()
        return value
    return _descriptor_stamp(f)


def _descriptor_stamp(f: h5py.File) -> Stamp | None:
    """The Stamp of the descriptor libhdf5's file driver holds (None for a driver without one)."""
    handle = f.id.get_vfd_handle()
    return Stamp.of(os.fstat(handle)) if isinstance(handle, int) else None


def _identify(target: Path | IO[bytes]) -> tuple[tuple[Any, ...], Stamp, Callable[[], Path | IO[bytes]]] | None:
    """A cache key, the Stamp, and a way to open the same bytes anew in the child (never the parent's file object:
    its descriptor's offset is shared across fork)."""
    if isinstance(target, (str, Path)):
        path = Path(target)
        try:
            stamp = Stamp.of(os.stat(path))
        except OSError:
            return None
        return ("file", str(path.absolute()), stamp), stamp, lambda: path
    reopen, window, stamp_of = (getattr(target, n, None) for n in ("reopened", "window", "stamp"))
    if not (callable(reopen) and callable(window) and callable(stamp_of)):
        return None
    try:
        stamp = stamp_of()
    except (OSError, ValueError):  # a window over a remote file has no descriptor (io.UnsupportedOperation)
        return None
    return ("window", *window(), stamp), stamp, reopen


def _run_child(
    fresh: Callable[[], Path | IO[bytes]], stamp: Stamp, label: str, touch: Callable[[h5py.File, str], None]
) -> Outcome:
    cpu = cpu_seconds()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    with _children_reapable():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os._exit(_child(fresh, stamp, label, touch, cpu, parent))
        status = _wait(pid, cpu * WALL_FACTOR)
    return _outcome(status, cpu)


def _outcome(status: int | None, cpu: int) -> Outcome:
    if status == _UNKNOWN:
        return Outcome("the child checking it was reaped elsewhere, so its outcome is unknown")
    if status is None:
        return Outcome(f"libhdf5 did not finish reading it within {cpu * WALL_FACTOR} s")
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == signal.SIGXCPU:
            return Outcome(f"libhdf5 spent more than {cpu} s of CPU reading it")
        if number == signal.SIGKILL:
            return Outcome("libhdf5 was killed reading it (SIGKILL: a hard CPU limit or the out-of-memory killer)")
        return Outcome(f"libhdf5 crashed reading it ({name})")
    code = os.WEXITSTATUS(status)
    if code == _MEMORY_EXIT:
        return Outcome(f"libhdf5 needed more than {MEMORY_BYTES >> 30} GiB of memory to read it")
    if code == _CHANGED_EXIT:
        return Outcome("the file changed while it was being checked")
    if code == _UNOPENED_EXIT:
        return Outcome("the child checking it could not open it")
    return Outcome(None)


def _child(
    fresh: Callable[[], Path | IO[bytes]],
    stamp: Stamp,
    label: str,
    touch: Callable[[h5py.File, str], None],
    cpu: int,
    parent: int,
) -> int:
    """Runs in the forked child: silence its output, cap CPU and memory, read the metadata; the exit code."""
    try:
        faulthandler.disable()  # a crash here is the expected outcome, not a report for the terminal
        signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # an inherited "ignore" would run on to the hard limit
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the kernel was told to kill this child with it
            return _ERROR_EXIT
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        _lower_limit(resource.RLIMIT_CPU, cpu)
        _lower_limit(resource.RLIMIT_AS, _address_space() + MEMORY_BYTES)
        try:
            target = fresh()
        except OSError:
            return _UNOPENED_EXIT
        with h5py.File(target, "r", locking=False) as f:
            if stamp_of_open(f, target) not in (stamp, None):
                return _CHANGED_EXIT
            touch(f, label)
    except BaseException as exc:
        return _MEMORY_EXIT if out_of_memory(exc) else _ERROR_EXIT
    return 0


def _lower_limit(which: int, wanted: int) -> None:
    """Lower a soft resource limit to `wanted` (never raising it, never touching the hard limit)."""
    soft, hard = resource.getrlimit(which)
    for limit in (soft, hard):
        if limit != resource.RLIM_INFINITY:
            wanted = min(wanted, limit)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(which, (wanted, hard))


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the parent dies (a parent killed while it waits)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _address_space() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _children_reapable() -> Iterator[None]:
    """An inherited SIGCHLD "ignore" makes the kernel reap children itself (waitpid then fails): the default
    disposition is restored while the child runs, when this is the main thread (only it may set handlers)."""
    ignored = (
        threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    )
    if ignored:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:  # reaped first: with SIGCHLD ignored waitpid no longer returns existing zombies
            _reap_exited()
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def _reap_exited() -> None:
    """Reap children that exited while SIGCHLD was at its default: with it ignored the kernel would have, and
    their owner, relying on that, never waits for them."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _wait(pid: int, seconds: float) -> int | None:
    """The child's wait status, or None after killing it when it outlives `seconds` (killed and reaped too when
    this process is interrupted while it waits)."""
    deadline = time.monotonic() + seconds
    pidfd = _pidfd(pid)
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = 0
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored in a thread, a waitpid(-1) handler)
        pid = 0
        return _UNKNOWN
    finally:
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    with contextlib.suppress(OSError):
        return int(opener(pid))
    return None
