"""`ckpt diff A B`: pair variables by canonical name and report what differs; exit 0 identical, 1 different."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from ckpt_tools.cli.render import echo_json, follow_symlinks_option, json_option, shape_text, table
from ckpt_tools.diffing import FORMAT_SPECIFIC, IDENTICAL, NOT_COMPARED, DiffEntry, DiffResult, Side, diff
from ckpt_tools.errors import UsageError
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.pairing import BY_STRUCTURE
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
    "format_specific": "format-specific",
}


def _describe(var: Variable | None) -> str:
    return "-" if var is None else f"{shape_text(var.shape)} {var.dtype}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _detail(entry: DiffEntry) -> str:
    text = _stats_text(entry)
    if entry.translation is not None:
        text += f" ({entry.translation.side.upper()} in Keras 3 meaning: {entry.translation.how})"
    if entry.note:
        text += f" ({entry.note})"
    return text.strip()


def _stats_text(entry: DiffEntry) -> str:
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


def _name(entry: DiffEntry) -> str:
    """The canonical name, with each side's own name where they differ (the step, structural pairs)."""
    a, b = entry.a, entry.b
    if a is None or b is None or a.name == b.name == entry.name:
        return entry.name
    if entry.paired_by == BY_STRUCTURE:
        return f"{a.name} = B {b.name} (by structure)"
    return f"{entry.name} (A {a.name}, B {b.name})"


def _change(entry: DiffEntry) -> str:
    var = entry.a or entry.b
    if entry.category == FORMAT_SPECIFIC and var is not None:
        return f"format-specific ({'A' if entry.a else 'B'})"
    if entry.category == NOT_COMPARED and entry.note:
        return "not compared"
    return LABELS[entry.category]


def _side_line(label: str, side: Side) -> str:
    extra = f", {side.aliases} aliases" if side.aliases else ""
    extra += f", {side.excluded} excluded" if side.excluded else ""
    return f"{label}: {side.path} ({side.format}, {side.variables} variables{extra})"


def render_text(result: DiffResult, show_all: bool = False) -> str:
    """The table of differing variables (all with `show_all`) and the summary line."""
    hidden = {IDENTICAL, FORMAT_SPECIFIC} if not show_all else set()
    if result.names_only and not show_all:
        hidden.add(NOT_COMPARED)
    rows = [
        [_name(entry), _change(entry), _describe(entry.a), _describe(entry.b), _detail(entry)]
        for entry in result.entries
        if entry.category not in hidden
    ]
    lines = [_side_line("A", result.a), _side_line("B", result.b)]
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


def _check_plot(plot: str | None, names_only: bool) -> None:
    """Fail before comparing, not after: a `--plot` file of another kind, no matplotlib, no values to draw."""
    if plot is None:
        return
    from ckpt_tools.plotting import check_destination

    if names_only:
        raise UsageError("--plot draws how values changed; it cannot be combined with --names-only")
    check_destination(plot)


EPILOG = """\b
Exit codes: 0 identical within tolerance, 1 different, 2 error (one line on stderr).
Needs no TensorFlow, except for V1-format (pre-2017) checkpoints; --plot needs the [plot] extra.

\b
Examples:
  ckpt diff fixtures/ident/tf1 fixtures/ident_altered/model.keras
  ckpt diff fixtures/tf1_adam/model.ckpt-3 fixtures/tf1_adam --weights-only --rtol 1e-3
"""


@click.command("diff", epilog=EPILOG, short_help="Compare two artifacts of any formats, paired by layer name.")
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
@click.option(
    "--weights-only",
    is_flag=True,
    help="Compare the model weights only (role weight): no optimizer slots, step or other variables.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out variables whose canonical name or key matches GLOB (repeatable).",
)
@click.option("--all", "show_all", is_flag=True, help="List identical and format-specific variables in the table too.")
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False, path_type=str),
    metavar="FILE",
    help="Also draw the relative change ||A-B||/||B|| of each weight and slot to FILE (.png or .svg).",
)
@json_option
@follow_symlinks_option
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
    weights_only: bool,
    exclude: tuple[str, ...],
    show_all: bool,
    plot: str | None,
    as_json: bool,
) -> None:
    """Compare two checkpoints or model files variable by variable, whatever their formats: weights pair by
    canonical (layer) name, slots by weight and slot, the step by role, renamed layers by structure."""
    _check_plot(plot, names_only)
    rules = build_rules(map_file, strip_prefix)
    map_a = open_checkpoint(a)
    map_b = open_checkpoint(b)
    with _progress(map_a, map_b, names_only) as progress:
        result = diff(
            map_a,
            map_b,
            rtol=rtol,
            atol=atol,
            names_only=names_only,
            rules=rules,
            weights_only=weights_only,
            exclude=exclude,
            progress=progress,
        )
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_text(result, show_all))
    if plot is not None:
        from ckpt_tools.plotting import plot_diff

        plot_diff(result, plot)
    ctx.exit(result.exit_code)
