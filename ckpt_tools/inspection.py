"""`inspect`: list an artifact's variables, optimizer findings and step, optionally with value statistics."""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckpt_tools.facts import Facts, facts
from ckpt_tools.messages import natural_sorted
from ckpt_tools.model import ROLES, Variable, VariableMap
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.storage import as_path
from ckpt_tools.tree import Tree, build_tree
from ckpt_tools.values import MAX_VALUE_BYTES, check_budget, read_for_print
from ckpt_tools.values import to_json as values_json
from ckpt_tools.verdict import resume_verdict

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class TensorStats:
    """Value statistics of one tensor (numbers only; strings and bools get counts)."""

    min: float | None
    max: float | None
    mean: float | None
    nan: int
    inf: int

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "mean": self.mean, "nan": self.nan, "inf": self.inf}


# Elements read per step by `inspect --stats`: memory stays at one block whatever the tensor's size.
STATS_BLOCK = 1 << 20


class _StatsAccumulator:
    """Running min/max/sum over finite values and NaN/Inf counts, fed block by block. bfloat16 and float8
    (ml_dtypes, which numpy sees as opaque `V` types) are widened to float32 per block, exactly."""

    def __init__(self) -> None:
        self.numeric = True
        self.nan = self.inf = self.count = 0
        self.total = 0.0
        self.low: float | None = None
        self.high: float | None = None

    def add(self, block: np.ndarray) -> None:
        import numpy as np  # only --stats reads values

        block = block.reshape(-1)
        if block.dtype.type.__module__.startswith("ml_dtypes") or block.dtype == np.float16:
            block = block.astype(np.float32)  # exact; numpy's float16 reductions run at a tenth of the speed
        elif block.dtype == object or block.dtype.kind in "SUV":
            self.numeric = False
            return
        if block.dtype.kind == "b":
            block = block.astype(np.int8)
        if block.dtype.kind == "c":
            block = np.abs(block)
        if block.size == 0:
            return
        low, high = block.min(), block.max()  # NaN propagates and an Inf is an extreme: both finite, all are
        if block.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
            block = self._finite_part(block)
            if block.size == 0:
                return
            low, high = block.min(), block.max()
        self.low = float(low) if self.low is None else min(self.low, float(low))
        self.high = float(high) if self.high is None else max(self.high, float(high))
        self.total += float(block.sum(dtype=np.float64))
        self.count += int(block.size)

    def _finite_part(self, block: np.ndarray) -> np.ndarray:
        """The finite values of a float block, counting its NaN and Inf."""
        import numpy as np

        finite_mask = np.isfinite(block)
        nan = int(np.count_nonzero(np.isnan(block)))
        self.nan += nan
        self.inf += int(block.size - np.count_nonzero(finite_mask)) - nan
        finite: np.ndarray = block[finite_mask]
        return finite

    def result(self) -> TensorStats:
        if not self.numeric:
            return TensorStats(None, None, None, 0, 0)
        if self.count == 0:
            return TensorStats(None, None, None, self.nan, self.inf)
        return TensorStats(self.low, self.high, self.total / self.count, self.nan, self.inf)


def tensor_stats(value: np.ndarray) -> TensorStats:
    """min/max/mean over finite values, and NaN/Inf counts; None where not numeric or empty."""
    acc = _StatsAccumulator()
    flat = value.reshape(-1)
    for start in range(0, int(flat.size), STATS_BLOCK):
        acc.add(flat[start : start + STATS_BLOCK])
    return acc.result()


def variable_stats(var: Variable) -> TensorStats:
    """`tensor_stats` of a stored tensor, read block by block (readers that stream never hold it whole)."""
    acc = _StatsAccumulator()
    for block in var.iter_chunks(STATS_BLOCK):
        acc.add(block)
    return acc.result()


JSON_SCHEMA = "ckpt-tools/inspect/3"


