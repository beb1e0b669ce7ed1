"""`ckpt validate` and `ckpt_tools.validate` on intact, incomplete and damaged real artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ckpt_tools.bundle import BundleReader
from ckpt_tools.errors import UsageError
from ckpt_tools.validation.checks import CHECKS, ValidationReport, validate
from ckpt_tools.validation.run import ValidationRun

from .conftest import (
    FIXTURES,
    HAS_TF,
    ROOT,
    child_env,
    expected_fixtures,
    fixture_params,
    fixture_path,
    needs_tf,
    read_through_tensorflow,
    run_cli,
    run_json,
)

TRUTHS = expected_fixtures()


FIXTURE_PARAMS = fixture_params()
TF_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
BUNDLE_FORMATS = ("tf1-checkpoint", "tf2-checkpoint", "saved-model")

# Real TF1 Saver checkpoints with Adam state and a global step, where one value is not finite:
# nan/ has a NaN in a weight, inf/ an Inf in an Adam slot. TF writes valid checksums for both.
NONFINITE_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
v1 = tf.compat.v1
v1.disable_eager_execution()
for name in ("nan", "inf"):
    graph = tf.Graph()
    with graph.as_default():
        w = v1.get_variable("w", initializer=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
        step = v1.train.get_or_create_global_step()
        optimizer = v1.train.AdamOptimizer(0.1)
        train = optimizer.minimize(tf.reduce_sum(w * w), global_step=step)
        if name == "nan":
            poison = w.assign(np.array([[1.0, np.nan], [3.0, 4.0]], np.float32))
        else:
            poison = optimizer.get_slot(w, "m").assign(np.array([[np.inf, 0.0], [0.0, 0.0]], np.float32))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train)
            sess.run(poison)
            v1.train.Saver().save(sess, f"{sys.argv[1]}/{name}/model.ckpt", global_step=step)
"""


def truth_by_id(name: str) -> dict[str, Any]:
    return next(t for t in TRUTHS if t["id"] == name)


def failed(report: ValidationReport) -> dict[str, str]:
    return {c.name: c.reason for c in report.failed}


# ------------------------------------------------------------------------------------------------ fixtures


def test_every_format_is_covered() -> None:
    formats = {t["format"] for t in TRUTHS}
    assert {"tf1-checkpoint", "tf2-checkpoint", "saved-model"} <= formats
    assert {t["format"] for t in TRUTHS if t["resumable"]} >= {"tf1-checkpoint", "tf2-checkpoint"}


@pytest.mark.parametrize("truth", FIXTURE_PARAMS)
def test_fixture_verdict_matches_truth(truth: dict[str, Any]) -> None:
    report = validate(fixture_path(truth))
    assert report.format == truth["format"] and report.error is None
    for name in ("files", "weights", "finite"):
        assert report.check(name).status == "pass", report.check(name)
    assert report.check("state").status in ("pass", "skip")
    if truth["resumable"]:
        assert report.ok and report.exit_code == 0, report.problems()
        assert all(c.status == "pass" for c in report.checks if c.name != "state")
        return
    assert report.exit_code == 1
    reasons = failed(report)
    expected = truth.get("validate", {}).get("failing")
    if expected is not None:  # fixtures whose truth names the failing checks
        assert set(reasons) == set(expected), reasons
    if truth["optimizer"]["present"] is None:
        assert reasons.get("optimizer", "").startswith("cannot confirm optimizer state"), reasons
    elif not truth["optimizer"]["present"]:
        assert reasons.get("optimizer", "").startswith("no optimizer state"), reasons
        assert "slots" in reasons
    if truth["step"] is None:
        assert reasons.get("step") == "no step/iteration counter", reasons
    assert set(reasons) <= {"optimizer", "slots", "step"}


@pytest.mark.parametrize("truth", FIXTURE_PARAMS)
def test_weights_only_mode_accepts_every_intact_fixture(truth: dict[str, Any]) -> None:
    report = validate(fixture_path(truth), allow_weights_only=True)
    assert report.exit_code == 0, report.problems()
    assert {c.name for c in report.checks if not c.required} == {"optimizer", "slots", "step"}


