"""Where artifacts live: local paths, or URLs (s3://, gs://, https://...) read in place through fsspec."""

from __future__ import annotations

import atexit
import bisect
import fnmatch
import importlib
import io
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar, cast
from urllib.parse import unquote

from ckpt_tools.errors import CkptToolsError, MissingDependencyError, UnsafeInputError, UsageError

# `scheme://` at the start of an argument makes it a URL; anything else (including `C:\...`) is a local path.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#]*@")  # to the authority's last '@'
_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s?#'\"]*)[?#][^\s'\"]*")
_BACKENDS = {  # protocol -> (package providing it, the ckpt-tools extra that installs it)
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "http": ("aiohttp", "http"),
    "https": ("aiohttp", "http"),
}
BLOCK = 32 << 10  # reads smaller than this go through cached blocks; larger ones fetch exactly their range
READAHEAD = 8 << 20  # a read that continues an earlier one fetches this much at once (sequential passes)
STREAMS = 16  # reads remembered per file to tell a continuation (interleaved sequential passes)
MAX_REQUEST = 64 << 20  # one ranged GET never asks for more
# Fetched ranges are kept in unnamed temporary files (deleted with the process), up to this many bytes in all:
# nothing is fetched twice (validate's two passes, checksums then finiteness, transfer each byte once).
_SPOOL_MB = os.environ.get("CKPT_REMOTE_SPOOL_MB", "8192").strip()
SPOOL_BYTES = (int(_SPOOL_MB) if _SPOOL_MB.isdigit() else 8192) << 20  # a malformed setting keeps the default
TIMEOUT = 30.0  # seconds to connect, and to wait for each piece of an answer (CKPT_REMOTE_TIMEOUT overrides)
RETRIES = 4  # attempts per request for transient failures (throttling, 5xx, timeouts, dropped connections)
BACKOFF = 0.25  # seconds before the second attempt, doubled each time
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_CODES = ("SlowDown", "Throttl", "RequestTimeout", "InternalError", "ServiceUnavailable", "TooManyRequests")
T = TypeVar("T")


def is_url(text: object) -> bool:
    """Whether a command-line argument names a URL (`scheme://...`) rather than a local path."""
    return isinstance(text, str) and _URL.match(text) is not None


def is_remote(path: object) -> bool:
    """Whether `path` is a remote artifact path (read through fsspec)."""
    return isinstance(path, RemotePath)


def is_web(path: object) -> bool:
    """Whether `path` is behind http(s)://, whose clients percent-decode a path (`%2e%2e` climbs like `..`)."""
    return isinstance(path, RemotePath) and path._store.is_http


def scrub(text: str) -> str:
    """`text` with any URL's credentials (`user:pass@`) and query string (signatures, tokens) removed."""
    return _QUERY.sub(r"\1", _USERINFO.sub(r"\1", text))


def as_path(target: str | os.PathLike[str] | RemotePath) -> Path:
    """A local Path for a file-system path or `file://` URL, else a RemotePath (typed as Path: it implements
    the part of pathlib's interface the readers use)."""
    if isinstance(target, RemotePath):
        return cast(Path, target)
    if isinstance(target, Path):
        return target
    text = os.fspath(target)
    match = _URL.match(text)
    if match is None:
        return Path(text)
    protocol = match.group(1).lower()
    if protocol == "file":
        return Path(text[len("file://") :] or "/")
    rest = text[match.end() :]
    web = protocol in ("http", "https")
    components = (rest.partition("?")[0] if web else rest).split("/")[1:]
    if any((unquote(c) if web else c) in (".", "..") for c in components):
        raise UsageError(
            f"{scrub(text)}: a URL with '.' or '..' components is ambiguous (object stores keep them in the key, "
            "web clients fold them away); write the path without them"
        )
    return cast(Path, RemotePath(_store(protocol), rest))


