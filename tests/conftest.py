"""Shared test helpers: fixture discovery, the third-party corpus, and a CLI runner that checks exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
EXPECTED = FIXTURES / "expected"
SHARED = Path(os.environ.get("CKPT_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"

# A file on which libhdf5 hangs is refused once its metadata-reading child has spent this much CPU (20 s for a
# user); the hostile cases and the fuzzers meet such files, and wait 3 s for each instead.
os.environ.setdefault("CKPT_HDF5_CHECK_SECONDS", "3")

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed (tox -e notf)")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process that must import the *installed* ckpt_tools, as the tests do:
    the checkout is taken off PYTHONPATH, and PYTHONSAFEPATH (Python 3.11+) keeps `python -c` / `-m` / a script
    from putting its working or script directory first on sys.path."""
    env = {**os.environ, "PYTHONSAFEPATH": "1", **extra}
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    return env


def expected_fixtures() -> list[dict[str, Any]]:
    """Every fixture's truth file, as written by fixtures/make_fixtures.py."""
    out = []
    for file in sorted(EXPECTED.glob("*.json")):
        truth = json.loads(file.read_text())
        truth.setdefault("name", file.stem)
        truth["id"] = file.stem
        out.append(truth)
    return out


def fixture_path(truth: dict[str, Any]) -> Path:
    return FIXTURES / truth["path"]


def read_through_tensorflow(truth: dict[str, Any]) -> bool:
    """V1-format TF1 checkpoints (no .index file) are the one format read through TensorFlow."""
    folder = fixture_path(truth)
    folder = folder if folder.is_dir() else folder.parent
    return truth["format"] == "tf1-checkpoint" and not any(folder.glob("*.index"))


def fixture_params() -> list[Any]:
    """Every fixture as a pytest param, V1-format ones skipped where TensorFlow is absent."""
    return [
        pytest.param(
            t,
            id=t["id"],
            marks=pytest.mark.skipif(not HAS_TF and read_through_tensorflow(t), reason="V1 needs TensorFlow"),
        )
        for t in expected_fixtures()
    ]


def corpus_entries() -> list[dict[str, Any]]:
    truth = CORPUS / "ground_truth.json"
    if not truth.is_file():
        return []
    return list(json.loads(truth.read_text()))


def run_cli(args: list[str], expect: int | None = 0) -> Result:
    """Invoke `ckpt ARGS` in-process; assert the exit code when `expect` is given."""
    from ckpt_tools.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, output:\n{result.output}"
    return result


def run_json(args: list[str], expect: int | None = 0) -> Any:
    result = run_cli([*args, "--json"], expect)
    return json.loads(result.stdout)


def load_malformed_generator() -> Any:
    """fixtures/make_malformed.py as a module (imported once per process)."""
    import sys

    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    import make_malformed

    return make_malformed


HANG_BOUND = 60  # seconds: far beyond any correct run, far below the minutes a quadratic blow-up takes


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail a test still running after HANG_BOUND seconds: a hang detector for hostile-input tests, not a speed
    test (speed goals live in benchmarks/, never in unit tests)."""

    def expired(signum: int, frame: Any) -> None:
        pytest.fail(f"still running after {HANG_BOUND} s: a hang or a super-linear blow-up")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_BOUND)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
