"""What a scan reports: findings with a rule, severity and location, per artifact, and the exit code they imply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckpt_tools.scanning.rules import RULES, Severity

JSON_SCHEMA = "ckpt-tools/scan/1"


@dataclass(frozen=True)
class Finding:
    """One thing found: `location` says where inside the artifact (`file` is the file holding it, relative to
    the artifact), `detail` what exactly; `suppressed` names the policy entry that allows it, if any."""

    rule: str
    severity: Severity
    file: str
    location: str
    detail: str
    subject: str = ""
    suppressed: str = ""

    @property
    def why(self) -> str:
        return RULES[self.rule].why

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.label,
            "file": self.file,
            "location": self.location,
            "detail": self.detail,
            "subject": self.subject or None,
            "why": self.why,
            "suppressed": self.suppressed or None,
        }


@dataclass(frozen=True)
class ArtifactScan:
    """The findings of one artifact (`path` as given or found), what was looked at, and any scan error."""

    path: str
    kind: str
    findings: tuple[Finding, ...] = ()
    scanned: tuple[str, ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "scanned": list(self.scanned),
            "error": self.error or None,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class Skipped:
    """A file under a scanned directory that is not an artifact ckpt scan knows."""

    path: str
    reason: str


@dataclass(frozen=True)
class ScanReport:
    """Every artifact's findings; `exit_code` is 2 when one could not be scanned, 1 when an unsuppressed finding
    is at or above `fail_on`, else 0."""

    artifacts: tuple[ArtifactScan, ...]
    fail_on: Severity = Severity.HIGH
    skipped: tuple[Skipped, ...] = ()
    policy: str = ""

    def active(self) -> list[tuple[ArtifactScan, Finding]]:
        return [(a, f) for a in self.artifacts for f in a.findings if not f.suppressed]

    def failing(self) -> list[tuple[ArtifactScan, Finding]]:
        return [(a, f) for a, f in self.active() if f.severity >= self.fail_on]

    @property
    def exit_code(self) -> int:
        if any(a.error for a in self.artifacts):
            return 2
        return 1 if self.failing() else 0

    def counts(self) -> dict[str, int]:
        counts = {s.label: 0 for s in reversed(Severity)}
        for _, finding in self.active():
            counts[finding.severity.label] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "fail_on": self.fail_on.label,
            "policy": self.policy or None,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "artifacts": [a.to_json() for a in self.artifacts],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


@dataclass
class Collector:
    """Gathers findings while one artifact is scanned, at most `limit` (a hostile file could yield millions);
    the rest are counted by severity and summed up in one `scan.truncated` finding at the highest of them."""

    limit: int = 10_000
    findings: list[Finding] = field(default_factory=list)
    dropped: dict[Severity, int] = field(default_factory=dict)

    def add(
        self, rule: str, file: str, location: str, detail: str, severity: Severity | None = None, subject: str = ""
    ) -> None:
        """Record a finding at the rule's severity unless the evidence sets another; `subject` is what a policy
        can allow (an op or a module name). Text from the artifact is kept printable and valid UTF-8."""
        level = RULES[rule].severity if severity is None else severity
        if len(self.findings) >= self.limit:
            self.dropped[level] = self.dropped.get(level, 0) + 1
            return
        self.findings.append(Finding(rule, level, _clean(file), _clean(location), _clean(detail), _clean(subject)))

    def result(self) -> tuple[Finding, ...]:
        if not self.dropped:
            return tuple(self.findings)
        worst = max(self.dropped)
        counts = ", ".join(f"{n} {s.label}" for s, n in sorted(self.dropped.items(), reverse=True))
        detail = f"{sum(self.dropped.values())} more findings not listed ({counts}; at most {self.limit} are listed)"
        return (*self.findings, Finding("scan.truncated", worst, "", "(not listed)", detail))


def _clean(text: str) -> str:
    """Undecodable bytes (surrogate escapes) and control characters as visible escapes: JSON, SARIF and terminals
    get text, never raw bytes or escape sequences from the artifact."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
