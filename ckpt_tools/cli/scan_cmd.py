"""`ckpt scan PATH...`: would loading this artifact run code, touch files or the network? Read from bytes only."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from ckpt_tools.cli.render import dump_json, json_option
from ckpt_tools.errors import UsageError
from ckpt_tools.messages import counted
from ckpt_tools.scanning import ScanReport, Severity, load_policy, scan
from ckpt_tools.scanning.sarif import to_sarif

SEVERITIES = [s.label for s in reversed(Severity)]


def _safe(text: str) -> str:
    """Artifact-controlled text for a terminal: control characters and escapes shown, never interpreted."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def render_text(report: ScanReport) -> str:
    """One block per finding, most severe first (locations are long: a table would wrap), then a summary line;
    errors go to stderr."""
    lines: list[str] = []
    for artifact in report.artifacts:
        for f in sorted(artifact.findings, key=lambda f: -f.severity):
            allowed = f" (allowed: {f.suppressed})" if f.suppressed else ""
            lines.append(f"{f.severity.label.upper()}{allowed}  {f.rule}  {_safe(artifact.path)}")
            lines.append(f"  where: {_safe(f'{f.file}: {f.location}')}")
            lines.append(f"  what:  {_safe(f.detail)}")
    if lines:
        lines.append("")
    counts = ", ".join(f"{n} {label}" for label, n in report.counts().items() if n)
    scanned = sum(1 for a in report.artifacts if not a.error)
    failing = len(report.failing())
    lines.append(
        f"{counted(scanned, 'artifact')} scanned: {counts or 'no findings'}; "
        f"{counted(failing, 'finding')} at or above {report.fail_on.label}"
    )
    return "\n".join(lines)


def _write_sarif(report: ScanReport, target: str) -> None:
    """Atomically: a temporary file beside the target, then a rename."""
    path = Path(target)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(to_sarif(report), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


EPILOG = """\b
Exit codes: 0 no finding at or above --fail-on, 1 such findings, 2 an artifact could not be scanned
(or a usage error). Suppressed findings (allowed by --policy) never fail the scan.
Needs no TensorFlow or Keras; nothing in the artifact is imported, loaded or run.

\b
Examples:
  ckpt scan fixtures/saved_model_module
  ckpt scan fixtures --fail-on medium
  ckpt scan fixtures/keras3_adam/model.keras --json
  ckpt scan fixtures/ident --sarif scan.sarif
"""


@click.command("scan", epilog=EPILOG, short_help="Is it safe to load? Risky ops, Lambda layers, links.")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--fail-on",
    "fail_on",
    type=click.Choice(SEVERITIES),
    default="high",
    show_default=True,
    help="Exit 1 when a finding has this severity or a higher one.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=str),
    help="TOML file of ops, modules, rules and paths your team allows (docs/scan.md).",
)
@click.option(
    "--sarif", "sarif_file", type=click.Path(path_type=str), help="Also write the findings as SARIF 2.1.0 to FILE."
)
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    paths: tuple[str, ...],
    fail_on: str,
    policy_file: str | None,
    sarif_file: str | None,
    as_json: bool,
) -> None:
    """Scan the artifacts PATH... (files, directories, recursively, or glob patterns) for what loading
    them with TensorFlow or Keras would do: risky graph ops (in every library function too), Lambda layers,
    modules outside Keras, HDF5 external links, archive tricks, paths leading out of the artifact."""
    if sarif_file is not None and (Path(sarif_file).is_dir() or not Path(sarif_file).resolve().parent.is_dir()):
        raise UsageError(f"{sarif_file}: the SARIF file's folder must exist (and the path must not be a folder)")
    policy = load_policy(Path(policy_file)) if policy_file else None
    report = scan(paths, fail_on=Severity.parse(fail_on), policy=policy)
    if sarif_file is not None:
        _write_sarif(report, sarif_file)
    if as_json:
        click.echo(dump_json(report.to_json()))
    else:
        click.echo(render_text(report))
    for artifact in report.artifacts:
        if artifact.error:
            click.echo(f"ckpt: error: {_safe(' '.join(artifact.error.split()))}", err=True)
    ctx.exit(report.exit_code)
