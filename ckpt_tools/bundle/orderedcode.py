"""TensorFlow's OrderedCode key encoding, as used for the hidden per-slice keys of partitioned variables."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Strings: bytes 0x00 and 0xff are escaped as 00 ff and ff 00; the string ends with 00 01.
_TERMINATOR = b"\x00\x01"
_SPECIAL = re.compile(b"[\x00\xff]")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

Slice = tuple[tuple[int, int], ...]  # per dimension (start, length); length -1 = the whole dimension


class OrderedCodeError(ValueError):
    """The bytes are not a valid OrderedCode encoding."""


def write_num_increasing(value: int) -> bytes:
    """Unsigned number: one length byte, then the value big-endian with leading zero bytes dropped."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} is not an unsigned 64-bit number")
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(payload)]) + payload


def read_num_increasing(buf: bytes, pos: int = 0) -> tuple[int, int]:
    if pos >= len(buf):
        raise OrderedCodeError("missing number")
    length = buf[pos]
    if length > 8 or pos + 1 + length > len(buf):
        raise OrderedCodeError("bad number length")
    return int.from_bytes(buf[pos + 1 : pos + 1 + length], "big"), pos + 1 + length


def write_string(value: bytes) -> bytes:
    """String: 0x00 and 0xff escaped as 00 ff and ff 00, then the terminator 00 01."""
    return _escape(value) + _TERMINATOR


def _escape(value: bytes) -> bytes:
    if b"\x00" not in value and b"\xff" not in value:  # the usual case: nothing to escape
        return value
    return _SPECIAL.sub(lambda m: b"\x00\xff" if m.group() == b"\x00" else b"\xff\x00", value)


def read_string(buf: bytes, pos: int = 0) -> tuple[bytes, int]:
    out = bytearray()
    while pos + 1 < len(buf):
        byte = buf[pos]
        if byte not in (0x00, 0xFF):
            out.append(byte)
            pos += 1
            continue
        follow = buf[pos + 1]
        pos += 2
        if byte == 0x00 and follow == 0x01:
            return bytes(out), pos
        if byte == 0x00 and follow == 0xFF:
            out.append(0x00)
        elif byte == 0xFF and follow == 0x00:
            out.append(0xFF)
        else:
            raise OrderedCodeError("bad escape sequence in string")
    raise OrderedCodeError("unterminated string")


def _signed_length(value: int) -> int:
    """Bytes needed: n bytes hold [-2**(7n-1), 2**(7n-1)), at most 10."""
    magnitude = ~value if value < 0 else value
    for n in range(1, 10):
        if magnitude < 1 << (7 * n - 1):
            return n
    return 10


def _header(length: int) -> int:
    """`length` leading one bits (sign + size bits) in a `length`-byte big-endian number."""
    return ((1 << length) - 1) << (8 * length - length)


def write_signed_num_increasing(value: int) -> bytes:
    """Signed number: two's complement in n bytes, with n leading header bits flipped."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} is not a signed 64-bit number")
    length = _signed_length(value)
    raw = value & ((1 << (8 * length)) - 1)
    return (raw ^ _header(length)).to_bytes(length, "big")


def read_signed_num_increasing(buf: bytes, pos: int = 0) -> tuple[int, int]:
    if pos >= len(buf):
        raise OrderedCodeError("missing signed number")
    invert = 0x00 if buf[pos] & 0x80 else 0xFF
    first = buf[pos] ^ invert
    second = (buf[pos + 1] ^ invert) if pos + 1 < len(buf) else 0
    bits = (first << 8) | second
    length = 0
    while length < 16 and bits & (0x8000 >> length):
        length += 1
    if length > 10:
        raise OrderedCodeError("signed number too long")
    if pos + length > len(buf):
        raise OrderedCodeError("truncated signed number")
    raw = int.from_bytes(buf[pos : pos + length], "big") ^ _header(length)
    if raw >> (8 * length - 1):
        raw -= 1 << (8 * length)
    if not _INT64_MIN <= raw <= _INT64_MAX or _signed_length(raw) != length:
        raise OrderedCodeError("invalid signed number encoding")
    return raw, pos + length


def encode_tensor_name_slice(name: bytes | str, extents: Sequence[tuple[int, int]]) -> bytes:
    """The table key under which a slice of partitioned tensor `name` is stored (EncodeTensorNameSlice)."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    parts = [write_num_increasing(0), write_string(raw), write_num_increasing(len(extents))]
    for start, length in extents:
        parts.append(write_signed_num_increasing(start))
        parts.append(write_signed_num_increasing(length))
    return b"".join(parts)


def decode_tensor_name_slice(key: bytes) -> tuple[bytes, Slice]:
    """Inverse of encode_tensor_name_slice; extents with a negative length come back as (0, -1)."""
    lead, pos = read_num_increasing(key, 0)
    if lead != 0:
        raise OrderedCodeError("slice keys start with the number 0")
    name, pos = read_string(key, pos)
    rank, pos = read_num_increasing(key, pos)
    if rank == 0 or rank > 254:
        raise OrderedCodeError(f"implausible slice rank {rank}")
    extents = []
    for _ in range(rank):
        start, pos = read_signed_num_increasing(key, pos)
        length, pos = read_signed_num_increasing(key, pos)
        extents.append((start, length) if length >= 0 else (0, -1))
    if pos != len(key):
        raise OrderedCodeError("trailing bytes after the slice")
    return name, tuple(extents)
