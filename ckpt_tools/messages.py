"""Shared message helpers: short name lists, counted nouns, one-line and printable text."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_DIGITS = re.compile(r"([0-9]+)")


def listed(items: Sequence[str], limit: int, show: Callable[[str], str] | None = None) -> str:
    """The first `limit` items joined by commas (each passed through `show`), then `and N more`."""
    head = items[:limit]
    shown = ", ".join(head if show is None else (show(i) for i in head))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def counted(n: int, noun: str) -> str:
    """`1 tensor`, `1,024 tensors`: the count with thousands separators and the noun pluralized."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def os_reason(exc: OSError) -> str:
    """Why an OS call failed, on one line: its strerror, else its message, else its type (an OSError raised with
    no errno, such as FileNotFoundError("..."), has strerror None)."""
    return exc.strerror or flat(exc) or type(exc).__name__


MAX_MESSAGE_CHARS = 2000


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters (ending in `...`): a name a hostile file made megabytes long must not make
    an error line or report field of the same size."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flat(exc: BaseException) -> str:
    """An exception's message with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(exc).split())


# DEL, C1 controls, bidirectional overrides and isolates: with the C0 controls, what a hostile name must not send
# to a terminal (move the cursor, retitle the window, hide or reorder text).
_UNSAFE_ABOVE_C0 = "\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\x00-\x1f{_UNSAFE_ABOVE_C0}]")
_CONTROLS_BUT_LINE_BREAKS = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSAFE_ABOVE_C0}]")  # newline and tab kept


def escape_controls(text: str, keep_line_breaks: bool = False) -> str:
    """Control characters as `\\xNN`/`\\uNNNN` escapes (newline and tab too unless `keep_line_breaks`),
    undecodable bytes as `printable` shows them."""
    pattern = _CONTROLS_BUT_LINE_BREAKS if keep_line_breaks else _CONTROLS
    return printable(pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text))


def escaped_name(text: str) -> str:
    """A name fit for one cell or line of a report: every control character escaped (a newline in a file name
    must not make a fake row)."""
    return escape_controls(text)


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


def natural_sorted(items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """`sorted(items, key=lambda i: natural_key(name(i)))`, several times faster for many items: each name becomes
    one string that compares as its natural_key does (`_natural_text`), unless some name holds a character below
    U+0002 (which that string cannot order), when natural_key is used after all."""
    listed = list(items)
    names = [name(item) for item in listed]
    joined = "".join(names)
    keys: list[Any] | None = None
    if "\x00" not in joined and "\x01" not in joined:
        try:
            keys = [_natural_text(text) for text in names]
        except ValueError:  # a digit run of more than 0x10FFFF digits has no length character
            keys = None
    if keys is None:
        keys = [natural_key(text) for text in names]
    order = sorted(range(len(listed)), key=keys.__getitem__)
    return [listed[i] for i in order]


def _natural_text(text: str) -> str:
    """Text parts kept, each digit run replaced by U+0001, its length (leading zeros stripped) as one character
    and its digits. Compared as strings these order as natural_key tuples do: a digit run's U+0001 sorts before
    any text character, run lengths then digits compare as numbers, and a text part that is a prefix of another
    is followed by U+0001 or the end, both lower than any text character (names holding U+0000 or U+0001 are not
    given to this)."""
    parts = _DIGITS.split(text)
    if len(parts) == 1:
        return text
    parts[1::2] = map(_digit_run, parts[1::2])
    return "".join(parts)


@functools.lru_cache(maxsize=1 << 16)
def _digit_run(run: str) -> str:
    digits = run.lstrip("0") or "0"
    return "\x01" + chr(len(digits)) + digits
