"""Reader for the LevelDB-style sorted table TensorFlow uses for bundle `.index` files (and V1 checkpoints)."""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError
from ckpt_tools.messages import os_reason

if TYPE_CHECKING:
    import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
MAGIC_BYTES = TABLE_MAGIC.to_bytes(8, "little")
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC32C of (contents + type byte)
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1
MASK_DELTA = 0xA282EAD8
MAX_TABLE_BYTES = 1 << 31  # an index larger than this is not something we will load into memory
MAX_SNAPPY_OUTPUT = 1 << 28
KEY_BYTES_FACTOR = 16  # all keys of a table, spelled out, may take this many times the file size ...
KEY_BYTES_SLACK = 16 << 20  # ... plus this much (real indexes need < 10x)
SNAPPY_MAX_RATIO = 32  # a snappy element of n bytes yields at most ~21n bytes (3-byte copies of 64)
# All snappy blocks of one table together may inflate to this many times the file's size plus the slack (real
# index blocks of keys and entry protos shrink 2-4x; a bomb of copy runs reaches 21x, and decoding it in
# Python costs seconds per parse). Checked against each block's declared size, before it is decoded.
SNAPPY_TOTAL_FACTOR = 8
SNAPPY_TOTAL_SLACK = 4 << 20


class TableFormatError(Exception):
    """Internal: raised by the decoders below; turned into CorruptCheckpointError naming the file."""


def crc32c(data: bytes | np.ndarray, crc: int = 0) -> int:
    """CRC32C of `data` (bytes, or a contiguous uint8 array: google_crc32c takes no memoryview), from `crc`."""
    return int(google_crc32c.extend(crc, data))


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB's stored form of a CRC: rotate right by 15 bits, add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def read_varint(buf: bytes | bytearray | memoryview, pos: int, limit: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a little-endian base-128 varint at `pos`; returns (value, next position)."""
    value = 0
    shift = 0
    for i in range(max_bytes):
        if pos + i >= limit:
            raise TableFormatError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if max_bytes == 10 and value >> 64:
                raise TableFormatError("varint overflows 64 bits")
            if max_bytes == 5 and value >> 32:
                raise TableFormatError("varint overflows 32 bits")
            return value, pos + i + 1
        shift += 7
    raise TableFormatError("varint too long")


def snappy_decompress(data: bytes) -> bytes:
    """Decompress one raw snappy block (the format LevelDB tables use for compression type 1). Runs of identical
    copy elements (what a compressor writes for long repeats) are applied as one copy."""
    expected, pos = read_varint(data, 0, len(data), max_bytes=5)
    if expected > MAX_SNAPPY_OUTPUT or expected > SNAPPY_MAX_RATIO * len(data):
        raise TableFormatError(f"snappy block declares {expected} bytes uncompressed from {len(data)}")
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag & 3 == 0:
            pos = _snappy_literal(data, pos, tag, out)
        else:
            start = pos - 1
            length, offset, pos = _snappy_copy_operands(data, pos, tag)
            repeats = _repeats(data, start, pos)
            pos += repeats * (pos - start)
            _snappy_copy(out, offset, length * (1 + repeats), expected)  # k copies (o, n) = one copy (o, k*n)
        if len(out) > expected:
            raise TableFormatError("snappy output longer than declared")
    if len(out) != expected:
        raise TableFormatError(f"snappy output is {len(out)} bytes, header says {expected}")
    return bytes(out)


def _snappy_literal(data: bytes, pos: int, tag: int, out: bytearray) -> int:
    """Append the literal whose tag byte was `tag` (its length bytes start at `pos`); the next position."""
    end = len(data)
    length = tag >> 2
    if length >= 60:
        extra = length - 59
        if pos + extra > end:
            raise TableFormatError("truncated snappy literal length")
        length = int.from_bytes(data[pos : pos + extra], "little")
        pos += extra
    length += 1
    if pos + length > end:
        raise TableFormatError("truncated snappy literal")
    out += data[pos : pos + length]
    return pos + length


