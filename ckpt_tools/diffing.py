"""Compare two artifacts variable by variable, streaming one pair of tensors at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.errors import CorruptCheckpointError, UsageError
from ckpt_tools.model import Variable, VariableMap, numpy_dtype
from ckpt_tools.pairing import BY_ROLE, BY_STRUCTURE, Pair, Selection, excluded_count, pair_maps
from ckpt_tools.renames import RenameRules
from ckpt_tools.slot_meaning import Outcome, Translation, Translator, translator

JSON_SCHEMA = "ckpt-tools/diff/2"

# Report categories, in the order summaries list them.
ONLY_IN_A = "only_in_a"
ONLY_IN_B = "only_in_b"
SHAPE_CHANGED = "shape_changed"
DTYPE_CHANGED = "dtype_changed"
VALUES_CHANGED = "values_changed"
IDENTICAL = "identical"
NOT_COMPARED = "not_compared"
FORMAT_SPECIFIC = "format_specific"
CATEGORIES: tuple[str, ...] = (
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_CHANGED,
    DTYPE_CHANGED,
    VALUES_CHANGED,
    IDENTICAL,
    NOT_COMPARED,
    FORMAT_SPECIFIC,
)
DIFFERENT: frozenset[str] = frozenset({ONLY_IN_A, ONLY_IN_B, SHAPE_CHANGED, DTYPE_CHANGED, VALUES_CHANGED})

# Elements compared per step: bounds the temporaries next to the two tensors themselves.
CHUNK_ELEMENTS = 1 << 16
STREAM_ELEMENTS = 1 << 20  # elements read per side per step when streaming (4 MiB of float32)

PathOrMap = str | os.PathLike[str] | VariableMap


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


@dataclass(frozen=True)
class DiffEntry:
    """One canonical name: the variable on each side (None when absent) and what differs."""

    name: str
    category: str
    a: Variable | None
    b: Variable | None
    values: ValueStats | None = None
    paired_by: str = ""
    translation: Translation | None = None
    note: str | None = None

    @property
    def different(self) -> bool:
        return self.category in DIFFERENT

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "paired_by": self.paired_by or None,
            "a": None if self.a is None else self.a.to_json(),
            "b": None if self.b is None else self.b.to_json(),
            "values": None if self.values is None else self.values.to_json(),
            "translation": None if self.translation is None else self.translation.to_json(),
            "note": self.note,
        }


@dataclass(frozen=True)
class Side:
    """What the report says about one input."""

    path: str
    format: str
    variables: int
    aliases: int = 0
    excluded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "variables": self.variables,
            "aliases": self.aliases,
            "excluded": self.excluded,
        }

    @classmethod
    def of(cls, vmap: VariableMap, selection: Selection) -> Side:
        primaries = vmap.primaries()
        return cls(
            os.fspath(vmap.path),
            vmap.format,
            len(primaries),
            len(vmap) - len(primaries),
            excluded_count(vmap, selection),
        )


@dataclass(frozen=True)
class DiffResult:
    """Every canonical name of either side with its category; `exit_code` is 0 identical, 1 different."""

    a: Side
    b: Side
    entries: tuple[DiffEntry, ...]
    rtol: float = 0.0
    atol: float = 0.0
    names_only: bool = False
    rules: RenameRules = field(default_factory=RenameRules)
    selection: Selection = field(default_factory=Selection)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CATEGORIES, 0)
        for entry in self.entries:
            counts[entry.category] += 1
        return counts

    @property
    def identical(self) -> bool:
        return not any(e.different for e in self.entries)

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1

    def by_category(self, category: str) -> list[DiffEntry]:
        return [e for e in self.entries if e.category == category]

    def summary_line(self) -> str:
        counts = self.counts
        parts = [
            f"{counts[ONLY_IN_A]} only in A",
            f"{counts[ONLY_IN_B]} only in B",
            f"{counts[SHAPE_CHANGED]} shape changed",
            f"{counts[DTYPE_CHANGED]} dtype changed",
        ]
        if self.names_only:
            parts.append(f"{counts[NOT_COMPARED]} matched (values not compared)")
        else:
            parts += [f"{counts[VALUES_CHANGED]} values changed", f"{counts[IDENTICAL]} identical"]
        if counts[FORMAT_SPECIFIC]:
            parts.append(f"{counts[FORMAT_SPECIFIC]} format-specific")
        structural = sum(1 for e in self.entries if e.paired_by == BY_STRUCTURE)
        if structural:
            parts.append(f"{structural} paired by structure")
        tolerance = "" if self.names_only else f" (rtol={self.rtol:g}, atol={self.atol:g})"
        verdict = "IDENTICAL" if self.identical else "DIFFERENT"
        return f"{verdict}: {', '.join(parts)}{tolerance}"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "options": {
                "rtol": self.rtol,
                "atol": self.atol,
                "names_only": self.names_only,
                "weights_only": self.selection.weights_only,
                "exclude": list(self.selection.exclude),
                "rules": self.rules.to_json(),
            },
            "identical": self.identical,
            "exit_code": self.exit_code,
            "summary": self.counts,
            "variables": [e.to_json() for e in self.entries],
        }


def _open(source: PathOrMap, opened: contextlib.ExitStack) -> VariableMap:
    """The map of `source`; maps opened here (from paths) are closed when `opened` unwinds, given ones never."""
    if isinstance(source, VariableMap):
        return source
    from ckpt_tools.readers.registry import open_checkpoint

    return opened.enter_context(open_checkpoint(Path(source)))


def _compare_all(
    pairs: list[Pair],
    translate: Translator,
    tolerance: tuple[float, float],
    names_only: bool,
    progress: Callable[[int], None] | None,
) -> list[DiffEntry]:
    """One entry per pair, in canonical-name order; slots of two dialects compared in Keras 3's meaning."""
    rtol, atol = tolerance
    entries: list[DiffEntry] = []
    for pair in pairs:
        entry = _compare_pair(pair.name, pair.a, pair.b, rtol, atol, names_only)
        if pair.paired_by == BY_ROLE and entry.category == DTYPE_CHANGED and not names_only:
            entry = _compare_counters(pair.name, pair.a, pair.b)
        elif entry.category in (VALUES_CHANGED, IDENTICAL) and pair.a and pair.b and pair.a.slot_of:
            entry = _in_one_meaning(entry, translate(pair.a, pair.b), rtol, atol)
        entries.append(dataclasses.replace(entry, paired_by=pair.paired_by))
        if progress is not None:
            progress(_pair_bytes(pair.a, pair.b))
    return entries


