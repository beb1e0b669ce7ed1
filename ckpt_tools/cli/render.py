"""Output helpers shared by every command: tables via tabulate, stable JSON, human-readable sizes."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """The `--json` flag every command shares."""
    decorated: F = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(
        func
    )
    return decorated


def jobs_option(verb: str) -> Callable[[F], F]:
    """The `-j/--jobs N` option of the commands that work over many artifacts (validate, ls)."""
    return click.option(
        "-j",
        "--jobs",
        "jobs",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        metavar="N",
        help=f"{verb} N artifacts at a time, in worker processes (0: one per CPU); same output as with 1.",
    )


def follow_symlinks_option(func: F) -> F:
    """The `--follow-symlinks` flag every reading command shares (docs/security.md)."""

    def enable(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            from ckpt_tools.readers.confine import FOLLOW_SYMLINKS

            FOLLOW_SYMLINKS.set(True)

    decorated: F = click.option(
        "--follow-symlinks",
        is_flag=True,
        expose_value=False,
        callback=enable,
        help="Read files of an artifact that are symbolic links to places outside it (refused by default).",
    )(func)
    return decorated


def _default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _finite(value: Any) -> Any:
    """Replace non-finite floats (which JSON cannot hold) by their string names, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dump_json(obj: Any) -> str:
    """Serialize for `--json`: strict JSON (no NaN literals), stable key order as built, indented by two. Control
    characters are escaped by JSON itself; undecodable bytes from damaged names become visible `\\udcXX`
    escapes, so the output is always valid UTF-8. Documents of plain JSON types (all of them in practice) are
    written by `_indented`, which makes the same text as `json.dumps(indent=2)` several times faster."""
    try:
        text = _indented(obj)
    except _Unusual:
        text = json.dumps(_finite(obj), indent=2, default=_default, allow_nan=False, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Unusual(Exception):
    """Internal: a value `_indented` leaves to `json.dumps` (a non-string key, a type JSON does not know)."""


_encode_string: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)


def _indented(obj: Any) -> str:
    """`json.dumps(_finite(obj), indent=2, ensure_ascii=False)` for documents of dicts with string keys, lists,
    tuples, strings, numbers, booleans and None (non-finite floats as their names); raises _Unusual otherwise.
    The pure-Python encoder json.dumps falls back to for indented output yields a piece per token; this writes
    each scalar with one look-up of its type and each container with one join."""
    pieces: list[str] = []
    _put(obj, "\n", pieces)
    return "".join(pieces)


def _put(value: Any, newline: str, pieces: list[str]) -> None:
    """Append the JSON text of `value`, whose container lines start with `newline` (a line break and indent)."""
    kind = type(value)
    if kind is str:
        pieces.append(_encode_string(value))
    elif kind is int:
        pieces.append(int.__repr__(value))
    elif kind is dict:
        _put_dict(value, newline, pieces)
    elif kind is list or kind is tuple:
        _put_list(value, newline, pieces)
    else:
        pieces.append(_scalar(value))


