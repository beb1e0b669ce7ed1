"""Elementwise comparison of two tensors, block by block: counts, maxima, NaN rules, bounded memory."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.model import Variable, numpy_dtype

# Elements compared per step: bounds the temporaries next to the two tensors themselves.
CHUNK_ELEMENTS = 1 << 16
STREAM_ELEMENTS = 1 << 20  # elements read per side per step when streaming (4 MiB of float32)


@dataclass(frozen=True)
class ValueStats:
    """How the values of one same-shape, same-dtype pair differ.

    `max_abs_diff` is max |a-b| over positions where both are finite; `max_rel_diff` is max |a-b|/|b| over
    those positions with b != 0 (both None for strings). `nonfinite_mismatches` counts differing positions
    where either side is NaN or Inf.
    """

    size: int
    differing: int
    max_abs_diff: float | None
    max_rel_diff: float | None
    nonfinite_mismatches: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "differing": self.differing,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "nonfinite_mismatches": self.nonfinite_mismatches,
        }


def _compute_dtype(array: np.ndarray) -> np.dtype[Any]:
    if array.dtype.kind == "c":
        return np.dtype(np.complex128)
    return np.dtype(np.float64)


def compare_arrays(a: np.ndarray, b: np.ndarray, *, rtol: float = 0.0, atol: float = 0.0) -> ValueStats:
    """Elementwise comparison of two same-shape arrays, chunk by chunk (see ValueStats for the fields)."""
    flat_a = a.reshape(-1)
    flat_b = b.reshape(-1)
    acc = _Accumulator(a.dtype, b.dtype, rtol, atol)
    for start in range(0, int(flat_a.size), CHUNK_ELEMENTS):
        acc.add(flat_a[start : start + CHUNK_ELEMENTS], flat_b[start : start + CHUNK_ELEMENTS])
    return acc.result()


def compare_streams(a: Variable, b: Variable, *, rtol: float = 0.0, atol: float = 0.0) -> ValueStats:
    """Compare two same-shape numeric variables block by block, never holding either tensor whole.

    Blocks of STREAM_ELEMENTS are read from each side; bit-identical blocks (the common case between two
    checkpoints of one run) are counted without arithmetic, the rest compared in CHUNK_ELEMENTS pieces.
    """
    acc = _Accumulator(numpy_dtype(a.dtype), numpy_dtype(b.dtype), rtol, atol)
    same_dtype = a.dtype == b.dtype
    for block_a, block_b in aligned_blocks(a.iter_chunks(STREAM_ELEMENTS), b.iter_chunks(STREAM_ELEMENTS)):
        if same_dtype and _same_bits(block_a, block_b):
            acc.size += int(block_a.size)
            continue
        for start in range(0, int(block_a.size), CHUNK_ELEMENTS):
            acc.add(block_a[start : start + CHUNK_ELEMENTS], block_b[start : start + CHUNK_ELEMENTS])
    return acc.result()


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Bit-for-bit equality of two same-dtype blocks (equal bits are equal values, NaN payloads included)."""
    unit = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(x.dtype.itemsize, np.uint8)
    return bool(np.array_equal(x.view(unit), y.view(unit)))


