"""`ckpt diff A B`: pair variables by canonical name and report what differs; exit 0 identical, 1 different."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from ckpt_tools.cli.render import echo_json, json_option, shape_text, table
from ckpt_tools.diffing import IDENTICAL, NOT_COMPARED, DiffEntry, DiffResult, diff
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.renames import build_rules

PROGRESS_MIN_BYTES = 64 << 20

LABELS = {
    "only_in_a": "only in A",
    "only_in_b": "only in B",
    "shape_changed": "shape changed",
    "dtype_changed": "dtype changed",
    "values_changed": "values changed",
    "identical": "identical",
    "not_compared": "matched",
}


def _describe(var: Variable | None) -> str:
    return "-" if var is None else f"{shape_text(var.shape)} {var.dtype}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _detail(entry: DiffEntry) -> str:
    stats = entry.values
    if stats is None:
        return ""
    if stats.max_abs_diff is None and stats.max_rel_diff is None:
        return f"{stats.differing}/{stats.size} elements differ" if stats.differing else ""
    text = f"{stats.differing}/{stats.size} differ, max abs {_num(stats.max_abs_diff)}"
    text += f", max rel {_num(stats.max_rel_diff)}"
    if stats.nonfinite_mismatches:
        text += f", {stats.nonfinite_mismatches} NaN/Inf mismatches"
    return text


def render_text(result: DiffResult, show_all: bool = False) -> str:
    """The table of differing variables (all with `show_all`) and the summary line."""
    hidden = {IDENTICAL, NOT_COMPARED} if not show_all else set()
    rows = [
        [entry.name, LABELS[entry.category], _describe(entry.a), _describe(entry.b), _detail(entry)]
        for entry in result.entries
        if entry.category not in hidden
    ]
    lines = [
        f"A: {result.a.path} ({result.a.format}, {result.a.variables} tensors)",
        f"B: {result.b.path} ({result.b.format}, {result.b.variables} tensors)",
    ]
    if rows:
        lines += ["", table(rows, ["name", "change", "A", "B", "values"])]
    lines += ["", result.summary_line()]
    return "\n".join(lines)


@contextmanager
def _progress(a: VariableMap, b: VariableMap, names_only: bool) -> Iterator[Callable[[int], None] | None]:
    """A click progress bar on stderr, only for a terminal and inputs over 64 MiB."""
    total = a.nbytes + b.nbytes
    if names_only or total <= PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label="comparing", file=sys.stderr) as bar:
        yield bar.update


@click.command("diff")
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str))
@click.option(
    "--map",
    "map_file",
    type=click.Path(path_type=str),
    metavar="RULES",
    help="JSON (or YAML, with PyYAML) rename rules applied before pairing; see docs/diff.md.",
)
@click.option(
    "--strip-prefix",
    "strip_prefix",
    multiple=True,
    metavar="PREFIX",
    help="Remove PREFIX from variable names on both sides before pairing (repeatable).",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Relative tolerance: |a-b| <= atol + rtol*|b|.",
)
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Absolute tolerance. With rtol=atol=0 values must be equal (NaN matches NaN).",
)
@click.option("--names-only", is_flag=True, help="Compare names, shapes and dtypes only; read no values.")
@click.option("--all", "show_all", is_flag=True, help="List identical variables in the table too.")
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    a: str,
    b: str,
    map_file: str | None,
    strip_prefix: tuple[str, ...],
    rtol: float,
    atol: float,
    names_only: bool,
    show_all: bool,
    as_json: bool,
) -> None:
    """Compare two checkpoints or model files variable by variable (any formats).

    Exit codes: 0 identical within tolerance, 1 different, 2 error.
    """
    rules = build_rules(map_file, strip_prefix)
    map_a = open_checkpoint(a)
    map_b = open_checkpoint(b)
    with _progress(map_a, map_b, names_only) as progress:
        result = diff(map_a, map_b, rtol=rtol, atol=atol, names_only=names_only, rules=rules, progress=progress)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_text(result, show_all))
    ctx.exit(result.exit_code)
