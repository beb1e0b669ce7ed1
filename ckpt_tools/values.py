"""Tensor values for `inspect --values`: bounded reads, numpy printing, strict-JSON lists."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ckpt_tools.errors import UsageError
from ckpt_tools.model import Variable

# A tensor larger than this is refused (it would be read whole to print it); --stats summarizes any size.
MAX_VALUE_BYTES = 256 << 20


def read_for_print(var: Variable, limit: int = MAX_VALUE_BYTES) -> np.ndarray:
    """The tensor's values, refused with one line when it is larger than `limit` bytes."""
    size = var.nbytes
    if size is not None and size > limit:
        raise UsageError(
            f"{var.name}: {size:,} bytes is more than --values prints ({limit:,} bytes); use --stats for a summary",
            argument="values",
            detail=f"{var.name} is {size:,} bytes, over the {limit:,}-byte limit; use --stats for a summary",
        )
    value = var.read()
    if value.dtype.kind not in "biufcSUO" and value.dtype.names is None:
        value = value.astype(np.float32)  # bfloat16 / float8 (ml_dtypes): printed through float32, exactly
    return value


def to_text(value: np.ndarray, *, threshold: int, precision: int, full: bool) -> str:
    """numpy's own printing: `threshold` elements before summarizing with `...` (`full`: never summarize)."""
    limit = max(int(value.size), 1) + 1 if full else threshold
    return np.array2string(value, threshold=limit, precision=precision, separator=", ", max_line_width=120)


def to_json(value: np.ndarray) -> Any:
    """Nested lists; NaN/Inf as the strings "nan"/"inf"/"-inf" (strict JSON); bytes decoded with escapes."""
    if value.dtype.kind == "c":  # each element as [real, imaginary]
        return _nested(np.stack([value.real, value.imag], axis=-1).tolist())
    return _nested(value.tolist())


def _nested(item: Any) -> Any:
    if isinstance(item, list):
        return [_nested(x) for x in item]
    if isinstance(item, bytes):
        return item.decode("utf-8", "backslashreplace")
    return _number(item)


def _number(item: Any) -> Any:
    if isinstance(item, float) and not math.isfinite(item):
        return "nan" if math.isnan(item) else ("inf" if item > 0 else "-inf")
    return item