def suffixed(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended to its last component (`PREFIX` -> `PREFIX.index`), local or remote."""
    if isinstance(path, RemotePath):
        return cast(Path, path._child_of_parent(path.name + suffix))
    return Path(f"{path}{suffix}")


def openable(path: Path) -> Path | IO[bytes]:
    """What zipfile and h5py should be given: a local path itself, or a remote path's seekable file object."""
    if isinstance(path, RemotePath):
        return path.open("rb")
    return path


def not_found(path: Path) -> str:
    """Why `path` does not exist, in one line (a remote one says whether its bucket or host is missing)."""
    if isinstance(path, RemotePath):
        return path.missing_reason()
    return f"{path}: no such file or directory"


def walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """`os.walk(root, followlinks=False)` for a local folder (directories as Paths); for one behind a URL, the
    same top-down walk over its listings (an object store has no links). Prune by editing the `dirs` list."""
    if not is_remote(root):
        for directory, dirs, files in os.walk(root, followlinks=False):
            yield Path(directory), dirs, files
        return
    pending = [root]
    while pending:
        here = pending.pop()
        dirs, files = [], []
        for entry in here.iterdir():
            (dirs if entry.is_dir() else files).append(entry.name)
        yield here, dirs, files
        pending.extend(here / d for d in reversed(dirs))


def local_copy(path: Path, limit: int | None = None) -> Path:
    """A private local copy of one remote file (streamed, in a folder only this user can read, removed at exit),
    for the one reader that needs a file name: TensorFlow's V1 checkpoint reader. A local path is itself."""
    if not isinstance(path, RemotePath):
        return path
    size = path.stat().st_size
    if limit is not None and size > limit:
        raise UsageError(f"{path}: {size} bytes, more than the {limit} a local copy may take")
    with _LOCK:
        if not _COPIES:
            _COPIES.append(Path(tempfile.mkdtemp(prefix="ckpt-remote-copy-")))
            atexit.register(shutil.rmtree, _COPIES[0], True)
    target = _COPIES[0] / f"copy-{len(list(_COPIES[0].iterdir()))}"
    with path.open("rb") as source, open(target, "xb") as out:
        while chunk := source.read(8 << 20):
            out.write(chunk)
    return target


_COPIES: list[Path] = []


def lexists(path: Path) -> bool:
    """`os.path.lexists` for a local path (a dangling link exists), `exists()` behind a URL."""
    return path.exists() if is_remote(path) else os.path.lexists(path)


def forget() -> None:
    """Drop every cached listing, size and block (a long-lived process re-reading artifacts that changed)."""
    with _LOCK:
        _INFO.clear()
        _SPOOL.clear()
        _LAST_ENDS.clear()


# ------------------------------------------------------------------------------------------- back ends
class StorageError(CkptToolsError):
    """A remote store refused or failed a request: access denied, throttled past the retries, unreachable."""


@dataclass(frozen=True)
class _Store:
    """One protocol's fsspec file system (configured by the backend's standard settings and fsspec config)."""

    protocol: str
    fs: Any

    @property
    def is_http(self) -> bool:
        return self.protocol in ("http", "https")


_STORES: dict[str, _Store] = {}
_LOCK = threading.RLock()


def _store(protocol: str) -> _Store:
    with _LOCK:
        if protocol not in _STORES:
            _STORES[protocol] = _Store(protocol, _filesystem(protocol))
        return _STORES[protocol]


def _hint(protocol: str) -> str:
    package, extra = _BACKENDS.get(protocol, ("", ""))
    if package:
        return f"{protocol}:// needs {package}: pip install 'ckpt-tools[{extra}]'"
    return f"{protocol}:// needs an fsspec backend for {protocol!r}: install the package that provides it"


def _filesystem(protocol: str) -> Any:
    """fsspec's file system for `protocol`, with fsspec's configuration (FSSPEC_<PROTOCOL>_<OPTION>, config
    files) applied; a one-line install hint when fsspec or the backend is missing."""
    try:
        import fsspec
        from fsspec.config import apply_config
    except ImportError as exc:
        raise MissingDependencyError(f"{_hint(protocol)} (fsspec is not installed)") from exc
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise MissingDependencyError(_hint(protocol)) from exc
    except ValueError as exc:
        raise UsageError(f"{protocol}://: unknown protocol (no fsspec backend is registered for it)") from exc
    options = _with_timeouts(protocol, apply_config(cls, {}))
    try:
        return cls(**options)
    except ImportError as exc:
        raise MissingDependencyError(_hint(protocol)) from exc
    except Exception as exc:
        raise StorageError(f"{protocol}://: cannot set up the storage backend ({_brief(exc)})") from exc


def timeout() -> float:
    """Seconds a request may wait to connect or for the next piece of its answer: CKPT_REMOTE_TIMEOUT, else
    TIMEOUT (a malformed or non-positive setting keeps the default)."""
    try:
        value = float(os.environ.get("CKPT_REMOTE_TIMEOUT", ""))
    except ValueError:
        return TIMEOUT
    return value if 0 < value <= 86400 else TIMEOUT


def _with_timeouts(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """The backend's options with connect and read timeouts added where the user's configuration sets none
    (aiohttp's default waits 5 minutes for an answer; botocore's, 60 s per attempt of its own retries)."""
    seconds = timeout()
    if protocol in ("http", "https"):
        aiohttp: Any = importlib.import_module("aiohttp")  # the [http] extra (not installed everywhere)
        client = dict(options.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds))
        return {**options, "client_kwargs": client}
    if protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", seconds)
        config.setdefault("read_timeout", seconds)
        return {**options, "config_kwargs": config}
    return options


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return scrub(first)[:300]


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (aiohttp, botocore, google), if any."""
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return value if isinstance(value, int) else None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transient(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, (ConnectionError, TimeoutError)):
            return True
        if _status(link) in _TRANSIENT_STATUS:
            return True
        if any(code in str(link) for code in _TRANSIENT_CODES):
            return True
        if type(link).__name__ in ("ServerDisconnectedError", "ClientConnectorError", "ClientPayloadError"):
            return True
    return False


def _denied(exc: BaseException) -> bool:
    return any(isinstance(link, PermissionError) or _status(link) in (401, 403) for link in _chain(exc))


def _missing(exc: BaseException) -> bool:
    """Not found: a 404/410, or a FileNotFoundError not caused by some other status (fsspec's HTTP backend
    reports a 403 or a 503 while asking for a size as FileNotFoundError)."""
    statuses = {s for s in map(_status, _chain(exc)) if s is not None}
    if statuses - {404, 410}:
        return False
    if any(_transient(link) for link in list(_chain(exc))[1:]):  # fsspec's HTTP `info` says "not found" for
        return False  # a refused connection or a timeout too
    return bool(statuses) or isinstance(exc, FileNotFoundError)


# ------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class _Info:
    kind: str  # "file" | "dir" | "missing"
    size: int = 0
    mtime: float = 0.0
    tag: str = ""  # the store's ETag for this version of the object ("" when it gives none)


_INFO: dict[str, _Info] = {}
_MISSING = _Info("missing")


def _mtime(raw: dict[str, Any]) -> float:
    for key in ("LastModified", "mtime", "updated", "last_modified"):
        value = raw.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


class RemotePath:
    """A file or folder (object-store prefix, web directory) behind a URL, used like a pathlib.Path.

    Names, parents, `/`, `with_name` work on the URL's path; `is_file`/`is_dir`/`stat`/`iterdir` ask the store
    (answers cached for the process); `open("rb")` gives a seekable file object with ranged reads and a bounded
    block cache. There are no symbolic links; `resolve()` is the path itself. Read-only.
    """

    __slots__ = ("_parts", "_query", "_store")

    def __init__(self, store: _Store, rest: str, query: str = "") -> None:
        if store.is_http and not query:
            rest, mark, query = rest.partition("?")
            query = mark + query
        self._store = store
        self._parts = tuple(p for p in rest.split("/") if p)
        self._query = query
        if not self._parts:
            raise UsageError(f"{store.protocol}://: a URL needs a bucket or host")

    # ---- pure path operations
    @property
    def url(self) -> str:
        """The URL without its query string (what messages show, after `scrub`)."""
        return f"{self._store.protocol}://{'/'.join(self._parts)}"

    @property
    def protocol(self) -> str:
        return self._store.protocol

    @property
    def anchor(self) -> str:
        """`s3://bucket`, `https://host`: the part no path of the artifact can leave."""
        return f"{self._store.protocol}://{self._parts[0]}"

    @property
    def key(self) -> str:
        """The path below the anchor (`dir/model.ckpt-1.index`)."""
        return "/".join(self._parts[1:])

    def __str__(self) -> str:
        return scrub(self.url)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and self.url == other.url

    def __hash__(self) -> int:
        return hash(("RemotePath", self.url))

    def __lt__(self, other: RemotePath) -> bool:
        return self.url < other.url

    @property
    def name(self) -> str:
        return self._parts[-1] if len(self._parts) > 1 else ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix if self.name else ""

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes if self.name else []

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem if self.name else ""

    @property
    def parent(self) -> RemotePath:
        return self if len(self._parts) == 1 else RemotePath(self._store, "/".join(self._parts[:-1]), "")

    @property
    def parents(self) -> list[RemotePath]:
        out, here = [], self
        while len(here._parts) > 1:
            here = here.parent
            out.append(here)
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.anchor, *self._parts[1:])

    def _child_of_parent(self, name: str) -> RemotePath:
        return RemotePath(self._store, "/".join((*self._parts[:-1], name)), "")

    def __truediv__(self, other: str | os.PathLike[str]) -> RemotePath:
        text = os.fspath(other)
        if is_url(text):
            return cast(RemotePath, as_path(text))
        return RemotePath(self._store, "/".join((*self._parts, text)), "")

    def joinpath(self, *others: str) -> RemotePath:
        here = self
        for other in others:
            here = here / other
        return here

    def with_name(self, name: str) -> RemotePath:
        if not self.name or not name or "/" in name:
            raise ValueError(f"{self} has an empty name or {name!r} is not a name")
        return self._child_of_parent(name)

    def with_suffix(self, suffix: str) -> RemotePath:
        return self.with_name(str(PurePosixPath(self.name).with_suffix(suffix)))

    def relative_to(self, other: RemotePath | str) -> PurePosixPath:
        base = other if isinstance(other, RemotePath) else as_path(other)
        if not self.is_relative_to(base):
            raise ValueError(f"{self} is not inside {base}")
        return PurePosixPath(*self._parts[len(cast(RemotePath, base)._parts) :])

    def is_relative_to(self, other: object) -> bool:
        return (
            isinstance(other, RemotePath)
            and other._store.protocol == self._store.protocol
            and self._parts[: len(other._parts)] == other._parts
        )

    def is_absolute(self) -> bool:
        return True

    def resolve(self, strict: bool = False) -> RemotePath:
        """The path with `.` and `..` folded (never above the bucket or host); there are no links to follow."""
        kept: list[str] = []
        for part in self._parts[1:]:
            spelled = unquote(part) if self._store.is_http else part  # what a web client sends (%2e%2e is ..)
            if spelled == "..":
                del kept[-1:]
            elif spelled != ".":
                kept.append(part)
        return RemotePath(self._store, "/".join((self._parts[0], *kept)), self._query)

    def absolute(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    def samefile(self, other: object) -> bool:
        return self == other

    def is_symlink(self) -> bool:
        return False

    # ---- questions to the store
    def _fs_path(self) -> str:
        if self._store.is_http:
            return self.url + self._query
        stripped: str = self._store.fs._strip_protocol(self.url)
        return stripped

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One backend call, retried with backoff when the failure is transient; FileNotFoundError passes
        through; every other failure becomes one StorageError line (credentials and queries scrubbed)."""
        for attempt in range(RETRIES):
            try:
                return fn(*args, **kwargs)
            except CkptToolsError:
                raise
            except Exception as exc:
                if _missing(exc):
                    raise FileNotFoundError(2, "no such file or directory", str(self)) from exc
                if _denied(exc):
                    raise StorageError(
                        f"{self}: access denied by {self.protocol}:// ({_brief(exc)}); check the credentials "
                        "the backend uses (docs/remote.md)"
                    ) from exc
                if not _transient(exc):
                    raise StorageError(f"{self}: {self.protocol}:// request failed ({_brief(exc)})") from exc
                if attempt == RETRIES - 1:
                    raise StorageError(
                        f"{self}: {self.protocol}:// kept failing after {RETRIES} attempts ({_brief(exc)})"
                    ) from exc
                time.sleep(BACKOFF * (2**attempt))
        raise AssertionError("unreachable")

    def _info(self) -> _Info:
        with _LOCK:
            known = _INFO.get(self.url)
        if known is not None:
            return known
        try:
            raw = self._call(self._store.fs.info, self._fs_path())
            info = self._parse_info(raw)
        except FileNotFoundError:
            info = _MISSING
        with _LOCK:
            _INFO[self.url] = info
        return info

    def _parse_info(self, raw: dict[str, Any]) -> _Info:
        kind = "dir" if raw.get("type") == "directory" else "file"
        if self._store.is_http:
            final = str(raw.get("url") or "")
            if raw.get("mimetype") == "text/html" or final.split("?", 1)[0].endswith("/"):
                kind = "dir"
        size = raw.get("size")
        tag = raw.get("ETag") or raw.get("etag") or ""
        return _Info(kind, int(size) if isinstance(size, int) else 0, _mtime(raw), tag if isinstance(tag, str) else "")

    def exists(self) -> bool:
        return self._info().kind != "missing"

    def is_file(self) -> bool:
        return self._info().kind == "file"

    def is_dir(self) -> bool:
        return self._info().kind == "dir"

    def stat(self) -> os.stat_result:
        info = self._info()
        if info.kind == "missing":
            raise FileNotFoundError(2, "no such file or directory", str(self))
        mode = (stat.S_IFDIR | 0o555) if info.kind == "dir" else (stat.S_IFREG | 0o444)
        return os.stat_result((mode, 0, 0, 1, 0, 0, info.size, int(info.mtime), int(info.mtime), int(info.mtime)))

    def lstat(self) -> os.stat_result:
        return self.stat()

    def iterdir(self) -> Iterator[RemotePath]:
        """The files and folders directly inside (one listing request; their sizes are remembered)."""
        if not self.is_dir():
            raise NotADirectoryError(20, "not a directory", str(self))
        target = self._fs_path() + ("/" if self._store.is_http else "")
        entries = self._call(self._store.fs.ls, target, detail=True)
        children: dict[str, RemotePath] = {}
        for raw in entries:
            name = str(raw.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            if not name or name in (".", ".."):
                continue
            if "?" in name or "#" in name:
                if self._store.is_http:
                    continue  # a web index page's sort and query links, not files
                # never skipped silently (a scan would pass what it never saw): refused until addressable
                raise UnsafeInputError(f"{self}: holds {name!r}; names with '?' or '#' are not supported")
            child = self / name
            if child.url in children or not child.is_relative_to(self):
                continue
            children[child.url] = child
            if not self._store.is_http:  # web listings carry no sizes or kinds: asked on demand
                with _LOCK:
                    _INFO[child.url] = child._parse_info(raw)
        return iter(sorted(children.values()))

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """Children whose name matches `pattern` (one component, fnmatch rules)."""
        if "/" in pattern:
            raise ValueError("remote glob matches one path component")
        return (child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, pattern))

    def missing_reason(self) -> str:
        """Why the path is absent: the bucket/host itself, or only this key."""
        if len(self._parts) > 1:
            top = RemotePath(self._store, self._parts[0], "")
            if not self._store.is_http and not top.exists():
                return f"{self}: no such bucket {self._parts[0]!r} (or it is not visible with these credentials)"
        return f"{self}: no such file or directory (nothing stored at this key or under it)"

    # ---- reading
    def open(self, mode: str = "r", buffering: int = -1, encoding: str | None = None, errors: str | None = None) -> Any:
        if set(mode) - set("rbt"):
            raise UsageError(f"{self}: remote artifacts are read-only (mode {mode!r})")
        info = self._info()
        if info.kind != "file":
            if info.kind == "dir":
                raise IsADirectoryError(21, "is a directory", str(self))
            raise FileNotFoundError(2, "no such file or directory", str(self))
        raw = RangedFile(self, info.size, info.tag)
        if "b" in mode:
            return raw
        return io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding or "utf-8", errors=errors)

    def read_bytes(self) -> bytes:
        with self.open("rb") as fh:
            data: bytes = fh.read()
            return data

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def fetch(self, start: int, end: int, spool: Key | None = None) -> bytes:
        """The bytes [start, end) in as few ranged requests as MAX_REQUEST allows, kept in the spool under
        `spool` when given. A web server that ignores Range (answers 200 with the whole file) has its answer
        streamed into the spool once, so later reads make no request; past the spool's room that is refused."""
        parts = []
        while start < end:
            stop = min(end, start + MAX_REQUEST)
            if self._store.is_http:
                data = self._call(self._web_range, start, stop, spool)
            elif self._store.protocol in ("s3", "s3a") and spool is not None and spool[2]:
                data = self._call(self._s3_range, start, stop, spool[2])
            else:
                data = self._call(self._store.fs.cat_file, self._fs_path(), start=start, end=stop)
                data = data[: stop - start]
            if not data:
                break
            if spool is not None:
                _SPOOL.keep(spool, start, data)
            parts.append(data)
            start += len(data)
        return b"".join(parts)

    def _s3_range(self, start: int, end: int, tag: str) -> bytes:
        from fsspec.asyn import sync

        data: bytes = sync(self._store.fs.loop, self._s3_get, start, end, tag)
        return data

    async def _s3_get(self, start: int, end: int, tag: str) -> bytes:
        """One ranged GetObject through s3fs' client, with IfMatch: the version first seen, or a refusal."""
        fs = self._store.fs
        bucket, key, _ = fs.split_path(self._fs_path())
        try:
            response = await fs._call_s3(
                "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=tag
            )
        except Exception as exc:
            if any(_status(link) == 412 or "PreconditionFailed" in str(link) for link in _chain(exc)):
                raise self._changed(tag) from exc
            raise
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    def _changed(self, tag: str) -> StorageError:
        return StorageError(
            f"{self}: changed while being read (its ETag is no longer {tag}); read it again once the writer is done"
        )

    def _web_range(self, start: int, end: int, spool: Key | None) -> bytes:
        from fsspec.asyn import sync

        data: bytes = sync(self._store.fs.loop, self._web_get, start, end, spool)
        return data

    async def _web_get(self, start: int, end: int, spool: Key | None) -> bytes:
        """One `Range: bytes=start-(end-1)` GET through fsspec's aiohttp session, read no further than asked."""
        fs = self._store.fs
        url = self._fs_path()
        options = dict(fs.kwargs)
        headers = {**(options.pop("headers", None) or {}), "Range": f"bytes={start}-{end - 1}"}
        tag = spool[2] if spool is not None else ""
        if tag and not tag.startswith("W/"):  # a strong ETag pins every range to the version first seen
            headers["If-Match"] = tag
        session = await fs.set_session()
        async with session.get(fs.encode_url(url), headers=headers, **options) as response:
            answered = response.headers.get("ETag")
            if response.status == 412 or (tag and answered and answered != tag):
                raise self._changed(tag)
            fs._raise_not_found_for_status(response, url)
            if response.status == 206:
                match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != start:
                    shown = f"bytes {match.group(1)}-" if match else "no Content-Range"
                    raise StorageError(f"{self}: the server answered {shown} to a request for bytes {start}-{end - 1}")
                data = await _read_upto(response, end - start)
            else:
                data = await self._whole_answer(response, start, end, spool)
            response.close()  # whatever the server sends past the range is never read
            return data

    async def _whole_answer(self, response: Any, start: int, end: int, spool: Key | None) -> bytes:
        """A 200 to a ranged GET: the whole file, streamed into the spool; the bytes [start, end) of it."""
        length = response.content_length
        if spool is None or not _SPOOL.has_room(length if length is not None else spool[1]):
            raise StorageError(
                f"{self}: the server ignores Range requests and the file does not fit the spool "
                f"(CKPT_REMOTE_SPOOL_MB={SPOOL_BYTES >> 20}); download it and read the local copy"
            )
        wanted, offset = bytearray(), 0
        while offset < max(end, spool[1]):
            chunk = await response.content.read(1 << 20)
            if not chunk:
                break
            if not _SPOOL.keep(spool, offset, chunk):
                raise StorageError(f"{self}: the server ignores Range requests and the spool is full")
            lo, hi = max(start, offset), min(end, offset + len(chunk))
            if lo < hi:
                wanted += chunk[lo - offset : hi - offset]
            offset += len(chunk)
        return bytes(wanted)


