"""Tensor values for `inspect --values`: bounded reads, numpy printing, strict-JSON lists."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ckpt_tools.errors import UsageError
from ckpt_tools.model import Variable

if TYPE_CHECKING:
    import numpy as np

# What --values reads is bounded: each tensor and all of them together by bytes (they are read whole), and
# the elements written out in full (JSON, --all) by count, since text is many times the binary size. --stats
# summarizes any size.
MAX_VALUE_BYTES = 256 << 20
MAX_LISTED_ELEMENTS = 1 << 20
MAX_STRING_ELEMENTS = 1 << 16


def check_budget(variables: list[Variable], *, limit: int = MAX_VALUE_BYTES, full: bool = False) -> None:
    """Refuse, before reading anything, values that would not fit the limits above (one line, exit 2)."""
    total = 0
    for var in variables:
        if var.dtype == "string" and var.size > MAX_STRING_ELEMENTS:
            _refuse(var, f"{var.size:,} strings, over the {MAX_STRING_ELEMENTS:,}-element limit for strings")
        if full and var.size > MAX_LISTED_ELEMENTS:
            _refuse(var, f"{var.size:,} elements, over the {MAX_LISTED_ELEMENTS:,} printed in full (JSON, --all)")
        size = var.nbytes or 0
        if size > limit:
            _refuse(var, f"{size:,} bytes, over the {limit:,}-byte limit")
        total += size
    if total > limit:
        detail = f"the {len(variables)} matching tensors hold {total:,} bytes, over the {limit:,}-byte limit"
        raise UsageError(f"--values: {detail}; match fewer, or use --stats", argument="values", detail=detail)


def _refuse(var: Variable, why: str) -> None:
    detail = f"{var.name}: {why}; use --stats for a summary"
    raise UsageError(f"--values {detail}", argument="values", detail=detail)


def read_for_print(var: Variable, limit: int = MAX_VALUE_BYTES) -> np.ndarray:
    """The tensor's values (checked against `limit` again: a string tensor's size is known only once read)."""
    import numpy as np

    check_budget([var], limit=limit)
    value = var.read()
    if value.dtype == object and sum(len(x) for x in value.reshape(-1) if isinstance(x, (bytes, str))) > limit:
        _refuse(var, f"its strings hold more than {limit:,} bytes")
    if value.dtype.kind not in "biufcSUO" and value.dtype.names is None:
        value = value.astype(np.float32)  # bfloat16 / float8 (ml_dtypes): printed through float32, exactly
    return value


def to_text(value: np.ndarray, *, threshold: int, precision: int, full: bool) -> str:
    """numpy's own printing: `threshold` elements before summarizing with `...` (`full`: never summarize)."""
    import numpy as np

    limit = max(int(value.size), 1) + 1 if full else threshold
    return np.array2string(value, threshold=limit, precision=precision, separator=", ", max_line_width=120)


def to_json(value: np.ndarray) -> Any:
    """Nested lists; NaN/Inf as the strings "nan"/"inf"/"-inf" (strict JSON); bytes decoded with escapes."""
    import numpy as np

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
