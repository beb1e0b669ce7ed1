"""Decoding the bytes of one bundle entry: fixed-size dtypes, string tensors and variant tensors."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ckpt_tools.bundle.table import TableFormatError, crc32c, read_varint, unmask_crc
from ckpt_tools.model import DTYPE_SIZES, numpy_dtype

if TYPE_CHECKING:
    import numpy as np

UINT32_MAX = 0xFFFFFFFF
UNSTORABLE = ("resource",)
_DTYPES: dict[str, np.dtype[Any] | None] = {}


class ValueFormatError(Exception):
    """Internal: the bytes do not decode; `checksum` tells a CRC mismatch from a layout problem."""

    def __init__(self, message: str, *, checksum: bool = False) -> None:
        super().__init__(message)
        self.checksum = checksum


def fixed_dtype(name: str) -> np.dtype[Any] | None:
    """numpy dtype of a fixed-size element type; None for string/variant/resource/unknown names."""
    if name not in _DTYPES:
        _DTYPES[name] = _lookup_dtype(name)
    return _DTYPES[name]


def fixed_itemsize(name: str) -> int | None:
    """Bytes per element of a fixed-size element type, None where fixed_dtype is None; imports numpy only for
    names outside the reported dtypes (listing a bundle reads no tensor and needs no numpy)."""
    size = DTYPE_SIZES.get(name)
    if size is not None:
        return size
    dtype = fixed_dtype(name)
    return None if dtype is None else dtype.itemsize


# struct codes of the counter dtypes (model.COUNTER_DTYPES), whose one-element tensors are read without numpy
SCALAR_CODES = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


def decode_scalar(data: bytes, name: str, big_endian: bool) -> int | float:
    """The value of one element of a SCALAR_CODES dtype, as numpy's `.item()` gives it."""
    return struct.unpack((">" if big_endian else "<") + SCALAR_CODES[name], data)[0]  # type: ignore[no-any-return]


def _lookup_dtype(name: str) -> np.dtype[Any] | None:
    if name in ("string", "variant", *UNSTORABLE) or name.startswith(("unknown_", "invalid")):
        return None
    try:
        return numpy_dtype(name)
    except TypeError:
        import ml_dtypes
        import numpy as np

        extra = getattr(ml_dtypes, name, None)
        return None if extra is None else np.dtype(extra)


def swap_unit(dtype: np.dtype[Any]) -> int:
    """Size of the unit to byte-swap for a non-native-endian bundle (complex numbers swap each half)."""
    return dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize


def decode_fixed(buf: np.ndarray, dtype: np.dtype[Any], shape: tuple[int, ...], big_endian: bool) -> np.ndarray:
    """View a uint8 buffer as a tensor; swaps bytes in place first when the bundle is big-endian."""
    import numpy as np

    unit = swap_unit(dtype)
    if big_endian and unit > 1:
        buf.view(np.dtype(f"u{unit}")).byteswap(inplace=True)
    return buf.view(dtype).reshape(shape)


def decode_strings(data: bytes, count: int, stored_crc: int, big_endian: bool, verify: bool) -> np.ndarray:
    """A string tensor as a 1-D object array (see string_values)."""
    import numpy as np

    values = string_values(data, count, stored_crc, big_endian, verify)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def string_values(data: bytes, count: int, stored_crc: int, big_endian: bool, verify: bool) -> list[bytes]:
    """A string tensor's elements: `count` varint64 lengths, a 4-byte masked CRC32C of the lengths, then the bytes.

    The lengths' CRC is taken over each length as a fixed uint32 (uint64 when it exceeds 2**32-1) in the
    writer's byte order; the entry's CRC covers those same length words, the stored length CRC and the bytes.
    """
    if count == 0 and not data:
        if verify and unmask_crc(stored_crc) != 0:
            raise ValueFormatError("checksum mismatch on an empty string tensor", checksum=True)
        return []
    order = ">" if big_endian else "<"
    lengths: list[int] = []
    pos = 0
    try:
        for _ in range(count):
            length, pos = read_varint(data, pos, len(data))
            lengths.append(length)
    except TableFormatError as exc:
        raise ValueFormatError(f"string lengths: {exc}") from exc
    if all(n <= UINT32_MAX for n in lengths):
        words = struct.pack(f"{order}{count}I", *lengths)
    else:
        words = b"".join(struct.pack(order + ("I" if n <= UINT32_MAX else "Q"), n) for n in lengths)
    crc = crc32c(words)
    if pos + 4 > len(data):
        raise ValueFormatError("string tensor ends before its length checksum")
    raw_length_crc = data[pos : pos + 4]
    if verify and unmask_crc(struct.unpack(order + "I", raw_length_crc)[0]) != crc:
        raise ValueFormatError("checksum mismatch on the string lengths", checksum=True)
    crc = crc32c(raw_length_crc, crc)
    pos += 4
    if pos + sum(lengths) != len(data):
        raise ValueFormatError(f"string lengths add up to {sum(lengths)} bytes but {len(data) - pos} are stored")
    if verify and crc32c(data[pos:], crc) != unmask_crc(stored_crc):
        raise ValueFormatError("checksum mismatch on the string bytes", checksum=True)
    out = []
    for length in lengths:
        out.append(data[pos : pos + length])
        pos += length
    return out


def decode_variants(data: bytes, count: int, stored_crc: int, verify: bool) -> np.ndarray:
    """A variant tensor: per element varint64 length, serialized VariantTensorDataProto, 4-byte masked CRC.

    Returned as an object array of the serialized protos (bytes); each running CRC covers the lengths as
    uint64, the element bytes and the earlier element checksums.
    """
    import numpy as np

    out = np.empty(count, dtype=object)
    crc = 0
    pos = 0
    for i in range(count):
        try:
            length, pos = read_varint(data, pos, len(data))
        except TableFormatError as exc:
            raise ValueFormatError(f"variant element {i}: {exc}") from exc
        if pos + length + 4 > len(data):
            raise ValueFormatError(f"variant element {i} runs past the entry")
        crc = crc32c(struct.pack("<Q", length), crc)
        element = data[pos : pos + length]
        crc = crc32c(element, crc)
        raw = data[pos + length : pos + length + 4]
        if verify and unmask_crc(struct.unpack("<I", raw)[0]) != crc:
            raise ValueFormatError(f"checksum mismatch after variant element {i}", checksum=True)
        crc = crc32c(raw, crc)
        out[i] = element
        pos += length + 4
    if pos != len(data):
        raise ValueFormatError(f"{len(data) - pos} bytes left over after the variant elements")
    if verify and crc != unmask_crc(stored_crc):
        raise ValueFormatError("checksum mismatch on the variant tensor", checksum=True)
    return out
