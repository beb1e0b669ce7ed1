"""The tests exercise the installed package, and the package ships what typed consumers need."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import ckpt_tools

from .conftest import ROOT, child_env

PACKAGE = Path(ckpt_tools.__file__).resolve().parent
INSTALLED = os.environ.get("CKPT_EXPECT_INSTALLED") == "1"  # set by tox, which installs a built wheel


def test_py_typed_ships() -> None:
    assert (PACKAGE / "py.typed").is_file()


@pytest.mark.skipif(not INSTALLED, reason="only where the package is installed from a build (tox)")
def test_tests_import_the_installed_package_not_the_checkout() -> None:
    assert PACKAGE != ROOT / "ckpt_tools", f"imported the checkout at {PACKAGE}"
    dist = metadata.distribution("ckpt-tools")
    assert "Typing :: Typed" in (dist.metadata.get_all("Classifier") or [])
    assert any(str(f).endswith("ckpt_tools/py.typed") for f in dist.files or [])


def test_child_processes_import_the_same_package() -> None:
    code = "import ckpt_tools, pathlib; print(pathlib.Path(ckpt_tools.__file__).resolve().parent)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == PACKAGE
