"""`ckpt inspect PATH`: the variables of one artifact, its optimizer state and step."""

from __future__ import annotations

import click

from ckpt_tools.cli.render import echo_json, human_bytes, json_option, shape_text, table
from ckpt_tools.inspection import InspectResult, inspect
from ckpt_tools.readers.registry import formats
from ckpt_tools.verdict import resume_verdict


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def render_text(result: InspectResult) -> str:
    vmap = result.vmap
    headers = ["name", "shape", "dtype", "role", "key"]
    if result.stats:
        headers += ["min", "max", "mean", "nan", "inf"]
    rows = []
    for var in result.variables:
        role = "alias" if var.alias_of is not None else var.role
        row = [var.name, shape_text(var.shape), var.dtype, role, var.key if var.key != var.name else ""]
        if result.stats:
            st = result.stats[var.key]
            row += [_fmt(st.min), _fmt(st.max), _fmt(st.mean), str(st.nan), str(st.inf)]
        rows.append(row)
    opt = vmap.optimizer
    if opt.present:
        coverage = "n/a" if opt.coverage is None else f"{opt.covered}/{opt.trainable} trainable weights"
        opt_text = f"present ({opt.name or 'unknown type'}; slots: {', '.join(opt.slots) or 'none'}; covers {coverage})"
    elif opt.present is None:
        opt_text = f"unknown ({opt.reason})"
    else:
        opt_text = f"absent ({opt.reason})" if opt.reason else "absent"
    verdict = resume_verdict(vmap)
    resume = "yes" if verdict.resumable else "no (" + "; ".join(verdict.problems) + ")"
    lines = [
        table(rows, headers),
        "",
        f"path:       {vmap.path}",
        f"format:     {vmap.format}",
        f"tensors:    {len(vmap)}"
        + (f" ({len(result.variables)} listed)" if len(result.variables) != len(vmap) else "")
        + (
            f"; {aliases} are aliases of another key, counted once"
            if (aliases := len(vmap) - len(vmap.primaries()))
            else ""
        ),
        f"parameters: {vmap.parameters:,}",
        f"bytes:      {human_bytes(vmap.nbytes)}",
        f"optimizer:  {opt_text}",
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
    return "\n".join(lines)


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--filter", "pattern", metavar="GLOB", help="Only variables whose key or name matches GLOB.")
@click.option("--stats", is_flag=True, help="Read values: min/max/mean and NaN/Inf counts per tensor.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(formats()),
    help="Skip detection and read PATH as this format.",
)
@json_option
def command(path: str, pattern: str | None, stats: bool, fmt: str | None, as_json: bool) -> None:
    """List the variables of a checkpoint, SavedModel or Keras file."""
    result = inspect(path, filter=pattern, stats=stats, format=fmt)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_text(result))
