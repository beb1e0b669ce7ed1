"""`ckpt validate PATH...`: can training resume from each artifact? Exit 0 valid, 1 invalid, 2 unreadable."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ckpt_tools.cli.render import echo_json, follow_symlinks_option, jobs_option, json_option, table
from ckpt_tools.errors import UsageError
from ckpt_tools.messages import escaped_name
from ckpt_tools.validation.checks import CHECKS, CheckResult, ValidationReport, required_checks
from ckpt_tools.validation.run import ValidationRun, validate_paths

STATUS_TEXT = {"pass": "pass", "fail": "FAIL", "skip": "skip"}


def _status(check: CheckResult) -> str:
    return STATUS_TEXT[check.status] if check.required else "-"


def _one_report(report: ValidationReport) -> list[str]:
    lines = [f"{escaped_name(report.path)} ({report.format or 'unreadable'})"]
    if report.error is not None:
        return [*lines, f"error: {escaped_name(report.error)}"]
    rows = [[c.name, _status(c), c.reason] for c in report.checks]
    return [*lines, table(rows, ["check", "status", "reason"])]


def _many_reports(run: ValidationRun) -> list[str]:
    headers = ["path", "format", *CHECKS, "result"]
    rows = [
        [escaped_name(r.path), r.format or "-", *(_status(c) for c in r.checks), r.verdict.upper()] for r in run.reports
    ]
    problems = [escaped_name(line) for line in run.problems()]
    return [table(rows, headers), *(["", *problems] if problems else [])]


def render_text(run: ValidationRun) -> str:
    """One artifact: a check-by-check table. Several: one row each, then the reasons for every failure."""
    lines = _one_report(run.reports[0]) if len(run) == 1 else _many_reports(run)
    counts = run.counts
    noun = "artifact" if len(run) == 1 else "artifacts"
    lines += [
        "",
        f"{len(run)} {noun}: {counts['valid']} valid, {counts['invalid']} invalid, {counts['unreadable']} unreadable",
    ]
    return "\n".join(lines)


def _required(require: str | None, allow_weights_only: bool) -> tuple[str, ...]:
    """The checks `--require` names, or a click usage error speaking of the flag."""
    try:
        return required_checks(require, allow_weights_only)
    except UsageError as exc:
        raise click.BadParameter(exc.detail, param_hint="--require") from exc


def _annotate(run: ValidationRun) -> None:
    """GitHub Actions workflow commands, one per failed check, when running there."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from ckpt_tools.validation.junit import github_annotations

        for report in run.reports:
            for line in github_annotations(report):
                click.echo(line)


EPILOG = """\b
Exit codes: 0 all valid, 1 any invalid, 2 any unreadable (2 wins over 1) or a usage error.
Needs no TensorFlow, except for V1-format (pre-2017) checkpoints.

\b
Examples:
  ckpt validate fixtures/tf1_adam fixtures/keras3_adam/model.keras
  ckpt validate 'fixtures/keras2_*/model.h5' --junit report.xml
"""


@click.command("validate", epilog=EPILOG, short_help="Can training resume from each artifact? (the CI gate)")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--require",
    "require",
    metavar="CHECKS",
    help=f"Comma list of checks to enforce (default: all of {','.join(CHECKS)}).",
)
@click.option(
    "--allow-weights-only", is_flag=True, help="Inference artifacts: do not require optimizer, slots or step."
)
@click.option(
    "--junit",
    "junit_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE",
    help="Also write a JUnit XML report (one testcase per artifact) to FILE.",
)
@jobs_option("Validate")
@json_option
@follow_symlinks_option
@click.pass_context
def command(
    ctx: click.Context,
    paths: tuple[str, ...],
    require: str | None,
    allow_weights_only: bool,
    junit_file: Path | None,
    jobs: int,
    as_json: bool,
) -> None:
    """Check that checkpoints can resume training: files intact, weights, optimizer state, slots, step,
    finite values, consistent state file. PATHS may be quoted glob patterns."""
    run = validate_paths(paths, _required(require, allow_weights_only), expand_globs=True, jobs=jobs)
    if junit_file is not None:
        from ckpt_tools.validation.junit import write_junit

        write_junit(junit_file, run.reports, run.durations)
    if as_json:
        echo_json(run.to_json())
    else:
        click.echo(render_text(run))
        _annotate(run)
    ctx.exit(run.exit_code)
