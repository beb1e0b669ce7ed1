"""Keras 3 `.keras` archive reader: the zip's model.weights.h5 read in place, config.json as plain JSON."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import h5py

from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.model import VariableMap
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.readers import h5guard, magic
from ckpt_tools.readers.confine import confine
from ckpt_tools.readers.keras_h5 import read_keras3
from ckpt_tools.readers.registry import Reader
from ckpt_tools.storage import as_path, is_remote, openable

FORMAT = "keras-archive"
VERIFY_READ = 1 << 20
WEIGHTS = "model.weights.h5"
CONFIG = "config.json"
METADATA = "metadata.json"
MAX_JSON_BYTES = 64 << 20  # config.json/metadata.json larger than this are refused
MAX_RATIO = 1100  # deflate cannot compress better than ~1032:1; higher declared ratios are refused
MAX_MEMBERS = 1 << 16  # members in one archive
# Keras writes stored or deflated members; anything else (bzip2, lzma, AES...) is refused, not decoded: Python's
# bzip2 and lzma readers inflate a whole input block at once, without an output bound.
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 99: "AES encryption", 93: "zstandard"}
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
# What hostile archives make zipfile raise: bad structures, unsupported methods, encryption, broken streams.
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    OverflowError,
    MemoryError,
    KeyError,
)


def sniff(path: Path) -> str | None:
    if path.is_dir():
        if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
            return None
        return f"directory without {CONFIG} and {WEIGHTS}"
    if not path.is_file():
        return "not a regular file"
    if not magic.has_zip_magic(path):
        return "not a zip file (magic bytes)"
    try:
        with zipfile.ZipFile(openable(path)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None if path.suffix == ".keras" else "zip magic bytes but unreadable central directory"
    if WEIGHTS in names or (CONFIG in names and METADATA in names):
        return None
    return f"zip without Keras 3 members ({CONFIG}, {WEIGHTS})"


@dataclass(frozen=True)
class _Member:
    """Where model.weights.h5 lives inside the archive."""

    archive: Path
    name: str
    stored: bool
    data_offset: int  # start of the raw member data (stored members only)
    size: int  # declared uncompressed size
    compressed: int


class _RangeFile(io.RawIOBase):
    """A read-only, seekable window [start, start+length) of an open binary file."""

    def __init__(self, fh: Any, start: int, length: int) -> None:
        super().__init__()
        self._fh, self._start, self._length, self._pos = fh, start, length, 0

    def readable(self) -> bool:
        return True

    def window(self) -> tuple[str, int, int]:
        """The archive's path and the window's range: with `stamp`, what h5guard caches a check by."""
        return (str(self._fh.name), self._start, self._length)

    def stamp(self) -> h5guard.Stamp:
        """The Stamp of the archive descriptor this window reads."""
        return h5guard.Stamp.of(os.fstat(self._fh.fileno()))

    def reopened(self) -> _RangeFile:
        """The same window over a descriptor of its own (a forked child must not move this one's offset), opened
        through this one where the system allows (Linux /proc), so that it reads the file this one reads."""
        descriptor = Path(f"/proc/self/fd/{self._fh.fileno()}")  # the same file even if renamed or removed since
        source = descriptor if descriptor.exists() else Path(self._fh.name)
        return _RangeFile(source.open("rb"), self._start, self._length)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._length - self._pos))
        if count == 0:
            return 0
        self._fh.seek(self._start + self._pos)
        got = self._fh.readinto(view[:count])
        self._pos += got
        return int(got)


def _check_names(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
            raise UnsafeInputError(f"{path}: archive member {name!r} has an absolute or parent-relative path")
        if name in seen and name in (WEIGHTS, CONFIG, METADATA):
            raise UnsafeInputError(f"{path}: archive holds {name!r} more than once")
        seen.add(name)


def _check_sizes(path: Path, info: zipfile.ZipInfo, archive_size: int) -> None:
    """One member: not encrypted, stored or deflated, sizes that the archive can hold."""
    if info.flag_bits & 0x41 or info.compress_type == 99:
        raise CorruptCheckpointError(f"{path}: archive member {info.filename!r} is encrypted (refused)")
    if info.compress_type not in _METHODS:
        method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise CorruptCheckpointError(
            f"{path}: archive member {info.filename!r} is compressed with {method}; ckpt-tools reads stored and "
            "deflate members only (what Keras writes)"
        )
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size or info.file_size > archive_size:
            raise CorruptCheckpointError(f"{path}: archive member {info.filename!r} declares impossible sizes")
    elif info.file_size > MAX_RATIO * max(info.compress_size, 1) + 1024:
        raise UnsafeInputError(
            f"{path}: archive member {info.filename!r} declares {info.file_size} bytes from "
            f"{info.compress_size} compressed (ratio above {MAX_RATIO}, refused)"
        )


def _data_start(path: Path, fp: Any, info: zipfile.ZipInfo, archive_size: int) -> int:
    """Where a member's raw data starts, from its local header; the data must end inside the archive."""
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != magic.ZIP_MAGIC:
        raise CorruptCheckpointError(f"{path}: bad local header for {info.filename!r}")
    fields = _LOCAL_HEADER.unpack(header)
    start = int(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
    if start + info.compress_size > archive_size:
        raise CorruptCheckpointError(f"{path}: {info.filename!r} runs past the end of the archive (truncated)")
    return start


def check_archive(path: Path, zf: zipfile.ZipFile, archive_size: int, names: bool = True) -> list[zipfile.ZipInfo]:
    """Every member checked before any is read: names (unless `names` is False: ckpt scan reports them itself),
    encryption, method, sizes, and that no two members share bytes (a central directory listing one compressed
    stream under many names would make each be inflated)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsafeInputError(f"{path}: archive lists {len(infos)} members (limit {MAX_MEMBERS})")
    if names:
        _check_names(path, infos)
    spans = []
    for info in infos:
        _check_sizes(path, info, archive_size)
        start = _data_start(path, zf.fp, info, archive_size)
        spans.append((info.header_offset, start + info.compress_size, info.filename))
    spans.sort()
    for (_, end, name), (begin, _, other) in itertools.pairwise(spans):
        if begin < end:
            raise UnsafeInputError(
                f"{path}: archive members {name!r} and {other!r} overlap (one compressed stream listed twice; refused)"
            )
    return infos


def _read_json(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, warnings: list[str]) -> Any:
    if info.file_size > MAX_JSON_BYTES:
        raise UnsafeInputError(f"{path}: {info.filename} declares {info.file_size} bytes (cap {MAX_JSON_BYTES})")
    try:
        with zf.open(info) as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        return h5c.parse_json(data, f"{path}:{info.filename}")
    except h5c.JsonError as exc:
        warnings.append(f"{info.filename} unreadable ({exc.reason})")
    except UnsafeInputError:
        raise
    except ZIP_ERRORS as exc:  # UnicodeDecodeError is a ValueError
        warnings.append(f"{info.filename} unreadable ({h5c.describe_error(exc)})")
    return None


def _member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> _Member:
    stored = info.compress_type == zipfile.ZIP_STORED
    offset = _data_start(path, zf.fp, info, archive_size) if stored else 0
    return _Member(path, info.filename, stored, offset, info.file_size, info.compress_size)


@contextmanager
def _open_member(member: _Member) -> Iterator[h5py.File]:
    """h5py over the member: a byte window of the zip when stored, else a size-capped temporary copy."""
    label = f"{member.archive}:{member.name}"
    if member.stored:
        with member.archive.open("rb") as fh, h5c.translate_errors(label):
            window = _RangeFile(fh, member.data_offset, member.size)
            with h5c.open_h5(window, label) as f:  # type: ignore[arg-type]
                yield f
        return
    with _extracted(member) as (target, identity), h5c.open_h5(target, label, identity) as f:
        yield f


@contextmanager
def _extracted(member: _Member) -> Iterator[tuple[Path, tuple[object, ...]]]:
    """A deflated member inflated once into a private temporary file (its zip CRC checked on the way: zipfile
    raises at the end of a member whose CRC does not match), removed afterwards; with the member's identity for
    h5guard (each open inflates a new copy, checked once, not once per copy): the Stamp of the very descriptor it
    was inflated from, taken before inflating."""
    label = f"{member.archive}:{member.name}"
    tmpdir = tempfile.mkdtemp(prefix="ckpt-keras-")
    try:
        target = Path(tmpdir) / "model.weights.h5"
        written = 0
        try:
            with (
                _archive_file(member.archive) as (fh, source),
                zipfile.ZipFile(fh) as zf,
                zf.open(member.name) as src,
                target.open("wb") as dst,
            ):
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > member.size:
                        raise UnsafeInputError(f"{label}: member inflates past its declared {member.size} bytes")
                    dst.write(chunk)
        except CkptToolsError:
            raise
        except ZIP_ERRORS as exc:
            raise CorruptCheckpointError(f"{label}: cannot decompress ({h5c.describe_error(exc)})") from exc
        yield target, (str(member.archive), source, member.name, member.size, member.compressed)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextmanager
def _archive_file(archive: Path) -> Iterator[tuple[Any, h5guard.Stamp | None]]:
    """The archive opened for reading, and the Stamp of that descriptor (None for a remote archive)."""
    if is_remote(archive):
        yield openable(archive), None
        return
    with archive.open("rb") as fh:
        yield fh, h5guard.Stamp.of(os.fstat(fh.fileno()))


def member_window(member: _Member) -> h5c.ByteWindow | None:
    """Where a stored member's bytes lie in the archive (None for a deflated one)."""
    return h5c.ByteWindow(member.archive, member.data_offset, member.size) if member.stored else None


@contextmanager
def open_member_h5(path: Path, name: str) -> Iterator[h5py.File]:
    """h5py over one member of the archive at `path`, with the reader's size and ratio checks (for ckpt scan)."""
    archive_size = path.stat().st_size
    try:
        with zipfile.ZipFile(openable(path)) as zf:
            check_archive(path, zf, archive_size, names=False)
            member = _member(path, zf, zf.getinfo(name), archive_size)
    except CkptToolsError:
        raise
    except ZIP_ERRORS as exc:
        raise CorruptCheckpointError(f"{path}: unreadable zip archive ({h5c.describe_error(exc)})") from exc
    with _open_member(member) as f:
        yield f


def _opener(member: _Member) -> h5c.Opener:
    def opener() -> AbstractContextManager[h5py.File]:
        return _open_member(member)

    return opener


def open(path: Path) -> VariableMap:
    path = as_path(path)
    warnings: list[str] = []
    if path.is_dir():
        config, meta = _dir_json(path, warnings)
        weights = confine(path, path / WEIGHTS, "weights file")
        if not weights.exists():
            raise MissingFileError(f"{path}: {WEIGHTS} missing from the Keras model directory")
        window: h5c.ByteWindow | None = h5c.ByteWindow.whole(weights)
        opener, files, label = h5c.path_opener(weights), (weights,), str(weights)
        size = h5c.require_file(weights)
    else:
        config, meta, member = _open_zip(path, warnings)
        opener, size, files, label = _opener(member), member.size, (path,), f"{path}:{WEIGHTS}"
        window = member_window(member)
        if not member.stored:
            warnings.append(f"{WEIGHTS} is compressed: each read decompresses it to a temporary file")
    if config is None:
        warnings.append(f"{CONFIG} absent or unreadable: slot mapping inferred from shapes")
    result = read_keras3(opener, label, h5c.size_cap(size), config if isinstance(config, dict) else None, window)
    metadata = {**_describe(config, meta), **result.metadata}
    if warnings:
        metadata["warnings"] = warnings
    return result.to_map(path, FORMAT, root=path if path.is_dir() else None, metadata=metadata, files=files)


def read_config(path: Path) -> Any:
    """config.json of an archive (zip or directory), parsed as data; None when absent or unreadable."""
    warnings: list[str] = []
    path = as_path(path)
    return _dir_json(path, warnings)[0] if path.is_dir() else _open_zip(path, warnings)[0]


def _open_zip(path: Path, warnings: list[str]) -> tuple[Any, Any, _Member]:
    """config.json, metadata.json and where model.weights.h5 lies, after `check_archive`."""
    archive_size = h5c.require_file(path)
    try:
        with zipfile.ZipFile(openable(path)) as zf:
            by_name = {i.filename: i for i in check_archive(path, zf, archive_size)}
            if WEIGHTS not in by_name:
                raise MissingFileError(f"{path}: {WEIGHTS} missing from the .keras archive")
            config = _read_json(path, zf, by_name[CONFIG], warnings) if CONFIG in by_name else None
            meta = _read_json(path, zf, by_name[METADATA], warnings) if METADATA in by_name else None
            return config, meta, _member(path, zf, by_name[WEIGHTS], archive_size)
    except CkptToolsError:
        raise
    except ZIP_ERRORS as exc:
        raise CorruptCheckpointError(f"{path}: unreadable zip archive ({h5c.describe_error(exc)})") from exc


def verify(vmap: VariableMap) -> str:
    """Every zip member passes its CRC (a directory layout has none) and every tensor reads, in one pass over
    the bytes: model.weights.h5 is read once, its zip CRC computed on the same blocks the tensors are read
    from (and handed to a BlockObserver set with `shards.observing`)."""
    if vmap.root is not None:
        return h5c.verify_file(confine(vmap.root, vmap.root / WEIGHTS, "weights file"))
    path = vmap.path
    try:
        with zipfile.ZipFile(openable(path)) as archive:
            infos = check_archive(path, archive, h5c.require_file(path))
            by_name = {i.filename: i for i in infos}
            if WEIGHTS not in by_name:
                raise MissingFileError(f"{path}: {WEIGHTS} missing from the .keras archive")
            for info in infos:
                if info.filename != WEIGHTS:
                    _check_member_crc(archive, info)
            member = _member(path, archive, by_name[WEIGHTS], h5c.require_file(path))
    except CkptToolsError:
        raise
    except ZIP_ERRORS as exc:
        raise CorruptCheckpointError(f"{path}: zip archive check failed: {h5c.describe_error(exc)}") from exc
    datasets = _verify_weights(member, by_name[WEIGHTS].CRC)
    return f"{len(infos)} zip members pass their CRC; {datasets} tensors read"


def _check_member_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Inflate one member (members were checked not to share bytes); zipfile raises on a CRC mismatch."""
    with archive.open(info) as member:
        while member.read(VERIFY_READ):
            pass


def _verify_weights(member: _Member, crc: int) -> int:
    """model.weights.h5 read once: a stored member in order, its CRC-32 over every byte while the contiguous
    tensors are cut from the same blocks; a deflated one inflated once (zipfile checks its CRC), then read."""
    label = f"{member.archive}:{member.name}"
    window = member_window(member)
    if window is None:
        with _extracted(member) as (target, identity):
            return h5c.verify_hdf5(target, label, identity)
    limit = h5c.size_cap(member.size)
    with _open_member(member) as f, window.open() as handle, h5c.translate_errors(label):
        done = h5c.stream_window(f, label, limit, (handle, window), crc)
        return h5c.verify_datasets(f, label, limit, (handle, window), skip=done)


def _dir_json(path: Path, warnings: list[str]) -> tuple[Any, Any]:
    """config.json and metadata.json of an unzipped .keras directory (each must lie inside it, see confine)."""
    out: list[Any] = []
    for name in (CONFIG, METADATA):
        file = confine(path, path / name, name)
        try:
            if not file.is_file():
                out.append(None)
                continue
            if file.stat().st_size > MAX_JSON_BYTES:
                raise UnsafeInputError(f"{file}: larger than {MAX_JSON_BYTES} bytes (refused)")
            with file.open("rb") as fh:
                data = fh.read(MAX_JSON_BYTES + 1)
            out.append(h5c.parse_json(data, str(file)))
        except h5c.JsonError as exc:
            warnings.append(f"{name} unreadable ({exc.reason})")
            out.append(None)
        except PermissionError as exc:
            raise CorruptCheckpointError(f"{file}: permission denied (cannot read the file)") from exc
        except CkptToolsError:
            raise
        except (OSError, ValueError) as exc:
            warnings.append(f"{name} unreadable ({h5c.describe_error(exc)})")
            out.append(None)
    return out[0], out[1]


def _describe(config: Any, meta: Any) -> dict[str, Any]:
    """What config.json/metadata.json say, as plain JSON values (never deserialized into Keras objects)."""
    out: dict[str, Any] = {}
    if isinstance(meta, dict):
        for key in ("keras_version", "date_saved"):
            if isinstance(meta.get(key), (str, int, float)):
                out[key] = meta[key]
    if isinstance(config, dict):
        out["model_class"] = config.get("class_name")
        cfg = config.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            out["model_name"] = cfg["name"]
        compile_config = config.get("compile_config")
        if isinstance(compile_config, dict):
            out["optimizer_config"] = compile_config.get("optimizer")
            out["loss"] = compile_config.get("loss")
    return out


READER = Reader(FORMAT, sniff, open, verify, group="zip")
