"""Shared message helpers: short name lists, counted nouns, one-line and printable text."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_DIGITS = re.compile(r"([0-9]+)")


def listed(items: Sequence[str], limit: int, show: Callable[[str], str] | None = None) -> str:
    """The first `limit` items joined by commas (each passed through `show`), then `and N more`."""
    head = items[:limit]
    shown = ", ".join(head if show is None else (show(i) for i in head))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def counted(n: int, noun: str) -> str:
    """`1 tensor`, `1,024 tensors`: the count with thousands separators and the noun pluralized."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def flat(exc: BaseException) -> str:
    """An exception's message with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(exc).split())


def printable(text: str) -> str:
    """Names from damaged files may hold undecodable bytes (surrogate escapes): show them as \\x escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders `v2` before `v10`: ASCII digit runs compare as numbers (by length, then digits, so a
    5,000-digit run from a hostile name costs no int conversion), everything else as text."""
    return tuple(_part(part) for part in _DIGITS.split(text) if part)


def _part(part: str) -> tuple[int, int, str]:
    if part.isascii() and part.isdigit():
        digits = part.lstrip("0") or "0"
        return (0, len(digits), digits)
    return (1, 0, part)
