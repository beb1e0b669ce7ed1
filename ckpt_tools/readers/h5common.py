"""Shared HDF5 plumbing for the Keras readers: magic bytes, safe read-only opening, link-checked traversal, caps,
and value reads that never let a hostile chunk inflate past its declared size.

Nothing here asks libhdf5 to walk the file (`h5o.visit`, `links.visit` and `visititems` recurse once per level of
groups and overflow the C stack on a deeply nested file): the tree is walked link by link by `walk`, with the depth
and count limits checked before anything is opened. Compressed chunks are decoded by ckpt-tools itself
(`_decode_chunk`: deflate, shuffle, fletcher32, lzf), each bounded by its chunk's size, because libhdf5's filters
grow their output buffer for as long as the compressed stream goes on.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import h5py
import numpy as np

from ckpt_tools.bundle.shards import CHUNK, POOL, current_observer, read_at, read_blocks
from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.model import COUNTER_DTYPES, Variable
from ckpt_tools.readers import h5guard, magic
from ckpt_tools.storage import is_remote, openable

# A dataset stored without compression cannot hold more than the file does; we allow SIZE_FACTOR times the file
# size plus SIZE_SLACK (fill-value-only datasets, odd layouts) and refuse anything larger before allocating it.
# Filtered (compressed) chunked datasets are judged by their allocated storage instead: deflate cannot beat
# about 1032:1, so more than COMPRESSION_RATIO times the stored bytes (plus SIZE_SLACK) is refused too.
SIZE_FACTOR = 100
SIZE_SLACK = 64 << 20
COMPRESSION_RATIO = 1100
MAX_OBJECTS = 1_000_000  # links listed in the whole file
MAX_DEPTH = 64  # levels of groups below the root
MAX_NAME_BYTES = 4096  # one link name
# Compressed chunks: one chunk's size, how far a chunk may reach past a dataset smaller than it, how many chunks a
# dataset may store, and how many bytes a chunk may store beyond its own size (deflate/lzf expansion, checksum).
MAX_CHUNK_BYTES = 64 << 20
CHUNK_OVERHANG = 1 << 20
MAX_CHUNKS = 1 << 20
STORED_SLACK = 1024
# A compressed dataset is read whole (`Variable.read`) only up to this size; diff, --stats and validate stream it
# block by block whatever its size. Ordered streams (diff, --stats) hold at most MAX_SLAB_BYTES of decoded chunks
# (one row of chunks); validate decodes one chunk at a time (at most MAX_CHUNK_BYTES).
MAX_INFLATED_READ = 512 << 20
MAX_SLAB_BYTES = 256 << 20
VERIFY_BLOCK = 64 << 20
# Attributes (layer_names, weight_names, model_config...): bytes of one attribute, entries of one name list.
MAX_ATTR_BYTES = 64 << 20
MAX_LIST_ENTRIES = 1 << 20
# JSON (config.json, metadata.json, model_config, training_config): values a document may hold (every `[`, `{`
# and `,` counts, an upper bound on what json builds) and levels of nesting.
MAX_JSON_VALUES = 1 << 20
MAX_JSON_DEPTH = 256

# Keras 3 marks the dtypes numpy lacks with a "dtype" attribute on an opaque dataset; tf_keras writes bfloat16
# as a bare 2-byte opaque type with no attribute (TensorFlow reports it as bfloat16).
_OPAQUE_DTYPES = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
_FILTER_NAMES = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
_DEFLATE, _SHUFFLE, _FLETCHER32, _LZF = 1, 2, 3, 32000

Opener = Callable[[], AbstractContextManager[h5py.File]]
# What hostile bytes can make h5py, numpy, zlib and json raise; every one becomes one CorruptCheckpointError line.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    OverflowError,
    MemoryError,
    EOFError,
    zlib.error,
)

_READ_ERRORS: tuple[type[BaseException], ...] = (CkptToolsError, *PARSE_ERRORS)


def size_cap(file_size: int) -> int:
    """The largest uncompressed dataset (bytes) a file of `file_size` bytes may declare."""
    return SIZE_FACTOR * file_size + SIZE_SLACK


def decode(name: bytes | str) -> str:
    """A readable name; bytes that are not UTF-8 come out as backslash escapes."""
    return name.decode("utf-8", errors="backslashreplace") if isinstance(name, bytes) else name


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """What went wrong, in a few words (RecursionError and MemoryError carry no useful message of their own)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "not enough memory"
    return first_line(exc)


@contextmanager
def translate_errors(label: str) -> Iterator[None]:
    """Turn h5py/OS/numpy errors raised while parsing into one-line CorruptCheckpointErrors."""
    try:
        yield
    except CkptToolsError:
        raise
    except PermissionError as exc:
        raise CorruptCheckpointError(f"{label}: permission denied (cannot read the file)") from exc
    except RecursionError as exc:
        raise CorruptCheckpointError(f"{label}: unreadable HDF5 data (structure nested too deeply)") from exc
    except PARSE_ERRORS as exc:
        raise CorruptCheckpointError(f"{label}: unreadable HDF5 data ({describe_error(exc)})") from exc


