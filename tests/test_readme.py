"""The README's tour runs as written (convert only where TensorFlow is installed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from .conftest import HAS_TF, ROOT, run_cli

TOUR = re.search(r"## Tour\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
LINES = [line for line in TOUR.group(1).splitlines() if line.startswith("ckpt ")] if TOUR else []
COMMANDS = [shlex.split(line.split("#")[0]) for line in LINES]
# A tour line may say which exit code it shows ("# exit 1: ..."); 0 otherwise.
EXITS = [int(m.group(1)) if (m := re.search(r"#\s*exit (\d)", line)) else 0 for line in LINES]


def test_readme_has_a_tour() -> None:
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize(("argv", "code"), zip(COMMANDS, EXITS, strict=True), ids=[" ".join(c[1:3]) for c in COMMANDS])
def test_readme_tour_command(argv: list[str], code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if argv[1] == "convert" and not HAS_TF:
        pytest.skip("convert needs TensorFlow")
    monkeypatch.chdir(ROOT)
    args = [str(tmp_path / a) if a in ("converted/", "report.xml") else a for a in argv[1:]]
    result = run_cli(args, expect=code)
    assert result.stdout.strip()
    if "--junit" in args:
        assert (tmp_path / "report.xml").read_text().startswith("<?xml")