@dataclass
class InspectResult:
    """An artifact's variables (`variables`: all in natural name order, or those `filter` matched), its
    VariableMap (`vmap`), value statistics by key with `stats=True` (`stats`), tensor values by key with
    `values=GLOB` (`values`), the layer tree with `tree=True` (`tree`) and what the artifact records about
    itself (`facts`). `exit_code` is always 0: errors are raised, not reported."""

    vmap: VariableMap
    variables: list[Variable]
    stats: dict[str, TensorStats] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    tree: Tree | None = None
    facts: Facts = field(default_factory=Facts)
    pattern: str | None = None

    exit_code: int = 0

    @property
    def empty_match(self) -> bool:
        """A filter or --values pattern was given and matched nothing."""
        return self.pattern is not None and not self.variables

    def to_json(self) -> dict[str, Any]:
        vmap = self.vmap
        rows = []
        for var in self.variables:
            row = var.to_json()
            row["size"] = var.size
            row["nbytes"] = var.nbytes
            if var.key in self.stats:
                row["stats"] = self.stats[var.key].to_json()
            if var.key in self.values:
                row["values"] = values_json(self.values[var.key])
            rows.append(row)
        optimizer = vmap.optimizer.to_json()
        if not optimizer["hyperparameters"] and self.facts.hyperparameters:
            optimizer["hyperparameters"] = dict(self.facts.hyperparameters)
            optimizer["hyperparameters_from"] = self.facts.hyperparameters_from
        return {
            "schema": JSON_SCHEMA,
            "path": str(vmap.path),
            "format": vmap.format,
            "variables": rows,
            "summary": {
                "tensors": len(vmap),
                "listed": len(self.variables),
                "parameters": vmap.parameters,
                "bytes": vmap.nbytes,
                "roles": {role: len(vmap.with_role(role)) for role in ROLES},
            },
            "optimizer": optimizer,
            "step": vmap.step,
            "step_key": vmap.step_key,
            "epoch": vmap.epoch,
            "epoch_key": vmap.epoch_key,
            "layout": vmap.layout,
            "resume": resume_verdict(vmap).to_json(),
            "writer": dict(self.facts.writer),
            "tags": list(self.facts.tags),
            "signatures": [sig.to_json() for sig in self.facts.signatures],
            **({"tree": self.tree.to_json()} if self.tree is not None else {}),
            "metadata": vmap.metadata,
        }


def inspect(
    path: str | os.PathLike[str],
    *,
    filter: str | None = None,
    stats: bool = False,
    format: str | None = None,
    values: str | None = None,
    tree: bool = False,
    max_value_bytes: int = MAX_VALUE_BYTES,
    full_values: bool = False,
) -> InspectResult:
    """Read an artifact's variable map: every variable, or those `filter` matches.

    `filter` and `values` match a variable's canonical name as a glob, or its stored key exactly (so
    `dense/*` selects the weights of `dense`, not the TF1 slot keys `dense/kernel/Adam`; their canonical
    names are `optimizer/dense/...`). `stats` reads every listed tensor (one at a time) for min/max/mean and
    NaN/Inf counts; `values` lists the matching variables with their values (refused, before anything is read,
    past `max_value_bytes` in all, or past values.MAX_LISTED_ELEMENTS per tensor when `full_values` — JSON or
    `--all` — prints every element); `tree` builds the layer tree; `format` skips detection. The result keeps the
    VariableMap (`result.vmap`) for further reads.
    """
    with gc_paused():
        vmap = open_checkpoint(as_path(path), format)
        pattern = values if values is not None else filter
        chosen = natural_sorted((v for v in vmap.values() if pattern is None or matches(v, pattern)), _name_of)
        result = InspectResult(vmap, chosen, facts=facts(vmap), pattern=pattern)
    if tree:
        result.tree = build_tree(vmap)
    if stats:
        for var in chosen:
            result.stats[var.key] = variable_stats(var)
    if values is not None:
        check_budget(chosen, limit=max_value_bytes, full=full_values)
        for var in chosen:
            result.values[var.key] = read_for_print(var, max_value_bytes)
    return result


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: reading an index of 100,000 entries creates millions of objects that
    all stay alive, and the collector would walk them again and again (a quarter of the time). Collection
    resumes, if it was on, when the block ends, with the objects made inside counted as old ones (frozen and
    unfrozen: moved to the oldest generation unexamined), so that the first young collection does not walk
    them all either."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _name_of(var: Variable) -> str:
    return var.name


def matches(var: Variable, pattern: str) -> bool:
    """The canonical name matches the glob, or the stored key is the pattern itself."""
    return fnmatch.fnmatchcase(var.name, pattern) or var.key == pattern
