"""`ckpt inspect PATH`: the variables of one artifact, its optimizer state and step."""

from __future__ import annotations

from pathlib import Path

import click

from ckpt_tools.cli.render import (
    column_table,
    echo_json,
    follow_symlinks_option,
    human_bytes,
    json_option,
    shape_text,
)
from ckpt_tools.errors import UsageError
from ckpt_tools.facts import short_number
from ckpt_tools.inspection import InspectResult, gc_paused, inspect
from ckpt_tools.messages import counted, printable
from ckpt_tools.model import OptimizerInfo
from ckpt_tools.readers.registry import formats
from ckpt_tools.tree import Node
from ckpt_tools.values import to_text
from ckpt_tools.verdict import resume_verdict


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def render_text(result: InspectResult) -> str:
    """The variable table then the summary lines; with --tree, the summary first, then the layer tree."""
    if result.tree is not None:
        return "\n".join([*summary_lines(result), "", render_tree(result)])
    return "\n".join([_variable_table(result), "", *summary_lines(result)])


def _variable_table(result: InspectResult) -> str:
    """The table, built column by column (a few list operations per column for 100,000 variables)."""
    variables = result.variables
    names = [var.name for var in variables]
    keys = [var.key for var in variables]
    show_key = names != keys
    shapes: dict[tuple[int, ...], str] = {}  # a few distinct shapes among many variables: each formatted once
    shape_cells = []
    for var in variables:
        shape = shapes.get(var.shape)
        if shape is None:
            shape = shapes[var.shape] = shape_text(var.shape)
        shape_cells.append(shape)
    columns = [
        _shown_all(names),
        shape_cells,
        [var.dtype for var in variables],
        ["alias" if var.alias_of is not None else var.role for var in variables],
    ]
    headers = ["name", "shape", "dtype", "role"]
    if show_key:
        headers.append("key")
        columns.append(_shown_all(["" if key == name else key for key, name in zip(keys, names, strict=True)]))
    if result.stats:
        headers += ["min", "max", "mean", "nan", "inf"]
        stats = [result.stats[key] for key in keys]
        columns += [[_fmt(st.min) for st in stats], [_fmt(st.max) for st in stats], [_fmt(st.mean) for st in stats]]
        columns += [[str(st.nan) for st in stats], [str(st.inf) for st in stats]]
    return column_table(columns, headers)


def _shown_all(texts: list[str]) -> list[str]:
    """`_shown` of each text; the list itself when all of it is ASCII."""
    return texts if "".join(texts).isascii() else [_shown(text) for text in texts]


def _shown(text: str) -> str:
    """`printable(text)`, skipped for ASCII text (which holds no undecodable bytes)."""
    return text if text.isascii() else printable(text)


def render_tree(result: InspectResult) -> str:
    """Layers -> weights -> slots, with parameters per layer, as an indented tree."""
    assert result.tree is not None
    lines: list[str] = []
    _tree_lines(result.tree.root, "", lines)
    for var in result.tree.other:
        lines.append(f"({var.role}) {printable(var.name)} {shape_text(var.shape)} {var.dtype}")
    return "\n".join(lines) if lines else "(no variables)"


def _tree_lines(node: Node, indent: str, lines: list[str]) -> None:
    for var, slots in node.weights:
        lines.append(f"{indent}{printable(var.name.rpartition('/')[2])} {shape_text(var.shape)} {var.dtype}")
        lines += [f"{indent}    {s.slot} {shape_text(s.shape)} {s.dtype}" for s in slots]
    for child in node.sorted_children():
        lines.append(f"{indent}{printable(child.name)}/  ({counted(child.parameters, 'parameter')})")
        _tree_lines(child, indent + "    ", lines)


def summary_lines(result: InspectResult) -> list[str]:
    vmap = result.vmap
    opt = vmap.optimizer
    verdict = resume_verdict(vmap)
    resume = "yes" if verdict.resumable else "no (" + "; ".join(verdict.problems) + ")"
    aliases = len(vmap) - len(vmap.primaries())
    return [
        f"path:       {vmap.path}",
        f"format:     {vmap.format}",
        f"tensors:    {len(vmap)}"
        + (f" ({len(result.variables)} listed)" if len(result.variables) != len(vmap) else "")
        + (f"; {aliases} are aliases of another key, counted once" if aliases else ""),
        f"parameters: {vmap.parameters:,}",
        f"bytes:      {human_bytes(vmap.nbytes)}",
        f"optimizer:  {_optimizer_text(opt)}",
        *_facts_lines(result),
        f"step:       {'-' if vmap.step is None else vmap.step}",
        f"epoch:      {'-' if vmap.epoch is None else vmap.epoch}"
        + (f" (resume with initial_epoch={vmap.epoch})" if vmap.epoch is not None else ""),
        *([f"layout:     {vmap.layout}"] if vmap.layout else []),
        *[
            f"optimizer {i + 1}: {o.path}: {o.name or 'unknown'}, step {o.step}, covers {o.covered}/{len(o.trainable)}"
            for i, o in enumerate(opt.optimizers)
            if len(opt.optimizers) > 1
        ],
        f"resumable:  {resume}",
    ]


