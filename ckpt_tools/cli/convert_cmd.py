"""`ckpt convert SOURCE [--model MODULE:FACTORY] --out OUT`: legacy artifacts into resumable TF2 / Keras 3 ones."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from ckpt_tools.cli.render import dump_json, follow_symlinks_option, json_option, shape_text, shown_path, table
from ckpt_tools.messages import printable

if TYPE_CHECKING:  # the conversion modules load after --model is checked, so a bad one fails at once
    from ckpt_tools.conversion.plan import Plan
    from ckpt_tools.conversion.run import ConvertReport


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def _mapping_lines(plan: Plan) -> list[str]:
    """The variable-by-variable table, then what found no partner and what does not fit."""
    rows = [
        [
            p.source_name,
            "->",
            p.target,
            shape_text(p.shape),
            p.dtype,
            ", ".join(f"{s}<-{k}" for s, k in p.slots.items()) or "-",
        ]
        for p in plan.pairs
    ]
    lines = [table(rows, ["source", "", "model variable", "shape", "dtype", "slots"])]
    if plan.unmatched:
        lines += ["", "model variables with no source (pass --map RULES):", *(f"  {n}" for n in plan.unmatched)]
    if plan.unused:
        lines += ["", "source variables not used:", *(f"  {n}" for n in plan.unused)]
    if plan.mismatches:
        lines += ["", "mismatches:", *(f"  {m}" for m in plan.mismatches)]
    return lines


def _optimizer_lines(plan: Plan) -> list[str]:
    """The optimizer translation: slot rules and hyper-parameters, source against factory."""
    opt = plan.source_opt
    lines = ["", f"optimizer: {opt.family or 'none recorded'} ({opt.origin}) -> Keras {plan.target_class}"]
    if plan.rules:
        lines.append(
            table(
                [[r.source, r.target or "(dropped)", r.transform, r.exactness, r.note] for r in plan.rules],
                ["source slot", "keras slot", "transform", "exactness", "note"],
            )
        )
    if plan.hyper:
        marks = {True: "same", False: "DIFFERENT", None: "not recorded"}
        lines += [
            "",
            f"hyper-parameters (source: {opt.hyper_origin}):",
            table(
                [[h.name, _num(h.source), _num(h.target), marks[h.match]] for h in plan.hyper],
                ["name", "source", "factory", "match"],
            ),
        ]
    return lines


def _outcome_lines(report: ConvertReport) -> list[str]:
    """One line per converted checkpoint, the warnings and problems, then the verdict."""
    lines = []
    for result in report.checkpoints:
        line = f"step {result.step} (from {result.step_from}): {shown_path(result.source)}"
        if result.output:
            line += (
                f" -> {shown_path(result.output)}; verified {result.weights_identical} weights bit-identical, "
                f"{result.slots_equal} slots as expected, step {'ok' if result.step_ok else 'WRONG'}"
            )
        lines.append(line)
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"approximate: {a}" for a in report.approximations if a not in report.warnings]
    lines += [f"problem: {p}" for p in report.problems]
    if report.dry_run:
        verdict = "dry run: nothing written" + ("; the conversion would fail" if report.problems else "")
    else:
        kind = f"resumable, {report.exactness}" if report.resumable else "weights only: NOT resumable"
        verdict = f"wrote {shown_path(report.out)} ({kind})"
    return [*lines, "", verdict]


def _progress() -> Callable[[str], None] | None:
    """One stderr line per phase when stderr is a terminal; nothing otherwise (and never on stdout)."""
    stream = sys.stderr
    if not stream.isatty():
        return None

    def say(line: str) -> None:
        click.echo(f"ckpt convert: {printable(line)}", err=True)

    return say


def render_text(report: ConvertReport) -> str:
    return "\n".join([*_mapping_lines(report.plan), *_optimizer_lines(report.plan), *_outcome_lines(report)])


EPILOG = """\b
Exit codes: 0 converted (or a clean --dry-run plan), 2 refused or error (one line on stderr); an approximate
conversion is refused unless --allow-approximate.
Needs TensorFlow and Keras 3: pip install 'ckpt-tools[tensorflow]'.

\b
Examples:
  ckpt convert fixtures/keras2_adam/model.h5 --out m.keras --to keras
  ckpt convert fixtures/tf1_adam --model examples/fixture_models.py:tf1_adam --out converted/
  ckpt convert fixtures/ident/model.h5 --model examples/fixture_models.py:ident_keras2 --out m2.keras --to keras
A Keras-2 .h5 that carries its model_config and training_config needs no --model (the first example), nor
does a tf_keras SavedModel (keras_metadata.pb); TF2 checkpoints and BackupAndRestore directories need one.
"""


@click.command(
    "convert", epilog=EPILOG, short_help="TF1 / Keras-2 / TF2 artifact -> resumable TF2 checkpoint or .keras."
)
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "--model",
    "model",
    default=None,
    metavar="MODULE:FACTORY",
    help="Callable returning a compiled Keras 3 model of the same architecture (module or path/file.py). "
    "Needed for TF1/TF2 checkpoints and custom layers; a Keras-2 .h5 or tf_keras SavedModel without it is "
    "rebuilt from its recorded model_config.",
)
@click.option("--out", "out", required=True, metavar="OUT", help="Output directory (tf2) or .keras file (keras).")
@click.option(
    "--to",
    "to",
    type=click.Choice(["tf2", "keras"]),
    default="tf2",
    show_default=True,
    help="tf2: tf.train.Checkpoint directory; keras: a .keras file.",
)
@click.option("--map", "rules", metavar="RULES", help="Rename rules (JSON/YAML) for names suffix matching misses.")
@click.option("--all", "all_checkpoints", is_flag=True, help="Convert every retained checkpoint, keeping steps.")
@click.option("--dry-run", is_flag=True, help="Print the mapping plan; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing OUT (atomically).")
@click.option(
    "--allow-weights-only",
    is_flag=True,
    help="Write even when optimizer state cannot be translated (the output is not resumable).",
)
@click.option(
    "--allow-approximate",
    is_flag=True,
    help="Write even when the continued run would not be the source's run (the reasons are listed).",
)
@json_option
@follow_symlinks_option
def command(
    source: str,
    model: str | None,
    out: str,
    to: str,
    rules: str | None,
    all_checkpoints: bool,
    dry_run: bool,
    force: bool,
    allow_weights_only: bool,
    allow_approximate: bool,
    as_json: bool,
) -> None:
    """Convert a TF1/TF2 checkpoint, Keras-2 .h5, tf_keras SavedModel or BackupAndRestore directory into a
    resumable TF2 checkpoint or .keras file: weights by name,
    optimizer state translated by the optimizer catalogue, the step kept, the output re-read and verified."""
    from ckpt_tools.conversion.factory import check_factory_spec

    if model is not None:
        check_factory_spec(model)  # before TensorFlow is imported: a bad --model fails at once
    from ckpt_tools.conversion.run import convert

    report = convert(
        source,
        model=model,
        out=out,
        to=to,
        rules=rules,
        all_checkpoints=all_checkpoints,
        dry_run=dry_run,
        force=force,
        allow_weights_only=allow_weights_only,
        allow_approximate=allow_approximate,
        progress=_progress(),
    )
    # Names read from damaged files can hold undecodable bytes; print them escaped rather than crash.
    click.echo(printable(dump_json(report.to_json()) if as_json else render_text(report)))
    ctx = click.get_current_context()
    ctx.exit(report.exit_code)