def _refuse_if_write_locked(path: Path, label: str) -> None:
    """An HDF5 writer (h5py/Keras saving) holds an exclusive lock while it writes: what we would read is a file
    in the middle of being written. Probed with a shared, non-blocking lock, released at once; file systems
    without locks are not an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError as exc:
        raise CorruptCheckpointError(f"{label}: permission denied (cannot read the file)") from exc
    except OSError:
        return  # h5py reports it below, in its own words
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError as exc:
        raise CorruptCheckpointError(
            f"{label}: another process holds a write lock on this HDF5 file (it is being written); "
            "try again once the writer has closed it"
        ) from exc
    except OSError:
        pass
    finally:
        os.close(fd)


def open_h5(target: Path | IO[bytes], label: str, identity: tuple[Any, ...] = ()) -> h5py.File:
    """Open read-only without taking a file lock (nothing is ever written), once a forked child has read its
    metadata without harm (h5guard; `identity` names a private copy's source); a file another process is writing
    (it holds the HDF5 write lock) is refused."""
    if is_remote(target):
        target = cast(IO[bytes], openable(cast(Path, target)))  # h5py reads through the ranged file object
    elif isinstance(target, (str, Path)):
        _refuse_if_write_locked(Path(target), label)
    stamp = h5guard.check(target, label, touch_metadata, identity)
    with translate_errors(label):
        f = h5py.File(target, "r", locking=False)
    if isinstance(target, (str, Path)):
        try:
            h5guard.verify(f, stamp, label)
        except CkptToolsError:
            f.close()
            raise
    return f


# Names the readers look up without knowing whether they exist (a lookup by name walks other libhdf5 code than
# listing does): the child looks them up too.
_PROBED_ATTRS = (
    "model_config", "training_config", "keras_version", "backend", "layer_names", "weight_names", "layer_names0",
    "weight_names0", "name", "dtype",
)  # fmt: skip
_PROBED_LINKS = (b"model_weights", b"optimizer_weights", b"vars", b"layers", b"optimizer")


def touch_metadata(f: h5py.File, label: str) -> None:
    """Make libhdf5 parse what ckpt-tools' reads make it parse: every object reachable through hard links (at
    most MAX_OBJECTS, MAX_DEPTH deep), each one's attributes (size-checked first) and the names the readers look
    up, each dataset's type, space, layout, filters and chunk index, and the values of string datasets. Errors are
    skipped, failed allocations raised: only whether libhdf5 survives matters (h5guard)."""
    seen: set[int] = set()
    stack: list[tuple[bytes, Any, int]] = [(b"", f.id, 0)]
    limit = size_cap(int(f.id.get_filesize()))
    _touch_object(f.id, b"/", label, limit)
    while stack and len(seen) < MAX_OBJECTS:
        prefix, gid, depth = stack.pop()
        links: list[tuple[bytes, int]] = []
        with _skipping():
            links = list_links(gid, label)
            for name in _PROBED_LINKS:
                gid.links.exists(name)
        for name, kind in links:
            raw = prefix + b"/" + name if prefix else name
            if kind != h5py.h5l.TYPE_HARD or len(name) > MAX_NAME_BYTES:
                continue
            oid = None
            with _skipping():
                gid.links.get_info(name)
                oid = h5py.h5o.open(gid, name)
                address = int(h5py.h5o.get_info(oid).addr)
            if oid is not None and address not in seen:
                seen.add(address)
                _touch_object(oid, raw, label, limit)
                if isinstance(oid, h5py.h5g.GroupID) and depth < MAX_DEPTH:
                    stack.append((raw, oid, depth + 1))


@contextmanager
def _skipping() -> Iterator[None]:
    """Skip what hostile metadata makes h5py raise, except a failed allocation (the child must report it)."""
    try:
        yield
    except _READ_ERRORS as exc:
        if h5guard.out_of_memory(exc):
            raise


def _touch_object(oid: Any, raw: bytes, label: str, limit: int) -> None:
    with _skipping():
        kinds = {h5py.h5d.DatasetID: h5py.Dataset, h5py.h5t.TypeID: h5py.Datatype}
        obj = next((hl for kind, hl in kinds.items() if isinstance(oid, kind)), h5py.Group)(oid)
        for name in (*itertools.islice(obj.attrs, MAX_LIST_ENTRIES), *_PROBED_ATTRS):
            with _skipping():
                _attr_value(obj, name)
    if isinstance(oid, h5py.h5d.DatasetID):
        with _skipping():
            _touch_dataset(oid, decode(raw), label, limit)


def _touch_dataset(dsid: h5py.h5d.DatasetID, key: str, label: str, limit: int) -> None:
    check_dataset(dsid, key, label, limit)  # the reader's own cap, before a string dataset is read
    plan = _Chunked.of(dsid, key)
    if plan is not None:
        plan.stored()
    elif dsid.get_create_plist().get_layout() == h5py.h5d.CHUNKED:
        dsid.get_num_chunks()
    dt = dsid.dtype
    if dt.kind in "OSU" or h5py.check_string_dtype(dt) is not None or h5py.check_vlen_dtype(dt) is not None:
        dataset = h5py.Dataset(dsid)  # variable-length values live in the global heap, which libhdf5 parses to read
        rows = dataset.shape[0] if dataset.shape else 0
        if not rows:
            dataset[()]
        for start in range(0, rows, _STRING_ROWS):  # in slices: the child's memory stays that of one slice
            dataset[start : start + _STRING_ROWS]


_STRING_ROWS = 1 << 16


def require_file(path: Path) -> int:
    """The size of a regular file; anything else (FIFO, device, missing) is refused before it is opened."""
    try:
        if path.is_file():
            return path.stat().st_size
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: cannot stat ({first_line(exc)})") from exc
    if not path.exists():
        raise MissingFileError(f"{path}: no such file")
    raise CorruptCheckpointError(f"{path}: not a regular file")


def path_opener(path: Path) -> Opener:
    """An Opener for an HDF5 file on disk; each call opens the file anew."""

    def opener() -> AbstractContextManager[h5py.File]:
        opened: AbstractContextManager[h5py.File] = open_h5(path, str(path))
        return opened

    return opener


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset found by `scan`: its readable key, the raw path to reopen it, shape, dtype, header address."""

    key: str
    raw: bytes
    shape: tuple[int, ...]
    dtype: str
    address: int


# ------------------------------------------------------------------------------------------------ walking
def _link_type(group: h5py.Group, name: bytes) -> int:
    return int(group.id.links.get_info(name).type)


def child(group: h5py.Group, name: bytes, label: str) -> h5py.Group | h5py.Dataset | None:
    """The object a hard link `name` points at; None for soft links; external/user links are refused."""
    kind = _link_type(group, name)
    if kind == h5py.h5l.TYPE_SOFT:
        return None
    if kind != h5py.h5l.TYPE_HARD:
        raise UnsafeInputError(f"{label}: external or user-defined link {decode(name)!r} refused")
    oid = h5py.h5o.open(group.id, name)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    return None  # named datatypes carry no values


def list_links(gid: h5py.h5g.GroupID, label: str, budget: int = MAX_OBJECTS) -> list[tuple[bytes, int]]:
    """(name, link type) of one group's links in name order, without recursion; more than `budget` is refused."""
    found: list[tuple[bytes, int]] = []

    def collect(name: bytes, info: Any) -> Any:  # nothing may be raised across h5py's C callback: stop instead
        found.append((bytes(name), int(info.type)))
        return True if len(found) > budget else None

    gid.links.iterate(collect, info=True)
    if len(found) > budget:
        raise CorruptCheckpointError(f"{label}: more than {MAX_OBJECTS} HDF5 links")
    found.sort()
    return found


def names(group: h5py.Group) -> list[bytes]:
    """Link names of a group, raw, in name order (at most MAX_OBJECTS)."""
    return [name for name, _ in list_links(group.id, str(group.file.filename))]


@dataclass(frozen=True)
class WalkedObject:
    """One object `walk` reached: its raw path, HDF5 object type and header address."""

    raw: bytes
    kind: int
    address: int