def aligned_blocks(left: Iterator[np.ndarray], right: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut two streams of 1-D blocks so that paired blocks cover the same element positions; raises
    CorruptCheckpointError when one stream ends before the other."""
    lefts = (block for block in left if block.size)
    rights = (block for block in right if block.size)
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    while True:
        a = next(lefts, None) if a is None or not a.size else a
        b = next(rights, None) if b is None or not b.size else b
        if a is None or b is None:
            if a is not None or b is not None:
                raise CorruptCheckpointError("stored tensors hold different numbers of elements")
            return
        n = min(a.size, b.size)
        yield a[:n], b[:n]
        a, b = a[n:], b[n:]


class _Accumulator:
    """Running totals of an elementwise comparison, fed block by block."""

    def __init__(self, dtype_a: np.dtype[Any], dtype_b: np.dtype[Any], rtol: float, atol: float) -> None:
        self.strings = dtype_a.kind in ("O", "S", "U") or dtype_b.kind in ("O", "S", "U")
        self.exact = rtol == 0 and atol == 0
        self.same_dtype = dtype_a == dtype_b
        self.floating = dtype_a.kind not in ("b", "i", "u") and not self.strings
        self.integer_same = self.same_dtype and dtype_a.kind in ("b", "i", "u")
        self.narrow = _component_bytes(dtype_a) <= 4 and _component_bytes(dtype_b) <= 4
        self.rtol, self.atol = rtol, atol
        self.size = self.differing = self.nonfinite = 0
        self.max_abs = self.max_rel = 0.0

    def add(self, chunk_a: np.ndarray, chunk_b: np.ndarray) -> None:
        self.size += int(chunk_a.size)
        if self.strings:
            ne = np.fromiter(map(_bytes_ne, chunk_a, chunk_b), bool, len(chunk_a))
            self.differing += int(np.count_nonzero(ne))
            return
        if not self.same_dtype:
            self._add_floats(chunk_a, chunk_b, chunk_a == chunk_b)
            return
        equal = chunk_a == chunk_b
        if bool(equal.all()):  # the common case: one pass, no NaN masks, no float64 copies
            return
        if self.integer_same:
            self._add_integers(chunk_a, chunk_b)
            return
        # Equal positions add nothing (a difference of 0 raises no maximum and is within any tolerance): only the
        # differing elements are compared, gathered when they are few.
        if int(np.count_nonzero(equal)) * 2 >= equal.size:
            differs = ~equal
            self._add_floats(chunk_a[differs], chunk_b[differs], None)
        else:
            self._add_floats(chunk_a, chunk_b, equal)

    def _add_floats(self, chunk_a: np.ndarray, chunk_b: np.ndarray, equal: np.ndarray | None) -> None:
        """Float (or complex, bfloat16, float8, mixed) positions; `equal` is a == b, None when none are equal."""
        rtol, atol, exact = self.rtol, self.atol, self.exact
        dtype = _compute_dtype(chunk_a)
        native = chunk_a.dtype.kind == "f" and chunk_b.dtype.kind == "f"  # numpy's own real float types
        # ufuncs widen native floats on the fly (no float64 copies); complex and ml_dtypes (bfloat16, float8) are
        # widened first
        wide_a = chunk_a if native else chunk_a.astype(dtype)
        wide_b = chunk_b if native else chunk_b.astype(dtype)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if native:
                abs_diff = np.subtract(wide_a, wide_b, dtype=np.float64)
                np.abs(abs_diff, out=abs_diff)
                ref = np.abs(wide_b, dtype=np.float64)
            else:
                abs_diff = np.abs(np.subtract(wide_a, wide_b))
                ref = np.abs(wide_b)
            if self.narrow and bool(np.isfinite(abs_diff).all()):
                # both sides finite everywhere (a difference of values of 4 bytes or less cannot overflow
                # float64): no NaN rules, no masks
                self._add_finite(abs_diff, ref, equal)
                return
            finite = np.isfinite(wide_a)
            finite &= np.isfinite(wide_b)
            if equal is None:
                close = np.isnan(wide_a) & np.isnan(wide_b)
            else:
                close = equal | (np.isnan(wide_a) & np.isnan(wide_b))
            if not exact:
                close |= finite & (abs_diff <= atol + rtol * ref)
            differs = ~close
            self.differing += int(np.count_nonzero(differs))
            differs &= ~finite
            self.nonfinite += int(np.count_nonzero(differs))
            if abs_diff.size:
                self.max_abs = max(self.max_abs, float(np.max(abs_diff, where=finite, initial=0.0)))
                finite &= ref != 0
                np.divide(abs_diff, ref, out=abs_diff, where=finite)
                self.max_rel = max(self.max_rel, float(np.max(abs_diff, where=finite, initial=0.0)))

    def _add_finite(self, abs_diff: np.ndarray, ref: np.ndarray, equal: np.ndarray | None) -> None:
        """Totals of positions where both sides are finite: |a-b| and |b| in float64."""
        if self.exact:
            close_count = 0 if equal is None else int(np.count_nonzero(equal))
        else:
            close = abs_diff <= self.atol + self.rtol * ref
            if equal is not None:
                close |= equal
            close_count = int(np.count_nonzero(close))
        self.differing += int(abs_diff.size) - close_count
        if not abs_diff.size:
            return
        self.max_abs = max(self.max_abs, float(abs_diff.max()))
        ref[ref == 0] = np.inf  # |a-b| / inf = 0: positions where b == 0 raise no relative maximum
        np.divide(abs_diff, ref, out=abs_diff)
        self.max_rel = max(self.max_rel, float(abs_diff.max()))

    def _add_integers(self, chunk_a: np.ndarray, chunk_b: np.ndarray) -> None:
        rtol, atol, exact = self.rtol, self.atol, self.exact
        wide_b = chunk_b.astype(np.float64)
        abs_diff = _int_abs_diff(chunk_a, chunk_b)
        differs = chunk_a != chunk_b if exact else abs_diff > atol + rtol * np.abs(wide_b)
        self.differing += int(np.count_nonzero(differs))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if abs_diff.size:
                self.max_abs = max(self.max_abs, float(abs_diff.max()))
                ref = np.abs(wide_b)
                rel = np.where(ref != 0, abs_diff / np.where(ref != 0, ref, 1.0), 0.0)
                self.max_rel = max(self.max_rel, float(rel.max()))

    def result(self) -> ValueStats:
        if self.strings:
            return ValueStats(self.size, self.differing, None, None)
        return ValueStats(
            self.size, self.differing, finite_or_none(self.max_abs), finite_or_none(self.max_rel), self.nonfinite
        )


def _component_bytes(dtype: np.dtype[Any]) -> int:
    """Bytes of one real component of a float type (complex: half its size); 8 for anything not a float, so that
    only float16/32, bfloat16, float8 and complex64 count as narrow (their differences never overflow float64)."""
    if dtype.kind == "c":
        return dtype.itemsize // 2
    if dtype.kind == "f" or dtype.type.__module__.startswith("ml_dtypes"):
        return dtype.itemsize
    return 8


def _int_abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a-b| for same-dtype integer/bool arrays, exact (no overflow): the difference modulo 2**64, as float64."""
    ua = a.astype(np.uint64)
    ub = b.astype(np.uint64)
    larger = a >= b
    return np.where(larger, ua - ub, ub - ua).astype(np.float64)


def finite_or_none(value: float | None) -> float | None:
    """The value when it is a finite number, else None (strict JSON has no NaN/Inf)."""
    return value if value is not None and math.isfinite(value) else None


def _bytes_ne(x: Any, y: Any) -> bool:
    return bool(x != y)