def _snappy_copy_operands(data: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    """(length, offset, next position) of the copy element whose tag byte was `tag` (kind 1, 2 or 4)."""
    kind = tag & 3
    if kind == 1:
        if pos + 1 > len(data):
            raise TableFormatError("truncated snappy copy")
        return 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | data[pos], pos + 1
    width = 2 if kind == 2 else 4
    if pos + width > len(data):
        raise TableFormatError("truncated snappy copy")
    return (tag >> 2) + 1, int.from_bytes(data[pos : pos + width], "little"), pos + width


def _repeats(data: bytes, start: int, end: int) -> int:
    """How many times the element data[start:end] repeats right after itself (doubling, then halving, steps of
    C-level comparisons: linear in the run)."""
    element = data[start:end]
    count, step = 0, 1
    while True:
        if data.startswith(element * step, end + count * len(element)):
            count += step
            step *= 2
        elif step > 1:
            step //= 2
        else:
            return count


def _snappy_copy(out: bytearray, offset: int, length: int, expected: int) -> None:
    """Append `length` bytes copied from `offset` bytes back in `out` (overlapping copies repeat)."""
    if offset == 0 or offset > len(out):
        raise TableFormatError("snappy copy offset out of range")
    if len(out) + length > expected:
        raise TableFormatError("snappy output longer than declared")
    start = len(out) - offset
    if offset >= length:
        out += out[start : start + length]
    else:  # overlapping copy repeats the last `offset` bytes
        pattern = out[start:]
        out += (pattern * (length // offset + 1))[:length]


def _block_handle(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, limit)
    size, pos = read_varint(buf, pos, limit)
    return offset, size, pos


def read_block(data: bytes, offset: int, size: int) -> tuple[bytes, int]:
    """Contents of the block at (offset, size) after CRC check and decompression, and its compression type."""
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise TableFormatError(f"block at offset {offset} (size {size}) runs past the end of the table")
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if crc32c(data[offset : offset + size + 1]) != unmask_crc(stored):
        raise TableFormatError(f"block checksum mismatch at offset {offset}")
    kind = data[offset + size]
    contents = data[offset : offset + size]
    if kind == NO_COMPRESSION:
        return contents, kind
    if kind == SNAPPY_COMPRESSION:
        return snappy_decompress(contents), kind
    raise TableFormatError(f"unknown block compression type {kind} at offset {offset}")


def parse_block(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) pairs of one block: prefix-compressed entries followed by the restart array."""
    if len(block) < 4:
        raise TableFormatError("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    if num_restarts > (len(block) - 4) // 4:
        raise TableFormatError(f"block declares {num_restarts} restart points, more than fit")
    limit = len(block) - 4 * (1 + num_restarts)
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, limit))
    if num_restarts and any(r >= max(limit, 1) for r in restarts):
        raise TableFormatError("restart point past the entries")
    yield from _block_entries(block, limit, restarts)


def _block_entries(block: bytes, limit: int, restarts: set[int]) -> Iterator[tuple[bytes, bytes]]:
    """The entries of a block before its restart array (which starts at `limit`)."""
    pos = 0
    key = b""
    while pos < limit:
        entry_start = pos
        shared, non_shared, value_len = block[pos : pos + 3] if pos + 3 <= limit else b"\x80\x80\x80"
        if shared < 0x80 and non_shared < 0x80 and value_len < 0x80:  # the common 1-byte case
            pos += 3
        else:
            shared, pos = read_varint(block, pos, limit, max_bytes=5)
            non_shared, pos = read_varint(block, pos, limit, max_bytes=5)
            value_len, pos = read_varint(block, pos, limit, max_bytes=5)
        if shared > len(key):
            raise TableFormatError("entry shares more key bytes than the previous key has")
        if shared and entry_start in restarts:
            raise TableFormatError("entry at a restart point shares key bytes")
        start = pos + non_shared
        pos = start + value_len
        if pos > limit:
            raise TableFormatError("entry runs past the end of its block")
        key = key[:shared] + block[start - non_shared : start]
        yield key, block[start:pos]


def _read_file(path: Path) -> bytes:
    try:
        info = path.stat()
        size = info.st_size
        if stat.S_ISDIR(info.st_mode):
            raise CorruptCheckpointError(f"{path}: is a directory, not a table file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise CorruptCheckpointError(f"{path}: not a regular file")
        if size > MAX_TABLE_BYTES:
            raise CorruptCheckpointError(f"{path}: table file of {size} bytes is implausibly large")
        with path.open("rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise MissingFileError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise CorruptCheckpointError(f"{path}: is a directory, not a table file") from exc
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: cannot read: {os_reason(exc)}") from exc


def parse_table(data: bytes) -> tuple[list[tuple[bytes, bytes]], set[int]]:
    """All (key, value) entries of a table held in memory, in stored order, plus the compression types seen."""
    index_block, kind = _index_block(data)
    key_budget = KEY_BYTES_FACTOR * len(data) + KEY_BYTES_SLACK
    handles, key_bytes = _data_handles(index_block)
    _check_inflation(data, handles, len(index_block) if kind == SNAPPY_COMPRESSION else 0)
    kinds = {kind}
    entries: list[tuple[bytes, bytes]] = []
    previous: bytes | None = None
    for offset, size in handles:
        block, kind = read_block(data, offset, size)
        kinds.add(kind)
        for key, value in parse_block(block):
            key_bytes += len(key)
            if key_bytes > key_budget:  # prefix compression lets a small table spell out huge keys
                raise TableFormatError(f"keys add up to more than {key_budget} bytes")
            if previous is not None and key <= previous:
                raise TableFormatError("keys are not in strictly increasing order")
            previous = key
            entries.append((key, value))
    return entries, kinds


def _index_block(data: bytes) -> tuple[bytes, int]:
    """The table's index block (decompressed) and its compression type, from the footer."""
    if len(data) < FOOTER_SIZE:
        raise TableFormatError(f"{len(data)} bytes is shorter than the {FOOTER_SIZE}-byte table footer")
    footer_at = len(data) - FOOTER_SIZE
    if data[-8:] != MAGIC_BYTES:
        raise TableFormatError("not a table (bad magic number)")
    _meta_offset, _meta_size, pos = _block_handle(data, footer_at, footer_at + 40)
    index_offset, index_size, _ = _block_handle(data, pos, footer_at + 40)
    return read_block(data, index_offset, index_size)


def _data_handles(index_block: bytes) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) of every data block the index names, in order, and the bytes of its separator keys."""
    handles: list[tuple[int, int]] = []
    next_free = 0
    key_bytes = 0
    for separator, handle in parse_block(index_block):
        key_bytes += len(separator)
        offset, size, used = _block_handle(handle, 0, len(handle))
        if used != len(handle):
            raise TableFormatError("index entry holds trailing bytes after its block handle")
        if offset < next_free:  # blocks are written in order; a repeated or overlapping one would be re-parsed
            raise TableFormatError(f"data block at offset {offset} overlaps the previous block")
        next_free = offset + size + BLOCK_TRAILER_SIZE
        handles.append((offset, size))
    return handles, key_bytes


def _check_inflation(data: bytes, handles: list[tuple[int, int]], inflated: int) -> None:
    """Refuse, before any data block is decoded, a table whose snappy blocks declare more uncompressed bytes in
    all than SNAPPY_TOTAL_FACTOR x the file size + SNAPPY_TOTAL_SLACK (`inflated`: what the index block took)."""
    budget = SNAPPY_TOTAL_FACTOR * len(data) + SNAPPY_TOTAL_SLACK
    for offset, size in handles:
        if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE or data[offset + size] != SNAPPY_COMPRESSION:
            continue  # read_block reports a block past the end; uncompressed blocks cost what they weigh
        try:
            inflated += read_varint(data, offset, offset + size, max_bytes=5)[0]
        except TableFormatError:
            continue  # read_block reports the damaged block
        if inflated > budget:
            raise TableFormatError(
                f"snappy blocks inflate to more than {budget} bytes ({SNAPPY_TOTAL_FACTOR} x the file size + "
                f"{SNAPPY_TOTAL_SLACK >> 20} MiB): a decompression bomb"
            )


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) entries of the table file at `path`, in stored order."""
    return read_table_info(path)[0]


# The bytes and entries of the last table parsed: format detection and the reader both read an artifact's index
# (a 100,000-entry index takes a while to parse, reading it again and comparing the bytes does not).
_last_parsed: tuple[bytes, list[tuple[bytes, bytes]], set[int]] | None = None


def read_table_info(path: Path) -> tuple[list[tuple[bytes, bytes]], set[int]]:
    """Like read_table, also returning the block compression types found (0 none, 1 snappy). The same bytes
    read again (the index of the artifact being detected, then opened) are not parsed again."""
    global _last_parsed
    data = _read_file(path)
    if _last_parsed is not None and _last_parsed[0] == data:
        return list(_last_parsed[1]), set(_last_parsed[2])
    try:
        entries, kinds = parse_table(data)
    except TableFormatError as exc:
        raise CorruptCheckpointError(f"{path}: corrupt table: {exc}") from exc
    _last_parsed = (data, entries, kinds)
    return list(entries), set(kinds)


def has_table_magic(path: Path) -> bool:
    """Cheap check: the file is at least a footer long and ends with the table magic number."""
    try:
        size = path.stat().st_size
        if size < FOOTER_SIZE or not path.is_file():
            return False
        with path.open("rb") as fh:
            fh.seek(size - 8)
            return fh.read(8) == MAGIC_BYTES
    except OSError:
        return False