def walk(f: h5py.File, label: str) -> list[WalkedObject]:
    """Every object reachable from the root through hard links, depth first in name order, each object once.

    Iterative: a stack of links still to visit, never libhdf5's recursive visit. External and user-defined links
    are refused, soft links skipped, and the depth (MAX_DEPTH), link count (MAX_OBJECTS) and name length
    (MAX_NAME_BYTES) limits are checked before the object a link names is opened.
    """
    out: list[WalkedObject] = []
    seen = {int(h5py.h5o.get_info(f.id).addr)}
    budget = MAX_OBJECTS
    stack: list[tuple[bytes, h5py.h5g.GroupID, bytes, int, int]] = []

    def push(prefix: bytes, gid: h5py.h5g.GroupID, depth: int) -> None:
        nonlocal budget
        links = list_links(gid, label, budget)
        budget -= len(links)
        stack.extend((prefix, gid, name, kind, depth) for name, kind in reversed(links))

    push(b"", f.id, 1)
    while stack:
        prefix, gid, name, kind, depth = stack.pop()
        raw = prefix + b"/" + name if prefix else name
        if kind not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            raise UnsafeInputError(f"{label}: external or user-defined link {decode(raw)!r} refused")
        if kind == h5py.h5l.TYPE_SOFT:
            continue
        if len(name) > MAX_NAME_BYTES:
            raise CorruptCheckpointError(f"{label}: an HDF5 link name of {len(name)} bytes (limit {MAX_NAME_BYTES})")
        if depth > MAX_DEPTH:
            raise CorruptCheckpointError(f"{label}: HDF5 groups nested deeper than {MAX_DEPTH} levels")
        oid = h5py.h5o.open(gid, name)
        address = int(h5py.h5o.get_info(oid).addr)
        if address in seen:
            continue
        seen.add(address)
        kind_of = int(h5py.h5o.get_info(oid).type)
        out.append(WalkedObject(raw, kind_of, address))
        if isinstance(oid, h5py.h5g.GroupID):
            push(raw, oid, depth + 1)
    return out


def subgroup(group: h5py.Group, path: str, label: str) -> h5py.Group | None:
    """Walk `a/b/c` through hard links only; None if a component is missing or not a group."""
    node: h5py.Group | h5py.Dataset | None = group
    for part in (p for p in path.split("/") if p):
        if not isinstance(node, h5py.Group) or not node.id.links.exists(part.encode()):
            return None
        node = child(node, part.encode(), label)
    return node if isinstance(node, h5py.Group) else None


def resolve(f: h5py.File, raw: bytes, label: str) -> h5py.Dataset:
    """The dataset at raw path `raw`, following hard links only."""
    node: h5py.Group | h5py.Dataset | None = f
    for part in raw.split(b"/"):
        if not isinstance(node, h5py.Group):
            node = None
            break
        try:
            node = child(node, part, label)
        except KeyError:
            node = None
    if not isinstance(node, h5py.Dataset):
        raise CorruptCheckpointError(f"{label}: dataset {decode(raw)} is missing or not a dataset")
    return node


def object_address(obj: h5py.HLObject) -> int:
    """The object header address; Keras writes objects in order, so this recovers the creation order."""
    try:
        return int(h5py.h5o.get_info(obj.id).addr)
    except (AttributeError, OSError, RuntimeError):
        return 0


# ------------------------------------------------------------------------------------------------ attributes
def _attr_value(obj: h5py.HLObject, name: str) -> Any:
    """An attribute's value, or None when absent, unreadable or larger than MAX_ATTR_BYTES / MAX_LIST_ENTRIES
    (checked from its declared shape and type before it is read)."""
    try:
        if name not in obj.attrs:
            return None
        aid = h5py.h5a.open(obj.id, name.encode())
        count = math.prod(aid.shape or ())
        if count > MAX_LIST_ENTRIES or count * max(aid.dtype.itemsize, 1) > MAX_ATTR_BYTES:
            raise CorruptCheckpointError(
                f"{obj.file.filename}: attribute {name!r} of {decode(obj.name or '')} holds {count} values "
                f"(limits {MAX_LIST_ENTRIES} values, {MAX_ATTR_BYTES} bytes)"
            )
        return obj.attrs[name]
    except CkptToolsError:
        raise
    except PARSE_ERRORS:  # UnicodeDecodeError is a ValueError
        return None


def attr_text(obj: h5py.HLObject, name: str) -> str | None:
    """A string attribute (bytes or str, scalar or 1-element), decoded; None when absent or not text."""
    value = _attr_value(obj, name)
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bytes, np.bytes_)):
        return decode(bytes(value))
    if isinstance(value, str):
        return value
    return None


