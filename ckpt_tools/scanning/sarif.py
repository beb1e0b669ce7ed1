"""The scan report as SARIF 2.1.0, for code-scanning UIs: one run, one rule per rule id, one result per finding."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ckpt_tools.scanning.findings import ScanReport
from ckpt_tools.scanning.rules import RULES, SARIF_LEVEL, SECURITY_SCORE

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/ckpt-tools/ckpt-tools/blob/main/docs/scan.md"


def to_sarif(report: ScanReport) -> dict[str, Any]:
    """A SARIF log: artifact paths as relative URIs where possible; suppressed findings carry a suppression."""
    rule_ids = sorted(RULES)
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    results = []
    for artifact, finding in ((a, f) for a in report.artifacts for f in a.findings):
        result: dict[str, Any] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": SARIF_LEVEL[finding.severity],
            "message": {"text": f"{finding.detail} — {RULES[finding.rule].title}"},
            "locations": [_location(artifact.path, finding.file, finding.location)],
            "properties": {"severity": finding.severity.label, "security-severity": SECURITY_SCORE[finding.severity]},
        }
        if finding.suppressed:
            result["suppressions"] = [{"kind": "external", "justification": f"policy {finding.suppressed}"}]
        results.append(result)
    notifications = [
        {"level": "error", "message": {"text": artifact.error}, "descriptor": {"id": "scan-error"}}
        for artifact in report.artifacts
        if artifact.error
    ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": _driver(rule_ids)},
                "invocations": [
                    {"executionSuccessful": not notifications, "toolExecutionNotifications": notifications}
                ],
                "results": results,
            }
        ],
    }


def _driver(rule_ids: list[str]) -> dict[str, Any]:
    return {
        "name": "ckpt-scan",
        "fullName": "ckpt-tools scan",
        "version": _version(),
        "informationUri": INFORMATION_URI,
        "rules": [
            {
                "id": rule_id,
                "name": rule_id.replace(".", "/"),
                "shortDescription": {"text": RULES[rule_id].title},
                "fullDescription": {"text": RULES[rule_id].why},
                "help": {"text": RULES[rule_id].why},
                "defaultConfiguration": {"level": SARIF_LEVEL[RULES[rule_id].severity]},
                "properties": {
                    "tags": ["security", rule_id.split(".")[0]],
                    "security-severity": SECURITY_SCORE[RULES[rule_id].severity],
                },
            }
            for rule_id in rule_ids
        ],
    }


def _location(artifact: str, file: str, where: str) -> dict[str, Any]:
    base = Path(artifact)
    target = base / file if base.is_dir() and file and file != base.name else base
    return {
        "physicalLocation": {"artifactLocation": {"uri": _uri(target)}},
        "logicalLocations": [{"fullyQualifiedName": where, "kind": "element"}],
    }


def _uri(path: Path) -> str:
    if path.is_absolute():
        return path.as_uri()
    return quote("/".join(part for part in path.as_posix().split("/") if part not in ("", ".")))


def _version() -> str:
    """The installed distribution's version (importing the package root would pull in every operation)."""
    try:
        return metadata.version("ckpt-tools")
    except metadata.PackageNotFoundError:
        return "unknown"