async def _read_upto(response: Any, size: int) -> bytes:
    """At most `size` bytes of an answer's body (a server may send more than the range it announces)."""
    data = bytearray()
    while len(data) < size:
        chunk = await response.content.read(min(size - len(data), 1 << 20))
        if not chunk:
            break
        data += chunk
    return bytes(data)


# ------------------------------------------------------------------------------------------- reading
Key = tuple[str, int, str]  # (URL, size, ETag): an object replaced by another version is another object


class _Spool:
    """The bytes fetched from each remote file, kept in one unnamed temporary file per remote file (sparse, at
    the same offsets; deleted when the process ends), with the intervals it covers. Bounded by SPOOL_BYTES in
    all: past it (or on a full disk) reads still work, fetching what they need without keeping it."""

    def __init__(self) -> None:
        self._files: dict[Key, tuple[IO[bytes], list[list[int]]]] = {}
        self._total = 0

    def segments(self, key: Key, start: int, end: int) -> list[tuple[int, int, bool]]:
        """[start, end) cut into (start, end, kept) pieces, in order."""
        with _LOCK:
            spans = self._files[key][1] if key in self._files else []
            out: list[tuple[int, int, bool]] = []
            pos = start
            for lo, hi in spans[max(0, bisect.bisect_right(spans, [start, end]) - 1) :]:
                if lo >= end:
                    break
                if hi <= pos:
                    continue
                if lo > pos:
                    out.append((pos, lo, False))
                out.append((max(pos, lo), min(hi, end), True))
                pos = min(hi, end)
            if pos < end:
                out.append((pos, end, False))
            return out

    def has_room(self, size: int) -> bool:
        return self._total + size <= SPOOL_BYTES

    def read(self, key: Key, start: int, end: int) -> bytes:
        with _LOCK:
            return os.pread(self._files[key][0].fileno(), end - start, start)

    def keep(self, key: Key, start: int, data: bytes) -> bool:
        """Keep the parts of `data` (at `start`) not kept yet; whether all of it is kept now."""
        with _LOCK:
            fresh = [(a, b) for a, b, kept in self.segments(key, start, start + len(data)) if not kept]
            needed = sum(b - a for a, b in fresh)
            if self._total + needed > SPOOL_BYTES:
                return False
            try:
                if key not in self._files:
                    self._files[key] = (tempfile.TemporaryFile(prefix="ckpt-remote-"), [])  # noqa: SIM115 (clear() closes)
                spool, spans = self._files[key]
                view = memoryview(data)
                for a, b in fresh:
                    os.pwrite(spool.fileno(), view[a - start : b - start], a)
            except OSError:  # a full or read-only temporary folder: go on without keeping
                return False
            self._total += needed
            for a, b in fresh:
                bisect.insort(spans, [a, b])
            merged: list[list[int]] = []
            for span in spans:
                if merged and span[0] <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], span[1])
                else:
                    merged.append(span)
            spans[:] = merged
            return True

    def clear(self) -> None:
        with _LOCK:
            for spool, _ in self._files.values():
                spool.close()
            self._files.clear()
            self._total = 0