def _scalar(value: Any) -> str:
    """JSON text of a scalar that is not exactly a str or an int, in json.dumps' order of type tests."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else _encode_string(str(value))
    raise _Unusual(type(value).__name__)


def _put_dict(value: dict[Any, Any], newline: str, pieces: list[str]) -> None:
    if not value:
        pieces.append("{}")
        return
    inner = newline + "  "
    separator = "," + inner
    pieces.append("{" + inner)
    first = True
    for key, item in value.items():
        if type(key) is not str:
            raise _Unusual("key")
        if first:
            first = False
        else:
            pieces.append(separator)
        pieces.append(_encode_string(key) + ": ")
        _put(item, inner, pieces)
    pieces.append(newline + "}")


def _put_list(value: list[Any] | tuple[Any, ...], newline: str, pieces: list[str]) -> None:
    if not value:
        pieces.append("[]")
        return
    inner = newline + "  "
    if all(type(item) is int for item in value):  # shapes: one join
        pieces.append("[" + inner + ("," + inner).join(map(int.__repr__, value)) + newline + "]")
        return
    separator = "," + inner
    pieces.append("[" + inner)
    if all(type(item) is dict for item in value):  # rows (one per variable): each made as one string
        pieces.append(separator.join([_dict_text(item, inner) for item in value]))
    else:
        for index, item in enumerate(value):
            if index:
                pieces.append(separator)
            _put(item, inner, pieces)
    pieces.append(newline + "]")


def _dict_text(value: dict[Any, Any], newline: str) -> str:
    """What `_put_dict` appends, as one string: strings, ints, None and lists of ints written directly."""
    if not value:
        return "{}"
    inner = newline + "  "
    items = []
    for key, item in value.items():
        if type(key) is not str:
            raise _Unusual("key")
        kind = type(item)
        if kind is str:
            text = _encode_string(item)
        elif kind is int:
            text = int.__repr__(item)
        elif item is None:
            text = "null"
        else:
            pieces: list[str] = []
            _put(item, inner, pieces)
            text = "".join(pieces)
        items.append(_encode_string(key) + ": " + text)
    return "{" + inner + ("," + inner).join(items) + newline + "}"


def echo_json(obj: Any) -> None:
    click.echo(dump_json(obj))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table (tabulate's "simple" format, numbers left as given). Tables of plain one-line text
    cells, the common case, are laid out directly, in time linear in the cells; anything else (non-string cells,
    line breaks, escape sequences, non-ASCII text whose display width tabulate measures) goes through tabulate."""
    listed = [list(row) for row in rows]
    header_list = [str(h) for h in headers]
    laid_out = _simple_table(listed, header_list)
    if laid_out is not None:
        return laid_out
    from tabulate import tabulate

    return tabulate(listed, headers=header_list, tablefmt="simple", disable_numparse=True)


def _simple_table(rows: list[list[Any]], headers: list[str]) -> str | None:
    """tabulate's "simple" layout when every cell is a printable ASCII string (no tabs, line breaks or escape
    codes) and every row as wide as the headers, else None: each column left-aligned, its cells stripped of outer
    spaces, padded to its widest cell or its header plus two; columns joined by two spaces, lines right-stripped.
    Each column is checked and measured with a few whole-column string operations."""
    if not headers or not all(h.isascii() and h.isprintable() for h in headers):
        return None
    if any(len(row) != len(headers) for row in rows):
        return None
    return _simple_columns(list(zip(*rows, strict=True)) if rows else [() for _ in headers], headers)


def column_table(columns: list[list[str]], headers: list[str]) -> str:
    """`table` of the rows these columns (one list per header, all as long) make."""
    if headers and all(h.isascii() and h.isprintable() for h in headers):
        laid_out = _simple_columns(list(columns), headers)
        if laid_out is not None:
            return laid_out
    return table(zip(*columns, strict=True), headers)


def _simple_columns(columns: list[Sequence[str]], headers: list[str]) -> str | None:
    """The "simple" layout of these columns (as `_simple_table`), or None when a cell is not printable ASCII text."""
    widths = []
    for index, column in enumerate(columns):
        try:
            text = "".join(column)
            lines = "\n".join(column)
        except TypeError:  # a cell that is not a string: tabulate formats it
            return None
        if not (text.isascii() and text.isprintable()):
            return None
        if lines[:1] == " " or lines[-1:] == " " or " \n" in lines or "\n " in lines:
            column = columns[index] = [cell.strip() for cell in column]
        widths.append(max(len(headers[index]) + 2, max(map(len, column), default=0)))
    template = "  ".join(f"%-{w}s" for w in widths)
    return "\n".join(
        [
            "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
            "  ".join("-" * w for w in widths),
            *[(template % cells).rstrip() for cells in zip(*columns, strict=True)],
        ]
    )


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path for text output: relative to the working directory when it lies inside it, else absolute, so
    that one report never mixes the two."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
