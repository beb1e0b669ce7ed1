"""Every ```python block of docs/api.md runs, from the repository root, against the installed package.

Each block runs in its own interpreter (blocks are independent, and one registers a reader: that must not leak into
other tests), must finish without an exception, and must assert something, so that a wrong example fails here. A
block whose first line is `# needs: tensorflow` is skipped where TensorFlow is not installed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import HAS_TF, ROOT, child_env

API_DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
NEEDS_TF = "# needs: tensorflow"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def block_params() -> list[object]:
    return [
        pytest.param(
            code,
            id=f"api.md:{line}",
            marks=pytest.mark.skipif(code.startswith(NEEDS_TF) and not HAS_TF, reason="needs TensorFlow"),
        )
        for line, code in python_blocks(API_DOC.read_text(encoding="utf-8"))
    ]


def test_the_doc_has_examples_for_every_public_function() -> None:
    code = "\n".join(block for _, block in python_blocks(API_DOC.read_text(encoding="utf-8")))
    for call in ("open(", "inspect(", "diff(", "validate(", "convert(", "register_reader("):
        assert f"ckpt_tools.{call}" in code, call


def test_blocks_are_found() -> None:
    blocks = python_blocks("text\n```python\nx = 1\n```\n```bash\nls\n```\n```python\nassert x\n```\n")
    assert blocks == [(2, "x = 1\n"), (8, "assert x\n")]


@pytest.mark.parametrize("code", block_params())
def test_api_example_runs(code: str) -> None:
    assert re.search(r"^\s*assert\b", code, re.MULTILINE), "an example must assert what it shows"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"example failed:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"
