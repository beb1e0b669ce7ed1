"""Open data shards of one bundle, kept for the length of a read or a verification pass; chunked reads."""

from __future__ import annotations

import io
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

import numpy as np

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError

CHUNK = 8 << 20
# Called with (path, what) before a file of the bundle is first looked at; raises to refuse it. The readers pass
# one that keeps reads inside the artifact's folder (symlinks leaving it); the bundle parser knows no policy.
Guard = Callable[[Path, str], object]


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
                raise CorruptCheckpointError(f"{path}: cannot stat data shard: {exc.strerror or exc}") from exc
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
            raise CorruptCheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    def read_into(self, path: Path, offset: int, out: np.ndarray) -> None:
        """Fill the writable uint8 array `out` with the bytes at `offset` of `path` (no intermediate copies)."""
        try:
            handle = self._handle(path)
            handle.seek(offset)
            view = memoryview(out.data).cast("B")
            filled = 0
            while filled < len(view):
                got = cast(io.RawIOBase, handle).readinto(view[filled:])
                if not got:
                    raise CorruptCheckpointError(
                        f"{path}: file ended while reading {len(view)} bytes at offset {offset}"
                    )
                filled += got
        except FileNotFoundError as exc:
            raise MissingFileError(f"{path}: data shard not found") from exc
        except OSError as exc:
            raise CorruptCheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from exc

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