@pytest.mark.parametrize(
    "name",
    [
        "tf1_noopt",
        "tf2_keras3_uncompiled",
        "saved_model_keras3_export",
        "saved_model_module",
        "keras3_uncompiled_keras",
        "keras3_uncompiled_weights",
        "keras2_no_optimizer",
    ],
)
def test_inference_artifacts_fail_for_missing_optimizer(name: str) -> None:
    truth = truth_by_id(name)
    result = run_json(["validate", fixture_path(truth)], expect=1)
    checks = {c["name"]: c for c in result["artifacts"][0]["checks"]}
    assert checks["optimizer"]["status"] == "fail" and "no optimizer state" in checks["optimizer"]["reason"]
    assert checks["weights"]["status"] == "pass"


def test_tf1_plain_sgd_is_resumable() -> None:
    report = validate(fixture_path(truth_by_id("tf1_sgd")))
    reason = report.check("optimizer").reason
    assert report.ok and "keeps no slot variables" in reason and "ResourceApplyGradientDescent" in reason


# ------------------------------------------------------------------------------------------------ damage


def copy_fixture(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def test_deleted_shard(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, "tf1_sharded")
    shard = folder / "model.ckpt-2.data-00001-of-00002"
    assert shard.is_file()
    shard.unlink()
    report = validate(folder / "model.ckpt-2")
    assert report.exit_code in (1, 2)
    assert "data-00001-of-00002" in " ".join(report.problems())
    if report.exit_code == 1:
        assert report.check("files").status == "fail"
    result = run_cli(["validate", folder / "model.ckpt-2"], expect=report.exit_code)
    assert "data-00001-of-00002" in result.stdout


def test_truncated_data_file(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, "tf1_adam")
    data = folder / "model.ckpt-6.data-00000-of-00001"
    size = data.stat().st_size
    with data.open("r+b") as fh:
        fh.truncate(size // 2)
    report = validate(folder / "model.ckpt-6")
    assert report.exit_code in (1, 2)
    text = " ".join(report.problems())
    assert str(data) in text and ("shard has" in text or "ended" in text), text


def test_nan_written_over_a_weight(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, "tf1_adam")
    prefix = folder / "model.ckpt-6"
    entry = BundleReader(prefix).entries["dense/kernel"]
    assert entry.dtype == "float32" and entry.size == 4 * 8 * 4
    with Path(f"{prefix}.data-00000-of-00001").open("r+b") as fh:
        fh.seek(entry.offset + 4 * 5)
        fh.write(np.array([np.nan], np.float32).tobytes())
    report = validate(prefix)
    assert report.exit_code == 1
    reasons = failed(report)
    assert set(reasons) == {"files", "finite"}
    assert "dense/kernel" in reasons["files"] and "CRC32C mismatch" in reasons["files"]
    assert "dense/kernel" in reasons["finite"]
    assert validate(prefix, require="weights,optimizer,slots,step,state").ok


def test_nonfinite_values_with_valid_checksums(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", NONFINITE_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=TF_ENV, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    nan = validate(tmp_path / "nan")
    assert nan.check("files").status == "pass"  # TF wrote the NaN, so the checksums hold
    assert failed(nan) == {"finite": "non-finite values in 1 tensor: w (1 NaN)"}
    inf = validate(tmp_path / "inf")
    assert set(failed(inf)) == {"finite"} and "optimizer/w/momentum (1 Inf)" in failed(inf)["finite"]
    result = run_cli(["validate", tmp_path / "nan", tmp_path / "inf"], expect=1)
    assert "finite: non-finite values" in result.stdout


def test_nan_in_keras_weights_file(tmp_path: Path) -> None:
    import h5py

    source = FIXTURES / "keras3_adam" / "model.weights.h5"
    copy = tmp_path / "model.weights.h5"
    shutil.copy(source, copy)
    with h5py.File(copy, "r+") as handle:
        names: list[str] = []
        handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 2 else None)
        kernel = handle[names[0]]
        kernel[0, 0] = np.nan
    assert validate(source).ok
    report = validate(copy)
    assert set(failed(report)) == {"finite"} and "1 NaN" in failed(report)["finite"]


def test_corrupt_keras_archive_member(tmp_path: Path) -> None:
    copy = tmp_path / "model.keras"
    shutil.copy(FIXTURES / "keras3_adam" / "model.keras", copy)
    with zipfile.ZipFile(copy) as archive:
        info = archive.getinfo("model.weights.h5")
    raw = bytearray(copy.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    raw[middle] ^= 0xFF
    copy.write_bytes(bytes(raw))
    report = validate(copy)
    assert report.exit_code in (1, 2)
    if report.exit_code == 1:
        assert "files" in failed(report)
    assert report.problems()


def test_truncated_hdf5(tmp_path: Path) -> None:
    copy = tmp_path / "model.weights.h5"
    data = (FIXTURES / "keras3_adam" / "model.weights.h5").read_bytes()
    copy.write_bytes(data[: len(data) * 2 // 3])
    report = validate(copy)
    assert report.exit_code in (1, 2) and report.problems()


def test_state_file_pointing_at_deleted_checkpoint(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, "tf1_adam")
    for file in folder.glob("model.ckpt-3.*"):
        file.unlink()
    report = validate(folder)
    assert failed(report) == {"state": "state file lists 1 checkpoint that does not exist: model.ckpt-3 (no .index)"}
    assert validate(folder, require="files,weights,optimizer,slots,step,finite").ok


def test_no_state_file_is_a_skip(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, "tf1_adam")
    (folder / "checkpoint").unlink()
    report = validate(folder / "model.ckpt-6")
    assert report.ok and report.check("state").status == "skip"


# ------------------------------------------------------------------------------------------------ CLI


def test_exit_code_precedence(tmp_path: Path) -> None:
    good = FIXTURES / "tf1_adam"
    bad = fixture_path(truth_by_id("tf1_noopt"))
    run_cli(["validate", good], expect=0)
    run_cli(["validate", good, bad], expect=1)
    result = run_cli(["validate", good, bad, tmp_path / "missing"], expect=2)
    assert "1 valid, 1 invalid, 1 unreadable" in result.stdout
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    assert "not a recognized checkpoint" in run_cli(["validate", junk], expect=2).stdout


def test_require_and_allow_weights_only() -> None:
    noopt = fixture_path(truth_by_id("tf1_noopt"))
    run_cli(["validate", noopt, "--require", "files,weights,finite"], expect=0)
    out = run_cli(["validate", noopt, "--allow-weights-only"], expect=0).stdout
    assert "not required" in out
    bad = run_cli(["validate", noopt, "--require", "files,bogus"], expect=2)
    assert "bogus" in bad.stderr


def test_glob_patterns_are_expanded(tmp_path: Path) -> None:
    for name in ("tf1_adam", "tf1_adagrad", "tf1_sgd"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    out = run_json(["validate", str(tmp_path / "tf1_a*")], expect=0)
    assert [Path(a["path"]).name for a in out["artifacts"]] == ["tf1_adagrad", "tf1_adam"]
    nothing = run_json(["validate", str(tmp_path / "*.index")], expect=2)
    assert "no file matches" in nothing["artifacts"][0]["error"]


def test_validate_many_paths_returns_a_run(tmp_path: Path) -> None:
    good, noopt = FIXTURES / "tf1_adam", fixture_path(truth_by_id("tf1_noopt"))
    run = validate([good, noopt])
    assert isinstance(run, ValidationRun)
    assert [r.path for r in run.reports] == [str(good), str(noopt)]
    assert (run.ok, run.exit_code, run.counts) == (False, 1, {"valid": 1, "invalid": 1, "unreadable": 0})
    assert run.problems() and all(p.startswith(str(noopt)) for p in run.problems())
    assert len(run.durations) == 2
    data = run.to_json()
    assert data["exit_code"] == 1 and [a["verdict"] for a in data["artifacts"]] == ["valid", "invalid"]
    assert "<testsuite" in run.junit_xml()
    worst = validate((good, tmp_path / "gone"), allow_weights_only=True)
    assert worst.exit_code == 2 and worst.reports[1].error is not None  # unreadable wins over invalid
    assert validate([good, noopt], allow_weights_only=True).ok


def test_validate_options_are_keyword_only_and_errors_name_arguments() -> None:
    with pytest.raises(TypeError):
        validate(FIXTURES / "tf1_adam", "files")  # type: ignore[call-overload]
    with pytest.raises(UsageError) as caught:
        validate(FIXTURES / "tf1_adam", require="files,bogus")
    assert str(caught.value).startswith("require=") and "--" not in str(caught.value)
    assert caught.value.argument == "require" and caught.value.detail.startswith("unknown check(s) bogus")
    with pytest.raises(UsageError, match="at least one artifact"):
        validate([])


def test_json_schema() -> None:
    out = run_json(["validate", FIXTURES / "tf1_adam", fixture_path(truth_by_id("tf1_noopt"))], expect=1)
    assert set(out) == {"schema", "ok", "exit_code", "required", "artifacts"}
    assert out["schema"] == "ckpt-tools/validate/1" and out["ok"] is False and out["required"] == list(CHECKS)
    first, second = out["artifacts"]
    assert set(first) == {"path", "format", "verdict", "ok", "exit_code", "error", "required", "checks"}
    assert [c["name"] for c in first["checks"]] == list(CHECKS)
    assert all(set(c) == {"name", "status", "reason", "required"} for c in first["checks"])
    assert (first["verdict"], second["verdict"]) == ("valid", "invalid")
    assert second["exit_code"] == 1 and {c["name"] for c in second["checks"] if c["status"] == "fail"} == {
        "optimizer",
        "slots",
        "step",
    }


def test_junit_report(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "junit.xml"  # the folder is created
    noopt = fixture_path(truth_by_id("tf1_noopt"))
    run_cli(["validate", FIXTURES / "tf1_adam", noopt, tmp_path / "gone", "--junit", report], expect=2)
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [str(FIXTURES / "tf1_adam"), str(noopt), str(tmp_path / "gone")]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "failed checks: optimizer, slots, step"
    assert failure.text is not None and "step: no step/iteration counter" in failure.text
    error = cases[2].find("error")
    assert error is not None and "no such file" in (error.get("message") or "")


def test_github_annotations() -> None:
    from ckpt_tools.cli import main

    noopt = fixture_path(truth_by_id("tf1_noopt"))
    runner = CliRunner(env={"GITHUB_ACTIONS": "true"})
    result = runner.invoke(main, ["validate", str(FIXTURES / "tf1_adam"), str(noopt)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(lines) == 3
    assert all(line.startswith(f"::error file={noopt},title=ckpt validate%3A ") for line in lines)
    assert "::optimizer: no optimizer state: no training op in model.ckpt.meta" in lines[0]
    quiet = CliRunner(env={"GITHUB_ACTIONS": None}).invoke(main, ["validate", str(noopt)])
    assert "::error" not in quiet.stdout
    as_json = runner.invoke(main, ["validate", str(noopt), "--json"])
    json.loads(as_json.stdout)  # annotations never corrupt --json output


def test_single_artifact_table() -> None:
    out = run_cli(["validate", FIXTURES / "tf1_adam"]).stdout
    for name in CHECKS:
        assert f"\n{name} " in out
    assert "step 6 (global_step)" in out and out.rstrip().endswith("1 artifact: 1 valid, 0 invalid, 0 unreadable")


def test_validate_does_not_import_tensorflow() -> None:
    paths = [str(fixture_path(t)) for t in TRUTHS if not read_through_tensorflow(t)]
    code = (
        "import sys\n"
        "from ckpt_tools.validation.checks import validate\n"
        f"for p in {paths!r}:\n"
        "    assert validate(p).error is None, p\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


# The example from docs/validate.md, kept here so the documentation cannot rot.
def test_docs_pytest_example() -> None:
    from ckpt_tools.validation.checks import validate

    report = validate(FIXTURES / "tf1_adam")
    assert report.ok, "\n".join(report.problems())
    exported = validate(FIXTURES / "saved_model_keras3_export", allow_weights_only=True)
    assert exported.ok, "\n".join(exported.problems())


def test_cli_translates_argument_errors_into_flags() -> None:
    import click

    from ckpt_tools.cli import CkptGroup, flag_for, main
    from ckpt_tools.cli.validate_cmd import command

    assert flag_for(command, "require") == "--require"
    assert flag_for(command, "paths") == "PATHS"
    assert flag_for(command, "nothing") is None
    assert isinstance(main, CkptGroup)
    ctx = click.Context(main)
    ctx.invoked_subcommand = "validate"
    error = UsageError("require='x': unknown check(s) x", argument="require", detail="unknown check(s) x")
    assert main.message(ctx, error) == "--require: unknown check(s) x"
    assert main.message(ctx, UsageError("plain")) == "plain"


def test_a_symlink_loop_beside_a_checkpoint_does_not_hide_its_files(tmp_path: Path) -> None:
    """A loop (`self -> self`) in the folder: the state check still sees the retained checkpoints (the folder
    listing had been dropped whole when one entry could not be stat'ed)."""
    folder = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", folder)
    (folder / "self").symlink_to("self")
    report = validate(folder)
    state = next(c for c in report.checks if c.name == "state")
    assert state.status == "pass", state.reason


def test_validate_escapes_a_newline_in_a_path(tmp_path: Path) -> None:
    """A path holding a newline is shown escaped: it cannot add a line that looks like a report of its own."""
    bad = tmp_path / "x\nfake PASS"
    bad.write_bytes(b"junk")
    out = run_cli(["validate", bad, FIXTURES / "tf1_adam"], expect=2).stdout
    assert not any(line.startswith("fake PASS") for line in out.splitlines()), out
    assert "x\\nfake PASS" in out


_TF_LOADS = "import sys, tensorflow as tf; tf.saved_model.load(sys.argv[1])"


@pytest.mark.parametrize("fixture", ["saved_model_module", "saved_model_tf1_export"])
def test_a_saved_model_without_its_variables_index_is_unreadable_as_tensorflow_finds(
    tmp_path: Path, fixture: str
) -> None:
    """Its saved_model.pb declares variables, so a missing `variables.index` is a missing file, not "no variables
    to verify" (which passed the files check); TensorFlow's own loader fails on the same directory."""
    artifact = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, artifact)
    (artifact / "variables" / "variables.index").unlink()
    entry = run_json(["validate", str(artifact)], expect=2)["artifacts"][0]
    assert entry["verdict"] == "unreadable"
    assert entry["error"].startswith(f"{artifact / 'variables' / 'variables.index'}: file of the artifact is missing")
    if HAS_TF:
        loaded = subprocess.run([sys.executable, "-c", _TF_LOADS, str(artifact)], env=TF_ENV, capture_output=True)
        assert loaded.returncode != 0


def test_a_saved_model_whose_variables_index_is_a_fifo_is_refused_unopened(tmp_path: Path) -> None:
    artifact = tmp_path / "sm"
    shutil.copytree(FIXTURES / "saved_model_module", artifact)
    index = artifact / "variables" / "variables.index"
    index.unlink()
    os.mkfifo(index)  # opening it would block until a writer came
    result = run_cli(["inspect", str(artifact)], expect=2)
    assert result.stderr == f"ckpt: error: {index}: not a regular file\n"


_TF1_EXPORTS = {
    "no-variables": "y = x * 2",
    # A local variable is not saved: TF1's builder makes no saver and writes no index, and TensorFlow loads it.
    "local-variable-only": (
        "v = tf.compat.v1.Variable([0.0, 0.0], collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES]); y = x * 2 + v"
    ),
}


@needs_tf
@pytest.mark.parametrize("graph", sorted(_TF1_EXPORTS))
def test_a_tf1_export_without_saved_variables_has_none_as_tensorflow_wrote_it(tmp_path: Path, graph: str) -> None:
    """TF1's builder writes no variables.index for a graph without saved variables, and TensorFlow loads that:
    still a SavedModel with nothing to verify, not a missing file."""
    script = (
        "import sys, tensorflow as tf\n"
        "g = tf.Graph()\n"
        "with g.as_default(), tf.compat.v1.Session(graph=g) as s:\n"
        f"    x = tf.compat.v1.placeholder(tf.float32, [2]); {_TF1_EXPORTS[graph]}\n"
        "    s.run(tf.compat.v1.local_variables_initializer())\n"
        "    b = tf.compat.v1.saved_model.Builder(sys.argv[1])\n"
        "    b.add_meta_graph_and_variables(s, ['serve'])\n"
        "    b.save()\n"
        "tf.saved_model.load(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "sm")], env=TF_ENV, check=True, capture_output=True)
    assert not (tmp_path / "sm" / "variables" / "variables.index").exists()
    entry = run_json(["validate", str(tmp_path / "sm")], expect=1)["artifacts"][0]
    files = next(c for c in entry["checks"] if c["name"] == "files")
    assert files["status"] == "pass" and "no variables to verify" in files["reason"]


def test_a_saved_model_whose_variables_folder_links_outside_is_refused_unlisted(tmp_path: Path) -> None:
    """Without an index, looking for data shards must not list a `variables/` that resolves outside the model."""
    artifact = tmp_path / "sm"
    shutil.copytree(FIXTURES / "saved_model_tf1_export", artifact)
    shutil.rmtree(artifact / "variables")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "variables.data-secret").write_bytes(b"")
    (artifact / "variables").symlink_to(tmp_path / "outside")
    result = run_cli(["inspect", str(artifact)], expect=2)
    assert "outside" in result.stderr and "secret" not in result.stderr and "--follow-symlinks" in result.stderr
