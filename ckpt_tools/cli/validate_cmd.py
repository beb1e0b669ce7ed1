"""`ckpt validate PATH...`: can training resume from each artifact? Exit 0 valid, 1 invalid, 2 unreadable."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import click

from ..errors import UsageError
from ..junit import github_annotations, write_junit
from ..render import echo_json, json_option, table
from ..validation import CHECKS, JSON_SCHEMA, CheckResult, ValidationReport, required_checks, validate

STATUS_TEXT = {"pass": "pass", "fail": "FAIL", "skip": "skip"}


def expand_paths(patterns: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(path, error) per artifact: quoted shell-glob patterns are expanded here; a pattern with no match is
    an error entry. A name that exists (or names a bundle prefix) is taken literally."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for pattern in patterns:
        if os.path.lexists(pattern) or os.path.exists(pattern + ".index") or not glob.has_magic(pattern):
            matches = [pattern]
        else:
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                out.append((pattern, f"{pattern}: no file matches this pattern"))
                continue
        for match in matches:
            if match not in seen:
                seen.add(match)
                out.append((match, None))
    return out


def _unmatched(pattern: str, error: str, required: tuple[str, ...]) -> ValidationReport:
    checks = tuple(CheckResult(n, "skip", "artifact unreadable", n in required) for n in CHECKS)
    return ValidationReport(pattern, None, checks, required, error=error)


def _status(check: CheckResult) -> str:
    return STATUS_TEXT[check.status] if check.required else "-"


def render_text(reports: list[ValidationReport]) -> str:
    """One artifact: a check-by-check table. Several: one row each, then the reasons for every failure."""
    lines: list[str] = []
    if len(reports) == 1:
        report = reports[0]
        lines.append(f"{report.path} ({report.format or 'unreadable'})")
        if report.error is not None:
            lines.append(f"error: {report.error}")
        else:
            rows = [[c.name, _status(c), c.reason] for c in report.checks]
            lines += [table(rows, ["check", "status", "reason"])]
    else:
        headers = ["path", "format", *CHECKS, "result"]
        rows = [[r.path, r.format or "-", *(_status(c) for c in r.checks), r.verdict.upper()] for r in reports]
        lines.append(table(rows, headers))
        problems = [f"{r.path}: {p}" for r in reports for p in r.problems()]
        if problems:
            lines += ["", *problems]
    counts = {v: sum(1 for r in reports if r.verdict == v) for v in ("valid", "invalid", "unreadable")}
    noun = "artifact" if len(reports) == 1 else "artifacts"
    lines += ["", f"{len(reports)} {noun}: {counts['valid']} valid, {counts['invalid']} invalid, "
                  f"{counts['unreadable']} unreadable"]
    return "\n".join(lines)


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--require", "require", metavar="CHECKS",
              help=f"Comma list of checks to enforce (default: all of {','.join(CHECKS)}).")
@click.option("--allow-weights-only", is_flag=True,
              help="Inference artifacts: do not require optimizer, slots or step.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, writable=True, path_type=Path), metavar="FILE",
              help="Also write a JUnit XML report (one testcase per artifact) to FILE.")
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    paths: tuple[str, ...],
    require: str | None,
    allow_weights_only: bool,
    junit_file: Path | None,
    as_json: bool,
) -> None:
    """Check that checkpoints can resume training: files intact, weights, optimizer state, slots, step,
    finite values, consistent state file. PATHS may be quoted glob patterns.

    Exit codes: 0 all valid, 1 any invalid, 2 any unreadable (2 wins over 1) or a usage error.
    """
    try:
        required = required_checks(require, allow_weights_only)
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix("--require: "), param_hint="--require") from exc
    reports: list[ValidationReport] = []
    durations: list[float] = []
    for path, error in expand_paths(paths):
        started = time.monotonic()
        if error is not None:
            reports.append(_unmatched(path, error, required))
        else:
            reports.append(validate(path, require=require, allow_weights_only=allow_weights_only))
        durations.append(time.monotonic() - started)
    if junit_file is not None:
        write_junit(junit_file, reports, durations)
    exit_code = max(r.exit_code for r in reports)
    if as_json:
        echo_json({
            "schema": JSON_SCHEMA,
            "ok": exit_code == 0,
            "exit_code": exit_code,
            "required": list(required),
            "artifacts": [r.to_json() for r in reports],
        })
    else:
        click.echo(render_text(reports))
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for report in reports:
                for line in github_annotations(report):
                    click.echo(line)
    ctx.exit(exit_code)
