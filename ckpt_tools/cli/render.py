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
    """Serialize for `--json`: strict JSON (no NaN literals), stable key order as built. Control characters are
    escaped by JSON itself; undecodable bytes from damaged names become visible `\\udcXX` escapes, so the
    output is always valid UTF-8."""
    text = json.dumps(_finite(obj), indent=2, default=_default, allow_nan=False, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def echo_json(obj: Any) -> None:
    click.echo(dump_json(obj))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    from tabulate import tabulate

    return tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True)


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
