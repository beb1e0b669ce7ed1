"""Shared HDF5 plumbing for the Keras readers: magic bytes, safe read-only opening, link-checked traversal, caps."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.model import COUNTER_DTYPES, Variable
from ckpt_tools.readers import magic

# A dataset stored without compression cannot hold more than the file does; we allow SIZE_FACTOR times the file
# size plus SIZE_SLACK (fill-value-only datasets, odd layouts) and refuse anything larger before allocating it.
# Filtered (compressed) chunked datasets are judged by their allocated storage instead: deflate cannot beat
# about 1032:1, so more than COMPRESSION_RATIO times the stored bytes (plus SIZE_SLACK) is refused too.
SIZE_FACTOR = 100
SIZE_SLACK = 64 << 20
COMPRESSION_RATIO = 1100
MAX_OBJECTS = 1_000_000
MAX_DEPTH = 64

# Keras 3 marks the dtypes numpy lacks with a "dtype" attribute on an opaque dataset; tf_keras writes bfloat16
# as a bare 2-byte opaque type with no attribute (TensorFlow reports it as bfloat16).
_OPAQUE_DTYPES = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}

Opener = Callable[[], AbstractContextManager[h5py.File]]


def size_cap(file_size: int) -> int:
    """The largest uncompressed dataset (bytes) a file of `file_size` bytes may declare."""
    return SIZE_FACTOR * file_size + SIZE_SLACK


def decode(name: bytes | str) -> str:
    """A readable name; bytes that are not UTF-8 come out as backslash escapes."""
    return name.decode("utf-8", errors="backslashreplace") if isinstance(name, bytes) else name


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def translate_errors(label: str) -> Iterator[None]:
    """Turn h5py/OS errors raised while parsing into one-line CorruptCheckpointErrors."""
    try:
        yield
    except CkptToolsError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptCheckpointError(f"{label}: unreadable HDF5 data ({first_line(exc)})") from exc


def open_h5(target: Path | IO[bytes], label: str) -> h5py.File:
    """Open read-only without file locking (nothing is ever written)."""
    with translate_errors(label):
        return h5py.File(target, "r", locking=False)


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


def names(group: h5py.Group) -> list[bytes]:
    """Link names of a group, raw, in name order."""
    return sorted(bytes(n) for n in group.id)


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


def _attr_value(obj: h5py.HLObject, name: str) -> Any:
    try:
        if name not in obj.attrs:
            return None
        return obj.attrs[name]
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, UnicodeDecodeError):
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
    """A list-of-strings attribute, joining Keras-2's split chunks `name0`, `name1`, ...; None when absent."""
    values = _attr_value(obj, name)
    if values is None and _attr_value(obj, f"{name}0") is not None:
        chunks = []
        index = 0
        while (chunk := _attr_value(obj, f"{name}{index}")) is not None:
            chunks.extend(np.asarray(chunk).reshape(-1).tolist())
            index += 1
        values = chunks
    if values is None:
        return None
    return [decode(bytes(v)) if isinstance(v, (bytes, np.bytes_)) else str(v) for v in np.asarray(values).reshape(-1)]


def dtype_name(dsid: h5py.h5d.DatasetID) -> str:
    """The numpy-style dtype name ckpt-tools reports for a dataset."""
    dt = dsid.dtype
    if h5py.check_string_dtype(dt) is not None or dt.kind in "SU":
        return "string"
    if dt.kind in "fiubc" and dt.names is None:
        name: str = np.dtype(dt.str).name
        return name
    if dt.kind == "V" and dt.names is None and dt.subdtype is None:
        marked = attr_text(h5py.Dataset(dsid), "dtype")
        if marked in _OPAQUE_DTYPES and _OPAQUE_DTYPES[marked] == dt.itemsize:
            return marked
        if marked is None and dt.itemsize == 2:
            return "bfloat16"
    return str(dt)


def check_dataset(dsid: h5py.h5d.DatasetID, key: str, label: str, limit: int) -> tuple[tuple[int, ...], str]:
    """Refuse external/virtual storage and absurd declared sizes; return (shape, dtype name)."""
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise UnsafeInputError(f"{label}: dataset {key} is a virtual dataset (refused: it reads other files)")
    if plist.get_external_count() > 0:
        raise UnsafeInputError(f"{label}: dataset {key} keeps its data in external files (refused)")
    space = dsid.get_space()
    null = space.get_simple_extent_type() == h5py.h5s.NULL
    shape = (0,) if null else tuple(int(d) for d in space.shape)
    dtype = dtype_name(dsid)
    nbytes = math.prod(shape) * max(dsid.dtype.itemsize, 1)
    if layout == h5py.h5d.CHUNKED and plist.get_nfilters() > 0:
        cap = COMPRESSION_RATIO * int(dsid.get_storage_size()) + SIZE_SLACK
    else:
        cap = limit
    if nbytes > cap:
        raise CorruptCheckpointError(
            f"{label}: dataset {key} declares shape {list(shape)} {dtype} ({nbytes} bytes), "
            f"more than the file can hold (cap {cap} bytes)"
        )
    return shape, dtype


def _refuse_links(f: h5py.File, label: str) -> None:
    """External and user-defined links anywhere in the file are refused (soft links are simply not followed)."""
    found: list[bytes] = []
    count = 0

    def visit(name: bytes, info: Any) -> Any:  # exceptions must not cross h5py's C callback: stop, then raise
        nonlocal count
        count += 1
        if info.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            found.append(bytes(name))
            return True
        return True if count > MAX_OBJECTS else None

    f.id.links.visit(visit, info=True)
    if found:
        raise UnsafeInputError(f"{label}: external or user-defined link {decode(found[0])!r} refused")
    if count > MAX_OBJECTS:
        raise CorruptCheckpointError(f"{label}: more than {MAX_OBJECTS} HDF5 links")


def scan(f: h5py.File, label: str, limit: int, groups: list[str] | None = None) -> list[DatasetInfo]:
    """Every dataset reachable through hard links, each object once (HDF5's own visit order: by name);
    the paths of groups are appended to `groups` when given."""
    out: list[DatasetInfo] = []
    objects: list[tuple[bytes, int, int]] = []

    def visit(name: bytes, info: Any) -> Any:
        objects.append((bytes(name), int(info.type), int(info.addr)))
        return True if len(objects) > MAX_OBJECTS else None

    with translate_errors(label):
        _refuse_links(f, label)
        h5py.h5o.visit(f.id, visit, info=True)
        if len(objects) > MAX_OBJECTS:
            raise CorruptCheckpointError(f"{label}: more than {MAX_OBJECTS} HDF5 objects")
        for raw, kind, address in objects:
            if kind == h5py.h5o.TYPE_GROUP and groups is not None:
                groups.append(decode(raw))
            if kind != h5py.h5o.TYPE_DATASET:
                continue
            if raw.count(b"/") >= MAX_DEPTH:
                raise CorruptCheckpointError(f"{label}: HDF5 groups nested deeper than {MAX_DEPTH} levels")
            key = decode(raw)
            shape, dtype = check_dataset(h5py.h5d.open(f.id, raw), key, label, limit)
            out.append(DatasetInfo(key, raw, shape, dtype, address))
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


def read_dataset(f: h5py.File, raw: bytes, label: str, limit: int) -> np.ndarray:
    """Read one dataset fully after re-checking its layout and declared size."""
    with translate_errors(label):
        ds = resolve(f, raw, label)
        _, dtype = check_dataset(ds.id, decode(raw), label, limit)
        if ds.shape is None:
            return np.empty((0,), dtype=ds.dtype)
        return convert(ds[()], dtype)


def make_loader(opener: Opener, raw: bytes, label: str, limit: int) -> Callable[[], np.ndarray]:
    """A loader that opens the file, reads one dataset and closes the file again."""

    def load() -> np.ndarray:
        with translate_errors(label), opener() as f:
            return read_dataset(f, raw, label, limit)

    return load


@dataclass(frozen=True)
class FileSource:
    """Where the variables of one HDF5 file load from: its opener, the label messages use, and its size cap."""

    opener: Opener
    label: str
    limit: int

    def variable(
        self, info: DatasetInfo, name: str, role: Any, slot_of: str | None = None, slot: str | None = None
    ) -> Variable:
        """A variable of this file whose value is read (and re-checked) only when asked for."""
        return Variable(
            info.key,
            name,
            info.shape,
            info.dtype,
            role,
            slot_of,
            slot,
            make_loader(self.opener, info.raw, self.label, self.limit),
        )


def read_scalar_int(f: h5py.File, info: DatasetInfo, label: str, limit: int) -> int | None:
    """An integer counter's value (iteration counters), or None when it is not a finite scalar number."""
    if info.shape not in ((), (1,)) or info.dtype not in COUNTER_DTYPES:
        return None
    value = read_dataset(f, info.raw, label, limit).reshape(-1)[0]
    if not np.isfinite(value):
        return None
    return int(value)


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


VERIFY_BLOCK = 64 << 20


def verify_file(path: Path) -> str:
    """The `verify` hook of the HDF5 readers: every dataset read in full, in bounded blocks, through the same
    link-refusing, lock-free opener and size checks the readers use."""
    label = str(path)
    limit = size_cap(require_file(path))
    with translate_errors(label), open_h5(path, label) as f:
        infos = scan(f, label, limit)
        for info in infos:
            _read_in_blocks(resolve(f, info.raw, label))
    return f"{len(infos)} HDF5 datasets read in full"


def _read_in_blocks(dataset: h5py.Dataset) -> None:
    """Read a dataset completely, in slabs along its first axis so memory stays bounded."""
    if dataset.shape is None or dataset.size == 0:
        return
    if not dataset.shape or dataset.dtype.itemsize * dataset.size <= VERIFY_BLOCK:
        dataset[()]
        return
    rows = dataset.shape[0]
    per_row = max(1, dataset.dtype.itemsize * (dataset.size // max(rows, 1)))
    step = max(1, VERIFY_BLOCK // per_row)
    for start in range(0, rows, step):
        dataset[start : start + step]
