"""`ckpt ls DIR...`: every checkpoint and model artifact under directories, one row each; exit 1 if any fails."""

from __future__ import annotations

import shutil
import sys

import click

from ckpt_tools.cli.render import echo_json, follow_symlinks_option, jobs_option, json_option, table
from ckpt_tools.cli.terminal import escape, raw_stderr
from ckpt_tools.discovery import MAX_ENTRIES, LsResult, Progress, ProgressCallback, list_artifacts
from ckpt_tools.messages import counted

HEADERS = ["path", "format", "tensors", "parameters", "step", "epoch", "optimizer", "resumable"]


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_text(result: LsResult) -> str:
    """The table of artifacts, then a footer: the counts, and one line per candidate that could not be read."""
    rows = [
        [
            a.path,
            a.format,
            str(a.tensors),
            f"{a.parameters:,}",
            _dash(a.step),
            _dash(a.epoch),
            a.optimizer,
            "yes" if a.resumable else "no",
        ]
        for a in result.artifacts
    ]
    lines = [table(rows, HEADERS), ""] if rows else []
    summary = result.summary
    lines.append(
        f"{counted(summary['artifacts'], 'artifact')} ({summary['resumable']} resumable), "
        f"{counted(summary['errors'], 'error')}"
    )
    lines += [f"error: {e.path}: {e.error}" for e in result.errors]
    return "\n".join(lines)


def _counter() -> ProgressCallback:
    """A one-line counter on stderr, rewritten in place (erased by the command when the listing ends)."""
    width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def show(progress: Progress) -> None:
        text = f"ckpt ls: {progress.artifacts} read, {progress.entries} entries: {progress.path}"
        click.echo("\r" + escape(text)[:width].ljust(width), nl=False, file=raw_stderr())

    return show


EPILOG = """\b
Exit codes: 0 listed (nothing found says so on stderr), 1 some candidate could not be read, 2 usage error.
Needs no TensorFlow, except to read V1-format (pre-2017) checkpoints (else listed as errors).

\b
Examples:
  ckpt ls fixtures/ident
  ckpt ls fixtures/tf1_adam fixtures/keras3_adam --json
"""


@click.command("ls", epilog=EPILOG, short_help="Every artifact under folders: format, step, resumable.")
@click.argument("roots", metavar="DIR...", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "--max-entries",
    "max_entries",
    type=click.IntRange(min=1),
    default=MAX_ENTRIES,
    show_default=True,
    help="Stop (with an error) after looking at this many directory entries.",
)
@jobs_option("Read")
@json_option
@follow_symlinks_option
@click.pass_context
def command(ctx: click.Context, roots: tuple[str, ...], max_entries: int, jobs: int, as_json: bool) -> None:
    """List every checkpoint, SavedModel and Keras file under the directories DIR..., recursively."""
    tty = sys.stderr.isatty()
    progress = _counter() if tty else None
    try:
        result = list_artifacts(roots, progress=progress, max_entries=max_entries, jobs=jobs)
    finally:
        if tty:
            click.echo("\r\x1b[K", nl=False, file=raw_stderr())
    if as_json:
        echo_json(result.to_json())
    elif result.artifacts or result.errors:
        click.echo(render_text(result))
    for root in result.empty_roots:
        click.echo(f"ckpt ls: no artifacts found under {root}", err=True)
    ctx.exit(result.exit_code)
