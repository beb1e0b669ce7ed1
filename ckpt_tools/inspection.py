"""`inspect`: list an artifact's variables, optimizer findings and step, optionally with value statistics."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.model import ROLES, Variable, VariableMap
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.verdict import resume_verdict


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


def tensor_stats(value: np.ndarray) -> TensorStats:
    """min/max/mean over finite values, and NaN/Inf counts; None where not numeric or empty."""
    if value.dtype == object or value.dtype.kind in "SUV":
        return TensorStats(None, None, None, 0, 0)
    if value.dtype.kind == "b":
        value = value.astype(np.int8)
    if value.dtype.kind not in "iufc":
        value = value.astype(np.float32)  # bfloat16 / float8 from ml_dtypes
    if value.dtype.kind == "c":
        value = np.abs(value)
    if value.dtype.kind == "f":
        nan = int(np.isnan(value).sum())
        inf = int(np.isinf(value).sum())
        finite = value[np.isfinite(value)] if nan or inf else value
    else:
        nan = inf = 0
        finite = value
    if finite.size == 0:
        return TensorStats(None, None, None, nan, inf)
    return TensorStats(float(finite.min()), float(finite.max()), float(finite.astype(np.float64).mean()), nan, inf)


JSON_SCHEMA = "ckpt-tools/inspect/3"


@dataclass
class InspectResult:
    """An artifact's variables (`variables`: all, or those `filter` matched), its VariableMap (`vmap`) and, with
    `stats=True`, value statistics by key (`stats`). `exit_code` is always 0: errors are raised, not reported."""

    vmap: VariableMap
    variables: list[Variable]
    stats: dict[str, TensorStats] = field(default_factory=dict)

    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        vmap = self.vmap
        rows = []
        for var in self.variables:
            row = var.to_json()
            row["size"] = var.size
            row["nbytes"] = var.nbytes
            if var.key in self.stats:
                row["stats"] = self.stats[var.key].to_json()
            rows.append(row)
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
            "optimizer": vmap.optimizer.to_json(),
            "step": vmap.step,
            "step_key": vmap.step_key,
            "epoch": vmap.epoch,
            "epoch_key": vmap.epoch_key,
            "layout": vmap.layout,
            "resume": resume_verdict(vmap).to_json(),
            "metadata": vmap.metadata,
        }


def inspect(
    path: str | os.PathLike[str], *, filter: str | None = None, stats: bool = False, format: str | None = None
) -> InspectResult:
    """Read an artifact's variable map: every variable, or those whose key or name matches the glob `filter`.

    `stats` reads every listed tensor (one at a time) for min/max/mean and NaN/Inf counts; `format` skips
    detection. The result keeps the VariableMap (`result.vmap`) for further reads.
    """
    vmap = open_checkpoint(Path(path), format)
    chosen = [
        v
        for v in vmap.values()
        if filter is None or fnmatch.fnmatchcase(v.key, filter) or fnmatch.fnmatchcase(v.name, filter)
    ]
    result = InspectResult(vmap, chosen)
    if stats:
        for var in chosen:
            result.stats[var.key] = tensor_stats(var.read())
    return result