def attr_strings(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-strings attribute, joining Keras-2's split chunks `name0`, `name1`, ...; None when absent.
    At most MAX_LIST_ENTRIES names in all."""
    values = _attr_value(obj, name)
    if values is None and _attr_value(obj, f"{name}0") is not None:
        chunks: list[Any] = []
        index = 0
        while (chunk := _attr_value(obj, f"{name}{index}")) is not None:
            chunks.extend(np.asarray(chunk).reshape(-1).tolist())
            if len(chunks) > MAX_LIST_ENTRIES:
                raise CorruptCheckpointError(
                    f"{obj.file.filename}: attribute {name!r} lists more than {MAX_LIST_ENTRIES} names"
                )
            index += 1
        values = chunks
    if values is None:
        return None
    return [decode(bytes(v)) if isinstance(v, (bytes, np.bytes_)) else str(v) for v in np.asarray(values).reshape(-1)]


class JsonError(CorruptCheckpointError):
    """JSON that does not parse or nests too deeply; `reason` says why in a few words (readers may carry on
    without the document, as a warning)."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"{label}: not readable JSON ({reason})")
        self.reason = reason


def parse_json(data: bytes | str, label: str) -> Any:
    """JSON text as plain values, bounded before and after parsing: at most MAX_JSON_VALUES values (counted from
    the brackets and commas before parsing, so a small document cannot expand into gigabytes of Python objects;
    UnsafeInputError) and MAX_JSON_DEPTH levels (JsonError, as for text that does not parse)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    values = raw.count(b"[") + raw.count(b"{") + raw.count(b",") + 1
    if values > MAX_JSON_VALUES:
        raise UnsafeInputError(
            f"{label}: JSON of {len(raw)} bytes with up to {values} values (limit {MAX_JSON_VALUES}; refused)"
        )
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, MemoryError) as exc:
        raise JsonError(label, describe_error(exc)) from exc
    if _json_depth(parsed) > MAX_JSON_DEPTH:
        raise JsonError(label, f"nested deeper than {MAX_JSON_DEPTH} levels")
    return parsed


def _json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


# ------------------------------------------------------------------------------------------------ datasets
def dtype_name(dsid: h5py.h5d.DatasetID) -> str:
    """The numpy-style dtype name ckpt-tools reports for a dataset; a type it cannot read as numbers or strings
    (compound, array, enum other than bool, variable-length non-string, references, other opaque types) is
    refused with one line."""
    dt = dsid.dtype
    if h5py.check_string_dtype(dt) is not None or dt.kind in "SU":
        return "string"
    if dt.kind in "fiubc" and dt.names is None and dt.subdtype is None and not _is_enum(dt):
        name: str = np.dtype(dt.str).name
        return name
    if dt.kind == "V" and dt.names is None and dt.subdtype is None:
        marked = attr_text(h5py.Dataset(dsid), "dtype")
        if marked in _OPAQUE_DTYPES and _OPAQUE_DTYPES[marked] == dt.itemsize:
            return marked
        if marked is None and dt.itemsize == 2:
            return "bfloat16"
    raise CorruptCheckpointError(f"unsupported HDF5 dtype {_kind_of(dt)}: ckpt-tools reads numbers and strings only")


def _is_enum(dt: np.dtype[Any]) -> bool:
    return dt.kind != "b" and h5py.check_enum_dtype(dt) is not None


def _kind_of(dt: np.dtype[Any]) -> str:
    if h5py.check_ref_dtype(dt) is not None:
        return "object/region reference"
    if h5py.check_vlen_dtype(dt) is not None:
        return "variable-length sequence"
    if dt.names is not None:
        return f"compound ({', '.join(dt.names[:4])}{', ...' if len(dt.names) > 4 else ''})"
    if dt.subdtype is not None:
        return f"array of {dt.subdtype[0]}"
    if _is_enum(dt):
        return "enum"
    return f"opaque ({dt.itemsize} bytes)"


def check_dataset(dsid: h5py.h5d.DatasetID, key: str, label: str, limit: int) -> tuple[tuple[int, ...], str]:
    """Refuse external/virtual storage, unreadable dtypes and absurd declared sizes; return (shape, dtype name)."""
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise UnsafeInputError(f"{label}: dataset {key} is a virtual dataset (refused: it reads other files)")
    if plist.get_external_count() > 0:
        raise UnsafeInputError(f"{label}: dataset {key} keeps its data in external files (refused)")
    space = dsid.get_space()
    null = space.get_simple_extent_type() == h5py.h5s.NULL
    shape = (0,) if null else tuple(int(d) for d in space.shape)
    try:
        dtype = dtype_name(dsid)
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(f"{label}: dataset {key} has an {exc}") from None
    nbytes = math.prod(shape) * max(dsid.dtype.itemsize, 1)
    filtered = layout == h5py.h5d.CHUNKED and plist.get_nfilters() > 0
    cap = COMPRESSION_RATIO * int(dsid.get_storage_size()) + SIZE_SLACK if filtered else limit
    if nbytes > cap:
        raise CorruptCheckpointError(
            f"{label}: dataset {key} declares shape {list(shape)} {dtype} ({nbytes} bytes), "
            f"more than the file can hold (cap {cap} bytes)"
        )
    if filtered:
        _check_chunking(plist, shape, dsid.dtype.itemsize, key, label)
    return shape, dtype


def _check_chunking(plist: Any, shape: tuple[int, ...], itemsize: int, key: str, label: str) -> None:
    """A compressed dataset's chunks: supported filters, bounded chunk size and count."""
    for index in range(plist.get_nfilters()):
        code = int(plist.get_filter(index)[0])
        if code not in (_DEFLATE, _SHUFFLE, _FLETCHER32, _LZF):
            name = _FILTER_NAMES.get(code, f"filter {code}")
            raise CorruptCheckpointError(
                f"{label}: dataset {key} is compressed with {name}, which ckpt-tools does not decode "
                "(only deflate/gzip, lzf, shuffle and fletcher32)"
            )
    chunk = tuple(int(c) for c in plist.get_chunk())
    chunk_bytes = math.prod(chunk) * max(itemsize, 1)
    nbytes = math.prod(shape) * max(itemsize, 1)
    if len(chunk) != len(shape) or min(chunk, default=1) < 1 or chunk_bytes > MAX_CHUNK_BYTES:
        raise CorruptCheckpointError(
            f"{label}: dataset {key} has chunks of {list(chunk)} ({chunk_bytes} bytes; limit {MAX_CHUNK_BYTES})"
        )
    if chunk_bytes > max(nbytes, CHUNK_OVERHANG):
        raise CorruptCheckpointError(
            f"{label}: dataset {key} of {nbytes} bytes has compressed chunks of {chunk_bytes} bytes "
            f"(a chunk may exceed its dataset by at most {CHUNK_OVERHANG} bytes)"
        )
    grid = math.prod(-(-s // c) for s, c in zip(shape, chunk, strict=True))
    if grid > MAX_CHUNKS:
        raise CorruptCheckpointError(f"{label}: dataset {key} is cut into {grid} chunks (limit {MAX_CHUNKS})")


def scan(f: h5py.File, label: str, limit: int, groups: list[str] | None = None) -> list[DatasetInfo]:
    """Every dataset reachable through hard links, each object once (depth first, in name order), checked by
    `check_dataset`; the paths of groups are appended to `groups` when given."""
    out: list[DatasetInfo] = []
    with translate_errors(label):
        for obj in walk(f, label):
            if obj.kind == h5py.h5o.TYPE_GROUP and groups is not None:
                groups.append(decode(obj.raw))
            if obj.kind != h5py.h5o.TYPE_DATASET:
                continue
            key = decode(obj.raw)
            shape, dtype = check_dataset(h5py.h5d.open(f.id, obj.raw), key, label, limit)
            out.append(DatasetInfo(key, obj.raw, shape, dtype, obj.address))
    return out


def convert(array: Any, dtype: str) -> np.ndarray:
    """h5py's value as the array ckpt-tools promises: bfloat16/float8 views, strings as object arrays of bytes."""
    arr = np.asarray(array)
    if dtype in _OPAQUE_DTYPES and arr.dtype.kind == "V":
        import ml_dtypes

        return arr.view(np.dtype(getattr(ml_dtypes, dtype)))
    if dtype == "string":
        flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in arr.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape)
    return arr


# ------------------------------------------------------------------------------------------------ chunk decoding
@dataclass(frozen=True)
class _Chunked:
    """A compressed chunked dataset as ckpt-tools decodes it: chunk shape and size, filter pipeline, fill."""

    dsid: h5py.h5d.DatasetID
    where: str
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    chunk_bytes: int
    pipeline: tuple[tuple[int, tuple[int, ...]], ...]
    dtype: np.dtype[Any]
    fill: np.ndarray

    @classmethod
    def of(cls, dsid: h5py.h5d.DatasetID, where: str) -> _Chunked | None:
        """The decoding plan of a filtered chunked dataset; None when libhdf5 can read it without inflating."""
        plist = dsid.get_create_plist()
        if plist.get_layout() != h5py.h5d.CHUNKED or plist.get_nfilters() == 0:
            return None
        dtype = dsid.dtype
        chunk = tuple(int(c) for c in plist.get_chunk())
        pipeline = tuple(
            (int(code), tuple(int(v) for v in values))
            for code, _, values, _ in (plist.get_filter(i) for i in range(plist.get_nfilters()))
        )
        fill = np.zeros((1,), dtype=dtype)
        text = h5py.check_string_dtype(dtype)
        if h5py.check_vlen_dtype(dtype) is None and (text is None or text.length is not None):
            plist.get_fill_value(fill)  # (variable-length data is read by h5py, fill included)
        shape = tuple(int(d) for d in dsid.shape)
        item = int(dsid.get_type().get_size())  # in the file: a variable-length element is a heap reference
        return cls(dsid, where, shape, chunk, math.prod(chunk) * item, pipeline, dtype, fill)

    def stored(self) -> dict[int, list[tuple[tuple[int, ...], int]]]:
        """Allocated chunks inside the dataset, by first coordinate: [(offset, stored size)]; each chunk's stored
        size is checked against its decoded size before anything is read."""
        found: list[tuple[tuple[int, ...], int]] = []

        def collect(info: Any) -> Any:  # nothing may be raised across h5py's C callback: stop instead
            found.append((tuple(int(o) for o in info.chunk_offset), int(info.size)))
            return True if len(found) > MAX_CHUNKS else None

        if int(self.dsid.get_num_chunks()) > MAX_CHUNKS:
            raise CorruptCheckpointError(f"{self.where} stores more than {MAX_CHUNKS} chunks")
        self.dsid.chunk_iter(collect)
        by_row: dict[int, list[tuple[tuple[int, ...], int]]] = {}
        most = self.chunk_bytes + self.chunk_bytes // 16 + STORED_SLACK
        for offset, size in found:
            if size > most:
                raise CorruptCheckpointError(
                    f"{self.where}: a chunk stores {size} bytes for {self.chunk_bytes} decoded bytes (refused)"
                )
            if all(o < s for o, s in zip(offset, self.shape, strict=True)):
                by_row.setdefault(offset[0] if offset else 0, []).append((offset, size))
        return by_row

    def decoded(self, offset: tuple[int, ...]) -> np.ndarray:
        """One chunk, decoded by ckpt-tools with its output bounded by the chunk's size."""
        mask, data = self.dsid.read_direct_chunk(offset)
        buf = bytes(data)
        for index in reversed(range(len(self.pipeline))):
            if not int(mask) & (1 << index):
                buf = self._undo(self.pipeline[index], buf)
        if len(buf) != self.chunk_bytes:
            raise CorruptCheckpointError(
                f"{self.where}: a chunk decodes to {len(buf)} bytes, not the {self.chunk_bytes} of its shape"
            )
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.chunk)

    def _undo(self, step: tuple[int, tuple[int, ...]], buf: bytes) -> bytes:
        code, values = step
        limit = self.chunk_bytes + STORED_SLACK
        if code == _DEFLATE:
            return _inflate(buf, limit, self.where)
        if code == _LZF:
            return _lzf_decode(buf, limit, self.where)
        if code == _FLETCHER32:
            return _check_fletcher32(buf, self.where)
        if code == _SHUFFLE:
            return _unshuffle(buf, values[0] if values else self.dtype.itemsize)
        raise CorruptCheckpointError(f"{self.where}: filter {code} is not decoded by ckpt-tools")

    def fill_into(self, out: np.ndarray, row0: int, rows: dict[int, list[tuple[tuple[int, ...], int]]]) -> None:
        """Decode every stored chunk meeting `out` (rows row0.. of the dataset, all of every other axis)."""
        out[...] = self.fill[0]
        first = row0 - row0 % self.chunk[0] if self.chunk else 0
        for start in range(first, row0 + (out.shape[0] if out.ndim else 1), self.chunk[0] if self.chunk else 1):
            for offset, _ in rows.get(start, ()):
                block = self.decoded(offset)
                src = []
                dst = []
                for axis, (o, c, s) in enumerate(zip(offset, self.chunk, self.shape, strict=True)):
                    lo, hi = (max(o, row0), min(o + c, s, row0 + out.shape[0])) if axis == 0 else (o, min(o + c, s))
                    src.append(slice(lo - o, hi - o))
                    dst.append(slice(lo - row0, hi - row0) if axis == 0 else slice(lo, hi))
                out[tuple(dst)] = block[tuple(src)]


def _inflate(data: bytes, limit: int, where: str) -> bytes:
    """A zlib stream, inflated to at most `limit` bytes; a stream that would go on is refused."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise CorruptCheckpointError(f"{where}: a compressed chunk inflates past its chunk size (refused)")
    if not inflater.eof:
        raise CorruptCheckpointError(f"{where}: a compressed chunk is truncated")
    return out


def _lzf_decode(data: bytes, limit: int, where: str) -> bytes:
    """LZF (h5py's filter 32000): literal runs and back references, at most `limit` bytes out."""
    out = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        ctrl = data[pos]
        pos += 1
        if ctrl < 32:
            run = ctrl + 1
            if pos + run > end:
                raise CorruptCheckpointError(f"{where}: a compressed (lzf) chunk is truncated")
            out += data[pos : pos + run]
            pos += run
        else:
            length = ctrl >> 5
            if length == 7 and pos < end:
                length += data[pos]
                pos += 1
            if pos >= end:
                raise CorruptCheckpointError(f"{where}: a compressed (lzf) chunk is truncated")
            back = ((ctrl & 0x1F) << 8) + data[pos] + 1
            pos += 1
            length += 2
            if back > len(out):
                raise CorruptCheckpointError(f"{where}: a compressed (lzf) chunk refers before its start")
            pattern = out[len(out) - back :]
            out += (pattern * (length // back + 1))[:length]
        if len(out) > limit:
            raise CorruptCheckpointError(f"{where}: a compressed (lzf) chunk inflates past its chunk size (refused)")
    return bytes(out)


def _unshuffle(buf: bytes, size: int) -> bytes:
    """HDF5's shuffle filter undone: byte planes back into elements (a tail shorter than an element is kept)."""
    count = len(buf) // size if size > 1 else 0
    if count < 2:
        return buf
    planes = np.frombuffer(buf, dtype=np.uint8, count=count * size).reshape(size, count)
    return planes.T.tobytes() + buf[count * size :]


def _fletcher32(data: bytes) -> tuple[int, int]:
    """HDF5's Fletcher-32 of `data` as (sum1, sum2) modulo 65535: big-endian 16-bit words, an odd last byte as
    the high byte of a final word."""
    raw = np.frombuffer(data, dtype=np.uint8)
    words = raw[: len(raw) // 2 * 2].view(">u2").astype(np.uint64)
    if len(raw) % 2:
        words = np.append(words, np.uint64(int(raw[-1]) << 8))
    n = len(words)
    sum1 = sum2 = 0
    for start in range(0, n, 1 << 16):
        block = words[start : start + (1 << 16)]
        weights = (n - np.arange(start, start + len(block), dtype=np.uint64)) % np.uint64(65535)
        sum1 += int(block.sum())
        sum2 += int((block * weights).sum() % np.uint64(65535))
    return sum1 % 65535, sum2 % 65535


def _check_fletcher32(buf: bytes, where: str) -> bytes:
    """The data without its 4-byte checksum, after checking it (also in the byte order of old HDF5 versions)."""
    if len(buf) < 4:
        raise CorruptCheckpointError(f"{where}: a checksummed chunk is shorter than its checksum")
    data, stored = buf[:-4], int.from_bytes(buf[-4:], "little")
    sum1, sum2 = _fletcher32(data)
    swapped = int.from_bytes(stored.to_bytes(4, "little")[::-1], "little")
    for value in (stored, ((swapped & 0xFFFF) << 16) | (swapped >> 16)):
        if (value & 0xFFFF) % 65535 == sum1 and (value >> 16) % 65535 == sum2:
            return data
    raise CorruptCheckpointError(f"{where}: a chunk fails its Fletcher-32 checksum")


# ------------------------------------------------------------------------------------------------ value reads
def read_dataset(f: h5py.File, raw: bytes, label: str, limit: int) -> np.ndarray:
    """Read one dataset whole after re-checking its layout and declared size; compressed chunks are decoded by
    ckpt-tools, and a compressed dataset larger than MAX_INFLATED_READ is refused (stream it instead)."""
    with translate_errors(label):
        ds = resolve(f, raw, label)
        key = decode(raw)
        shape, dtype = check_dataset(ds.id, key, label, limit)
        if ds.shape is None:
            return np.empty((0,), dtype=ds.dtype)
        plan = _Chunked.of(ds.id, f"{label}: dataset {key}")
        if plan is None:
            return convert(ds[()], dtype)
        nbytes = math.prod(shape) * plan.dtype.itemsize
        if nbytes > MAX_INFLATED_READ:
            raise CorruptCheckpointError(
                f"{label}: dataset {key} is compressed and declares {nbytes} bytes, more than ckpt-tools inflates "
                f"in one read ({MAX_INFLATED_READ}); diff, --stats and validate stream it"
            )
        rows = plan.stored()
        if plan.dtype.kind == "O" or h5py.check_vlen_dtype(plan.dtype) is not None:
            for row in rows.values():  # variable-length data: prove every chunk bounded, then let h5py read it
                for offset, _ in row:
                    plan.decoded(offset)
            return convert(ds[()], dtype)
        out = np.empty(shape, dtype=plan.dtype)
        plan.fill_into(out, 0, rows)
        return convert(out, dtype)


@dataclass(frozen=True)
class ByteWindow:
    """Where an HDF5 file's bytes lie: `length` bytes from `start` of the file at `path` (the whole file, or a
    stored member of a zip archive). Uncompressed contiguous datasets are read from it directly (`readinto`
    into a pooled, page-aligned buffer), never through libhdf5's copies."""

    path: Path
    start: int
    length: int

    @classmethod
    def whole(cls, path: Path) -> ByteWindow:
        return cls(path, 0, require_file(path))

    def open(self) -> BinaryIO:
        return self.path.open("rb", buffering=0)


@dataclass(frozen=True)
class Extent:
    """The bytes of an uncompressed contiguous dataset: `nbytes` at `offset` of its window, as `dtype` (in the
    file's byte order)."""

    offset: int
    nbytes: int
    dtype: np.dtype[Any]


def contiguous_extent(
    dsid: h5py.h5d.DatasetID, shape: tuple[int, ...], window: ByteWindow, where: str
) -> Extent | None:
    """The raw extent of a contiguous, allocated, fixed-size dataset, checked to lie inside the window; None for
    the other layouts (compact, chunked, not yet written) and for strings."""
    if dsid.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS:
        return None
    offset = dsid.get_offset()
    dtype = dsid.dtype
    if offset is None or dtype.kind not in "fiubcV" or dtype.names is not None or dtype.subdtype is not None:
        return None
    nbytes = math.prod(shape) * dtype.itemsize
    if offset < 0 or offset + nbytes > window.length:
        raise CorruptCheckpointError(
            f"{where}: stored at bytes {offset}..{offset + nbytes}, past the end of the file ({window.length} bytes)"
        )
    return Extent(int(offset), nbytes, dtype)


def read_window(handle: BinaryIO, window: ByteWindow, offset: int, out: np.ndarray) -> None:
    """Fill the uint8 array `out` from `offset` of the window (short reads retried; the end of the file is an
    error)."""
    view = memoryview(out.data).cast("B")
    filled = 0
    while filled < len(view):
        got = read_at(handle, window.start + offset + filled, view[filled:])
        if not got:
            raise CorruptCheckpointError(f"{window.path}: file ended while reading {len(view)} bytes at {offset}")
        filled += got


def _raw_blocks(
    handle: BinaryIO, window: ByteWindow, extent: Extent, dtype: str, elements: int
) -> Iterator[np.ndarray]:
    """A contiguous dataset's values as 1-D views of one pooled, page-aligned buffer, `elements` per block."""
    step = max(1, elements) * extent.dtype.itemsize
    blocks = read_blocks(
        lambda start, view: read_window(handle, window, extent.offset + start, view), extent.nbytes, step
    )
    for raw in blocks:
        yield convert(raw.view(extent.dtype), dtype)


def iter_dataset(
    ds: h5py.Dataset,
    key: str,
    label: str,
    limit: int,
    elements: int,
    raw: tuple[BinaryIO, ByteWindow] | None = None,
) -> Iterator[np.ndarray]:
    """The dataset's elements in C order as 1-D blocks of at most `elements`, memory bounded by a block (by one
    row of decoded chunks, at most MAX_SLAB_BYTES, for a compressed dataset). With `raw` (an open handle on the
    file's window), a contiguous dataset is read from the file directly, its blocks views of one reused buffer
    (each valid until the next is asked for, as a bundle's)."""
    shape, dtype = check_dataset(ds.id, key, label, limit)
    size = math.prod(shape)
    if ds.shape is None or size == 0:
        return
    extent = None if raw is None else contiguous_extent(ds.id, shape, raw[1], f"{label}: dataset {key}")
    if raw is not None and extent is not None:
        yield from _raw_blocks(raw[0], raw[1], extent, dtype, elements)
        return
    plan = _Chunked.of(ds.id, f"{label}: dataset {key}")
    if plan is None and (not shape or size <= elements):
        yield from _split(convert(ds[()], dtype).reshape(-1), elements)
        return
    row_items = math.prod(shape[1:])
    if plan is None:
        step = max(1, elements // max(row_items, 1))
        for start in range(0, shape[0], step):
            yield from _split(convert(ds[start : start + step], dtype).reshape(-1), elements)
        return
    yield from _iter_chunked(plan, dtype, row_items, elements)


def _iter_chunked(plan: _Chunked, dtype: str, row_items: int, elements: int) -> Iterator[np.ndarray]:
    row_bytes = row_items * plan.dtype.itemsize
    if row_bytes > MAX_SLAB_BYTES:
        raise CorruptCheckpointError(
            f"{plan.where}: one row of its compressed chunks holds {row_bytes} bytes, more than ckpt-tools "
            f"decodes at once ({MAX_SLAB_BYTES})"
        )
    rows = plan.stored()
    height = max(1, min(plan.chunk[0], MAX_SLAB_BYTES // max(row_bytes, 1)))
    slab = np.empty((height, *plan.shape[1:]), dtype=plan.dtype)
    for row0 in range(0, plan.shape[0], height):
        part = slab[: min(height, plan.shape[0] - row0)]
        plan.fill_into(part, row0, rows)
        yield from _split(convert(part, dtype).reshape(-1).copy(), elements)


def _iter_stored_chunks(plan: _Chunked, dtype: str, elements: int) -> Iterator[np.ndarray]:
    """A compressed dataset's values in storage order, one decoded chunk at a time (each clipped to the dataset;
    the elements of chunks never written come last, as the fill value): for checks that need every value but
    not their order."""
    covered = 0
    for row in plan.stored().values():
        for offset, _ in row:
            inside = tuple(slice(0, min(c, s - o)) for o, c, s in zip(offset, plan.chunk, plan.shape, strict=True))
            values = np.ascontiguousarray(plan.decoded(offset)[inside]).reshape(-1)
            covered += int(values.size)
            yield from _split(convert(values, dtype), elements)
    missing = math.prod(plan.shape) - covered
    for start in range(0, missing, elements):
        yield convert(np.full(min(elements, missing - start), plan.fill[0], dtype=plan.dtype), dtype)


def _split(flat: np.ndarray, elements: int) -> Iterator[np.ndarray]:
    for start in range(0, int(flat.size), elements):
        yield flat[start : start + elements]


def make_loader(opener: Opener, raw: bytes, label: str, limit: int) -> Callable[[], np.ndarray]:
    """A loader that opens the file, reads one dataset and closes the file again."""

    def load() -> np.ndarray:
        with translate_errors(label), opener() as f:
            return read_dataset(f, raw, label, limit)

    return load


def make_chunker(
    opener: Opener, raw: bytes, label: str, limit: int, window: ByteWindow | None = None
) -> Callable[[int], Iterator[np.ndarray]]:
    """A chunker (see model.Chunker) that opens the file and streams one dataset block by block (contiguous
    datasets straight from `window`, when given)."""

    def chunks(elements: int) -> Iterator[np.ndarray]:
        with translate_errors(label), opener() as f:
            ds = resolve(f, raw, label)
            if window is None:
                yield from iter_dataset(ds, decode(raw), label, limit, max(1, elements))
                return
            with window.open() as handle:
                yield from iter_dataset(ds, decode(raw), label, limit, max(1, elements), (handle, window))

    return chunks


@dataclass(frozen=True)
class FileSource:
    """Where the variables of one HDF5 file load from: its opener, the label messages use, its size cap, and
    the window its bytes lie in (for direct reads of contiguous datasets; None: through h5py only)."""

    opener: Opener
    label: str
    limit: int
    window: ByteWindow | None = None

    def variable(
        self, info: DatasetInfo, name: str, role: Any, slot_of: str | None = None, slot: str | None = None
    ) -> Variable:
        """A variable of this file whose value is read (and re-checked) only when asked for; numbers stream."""
        chunker = None
        if info.dtype != "string":
            chunker = make_chunker(self.opener, info.raw, self.label, self.limit, self.window)
        return Variable(
            info.key,
            name,
            info.shape,
            info.dtype,
            role,
            slot_of,
            slot,
            make_loader(self.opener, info.raw, self.label, self.limit),
            chunker,
        )


def read_scalar_int(f: h5py.File, info: DatasetInfo, label: str, limit: int) -> int | None:
    """An integer counter's value (iteration counters), or None when it is not a finite scalar number. Reads at
    most one chunk of at most CHUNK_OVERHANG bytes (a compressed counter is decoded with its size bounded)."""
    if info.shape not in ((), (1,)) or info.dtype not in COUNTER_DTYPES:
        return None
    value = read_dataset(f, info.raw, label, limit).reshape(-1)[0]
    if not np.isfinite(value):
        return None
    try:
        return int(value)
    except (OverflowError, ValueError):
        return None


def sniff_hdf5(path: Path, layout_reason: Callable[[h5py.File], str | None], corrupt_ok: bool) -> str | None:
    """Shared sniff of the HDF5 readers: magic bytes, then `layout_reason` on the open file. A file h5py cannot
    open is accepted when `corrupt_ok` (its name says it is ours), so that open() reports it as corrupt."""
    reason = magic.hdf5_prefilter(path)
    if reason is not None:
        return reason
    try:
        with open_h5(path, str(path)) as f, translate_errors(str(path)):
            return layout_reason(f)
    except CkptToolsError:
        return None if corrupt_ok else "HDF5 magic bytes but h5py cannot open it"


def verify_file(path: Path) -> str:
    """The `verify` hook of the HDF5 readers: every dataset read in full, once, in bounded blocks (contiguous
    data straight from the file, compressed chunks decoded and checked by ckpt-tools one chunk at a time),
    through the same link-refusing, lock-free opener and size checks the readers use. A BlockObserver set with
    `shards.observing` is handed the values read."""
    return f"{verify_hdf5(path)} HDF5 datasets read in full"


def verify_hdf5(path: Path, label: str | None = None, identity: tuple[Any, ...] = ()) -> int:
    """verify_file's pass over the file at `path` (named `label` in messages, checked by h5guard under `identity`
    when given); the number of datasets."""
    label = label or str(path)
    window = ByteWindow.whole(path)
    with open_h5(path, label, identity) as f, window.open() as handle:
        return verify_datasets(f, label, size_cap(window.length), (handle, window))


def stream_window(f: h5py.File, label: str, limit: int, raw: tuple[BinaryIO, ByteWindow], crc: int) -> frozenset[bytes]:
    """Read the whole window once, in order, checking its zip CRC-32 (`crc`) over every byte, and hand the
    values of the contiguous datasets to the current BlockObserver from the same blocks; the raw paths of the
    datasets so covered (the others, compressed or overlapping, are left to verify_datasets)."""
    handle, window = raw
    spans = _disjoint_extents(f, label, limit, window)
    observer = current_observer()
    watched = {info.key for info, _ in spans if observer is not None and observer.wants(info.key)}
    crc32 = _BackgroundCrc32()
    try:
        with POOL.borrowed(CHUNK) as first, POOL.borrowed(CHUNK) as second:
            buffers, busy = (first, second), [crc32.idle, crc32.idle]
            for index, (start, stop, span) in enumerate(_segments(spans, window.length)):
                slot = index % 2
                busy[slot].result()  # the CRC of what this buffer held is done: it may be refilled
                piece = buffers[slot][: stop - start]
                read_window(handle, window, start, piece)
                busy[slot] = crc32.add(piece)
                if span is not None and observer is not None and span[0].key in watched:
                    observer.block(span[0].key, convert(piece.view(span[1].dtype), span[0].dtype))
            computed = crc32.result()
    finally:
        crc32.close()
    for key in watched:  # HDF5 keeps no checksum per dataset: a member CRC mismatch is the file's problem
        assert observer is not None
        observer.done(key, None)
    if computed != crc:
        raise CorruptCheckpointError(f"{label}: CRC-32 mismatch (zip stores {crc:08x}, the data gives {computed:08x})")
    return frozenset(info.raw for info, _ in spans)


@functools.cache
def zip_crc32() -> Callable[[Any, int], int]:
    """zlib-ng's CRC-32 (SIMD, about 4x the stdlib's 3 GB/s here, same value), else the stdlib's; imported on
    first use, not at every command's start-up."""
    try:
        from zlib_ng import zlib_ng
    except (ImportError, OSError):  # absent, or its shared library unloadable
        return zlib.crc32
    crc: Callable[[Any, int], int] = zlib_ng.crc32
    return crc


class _BackgroundCrc32:
    """The zip CRC-32 of a stream of blocks, computed in one helper thread (zlib and zlib-ng release the GIL)
    while the caller reads the next block and checks its values; blocks must stay unchanged until their future is
    done."""

    def __init__(self) -> None:
        self._value = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ckpt-crc32")
        self.idle: Future[None] = Future()
        self.idle.set_result(None)

    def add(self, block: np.ndarray) -> Future[None]:
        return self._pool.submit(self._extend, block)

    def _extend(self, block: np.ndarray) -> None:
        self._value = zip_crc32()(memoryview(block.data), self._value)

    def result(self) -> int:
        """The CRC-32 of every block added, once the helper has caught up."""
        self._pool.submit(lambda: None).result()
        return self._value

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _disjoint_extents(f: h5py.File, label: str, limit: int, window: ByteWindow) -> list[tuple[DatasetInfo, Extent]]:
    """The contiguous datasets of the file by position, each sharing no byte with an earlier one."""
    found = []
    for info in scan(f, label, limit):
        if info.dtype == "string":
            continue
        dsid = h5py.h5d.open(f.id, info.raw)
        extent = contiguous_extent(dsid, info.shape, window, f"{label}: dataset {info.key}")
        if extent is not None:
            found.append((info, extent))
    found.sort(key=lambda pair: (pair[1].offset, pair[1].nbytes))
    kept: list[tuple[DatasetInfo, Extent]] = []
    reach = 0
    for info, extent in found:
        if extent.offset >= reach:
            kept.append((info, extent))
            reach = extent.offset + extent.nbytes
    return kept


def _segments(
    spans: list[tuple[DatasetInfo, Extent]], length: int
) -> Iterator[tuple[int, int, tuple[DatasetInfo, Extent] | None]]:
    """[start, stop) pieces of at most CHUNK bytes covering [0, length) in order, cut at every dataset's start
    and end: each lies inside one dataset (given with it, its pieces starting on element boundaries) or
    outside all (None)."""
    pos = 0
    for span in spans:
        begin, end = span[1].offset, span[1].offset + span[1].nbytes
        for start in range(pos, begin, CHUNK):
            yield start, min(start + CHUNK, begin), None
        for start in range(begin, end, CHUNK):
            yield start, min(start + CHUNK, end), span
        pos = max(pos, end)
    for start in range(pos, length, CHUNK):
        yield start, min(start + CHUNK, length), None


def verify_datasets(
    f: h5py.File, label: str, limit: int, raw: tuple[BinaryIO, ByteWindow] | None, skip: frozenset[bytes] = frozenset()
) -> int:
    """Read every dataset of an open file once (but those whose raw paths are in `skip`: a caller read them
    already), raising on the first problem; the number of datasets. Values go to the current BlockObserver."""
    observer = current_observer()
    with translate_errors(label):
        infos = scan(f, label, limit)
        for info in infos:
            if info.raw in skip:
                continue
            watched = observer if observer is not None and observer.wants(info.key) else None
            try:
                for block in _verify_blocks(f, info, label, limit, raw):
                    if watched is not None:
                        watched.block(info.key, block)
            except _READ_ERRORS as exc:
                if watched is not None:
                    watched.done(info.key, describe_error(exc))
                raise
            if watched is not None:
                watched.done(info.key, None)
    return len(infos)


def _verify_blocks(
    f: h5py.File, info: DatasetInfo, label: str, limit: int, raw: tuple[BinaryIO, ByteWindow] | None
) -> Iterator[np.ndarray]:
    """Every value of one dataset, in blocks of at most CHUNK bytes (compressed: one chunk), in any order."""
    if info.dtype == "string":
        read_dataset(f, info.raw, label, limit)
        return
    ds = resolve(f, info.raw, label)
    elements = max(1, CHUNK // max(ds.id.dtype.itemsize, 1))
    plan = _Chunked.of(ds.id, f"{label}: dataset {info.key}")
    if plan is not None and plan.dtype.kind != "O" and h5py.check_vlen_dtype(plan.dtype) is None:
        check_dataset(ds.id, info.key, label, limit)
        yield from _iter_stored_chunks(plan, info.dtype, elements)
        return
    yield from iter_dataset(ds, info.key, label, limit, elements, raw)