def _in_one_meaning(entry: DiffEntry, outcome: Outcome, rtol: float, atol: float) -> DiffEntry:
    """The slot pair compared after translating one side (as `ckpt convert` does), or noted as untranslatable."""
    if outcome is None:
        return entry
    if isinstance(outcome, str):
        return dataclasses.replace(entry, note=outcome)
    translation, value = outcome
    assert entry.a is not None and entry.b is not None
    value_a = value if translation.side == "a" else entry.a.read()
    value_b = value if translation.side == "b" else entry.b.read()
    stats = compare_arrays(value_a, value_b, rtol=rtol, atol=atol)
    category = VALUES_CHANGED if stats.differing else IDENTICAL
    return dataclasses.replace(entry, category=category, values=stats, translation=translation)


def _compare_counters(name: str, a: Variable | None, b: Variable | None) -> DiffEntry:
    """Two step counters of different dtypes (int64 `global_step`, int32 `iterations`): equal when their values
    are (a step is a count, whatever integer type holds it)."""
    assert a is not None and b is not None
    value_a, value_b = a.read().astype(np.float64), b.read().astype(np.float64)
    stats = compare_arrays(value_a, value_b)
    return DiffEntry(name, VALUES_CHANGED if stats.differing else IDENTICAL, a, b, stats)


def _pair_bytes(a: Variable | None, b: Variable | None) -> int:
    return sum((v.nbytes or 0) for v in (a, b) if v is not None)


def diff(
    a: PathOrMap,
    b: PathOrMap,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    names_only: bool = False,
    rules: RenameRules | None = None,
    strip_prefix: Sequence[str] = (),
    weights_only: bool = False,
    exclude: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> DiffResult:
    """Compare artifacts `a` and `b` (paths or opened VariableMaps) variable by variable.

    Variables pair by canonical name (`Variable.name` after `strip_prefix` and `rules`), the step counters by
    role, and layers left over by structure (docs/diff.md). `weights_only` compares the model weights alone;
    `exclude` globs (on canonical name or key) leave variables out. Unpaired format-specific variables are
    reported, not counted as differences. Values are compared
    one pair at a time (read a, read b, compare, drop); `progress` is called with the bytes of each pair
    done. With rtol=atol=0 values must be equal (NaN equals NaN at the same position; -0.0 equals 0.0);
    otherwise |a-b| <= atol + rtol*|b| elementwise. Raises CkptToolsError when an input cannot be read.
    """
    for label, value in (("rtol", rtol), ("atol", atol)):
        if not (value >= 0 and math.isfinite(value)):
            detail = f"must be a finite number >= 0 (got {value})"
            raise UsageError(f"{label}={value!r}: {detail}", argument=label, detail=detail)
    rules = (rules or RenameRules()).with_strip_prefixes(strip_prefix)
    selection = Selection(weights_only, tuple(g for g in exclude if g))
    with contextlib.ExitStack() as opened:
        map_a = _open(a, opened)
        map_b = _open(b, opened)
        pairs = pair_maps(map_a, map_b, rules, selection)
        entries = _compare_all(pairs, translator(map_a, map_b), (rtol, atol), names_only, progress)
    return DiffResult(
        a=Side.of(map_a, selection),
        b=Side.of(map_b, selection),
        entries=tuple(entries),
        rtol=float(rtol),
        atol=float(atol),
        names_only=names_only,
        rules=rules,
        selection=selection,
    )


def _compare_pair(
    name: str, a: Variable | None, b: Variable | None, rtol: float, atol: float, names_only: bool
) -> DiffEntry:
    if b is None:
        assert a is not None
        return DiffEntry(name, FORMAT_SPECIFIC if a.format_specific else ONLY_IN_A, a, None)
    if a is None:
        return DiffEntry(name, FORMAT_SPECIFIC if b.format_specific else ONLY_IN_B, None, b)
    if tuple(a.shape) != tuple(b.shape):
        return DiffEntry(name, SHAPE_CHANGED, a, b)
    if a.dtype != b.dtype:
        return DiffEntry(name, DTYPE_CHANGED, a, b)
    if names_only:
        return DiffEntry(name, NOT_COMPARED, a, b)
    if a.dtype != "string" and a.streamable and b.streamable:
        stats = compare_streams(a, b, rtol=rtol, atol=atol)
        return DiffEntry(name, VALUES_CHANGED if stats.differing else IDENTICAL, a, b, stats)
    array_a = a.read()
    array_b = b.read()
    if array_a.shape != array_b.shape:
        # The declared shapes agreed but the stored tensors do not: report what is stored.
        return DiffEntry(name, SHAPE_CHANGED, a, b)
    stats = compare_arrays(array_a, array_b, rtol=rtol, atol=atol)
    del array_a, array_b
    return DiffEntry(name, VALUES_CHANGED if stats.differing else IDENTICAL, a, b, stats)


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
    for block_a, block_b in _aligned(a.iter_chunks(STREAM_ELEMENTS), b.iter_chunks(STREAM_ELEMENTS)):
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


def _aligned(left: Iterator[np.ndarray], right: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut two streams of 1-D blocks so that paired blocks cover the same element positions."""
    buf_a = buf_b = None
    while True:
        if buf_a is None or not buf_a.size:
            buf_a = next(left, None)
        if buf_b is None or not buf_b.size:
            buf_b = next(right, None)
        if buf_a is None or buf_b is None:
            if (buf_a is not None and buf_a.size) or (buf_b is not None and buf_b.size):
                raise CorruptCheckpointError("stored tensors hold different numbers of elements")
            return
        n = min(buf_a.size, buf_b.size)
        yield buf_a[:n], buf_b[:n]
        buf_a, buf_b = buf_a[n:], buf_b[n:]


class _Accumulator:
    """Running totals of an elementwise comparison, fed block by block."""

    def __init__(self, dtype_a: np.dtype[Any], dtype_b: np.dtype[Any], rtol: float, atol: float) -> None:
        self.strings = dtype_a.kind in ("O", "S", "U") or dtype_b.kind in ("O", "S", "U")
        self.exact = rtol == 0 and atol == 0
        self.same_dtype = dtype_a == dtype_b
        self.floating = dtype_a.kind not in ("b", "i", "u") and not self.strings
        self.integer_same = self.same_dtype and dtype_a.kind in ("b", "i", "u")
        self.rtol, self.atol = rtol, atol
        self.size = self.differing = self.nonfinite = 0
        self.max_abs = self.max_rel = 0.0

    def add(self, chunk_a: np.ndarray, chunk_b: np.ndarray) -> None:
        self.size += int(chunk_a.size)
        if self.strings:
            ne = np.fromiter(map(_bytes_ne, chunk_a, chunk_b), bool, len(chunk_a))
            self.differing += int(np.count_nonzero(ne))
            return
        rtol, atol, exact = self.rtol, self.atol, self.exact
        equal: np.ndarray | None = None
        if self.same_dtype:
            equal = chunk_a == chunk_b
            if bool(equal.all()):  # the common case: one pass, no NaN masks, no float64 copies
                return
        if self.integer_same:
            self._add_integers(chunk_a, chunk_b)
            return
        dtype = _compute_dtype(chunk_a)
        native = chunk_a.dtype.kind == "f" and chunk_b.dtype.kind == "f"  # numpy's own real float types
        # ufuncs widen native floats on the fly (no float64 copies); complex and ml_dtypes (bfloat16, float8) are
        # widened first
        wide_a = chunk_a if native else chunk_a.astype(dtype)
        wide_b = chunk_b if native else chunk_b.astype(dtype)
        finite = np.isfinite(wide_a)
        finite &= np.isfinite(wide_b)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            close = wide_a == wide_b if equal is None else equal
            close |= np.isnan(wide_a) & np.isnan(wide_b)
            if native:
                abs_diff = np.subtract(wide_a, wide_b, dtype=np.float64)
                np.abs(abs_diff, out=abs_diff)
                ref = np.abs(wide_b, dtype=np.float64)
            else:
                abs_diff = np.abs(np.subtract(wide_a, wide_b))
                ref = np.abs(wide_b)
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
            self.size, self.differing, _finite_or_none(self.max_abs), _finite_or_none(self.max_rel), self.nonfinite
        )


def _int_abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a-b| for same-dtype integer/bool arrays, exact (no overflow): the difference modulo 2**64, as float64."""
    ua = a.astype(np.uint64)
    ub = b.astype(np.uint64)
    larger = a >= b
    return np.where(larger, ua - ub, ub - ua).astype(np.float64)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes_ne(x: Any, y: Any) -> bool:
    return bool(x != y)