_SPOOL = _Spool()
atexit.register(_SPOOL.clear)  # close the spool files before the interpreter warns about them
_LAST_ENDS: dict[Key, list[int]] = {}  # where the last STREAMS reads of each remote file ended


class RangedFile(io.RawIOBase):
    """A read-only, seekable view of a remote file. A read fetches only what no earlier read of the process
    fetched (kept in the spool): a small read rounds out to its BLOCK-aligned blocks (HDF5 and zip headers come
    as many small reads), a large one fetches exactly its range, and one continuing the previous read fetches
    READAHEAD at once (a sequential pass makes few large requests)."""

    def __init__(self, path: RemotePath, size: int, tag: str = "") -> None:
        super().__init__()
        self._path, self._size, self._pos = path, size, 0
        self._key: Key = (path.url, size, tag)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    @property
    def name(self) -> str:
        return str(self._path)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position", str(self._path))
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._pos))
        if count == 0:
            return 0
        data = self._range(self._pos, self._pos + count)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        if self._pos >= self._size:
            return b""
        data = self._range(self._pos, self._size)
        self._pos += len(data)
        return data

    def _wanted(self, start: int, end: int) -> tuple[int, int]:
        """What to fetch for the read [start, end): READAHEAD when it continues one of the last reads of this
        file (by any file object: readers reopen a shard per tensor, and interleave regions of it), BLOCK-aligned
        blocks for a small read, else exactly the range."""
        if self._note_end(start, end) and _SPOOL.has_room(READAHEAD):
            return start, min(self._size, max(end, start + READAHEAD))
        if end - start < BLOCK:
            return start // BLOCK * BLOCK, min(self._size, ((end - 1) // BLOCK + 1) * BLOCK)
        return start, end

    def _note_end(self, start: int, end: int) -> bool:
        """Remember where this read ends; whether it continues one of the last STREAMS reads of the file."""
        ends = _LAST_ENDS.setdefault(self._key, [])
        sequential = start in ends
        if sequential:
            ends.remove(start)
        ends.append(end)
        del ends[:-STREAMS]
        return sequential

    def _range(self, start: int, end: int) -> bytes:
        known = _SPOOL.segments(self._key, start, end)
        if len(known) == 1 and known[0][2]:  # fetched before (read ahead of a sequential pass): no request
            self._note_end(start, end)
            return _SPOOL.read(self._key, start, end)
        lo, hi = self._wanted(start, end)
        pieces = []
        for a, b, kept in _SPOOL.segments(self._key, lo, hi):
            if kept:
                pieces.append(_SPOOL.read(self._key, a, b))
            else:
                data = self._path.fetch(a, b, self._key)
                pieces.append(data)
                if len(data) < b - a:
                    break
        return b"".join(pieces)[start - lo : end - lo]

    def fileno(self) -> int:
        raise io.UnsupportedOperation(f"{self._path}: a remote file has no file descriptor")
