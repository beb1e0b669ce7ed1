"""The package keeps the shape the architecture promises: short functions, a docstring on every module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ckpt_tools"
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({(node.end_lineno or node.lineno) - node.lineno + 1})"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_every_module_has_a_one_line_docstring() -> None:
    missing = [
        str(path.relative_to(PACKAGE))
        for path, tree in _modules()
        if path.stat().st_size and not (ast.get_docstring(tree) or "").strip()
    ]
    assert not missing, missing
