"""Open data shards of one bundle, kept for the length of a read or a verification pass; chunked reads into
page-aligned, reused buffers; the observer a verification pass hands its decoded blocks to."""

from __future__ import annotations

import io
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError
from ckpt_tools.messages import os_reason

if TYPE_CHECKING:
    import numpy as np

CHUNK = 8 << 20
PAGE = mmap.PAGESIZE
MAX_POOLED = 4


def aligned_empty(nbytes: int) -> np.ndarray:
    """A writable uint8 array of `nbytes` starting on a page boundary. A fresh large `np.empty` starts 16 bytes
    into a page, and `readinto` into it runs about 3x slower than into an aligned one."""
    import numpy as np

    raw = np.empty(nbytes + PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start : start + nbytes]


class BufferPool:
    """Page-aligned read buffers reused across reads: a fresh multi-MiB array costs a page fault per 4 KiB on
    every tensor. `take(n)` hands out a buffer of at least n bytes, `give(b)` returns it (at most MAX_POOLED kept)."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []

    def take(self, nbytes: int) -> np.ndarray:
        for i, buffer in enumerate(self._free):
            if buffer.size >= nbytes:
                return self._free.pop(i)
        return aligned_empty(nbytes)

    def give(self, buffer: np.ndarray) -> None:
        """Keep `buffer` for reuse; when the pool is full it replaces the smallest kept one, if smaller."""
        if len(self._free) < MAX_POOLED:
            self._free.append(buffer)
            return
        smallest = min(range(len(self._free)), key=lambda i: self._free[i].size)
        if self._free[smallest].size < buffer.size:
            self._free[smallest] = buffer

    @contextmanager
    def borrowed(self, nbytes: int) -> Iterator[np.ndarray]:
        """A buffer of at least `nbytes` for the length of a `with` block."""
        buffer = self.take(nbytes)
        try:
            yield buffer
        finally:
            self.give(buffer)


POOL = BufferPool()


def read_blocks(fill: Callable[[int, np.ndarray], None], size: int, block: int = CHUNK) -> Iterator[np.ndarray]:
    """`size` bytes as consecutive views of one pooled, page-aligned buffer of at most `block` bytes, each filled
    by `fill(start, view)` with bytes start.. of the source; a view is valid until the next one is asked for.
    (Reading ahead in a helper thread was tried: on a loaded 2-core machine it made validate slower.)"""
    with POOL.borrowed(min(block, max(size, 1))) as buffer:
        for start in range(0, size, block):
            view = buffer[: min(block, size - start)]
            fill(start, view)
            yield view


class BlockObserver(Protocol):
    """Sees the values a verification pass reads, block by block, so that a caller (validate's finite check)
    needs no second pass: `wants(key)` asks whether blocks of a tensor are of interest, `block(key, values)`
    hands over one decoded 1-D block (valid only during the call), and `done(key, problem)` ends a tensor:
    `problem` is None when its bytes verified, else why they did not (the blocks seen are then not to be
    trusted). Blocks of one tensor may come in any order (slices of a partitioned tensor, chunks of an HDF5
    dataset in storage order)."""

    def wants(self, key: str) -> bool: ...

    def block(self, key: str, values: np.ndarray) -> None: ...

    def done(self, key: str, problem: str | None) -> None: ...


_OBSERVER: ContextVar[BlockObserver | None] = ContextVar("ckpt_block_observer", default=None)


@contextmanager
def observing(observer: BlockObserver) -> Iterator[None]:
    """Verification passes run inside the `with` block hand their decoded blocks to `observer`."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def current_observer() -> BlockObserver | None:
    """The observer set by the innermost `observing` block, if any."""
    return _OBSERVER.get()


# Called with (path, what) before a file of the bundle is first looked at; raises to refuse it. The readers pass
# one that keeps reads inside the artifact's folder (symlinks leaving it); the bundle parser knows no policy.
Guard = Callable[[Path, str], object]


def read_at(handle: BinaryIO, offset: int, view: memoryview) -> int:
    """One read into `view` at `offset` of an unbuffered file, without moving a shared file position where the
    platform can (os.preadv); the number of bytes read (0 at the end of the file)."""
    if hasattr(os, "preadv"):
        try:
            descriptor = handle.fileno()
        except (OSError, AttributeError):  # io.UnsupportedOperation: a file object behind a URL (storage.py)
            descriptor = None
        if descriptor is not None:
            return int(os.preadv(descriptor, [view], offset))
    with _SEEKING:  # seek + read is one step for threads sharing the handle
        handle.seek(offset)
        return int(cast(io.RawIOBase, handle).readinto(view) or 0)


_SEEKING = threading.Lock()


class ShardFiles:
    """Caches each shard's size and open handle; use as a context manager so handles are closed.

    A `guard` sees every shard before it is first stat()ed or opened, and may refuse it.
    """

    def __init__(self, guard: Guard | None = None) -> None:
        self.guard = guard
        self._sizes: dict[Path, int] = {}
        self._handles: dict[Path, BinaryIO] = {}

    def size(self, path: Path, needed_by: str) -> int:
        """The file's size; MissingFileError naming it when it does not exist."""
        if path not in self._sizes:
            if self.guard is not None:
                self.guard(path, "data shard")
            try:
                info = path.stat()
            except FileNotFoundError as exc:
                raise MissingFileError(f"{path}: data shard not found (needed by {needed_by!r})") from exc
            except OSError as exc:
                raise CorruptCheckpointError(f"{path}: cannot stat data shard: {os_reason(exc)}") from exc
            if not stat.S_ISREG(info.st_mode):  # a directory, FIFO or device: never open it
                raise CorruptCheckpointError(f"{path}: data shard is not a regular file")
            self._sizes[path] = info.st_size
        return self._sizes[path]

    def chunks(self, path: Path, offset: int, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes [offset, offset + size) of `path`, in chunks of at most `chunk` bytes."""
        try:
            handle = self._handle(path)
            handle.seek(offset)
            remaining = size
            while remaining:
                want = min(remaining, chunk)
                data = handle.read(want)
                while data and len(data) < want:  # unbuffered reads may come back short; fill the chunk
                    more = handle.read(want - len(data))
                    if not more:
                        break
                    data += more
                if len(data) < want:
                    raise CorruptCheckpointError(f"{path}: file ended while reading {size} bytes at offset {offset}")
                remaining -= len(data)
                yield data
        except FileNotFoundError as exc:
            raise MissingFileError(f"{path}: data shard not found") from exc
        except OSError as exc:
            raise CorruptCheckpointError(f"{path}: cannot read: {os_reason(exc)}") from exc

    def read_into(self, path: Path, offset: int, out: np.ndarray) -> None:
        """Fill the writable uint8 array `out` with the bytes at `offset` of `path` (no intermediate copies;
        positional reads: streams of several tensors of one shard may interleave)."""
        try:
            handle = self._handle(path)
            view = memoryview(out.data).cast("B")
            filled = 0
            while filled < len(view):
                got = read_at(handle, offset + filled, view[filled:])
                if not got:
                    raise CorruptCheckpointError(
                        f"{path}: file ended while reading {len(view)} bytes at offset {offset}"
                    )
                filled += got
        except FileNotFoundError as exc:
            raise MissingFileError(f"{path}: data shard not found") from exc
        except OSError as exc:
            raise CorruptCheckpointError(f"{path}: cannot read: {os_reason(exc)}") from exc

    def blocks(self, path: Path, offset: int, size: int, block: int = CHUNK) -> Iterator[np.ndarray]:
        """The bytes [offset, offset + size) of `path` as uint8 views of one pooled buffer, `block` bytes each
        (see read_blocks); each view is valid until the next one is asked for."""
        return read_blocks(lambda start, view: self.read_into(path, offset + start, view), size, block)

    def _handle(self, path: Path) -> BinaryIO:
        """The open handle of `path` (opened on first use, after the regular-file and confinement checks)."""
        handle = self._handles.get(path)
        if handle is None:
            self.size(path, path.name)
            handle = self._handles[path] = path.open("rb", buffering=0)  # closed by close()
        return handle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> ShardFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
