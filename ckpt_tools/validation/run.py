"""Validating many artifacts at once: one ValidationRun with every report, the aggregate verdict and exit code."""

from __future__ import annotations

import functools
import glob
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckpt_tools.errors import UsageError
from ckpt_tools.parallel import ordered_batches, resolve_jobs
from ckpt_tools.readers.confine import FOLLOW_SYMLINKS
from ckpt_tools.storage import is_url
from ckpt_tools.validation.checks import JSON_SCHEMA, PathArg, ValidationReport, validate_one
from ckpt_tools.validation.integrity import remembering

VERDICTS: tuple[str, ...] = ("valid", "invalid", "unreadable")


@dataclass(frozen=True)
class ValidationRun:
    """The reports of several artifacts, in the order given, and how long each took to check.

    `exit_code` is the worst of the reports' (0 all valid, 1 any invalid, 2 any unreadable: 2 wins over 1).
    """

    reports: tuple[ValidationReport, ...]
    required: tuple[str, ...]
    durations: tuple[float, ...] = ()

    def __iter__(self) -> Iterator[ValidationReport]:
        return iter(self.reports)

    def __len__(self) -> int:
        return len(self.reports)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def exit_code(self) -> int:
        return max((r.exit_code for r in self.reports), default=0)

    @property
    def counts(self) -> dict[str, int]:
        """How many artifacts are `valid`, `invalid` and `unreadable`."""
        return {v: sum(1 for r in self.reports if r.verdict == v) for v in VERDICTS}

    def problems(self) -> list[str]:
        """`path: problem` for every reason any artifact is not valid."""
        return [f"{r.path}: {p}" for r in self.reports for p in r.problems()]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "required": list(self.required),
            "artifacts": [r.to_json() for r in self.reports],
        }

    def junit_xml(self) -> str:
        """The run as JUnit XML: one testsuite, one testcase per artifact."""
        from ckpt_tools.validation.junit import junit_xml

        return junit_xml(self.reports, self.durations or None)


def expand_patterns(patterns: Iterable[str]) -> list[tuple[str, str | None]]:
    """(path, error) per artifact: shell-glob patterns (`**` recursive) are expanded, sorted; a pattern with no
    match is an error entry. A name that exists (or names a bundle prefix) is taken literally. Duplicates are
    dropped."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for pattern in patterns:
        literal = is_url(pattern) or os.path.lexists(pattern) or os.path.exists(pattern + ".index")
        if literal or not glob.has_magic(pattern):
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


def validate_paths(
    paths: Iterable[PathArg], required: tuple[str, ...], *, expand_globs: bool = False, jobs: int = 1
) -> ValidationRun:
    """Validate each path in turn (`required` as from required_checks), timing each; with `expand_globs`, the
    paths are patterns as for expand_patterns, and one that matches nothing gives an unreadable report.

    `jobs` > 1 validates that many artifacts at a time in worker processes (0: one per CPU); the reports come
    back in the order given, exactly as with one job."""
    names = [os.fspath(p) for p in paths]
    if not names:
        raise UsageError("path=[]: name at least one artifact", argument="path", detail="name at least one artifact")
    entries: list[tuple[str, str | None]] = []
    entries += expand_patterns(names) if expand_globs else [(name, None) for name in names]
    batch = functools.partial(_validate_batch, required=required, follow_symlinks=FOLLOW_SYMLINKS.get())
    outcomes = ordered_batches(
        batch, entries, resolve_jobs(jobs), local=functools.partial(batch, memo={}), preload=[__name__]
    )
    reports = tuple(report for report, _ in outcomes)
    return ValidationRun(reports, required, tuple(seconds for _, seconds in outcomes))


Outcome = tuple[ValidationReport, float]
_WORKER_MEMO: dict[Path, str | None] = {}  # a worker process's findings, kept for the whole run it serves


def _validate_batch(
    entries: list[tuple[str, str | None]],
    required: tuple[str, ...],
    follow_symlinks: bool,
    memo: dict[Path, str | None] | None = None,
) -> list[Outcome]:
    """Reports of consecutive entries, with the run's memo of integrity findings (the worker's own, in one)
    and the caller's symlink policy (a worker process does not inherit the caller's context)."""
    outcomes = []
    FOLLOW_SYMLINKS.set(follow_symlinks)
    with remembering(_WORKER_MEMO if memo is None else memo):
        for name, error in entries:
            started = time.monotonic()
            if error is not None:
                report = ValidationReport.unreadable(name, error, required)
            else:
                report = validate_one(name, required)
            outcomes.append((report, time.monotonic() - started))
    return outcomes
