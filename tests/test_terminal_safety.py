"""Text from an artifact never reaches a terminal, JSON or XML raw (issue #14): escape sequences, carriage
returns, bells and NUL bytes in layer names and paths are shown as escapes by every command."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import pytest

from tests.conftest import FIXTURES, run_cli

EVIL = "dense\x1b]0;pwned\x07\r\x1b[2K"
RAW = ("\x1b", "\x07", "\r", "\x00")


@pytest.fixture
def hostile_names(tmp_path: Path) -> Path:
    """A Keras 3 weights file whose first layer group is renamed to carry terminal controls (real h5py)."""
    folder = tmp_path / "run\x1b[31m"
    folder.mkdir()
    target = folder / "model.weights.h5"
    shutil.copy(FIXTURES / "keras3_adam" / "model.weights.h5", target)
    with h5py.File(target, "r+") as f:
        layers = f["layers"]
        first = sorted(layers)[0]
        layers.move(first, EVIL)
    return target


def _clean(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the output: {text[:500]!r}"


@pytest.mark.parametrize(
    "args",
    [["inspect"], ["inspect", "--json"], ["inspect", "--tree"], ["validate"], ["scan"], ["ls"], ["diff", "SELF"]],
)
def test_controls_are_escaped(hostile_names: Path, args: list[str]) -> None:
    target = hostile_names.parent if args[0] == "ls" else hostile_names
    argv = [*(a if a != "SELF" else str(target) for a in args), str(target)]
    result = run_cli(argv, expect=None)
    assert result.exit_code in (0, 1), result.output
    _clean(result.stdout)
    _clean(result.stderr)
    if "--json" in args:
        json.loads(result.stdout)
    if args == ["inspect"]:
        assert "\\x1b" in result.stdout  # shown, not dropped


def test_error_lines_and_junit_are_escaped(hostile_names: Path, tmp_path: Path) -> None:
    missing = hostile_names.parent / "gone\x1b[2J\x00.h5"
    result = run_cli(["inspect", str(missing).replace("\x00", "")], expect=2)
    _clean(result.stderr)
    report = tmp_path / "report.xml"
    run_cli(["validate", str(hostile_names), "--junit", str(report)], expect=None)
    text = report.read_text(encoding="utf-8")
    ET.fromstring(text.split("\n", 1)[1])  # well-formed
    assert "\x1b" not in text and "\\x1b" in text
