"""JUnit XML and GitHub Actions annotations for `ckpt validate` reports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ckpt_tools.validation.checks import ValidationReport

SUITE_NAME = "ckpt validate"


def junit_xml(reports: Sequence[ValidationReport], durations: Sequence[float] | None = None) -> str:
    """One <testsuite>, one <testcase> per artifact; <failure> lists failed checks, <error> unreadable input."""
    durations = list(durations) if durations is not None else [0.0] * len(reports)
    failures = sum(1 for r in reports if r.error is None and not r.ok)
    errors = sum(1 for r in reports if r.error is not None)
    suite = ET.Element(
        "testsuite",
        {
            "name": SUITE_NAME,
            "tests": str(len(reports)),
            "failures": str(failures),
            "errors": str(errors),
            "skipped": "0",
            "time": f"{sum(durations):.3f}",
        },
    )
    for report, seconds in zip(reports, durations, strict=True):
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"ckpt.validate.{report.format or 'unknown'}", "name": report.path, "time": f"{seconds:.3f}"},
        )
        if report.error is not None:
            element = ET.SubElement(case, "error", {"message": report.error, "type": "unreadable"})
            element.text = report.error
        elif not report.ok:
            names = ", ".join(c.name for c in report.failed)
            element = ET.SubElement(case, "failure", {"message": f"failed checks: {names}", "type": "invalid"})
            element.text = "\n".join(report.problems())
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"{c.name}: {c.status} - {c.reason}" for c in report.checks)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + xml_safe(ET.tostring(suite, encoding="unicode")) + "\n"


# Code points XML 1.0 cannot hold (even escaped): C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """Names from a hostile file as visible escapes (`\\x00`), so the report stays well-formed XML."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def write_junit(path: Path, reports: Sequence[ValidationReport], durations: Sequence[float] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(reports, durations), encoding="utf-8")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(report: ValidationReport) -> list[str]:
    """`::error file=PATH,title=...::message` workflow commands, one per failed check (or read error)."""
    file = _escape_property(report.path)
    if report.error is not None:
        title = _escape_property("ckpt validate: unreadable")
        return [f"::error file={file},title={title}::{_escape_data(report.error)}"]
    lines = []
    for check in report.failed:
        title = _escape_property(f"ckpt validate: {check.name}")
        lines.append(f"::error file={file},title={title}::{_escape_data(f'{check.name}: {check.reason}')}")
    return lines
