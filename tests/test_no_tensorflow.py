"""With tensorflow, keras and tf_keras unimportable, every command works on every format except V1 checkpoints."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import FIXTURES, ROOT, child_env, expected_fixtures, fixture_path, run_json

BLOCKED = ("tensorflow", "keras", "tf_keras")
HEAVY = (*BLOCKED, "h5py")  # none of these may be imported to list a tensor bundle
EXTRA = "ckpt-tools[tensorflow]"

# Installed first in every blocked subprocess: importing any blocked package (or a submodule) raises
# ModuleNotFoundError, as if it were not installed, and the attempt is recorded.
PRELUDE = r"""
import importlib.abc
import sys

BLOCKED = ("tensorflow", "keras", "tf_keras")
ATTEMPTS = []


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_no_tensorflow)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
for _name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[_name]
"""

# Runs every job (id -> CLI args) in-process under the blocker through the real click entry point.
DRIVER = (
    PRELUDE
    + r"""
import json
from click.testing import CliRunner
from ckpt_tools.cli import main

jobs = json.loads(open(sys.argv[1]).read())
results = {}
for job_id, args in jobs.items():
    seen = len(ATTEMPTS)
    run = CliRunner().invoke(main, args)
    crash = None if run.exception is None or isinstance(run.exception, SystemExit) else repr(run.exception)
    results[job_id] = {"exit": run.exit_code, "stdout": run.stdout, "stderr": run.stderr, "crash": crash,
                       "attempts": ATTEMPTS[seen:]}
with open(sys.argv[2], "w") as fh:
    json.dump(results, fh)
"""
)

# Without the blocker: list one artifact, then report which heavy packages ended up imported.
HEAVY_CHECK = r"""
import json, sys
from click.testing import CliRunner
from ckpt_tools.cli import main

run = CliRunner().invoke(main, ["inspect", sys.argv[1], "--json"])
assert run.exit_code == 0, run.output
assert json.loads(run.stdout)["variables"]
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""

TRUTHS = [t for t in expected_fixtures() if t["id"] != "tf1_v1format"]
V1 = next(t for t in expected_fixtures() if t["id"] == "tf1_v1format")
FORMATS = sorted({t["format"] for t in TRUTHS})
ONE_PER_FORMAT = [next(t for t in TRUTHS if t["format"] == fmt) for fmt in FORMATS]
BUNDLES = [t for t in TRUTHS if t["id"] in ("tf1_adam", "tf2_keras3_adam", "saved_model_module")]
# Listed without reading a tensor value or decoding a graph constant, so without numpy (0.1-0.2 s of start-up)
NUMPY_FREE = [
    t for t in TRUTHS if t["id"] in ("tf2_keras3_adam", "tf2_tfkeras_adam", "tf2_epoch_var", "tf1_sgd_nometa")
]
NUMPY_CHECK = r"""
import json, sys
from pathlib import Path
from click.testing import CliRunner
from ckpt_tools.cli import main

path, step = sys.argv[1], json.loads(sys.argv[2])
folder = path if Path(path).is_dir() else str(Path(path).parent)
runs = [["inspect", path], ["inspect", path, "--json"], ["ls", folder]]
for args in runs:
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    if "--json" in args:
        assert json.loads(run.stdout)["step"] == step, run.stdout  # the step was read, without numpy
print(json.dumps("numpy" in sys.modules))
"""

HAS_DIFF = importlib.util.find_spec("ckpt_tools.cli.diff_cmd") is not None
HAS_VALIDATE = importlib.util.find_spec("ckpt_tools.cli.validate_cmd") is not None
HAS_CONVERT = (
    importlib.util.find_spec("ckpt_tools.cli.convert_cmd") is not None
    and importlib.util.find_spec("ckpt_tools.conversion.run") is not None
)
CONVERT_FACTORY = ROOT / "tests" / "convert_models.py"


def _env() -> dict[str, str]:
    return child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )


def _jobs(out_dir: Path) -> dict[str, list[str]]:
    jobs = {f"inspect:{t['id']}": ["inspect", str(fixture_path(t)), "--json"] for t in TRUTHS}
    jobs["inspect:v1"] = ["inspect", str(fixture_path(V1)), "--json"]
    if HAS_DIFF:
        for t in ONE_PER_FORMAT:
            path = str(fixture_path(t))
            jobs[f"diff:{t['id']}"] = ["diff", path, path, "--json"]
        jobs["diff:tf1_adam_steps"] = [
            "diff",
            str(FIXTURES / "tf1_adam" / "model.ckpt-3"),
            str(FIXTURES / "tf1_adam" / "model.ckpt-6"),
            "--json",
        ]
    if HAS_VALIDATE:
        for t in ONE_PER_FORMAT:
            jobs[f"validate:{t['id']}"] = ["validate", str(fixture_path(t)), "--json"]
    if HAS_CONVERT:
        jobs["convert"] = [
            "convert",
            str(FIXTURES / "tf1_adam"),
            "--model",
            f"{CONVERT_FACTORY}:adam",
            "--out",
            str(out_dir / "converted"),
        ]
    return jobs


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every job's exit code, output and blocked-import attempts, from one subprocess under the blocker."""
    work = tmp_path_factory.mktemp("no_tf")
    jobs_file, results_file = work / "jobs.json", work / "results.json"
    jobs_file.write_text(json.dumps(_jobs(work)))
    proc = _python(DRIVER, str(jobs_file), str(results_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, Any] = json.loads(results_file.read_text())
    results["_work"] = str(work)
    return results


def _ok(result: dict[str, Any], codes: tuple[int, ...] = (0,)) -> Any:
    """The job's JSON output, after checking it neither crashed nor tried to import a blocked package."""
    assert result["crash"] is None, result["crash"]
    assert result["exit"] in codes, f"exit {result['exit']}: {result['stderr']}"
    assert result["attempts"] == [], f"tried to import {result['attempts']} (TensorFlow must stay optional)"
    return json.loads(result["stdout"])


def _one_line_naming_the_extra(result: dict[str, Any]) -> str:
    assert result["crash"] is None, result["crash"]
    assert result["exit"] == 2, f"exit {result['exit']}: {result['stdout']}{result['stderr']}"
    line = result["stderr"]
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    assert line.startswith("ckpt: error: ") and "Traceback" not in line
    assert EXTRA in line, line
    return line


def test_blocker_makes_every_blocked_package_unimportable() -> None:
    code = (
        PRELUDE
        + r"""
import importlib
for name in ("tensorflow", "keras", "tf_keras", "tensorflow.compat.v1", "keras.src"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} was importable")
import numpy, h5py, google.protobuf  # the packages that do the work stay importable
import json
print(json.dumps(sorted(set(ATTEMPTS))))
"""
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == sorted(BLOCKED)  # a submodule import stops at its blocked parent


@pytest.mark.parametrize("truth", TRUTHS, ids=[t["id"] for t in TRUTHS])
def test_inspect_without_tensorflow_matches_truth(blocked: dict[str, Any], truth: dict[str, Any]) -> None:
    report = _ok(blocked[f"inspect:{truth['id']}"])
    assert report["format"] == truth["format"]
    got = sorted([v["key"], v["shape"], v["dtype"]] for v in report["variables"])
    assert got == sorted([k, list(s), d] for k, s, d in truth["tensors"])
    assert report["step"] == truth["step"]
    # Having TensorFlow installed or not changes nothing in the report.
    assert report == run_json(["inspect", str(fixture_path(truth))])


@pytest.mark.skipif(not HAS_DIFF, reason="ckpt diff not available yet")
@pytest.mark.parametrize("truth", ONE_PER_FORMAT, ids=FORMATS)
def test_diff_without_tensorflow_compares_values(blocked: dict[str, Any], truth: dict[str, Any]) -> None:
    path = str(fixture_path(truth))
    report = _ok(blocked[f"diff:{truth['id']}"])
    assert report["identical"] is True
    keys = sorted(e["a"]["key"] for e in report["variables"])
    assert set(keys) <= {k for k, _, _ in truth["tensors"]}
    aliases = [k for k, c in truth.get("canonical", {}).items() if isinstance(c, dict) and "alias_of" in c]
    assert len(keys) == len(truth["tensors"]) - (len(aliases) or report["a"]["aliases"])  # aliases compared once
    assert all(e["category"] == "identical" and e["values"] is not None for e in report["variables"])
    assert report == run_json(["diff", path, path])


@pytest.mark.skipif(not HAS_DIFF, reason="ckpt diff not available yet")
def test_diff_without_tensorflow_finds_changed_values(blocked: dict[str, Any]) -> None:
    report = _ok(blocked["diff:tf1_adam_steps"], codes=(1,))
    changed = {e["name"] for e in report["variables"] if e["category"] == "values_changed"}
    assert "step" in changed and any(name.endswith("kernel") for name in changed)
    assert report["summary"]["identical"] + len(changed) == len(report["variables"])


@pytest.mark.skipif(not HAS_VALIDATE, reason="ckpt validate not available yet")
@pytest.mark.parametrize("truth", ONE_PER_FORMAT, ids=FORMATS)
def test_validate_without_tensorflow(blocked: dict[str, Any], truth: dict[str, Any]) -> None:
    result = blocked[f"validate:{truth['id']}"]
    report = _ok(result, codes=(0, 1))
    assert [a["format"] for a in report["artifacts"]] == [truth["format"]]
    assert all(a["error"] is None for a in report["artifacts"])
    assert report == run_json(["validate", str(fixture_path(truth))], expect=result["exit"])


def test_v1_format_needs_the_tensorflow_extra(blocked: dict[str, Any]) -> None:
    result = blocked["inspect:v1"]
    line = _one_line_naming_the_extra(result)
    assert str(fixture_path(V1)) in line
    assert result["stdout"] == ""
    assert result["attempts"], "the V1 reader should have tried TensorFlow"


@pytest.mark.skipif(not HAS_CONVERT, reason="ckpt convert not available yet")
def test_convert_needs_the_tensorflow_extra(blocked: dict[str, Any]) -> None:
    result = blocked["convert"]
    _one_line_naming_the_extra(result)
    assert not (Path(blocked["_work"]) / "converted").exists()


@pytest.mark.parametrize("truth", BUNDLES, ids=[t["id"] for t in BUNDLES])
def test_listing_a_bundle_imports_neither_tensorflow_nor_h5py(truth: dict[str, Any]) -> None:
    proc = _python(f"HEAVY = {HEAVY!r}\n" + HEAVY_CHECK, str(fixture_path(truth)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == [], f"ckpt inspect {truth['path']} imported {proc.stdout.strip()}"


@pytest.mark.parametrize("truth", NUMPY_FREE, ids=[t["id"] for t in NUMPY_FREE])
def test_listing_a_tf2_checkpoint_imports_no_numpy(truth: dict[str, Any]) -> None:
    """The step and the object graph are read and checked without numpy; a value read would import it."""
    proc = _python(NUMPY_CHECK, str(fixture_path(truth)), json.dumps(truth["step"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) is False, f"listing {truth['path']} imported numpy"


def test_cli_import_is_light() -> None:
    proc = _python(
        f"import sys, json, ckpt_tools.cli\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == []
