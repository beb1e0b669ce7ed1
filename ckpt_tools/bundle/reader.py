"""Native reader for TensorFlow tensor bundles (`PREFIX.index` + `PREFIX.data-K-of-N`); never imports TF."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from ckpt_tools.bundle import protos
from ckpt_tools.bundle.orderedcode import encode_tensor_name_slice
from ckpt_tools.bundle.shards import CHUNK, BlockObserver, Guard, ShardFiles, aligned_empty, current_observer
from ckpt_tools.bundle.table import crc32c, read_table_info, unmask_crc
from ckpt_tools.bundle.values import (
    SCALAR_CODES,
    ValueFormatError,
    decode_fixed,
    decode_scalar,
    decode_strings,
    decode_variants,
    fixed_dtype,
    fixed_itemsize,
    string_values,
)
from ckpt_tools.errors import ChecksumError, CkptToolsError, CorruptCheckpointError, MissingFileError, UsageError
from ckpt_tools.storage import as_path, suffixed

if TYPE_CHECKING:
    import numpy as np

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
BUNDLE_VERSION = 1  # the format version this reader implements (TF's kTensorBundleVersion)
# Bundles name their shards `-00000-of-NNNNN`; every file is probed by verification, so a header may not
# announce more than this many (a real one has one shard per device or per size limit, rarely over a thousand).
MAX_SHARDS = 1 << 16
MAX_RANK = 254
MAX_SLICES = 1 << 16  # stored slices of one partitioned tensor
# Slices are checked for overlap on the grid their boundaries cut the full shape into (one numpy block write per
# slice) when it has at most this many cells, else pairwise (vectorized) when there are at most MAX_PAIRWISE.
MAX_GRID_CELLS = 1 << 22
MAX_PAIRWISE_SLICES = 1 << 12
# Reads that check for shared bytes by a pass over the entries before they are sorted by position once.
LINEAR_ALIAS_CHECKS = 4

_SHARD_MISSING = "data shard missing"
Extents = tuple[tuple[int, int], ...]  # (start, length) per dimension; length -1 = the whole dimension


@dataclass(frozen=True)
class BundleVersion:
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...] = ()


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    endianness: str  # "little" | "big"
    version: BundleVersion


@dataclass(frozen=True)
class BundleEntry:
    """One index record. For a partitioned tensor `slices` is non-empty and shard_id/offset/size/crc32c are unused."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    slices: tuple[Extents, ...] = ()

    @property
    def partitioned(self) -> bool:
        return bool(self.slices)

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


def _key_text(raw: bytes) -> str:
    """A key as text; bytes that are not UTF-8 become backslash escapes (as HDF5 names do), so every key can be
    printed and written as JSON. The raw bytes stay available through `BundleReader.raw_key`."""
    return raw.decode("utf-8", "backslashreplace")


def _plain_head(head: bytes) -> tuple[str, tuple[int, ...]] | None:
    """The dtype name and shape a value's head (its dtype and shape fields) declares, or None when the shape is
    anything but a plausible known one (the value then goes through `_parse_entry` and its messages)."""
    try:
        proto = protos.BundleEntryProto.FromString(head)
    except DecodeError:
        return None
    shape_proto = proto.shape
    shape = tuple([d.size for d in shape_proto.dim])
    if shape_proto.unknown_rank or len(shape) > MAX_RANK or (shape and min(shape) < 0):
        return None
    return protos.dtype_name(proto.dtype), shape


def _plain_entry(
    raw_key: bytes, head: tuple[str, tuple[int, ...]], value: bytes, split: int, num_shards: int
) -> BundleEntry | None:
    """The entry whose value continues after its head (`value[:split]`) with fields other than the dtype, shape
    and slices, naming an existing shard at a non-negative offset and size; None otherwise (left to
    `_parse_entry` and its messages)."""
    try:
        tail = protos.BundleEntryTail.FromString(value[split:])
    except DecodeError:
        return None
    shard_id, offset, size = tail.shard_id, tail.offset, tail.size
    if not 0 <= shard_id < num_shards or offset < 0 or size < 0 or tail.WhichOneof("again") is not None:
        return None
    entry: BundleEntry = object.__new__(BundleEntry)  # a frozen dataclass's fields, without its __init__
    fields = {"key": raw_key.decode("utf-8", "backslashreplace"), "dtype": head[0], "shape": head[1]}
    fields.update(shard_id=shard_id, offset=offset, size=size, crc32c=tail.crc32c, slices=())
    object.__setattr__(entry, "__dict__", fields)
    return entry


class BundleReader:
    """Reads a bundle's index eagerly and tensors on demand, with TensorFlow's checksums and layouts."""

    def __init__(self, prefix: Path | str, guard: Guard | None = None) -> None:
        """`guard(path, what)` is called before the index and each data shard is first looked at, and may
        refuse it by raising (readers keep reads inside the artifact's folder with it)."""
        self.prefix = as_path(prefix)
        self.index_path = suffixed(self.prefix, ".index")
        self._guard = guard
        if not self.index_path.exists():
            raise MissingFileError(f"{self.index_path}: bundle index not found")
        if guard is not None:
            guard(self.index_path, "bundle index")
        rows, self.index_compression = read_table_info(self.index_path)
        # Shard handles and sizes kept for the reader's lifetime: reading 1000 small tensors should not mean
        # 1000 opens and stats. Closed when the reader is collected.
        self._files = ShardFiles(guard)
        weakref.finalize(self, self._files.close)
        if not rows or rows[0][0] != b"":
            raise CorruptCheckpointError(f"{self.index_path}: bundle index has no header entry")
        self.header = self._parse_header(rows[0][1])
        self._data_paths: dict[int, Path] = {}
        self.entries: dict[str, BundleEntry] = {}
        self._raw_keys: dict[str, bytes] = {}
        self._slice_entries: dict[bytes, BundleEntry] = {}
        del rows[0]
        parsed = self._parse_entries(rows)
        # the hidden key of each slice of each partitioned tensor, in the order its entry lists them
        self._slice_keys = {k: [encode_tensor_name_slice(k, x) for x in e.slices] for k, e in parsed if e.slices}
        self._file_entries(parsed)
        self._spans: _Spans | None = None  # stored entries by position, built after the first few reads
        self._unaliased_checks = 0

    def _file_entries(self, parsed: list[tuple[bytes, BundleEntry]]) -> None:
        """Sort parsed entries into tensors (`entries`) and stored slices (named after their tensor)."""
        if not self._slice_keys:  # no partitioned tensor: every entry is a tensor of its own
            self.entries = {entry.key: entry for _, entry in parsed}
            self._raw_keys = {entry.key: raw_key for raw_key, entry in parsed}
            if len(self.entries) == len(parsed):
                return
            self.entries, self._raw_keys = {}, {}
        hidden = {
            slice_key: f"{entry.key} slice {[list(e) for e in extents]}"
            for raw_key, entry in parsed
            for slice_key, extents in zip(self._slice_keys.get(raw_key, ()), entry.slices, strict=False)
        }
        for raw_key, entry in parsed:
            if raw_key in hidden:  # a stored slice: named for messages after its tensor and its extents
                self._slice_entries[raw_key] = dataclasses.replace(entry, key=hidden[raw_key])
            elif entry.key in self.entries:
                raise self._corrupt(f"two keys read as {entry.key!r} (one of them is not UTF-8)")
            else:
                self.entries[entry.key] = entry
                self._raw_keys[entry.key] = raw_key

    # ----------------------------------------------------------------- index parsing
    def _corrupt(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.index_path}: {message}")

    def _parse_header(self, value: bytes) -> BundleHeader:
        try:
            proto = protos.BundleHeaderProto.FromString(value)
        except DecodeError as exc:
            raise self._corrupt("unparsable bundle header") from exc
        if not 0 <= proto.num_shards <= MAX_SHARDS:
            raise self._corrupt(f"implausible shard count {proto.num_shards}")
        if proto.endianness not in (protos.LITTLE_ENDIAN, protos.BIG_ENDIAN):
            raise self._corrupt(f"unknown endianness {proto.endianness}")
        version = BundleVersion(proto.version.producer, proto.version.min_consumer, tuple(proto.version.bad_consumers))
        if version.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in version.bad_consumers:
            raise self._corrupt(
                f"bundle format version needs a reader of version >= {version.min_consumer}, this one is "
                f"{BUNDLE_VERSION}"
            )
        endianness = "big" if proto.endianness == protos.BIG_ENDIAN else "little"
        return BundleHeader(proto.num_shards, endianness, version)

    def _parse_entries(self, rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, BundleEntry]]:
        """Every row's entry. Values laid out as TensorFlow writes them (dtype and shape first, each field once,
        in field order, no slices) take a fast path: the dtype-and-shape head, shared by many entries, is parsed
        once, the rest decoded directly; any other value is parsed by protobuf, with every check."""
        heads: dict[bytes, tuple[str, tuple[int, ...]] | None] = {}
        num_shards = self.header.num_shards
        out = []
        for raw_key, value in rows:
            entry = None
            if len(value) > 3 and value[0] == 8 and value[2] == 18 and value[1] < 128 and value[3] < 128:
                split = value[3] + 4
                head = value[:split]
                if head in heads:
                    known = heads[head]
                else:
                    known = heads[head] = _plain_head(head)
                if known is not None:
                    entry = _plain_entry(raw_key, known, value, split, num_shards)
            out.append((raw_key, entry) if entry is not None else self._parse_entry(raw_key, value))
        return out

    def _parse_entry(self, raw_key: bytes, value: bytes) -> tuple[bytes, BundleEntry]:
        key = _key_text(raw_key)
        try:
            proto = protos.BundleEntryProto.FromString(value)
        except DecodeError as exc:
            raise self._corrupt(f"entry {key!r} is not parsable") from exc
        shape_proto = proto.shape
        shape = tuple([d.size for d in shape_proto.dim])
        if shape_proto.unknown_rank or len(shape) > MAX_RANK:
            raise self._corrupt(f"entry {key!r} has an invalid shape")
        if shape and min(shape) < 0:
            raise self._corrupt(f"entry {key!r} has a negative dimension in shape {list(shape)}")
        slices: tuple[Extents, ...] = ()
        if len(proto.slices) > MAX_SLICES:
            raise self._corrupt(f"entry {key!r} has {len(proto.slices)} slices (more than {MAX_SLICES})")
        if proto.slices:
            slices = tuple(
                tuple((e.start, e.length if e.HasField("length") else -1) for e in s.extent) for s in proto.slices
            )
        shard_id, offset, size = proto.shard_id, proto.offset, proto.size
        if not slices and not 0 <= shard_id < self.header.num_shards:
            raise self._corrupt(f"entry {key!r} names shard {shard_id} of {self.header.num_shards}")
        if offset < 0 or size < 0:
            raise self._corrupt(f"entry {key!r} has a negative offset or size")
        entry = BundleEntry(key, protos.dtype_name(proto.dtype), shape, shard_id, offset, size, proto.crc32c, slices)
        return raw_key, entry

    def _check_unaliased(self, entry: BundleEntry, path: Path) -> None:
        """Refuse an entry that shares bytes of its shard with another entry. A writer lays tensors out one after
        the other; entries pointing at the same bytes would let a small file stand for gigabytes (the slices of
        a partitioned tensor assembled, the same megabyte checksummed thousands of times)."""
        if not entry.size:
            return
        if self._spans is None and self._unaliased_checks < LINEAR_ALIAS_CHECKS:
            # the first few reads (an inspect reads the step alone) look through the entries, not sort them
            self._unaliased_checks += 1
            if not self._any_sharing(entry):
                return
        if self._spans is None:
            self._spans = _Spans(list(self._stored_entries()))
        other = self._spans.overlapping(entry)
        if other is not None:
            raise CorruptCheckpointError(
                f"{path}: tensor {entry.key!r} shares bytes with tensor {other.key!r} (bytes {entry.offset}.."
                f"{entry.offset + entry.size} and {other.offset}..{other.offset + other.size}; entries never overlap "
                "in a real bundle)"
            )

    def _any_sharing(self, entry: BundleEntry) -> bool:
        """Whether another stored entry with bytes shares some of `entry`'s (one pass over the entries)."""
        shard, start, end = entry.shard_id, entry.offset, entry.offset + entry.size
        return any(
            o.size and o.offset < end and start < o.offset + o.size and o.shard_id == shard and o is not entry
            for o in self._stored_entries()
        )

    def raw_key(self, key: str) -> bytes:
        """The stored bytes of a listed key (differs from `key.encode()` only for keys that are not UTF-8)."""
        return self._raw_keys.get(key, key.encode("utf-8"))

    # ----------------------------------------------------------------- files
    def data_path(self, shard_id: int) -> Path:
        """`PREFIX.data-0000K-of-0000N` for shard K of N."""
        path = self._data_paths.get(shard_id)
        if path is None:
            path = suffixed(self.prefix, f".data-{shard_id:05d}-of-{self.header.num_shards:05d}")
            self._data_paths[shard_id] = path
        return path

    @property
    def data_files(self) -> tuple[Path, ...]:
        return tuple(self.data_path(i) for i in range(self.header.num_shards))

    def _stored_entries(self) -> Iterator[BundleEntry]:
        """Every entry holding bytes: unpartitioned entries and the hidden per-slice entries."""
        yield from (e for e in self.entries.values() if not e.slices)
        yield from self._slice_entries.values()

    def missing_shards(self) -> list[Path]:
        """Data files that some entry points into but that do not exist."""
        used = sorted({e.shard_id for e in self._stored_entries()})
        return [path for path in map(self.data_path, used) if not path.is_file()]

    def _check_extent(self, entry: BundleEntry, files: ShardFiles) -> Path:
        """The entry's shard file, after checking it exists, the entry lies inside it and its size fits its shape."""
        path = self.data_path(entry.shard_id)
        file_size = files.size(path, entry.key)
        if entry.offset + entry.size > file_size:
            raise CorruptCheckpointError(
                f"{path}: tensor {entry.key!r} spans bytes {entry.offset}..{entry.offset + entry.size} but the "
                f"shard has {file_size} bytes"
            )
        itemsize = fixed_itemsize(entry.dtype)
        if itemsize is not None and entry.num_elements * itemsize != entry.size:
            raise CorruptCheckpointError(
                f"{path}: tensor {entry.key!r} declares shape {list(entry.shape)} of {entry.dtype} "
                f"({entry.num_elements * itemsize} bytes) but stores {entry.size} bytes"
            )
        if entry.dtype == "string" and entry.num_elements > entry.size:
            raise CorruptCheckpointError(
                f"{path}: string tensor {entry.key!r} declares {entry.num_elements} elements in {entry.size} bytes"
            )
        if entry.dtype == "variant" and entry.num_elements * 5 > entry.size:
            raise CorruptCheckpointError(
                f"{path}: variant tensor {entry.key!r} declares {entry.num_elements} elements in {entry.size} bytes"
            )
        if itemsize is None and entry.dtype not in ("string", "variant"):
            raise CorruptCheckpointError(f"{path}: tensor {entry.key!r} has unsupported dtype {entry.dtype}")
        self._check_unaliased(entry, path)
        return path

    def _checksum_error(self, path: Path, entry: BundleEntry, detail: str) -> ChecksumError:
        return ChecksumError(f"{path}: tensor {entry.key!r} (offset {entry.offset}, {entry.size} bytes): {detail}")

    # ----------------------------------------------------------------- values
    def read(self, key: str, verify: bool = True) -> np.ndarray:
        """The tensor stored under `key` (partitioned tensors are assembled from their slices)."""
        entry = self.entries.get(key)
        if entry is None:
            raise UsageError(f"{self.prefix}: no tensor {key!r} in this bundle")
        if entry.slices:
            return self._read_partitioned(entry, verify, self._files)
        return self._read_entry(entry, verify, self._files)

    def can_stream(self, key: str) -> bool:
        """Whether `iter_elements` reads `key` block by block (unpartitioned, fixed-size dtype)."""
        entry = self.entries.get(key)
        return entry is not None and not entry.slices and fixed_itemsize(entry.dtype) is not None

    def iter_elements(self, key: str, elements: int, verify: bool = True) -> Iterator[np.ndarray]:
        """The elements of `key` in order, as 1-D arrays of at most `elements`, one block in memory at a time.

        Blocks are views of one reused, page-aligned read buffer: each is valid until the next is requested
        (copy it to keep it). The CRC32C is checked after the
        last block (ChecksumError then); stopping early skips the check.
        """
        entry = self.entries.get(key)
        if entry is None:
            raise UsageError(f"{self.prefix}: no tensor {key!r} in this bundle")
        dtype = fixed_dtype(entry.dtype)
        if entry.slices or dtype is None:
            raise UsageError(f"{self.prefix}: tensor {key!r} cannot be streamed; use read()")
        big = self.header.endianness == "big"
        block = max(1, elements) * dtype.itemsize
        path = self._check_extent(entry, self._files)
        crc = 0
        for raw in self._files.blocks(path, entry.offset, entry.size, block):
            if verify:
                crc = crc32c(raw, crc)
            yield decode_fixed(raw, dtype, (len(raw) // dtype.itemsize,), big)
        if verify:
            self._check_crc(path, entry, crc)

    def holds_scalar(self, key: str) -> bool:
        """Whether `key` is a one-element tensor of a counter dtype, the tensors `scalar` reads."""
        entry = self.entries.get(key)
        return entry is not None and entry.num_elements == 1 and entry.dtype in SCALAR_CODES

    def scalar(self, key: str, verify: bool = True) -> int | float:
        """The value of a one-element tensor of a counter dtype (model.COUNTER_DTYPES), as `read(key)` holds it,
        read and checked the same way without numpy (a step or an epoch, read when listing)."""
        entry = self.entries.get(key)
        if entry is None:
            raise UsageError(f"{self.prefix}: no tensor {key!r} in this bundle")
        if not self.holds_scalar(key):
            raise UsageError(f"{self.prefix}: tensor {key!r} is not a one-element integer or float tensor")
        if entry.slices:  # TensorFlow never partitions a scalar; assembled as read() does
            value: int | float = self.read(key, verify).reshape(-1)[0].item()
            return value
        path, data = self._stored_bytes(entry)
        if verify:
            self._check_crc(path, entry, crc32c(data))
        return decode_scalar(data, entry.dtype, self.header.endianness == "big")

    def _stored_bytes(self, entry: BundleEntry) -> tuple[Path, bytes]:
        """An unpartitioned entry's shard and stored bytes, after `_check_extent` (small entries: no buffer pool)."""
        path = self._check_extent(entry, self._files)
        return path, b"".join(self._files.chunks(path, entry.offset, entry.size))

    def _check_crc(self, path: Path, entry: BundleEntry, crc: int) -> None:
        if crc != unmask_crc(entry.crc32c):
            raise self._checksum_error(
                path, entry, f"CRC32C mismatch (stored {unmask_crc(entry.crc32c):08x}, computed {crc:08x})"
            )

    def _read_entry(self, entry: BundleEntry, verify: bool, files: ShardFiles) -> np.ndarray:
        path = self._check_extent(entry, files)
        dtype = fixed_dtype(entry.dtype)
        big = self.header.endianness == "big"
        if dtype is not None:
            buf = aligned_empty(entry.size)
            files.read_into(path, entry.offset, buf)
            crc = 0
            for start in range(0, entry.size, CHUNK):
                crc = crc32c(buf[start : start + CHUNK], crc)
            if verify:
                self._check_crc(path, entry, crc)
            return decode_fixed(buf, dtype, entry.shape, big)
        data = b"".join(files.chunks(path, entry.offset, entry.size))
        with self._value_errors(path, entry):
            if entry.dtype == "string":
                values = decode_strings(data, entry.num_elements, entry.crc32c, big, verify)
            elif big:
                raise CorruptCheckpointError(f"{path}: variant tensor {entry.key!r} in a big-endian bundle")
            else:
                values = decode_variants(data, entry.num_elements, entry.crc32c, verify)
        return values.reshape(entry.shape)

    @contextlib.contextmanager
    def _value_errors(self, path: Path, entry: BundleEntry) -> Iterator[None]:
        """Bytes that do not decode, as the reader's errors: a ChecksumError, else a CorruptCheckpointError."""
        try:
            yield
        except ValueFormatError as exc:
            if exc.checksum:
                raise self._checksum_error(path, entry, str(exc)) from exc
            raise CorruptCheckpointError(f"{path}: tensor {entry.key!r}: {exc}") from exc

    def _slice_plan(self, entry: BundleEntry) -> list[tuple[tuple[slice, ...], BundleEntry]]:
        """Where each stored slice of a partitioned tensor goes; checks the slices tile the full shape."""
        raw_key = self.raw_key(entry.key)
        slice_keys = self._slice_keys.get(raw_key) or [encode_tensor_name_slice(raw_key, x) for x in entry.slices]
        plan: list[tuple[tuple[slice, ...], BundleEntry]] = []
        covered = 0
        for extents, slice_key in zip(entry.slices, slice_keys, strict=True):
            if len(extents) != len(entry.shape):
                raise self._corrupt(f"slice {list(extents)} of {entry.key!r} does not match rank {len(entry.shape)}")
            region = []
            for (start, length), dim in zip(extents, entry.shape, strict=True):
                if length == -1 and start == 0:
                    region.append(slice(0, dim))
                elif start < 0 or length < 0 or start + length > dim:
                    raise self._corrupt(f"slice {list(extents)} of {entry.key!r} exceeds shape {list(entry.shape)}")
                else:
                    region.append(slice(start, start + length))
            part = self._slice_entries.get(slice_key)
            if part is None:
                raise self._corrupt(f"slice {list(extents)} of {entry.key!r} has no entry")
            lengths = tuple(r.stop - r.start for r in region)
            if part.dtype != entry.dtype or part.shape != lengths:
                raise self._corrupt(
                    f"slice {list(extents)} of {entry.key!r} is stored as {part.dtype} {list(part.shape)}, "
                    f"expected {entry.dtype} {list(lengths)}"
                )
            plan.append((tuple(region), part))
            covered += math.prod(lengths)
        if covered != entry.num_elements:
            raise self._corrupt(f"slices of {entry.key!r} cover {covered} of {entry.num_elements} elements")
        try:
            disjoint = regions_disjoint([region for region, _ in plan])
        except ValueError as exc:
            raise self._corrupt(f"slices of {entry.key!r}: {exc}") from exc
        if not disjoint:
            raise self._corrupt(f"slices of {entry.key!r} overlap")
        return plan

    def _read_partitioned(self, entry: BundleEntry, verify: bool, files: ShardFiles) -> np.ndarray:
        plan = self._slice_plan(entry)
        for _, part in plan:  # every size is checked against its shard before the full tensor is allocated
            self._check_extent(part, files)
        import numpy as np

        dtype = fixed_dtype(entry.dtype)
        full = np.empty(entry.shape, dtype=object if dtype is None else dtype)
        for region, part in plan:
            full[region] = self._read_entry(part, verify, files)
        return full

    # ----------------------------------------------------------------- whole-bundle checks
    def _verify_entry(self, entry: BundleEntry, files: ShardFiles, sink: Callable[[np.ndarray], None] | None) -> None:
        """Check one stored entry's extent and CRC32C, reading it block by block into one pooled buffer; `sink`
        sees each block's decoded values (read once for both)."""
        dtype = fixed_dtype(entry.dtype)
        if dtype is None:
            self._read_entry(entry, True, files)
            return
        path = self._check_extent(entry, files)
        big = self.header.endianness == "big"
        crc = 0
        for raw in files.blocks(path, entry.offset, entry.size, CHUNK - CHUNK % dtype.itemsize):
            crc = crc32c(raw, crc)
            if sink is not None:
                sink(decode_fixed(raw, dtype, (len(raw) // dtype.itemsize,), big))
        if crc != unmask_crc(entry.crc32c):
            raise self._checksum_error(path, entry, "CRC32C mismatch")

    def verify_all(self, observer: BlockObserver | None = None) -> list[str]:
        """Check every tensor's extent, size and checksum without keeping values; one line per problem.

        Each byte is read once. `observer` (default: the one `shards.observing` set, if any) is handed the
        decoded blocks of the tensors it wants, and told for each whether its bytes verified."""
        observer = observer if observer is not None else current_observer()
        missing = self.missing_shards()
        problems = [f"{path}: data shard missing" for path in missing]
        missing_set = set(missing)
        with ShardFiles(self._guard) as files:
            for entry in self.entries.values():
                watched = observer if observer is not None and observer.wants(entry.key) else None
                problem = self._verify_tensor(entry, files, missing_set, watched)
                if problem is not None and problem != _SHARD_MISSING:
                    problems.append(problem)
                if watched is not None:
                    watched.done(entry.key, problem)
        return problems

    def _verify_tensor(
        self, entry: BundleEntry, files: ShardFiles, missing: set[Path], observer: BlockObserver | None
    ) -> str | None:
        """None when every stored part of `entry` verifies, else the problem (_SHARD_MISSING: already listed)."""
        sink = None if observer is None else functools.partial(observer.block, entry.key)
        problem = None
        try:
            parts = [p for _, p in self._slice_plan(entry)] if entry.slices else [entry]
            for part in parts:
                if self.data_path(part.shard_id) in missing:
                    problem = _SHARD_MISSING
                else:
                    self._verify_entry(part, files, sink)
        except CkptToolsError as exc:
            return str(exc)
        return problem

    def object_graph(self) -> Any | None:
        """The TrackableObjectGraph of a TF2 checkpoint, or None when the bundle has none."""
        entry = self.entries.get(OBJECT_GRAPH_KEY)
        if entry is None:
            return None
        if entry.dtype == "string" and entry.num_elements == 1 and not entry.slices:  # as TF writes it: no numpy
            path, data = self._stored_bytes(entry)
            with self._value_errors(path, entry):
                (raw,) = string_values(data, 1, entry.crc32c, self.header.endianness == "big", True)
        else:
            value = self.read(OBJECT_GRAPH_KEY)
            if value.dtype != object or value.size != 1:
                raise self._corrupt(f"{OBJECT_GRAPH_KEY} is not a scalar string")
            raw = value.reshape(-1)[0]
        try:
            return protos.TrackableObjectGraph.FromString(raw)
        except DecodeError as exc:
            raise self._corrupt(f"{OBJECT_GRAPH_KEY} does not parse as a TrackableObjectGraph") from exc

    def close(self) -> None:
        """Close the shard handles (a later read reopens them)."""
        self._files.close()

    def __repr__(self) -> str:
        return f"BundleReader({str(self.prefix)!r}, {len(self.entries)} entries)"


class _Spans:
    """The stored entries with bytes, sorted by (shard, offset): which other entry, if any, shares bytes with a
    given one (its successor, or an earlier entry reaching past its start), in O(log n)."""

    def __init__(self, entries: list[BundleEntry]) -> None:
        self.entries = sorted((e for e in entries if e.size), key=lambda e: (e.shard_id, e.offset, e.size))
        self.keys = [(e.shard_id, e.offset, e.size) for e in self.entries]
        self.reach: list[int] = []  # reach[i]: the entry reaching furthest among entries[: i + 1] of i's shard
        for i, e in enumerate(self.entries):
            best = self.entries[self.reach[-1]] if i else None
            if best is not None and best.shard_id == e.shard_id and _end(best) >= _end(e):
                self.reach.append(self.reach[-1])
            else:
                self.reach.append(i)

    def overlapping(self, entry: BundleEntry) -> BundleEntry | None:
        """Another entry sharing bytes with `entry`: the next one by position (any later one that overlaps
        starts no earlier), or the earlier one of its shard reaching furthest."""
        i = bisect.bisect_left(self.keys, (entry.shard_id, entry.offset, entry.size))
        after = i + 1 if i < len(self.entries) and self.entries[i] is entry else i
        if after < len(self.entries) and _shares(entry, self.entries[after]):
            return self.entries[after]
        if i > 0 and _shares(entry, self.entries[self.reach[i - 1]]):
            return self.entries[self.reach[i - 1]]
        return None


def _end(entry: BundleEntry) -> int:
    return entry.offset + entry.size


def _shares(a: BundleEntry, b: BundleEntry) -> bool:
    return a is not b and a.shard_id == b.shard_id and a.offset < _end(b) and b.offset < _end(a)


def regions_disjoint(regions: list[tuple[slice, ...]]) -> bool:
    """Whether no two boxes (one `slice(start, stop)` per dimension, all of one rank) share an element.

    In time linear in the number of boxes when the grid their boundaries cut space into is small enough (the
    usual case: partitions along one or two axes), else pairwise, vectorized; ValueError when neither is cheap.
    """
    if len(regions) < 2 or not regions[0]:
        return len(regions) < 2
    import numpy as np

    starts = np.array([[r.start for r in region] for region in regions], dtype=np.int64)
    stops = np.array([[r.stop for r in region] for region in regions], dtype=np.int64)
    cuts = [np.unique(np.concatenate([starts[:, k], stops[:, k]])) for k in range(starts.shape[1])]
    if math.prod(len(c) - 1 for c in cuts) <= MAX_GRID_CELLS:
        return _disjoint_on_grid(starts, stops, cuts)
    if len(regions) > MAX_PAIRWISE_SLICES:
        raise ValueError(f"{len(regions)} slices in an irregular layout (more than {MAX_PAIRWISE_SLICES})")
    for i in range(len(regions) - 1):
        meet = (starts[i] < stops[i + 1 :]) & (starts[i + 1 :] < stops[i])
        if bool(meet.all(axis=1).any()):
            return False
    return True


def _disjoint_on_grid(starts: np.ndarray, stops: np.ndarray, cuts: list[np.ndarray]) -> bool:
    """Each box marks its cells of the grid the boundaries `cuts` define; a cell marked twice is an overlap."""
    import numpy as np

    grid = np.zeros([len(c) - 1 for c in cuts], dtype=bool)
    low = np.stack([np.searchsorted(c, starts[:, k]) for k, c in enumerate(cuts)], axis=1)
    high = np.stack([np.searchsorted(c, stops[:, k]) for k, c in enumerate(cuts)], axis=1)
    for lo, hi in zip(low.tolist(), high.tolist(), strict=True):
        cells = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        if grid[cells].any():
            return False
        grid[cells] = True
    return True