def _optimizer_text(opt: OptimizerInfo) -> str:
    if opt.present:
        coverage = "n/a" if opt.coverage is None else f"{opt.covered}/{opt.trainable} trainable weights"
        return f"present ({opt.name or 'unknown type'}; slots: {', '.join(opt.slots) or 'none'}; covers {coverage})"
    if opt.present is None:
        return f"unknown ({opt.reason})"
    return f"absent ({opt.reason})" if opt.reason else "absent"


def _facts_lines(result: InspectResult) -> list[str]:
    found = result.facts
    lines = []
    if found.hyperparameters:
        hyper = ", ".join(f"{k}={short_number(v)}" for k, v in sorted(found.hyperparameters.items()))
        lines.append(f"hyper:      {hyper} (from {found.hyperparameters_from or 'the artifact'})")
    if found.writer:
        lines.append("written by: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in found.writer.items()))
    if found.tags:
        lines.append(f"tags:       {', '.join(found.tags)}")
    for sig in found.signatures:
        inputs = ", ".join(f"{k} {d} {_dims(s)}" for k, d, s in sig.inputs) or "-"
        outputs = ", ".join(f"{k} {d} {_dims(s)}" for k, d, s in sig.outputs) or "-"
        lines.append(f"signature:  {sig.name}({inputs}) -> {outputs}")
    return lines


def _dims(shape: tuple[int, ...] | None) -> str:
    return "[?]" if shape is None else "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def render_values(result: InspectResult, *, threshold: int, precision: int, full: bool) -> str:
    """Each matched tensor's header line and its values as numpy prints them."""
    blocks = []
    for var in result.variables:
        text = to_text(result.values[var.key], threshold=threshold, precision=precision, full=full)
        blocks.append(f"{printable(var.name)} {shape_text(var.shape)} {var.dtype} (key {printable(var.key)})\n{text}")
    return "\n\n".join(blocks)


EPILOG = """\b
Exit codes: 0 listed (an empty --filter/--values match says so on stderr), 2 error (one line on stderr).
Needs no TensorFlow, except for V1-format (pre-2017) checkpoints; --history --plot needs the [plot] extra.

\b
Examples:
  ckpt inspect fixtures/tf1_adam --tree
  ckpt inspect fixtures/ident/model.keras --values 'dec/*' --precision 4
  ckpt inspect fixtures/tf1_adam --history --plot history.png
"""


@click.command("inspect", epilog=EPILOG, short_help="List what an artifact stores: variables, optimizer, step.")
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--filter",
    "pattern",
    metavar="GLOB",
    help="Only variables whose canonical name matches GLOB (or whose stored key is GLOB exactly).",
)
@click.option("--stats", is_flag=True, help="Read values: min/max/mean and NaN/Inf counts per tensor.")
@click.option(
    "--values",
    "values",
    metavar="NAME|GLOB",
    help="Print the values of the matching variables (canonical name glob, or exact key).",
)
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="--values: elements printed before numpy summarizes with '...'.",
)
@click.option(
    "--precision",
    type=click.IntRange(min=0, max=17),
    default=8,
    show_default=True,
    help="--values: digits after the decimal point.",
)
@click.option("--all", "full", is_flag=True, help="--values: print every element (no summarizing).")
@click.option("--tree", is_flag=True, help="Show layers -> weights -> optimizer slots instead of the table.")
@click.option("--history", is_flag=True, help="Per-layer weight norms and update sizes over the retained checkpoints.")
@click.option(
    "--plot",
    "plot",
    type=click.Path(path_type=str),
    metavar="FILE",
    help="With --history: also draw it to FILE (.png or .svg; needs the [plot] extra).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(formats()),
    help="Skip detection and read PATH as this format.",
)
@json_option
@follow_symlinks_option
def command(
    path: str,
    pattern: str | None,
    stats: bool,
    values: str | None,
    threshold: int,
    precision: int,
    full: bool,
    tree: bool,
    history: bool,
    plot: str | None,
    fmt: str | None,
    as_json: bool,
) -> None:
    """List the variables of a checkpoint, SavedModel or Keras file: names, shapes, dtypes, roles, optimizer
    state, hyper-parameters, step and whether training can resume from it."""
    if plot is not None and not history:
        raise UsageError("--plot draws the run history: add --history")
    if values is not None and (pattern is not None or stats or tree):
        raise UsageError("--values takes its own NAME|GLOB and prints values only: drop --filter, --stats and --tree")
    if tree and pattern is not None:
        raise UsageError("--tree shows every layer: drop --filter")
    if plot is not None:
        from ckpt_tools.plotting import check_destination

        check_destination(plot)
    if history:
        _history(path, plot, as_json)
        return
    full_values = values is not None and (full or as_json)
    with gc_paused():  # variables, rows and JSON objects by the hundred thousand, all alive until printed
        result = inspect(
            path, filter=pattern, stats=stats, format=fmt, values=values, tree=tree, full_values=full_values
        )
        if result.empty_match:
            click.echo(f"ckpt: no variable matches {printable(result.pattern or '')!r}", err=True)
        if as_json:
            echo_json(result.to_json())
        elif values is not None:
            click.echo(render_values(result, threshold=threshold, precision=precision, full=full))
        else:
            click.echo(render_text(result))


def _history(path: str, plot: str | None, as_json: bool) -> None:
    from ckpt_tools.cli.history_render import render_history_text
    from ckpt_tools.history import history

    result = history(path)
    if plot is not None:
        from ckpt_tools.plotting import plot_history

        plot_history(result, Path(plot))
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_history_text(result))
