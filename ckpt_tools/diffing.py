"""Compare two artifacts variable by variable, streaming one pair of tensors at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckpt_tools.elementwise import ValueStats, compare_arrays, compare_streams
from ckpt_tools.errors import UsageError
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.pairing import BY_ROLE, BY_STRUCTURE, STEP, Pair, Selection, excluded_count, pair_maps
from ckpt_tools.readers.bundles import read_scalar
from ckpt_tools.renames import RenameRules
from ckpt_tools.slot_meaning import (
    Outcome,
    Translation,
    Translator,
    beta_power,
    implied_step,
    is_beta1_power,
    power_matches_step,
    translator,
)
from ckpt_tools.storage import as_path

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


PathOrMap = str | os.PathLike[str] | VariableMap


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
            str(vmap.path),
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
            if counts[NOT_COMPARED]:
                parts.append(f"{counts[NOT_COMPARED]} NOT COMPARED (undecidable: see their notes)")
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

    return opened.enter_context(open_checkpoint(as_path(source)))


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


def _in_one_meaning(entry: DiffEntry, outcome: Outcome | None, rtol: float, atol: float) -> DiffEntry:
    """The slot pair compared after translating one side (as `ckpt convert` does), or not compared when the
    translation cannot be made (the note says why)."""
    if outcome is None:
        return entry
    if not outcome.comparable or outcome.value is None or outcome.translation is None:
        return dataclasses.replace(entry, category=NOT_COMPARED, values=None, note=outcome.note)
    translation, value = outcome.translation, outcome.value
    assert entry.a is not None and entry.b is not None
    value_a = value if translation.side == "a" else entry.a.read()
    value_b = value if translation.side == "b" else entry.b.read()
    stats = compare_arrays(value_a, value_b, rtol=rtol, atol=atol)
    category = VALUES_CHANGED if stats.differing else IDENTICAL
    return dataclasses.replace(entry, category=category, values=stats, translation=translation, note=outcome.note)


def _with_implied_steps(entries: list[DiffEntry], map_a: VariableMap, map_b: VariableMap) -> list[DiffEntry]:
    """TF1 Adam's `beta1_power` implies the step its bias correction is at: checked against the step (a skewed
    one would resume with a different correction), and standing in for a step counter the source lacks."""
    step = next((e for e in entries if e.name == STEP and e.paired_by in (BY_ROLE, "")), None)
    out = []
    for entry in entries:
        var = entry.a or entry.b
        if entry.category == FORMAT_SPECIFIC and var is not None and beta_power(var):
            entry = _check_power(entry, var, map_a if entry.a else map_b, step)
        out.append(entry)
    if step is not None and (step.a is None) != (step.b is None):
        lacking, power = ("a", _power_of(entries, "a")) if step.a is None else ("b", _power_of(entries, "b"))
        if power is not None:
            out[out.index(step)] = _implied_step_entry(step, power, map_a if lacking == "a" else map_b, lacking)
    return out


def _power_of(entries: list[DiffEntry], side: str) -> Variable | None:
    found = [e.a if side == "a" else e.b for e in entries if e.category == FORMAT_SPECIFIC]
    powers = [v for v in found if v is not None and is_beta1_power(v)]
    return powers[0] if len(powers) == 1 else None


def _check_power(entry: DiffEntry, var: Variable, vmap: VariableMap, step: DiffEntry | None) -> DiffEntry:
    counter = None if step is None else (step.b if entry.a is not None else step.a) or (step.a or step.b)
    value = read_scalar(counter) if counter is not None else None
    if value is None:
        return dataclasses.replace(entry, note=f"{beta_power(var)}_power not checked: no step counter to check it by")
    matches, note = power_matches_step(var, vmap, value)
    if matches is None:  # a step to check against, but no way to check it: undecided, and said so
        return dataclasses.replace(entry, category=NOT_COMPARED, note=note)
    return dataclasses.replace(entry, category=FORMAT_SPECIFIC if matches else VALUES_CHANGED, note=note)


def _implied_step_entry(step: DiffEntry, power: Variable, vmap: VariableMap, lacking: str) -> DiffEntry:
    implied, why = implied_step(power, vmap)
    counter = step.b if lacking == "a" else step.a
    value = read_scalar(counter) if counter is not None else None
    if implied is None or value is None:
        return dataclasses.replace(step, note=why)
    a, b = (power, step.b) if lacking == "a" else (step.a, power)
    differing = int(implied != value)
    note = f"{lacking.upper()} stores no step counter; its beta1_power implies step {implied}"
    stats = ValueStats(1, differing, float(abs(implied - value)), None)
    return DiffEntry(STEP, VALUES_CHANGED if differing else IDENTICAL, a, b, stats, BY_ROLE, None, note)


def _compare_counters(name: str, a: Variable | None, b: Variable | None) -> DiffEntry:
    """Two step counters of different dtypes (int64 `global_step`, int32 `iterations`): equal when their values
    are (a step is a count, whatever integer type holds it), compared as exact integers."""
    assert a is not None and b is not None
    value_a, value_b = read_scalar(a), read_scalar(b)
    differing = int(value_a is None or value_b is None or value_a != value_b)
    gap = None if value_a is None or value_b is None else float(abs(value_a - value_b))
    stats = ValueStats(1, differing, gap, None if gap is None or not value_b else gap / abs(value_b))
    return DiffEntry(name, VALUES_CHANGED if differing else IDENTICAL, a, b, stats)


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
        if not names_only:
            entries = _with_implied_steps(entries, map_a, map_b)
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
