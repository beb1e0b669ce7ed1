"""`ckpt convert` on hostile requests (issue #14): an OUT that is any file of the source artifact, a full disk,
rules files that are FIFOs, too deep or too big, thousands of retained checkpoints, out-of-range steps."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, child_env, needs_tf, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fixture_models.py"
MODEL = f"{EXAMPLES}:tf1_adam"


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "tf1_adam", src)
    return src


@pytest.mark.parametrize(
    "member", ["checkpoint", "model.ckpt-6.meta", "model.ckpt-6.index", "model.ckpt-6.data-00000-of-00001", "."]
)
def test_out_that_is_part_of_the_source_is_refused(source: Path, member: str) -> None:
    """Checked before TensorFlow is needed: refused in every environment, the source byte for byte intact.
    (A `.keras` OUT cannot name a file of a TF1 or Keras-2 source: only the tf2 target's folder can.)"""
    before = tree_digest(source)
    out = source / member if member != "." else source
    result = run_cli(["convert", source, "--model", MODEL, "--out", out, "--to", "tf2", "--force"], expect=2)
    assert "part of the source" in result.stderr or "replace the source" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert tree_digest(source) == before


def test_out_that_is_a_keras2_source_or_a_link_to_it_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "keras2_adam" / "model.h5", src)
    (tmp_path / "link").symlink_to(src)
    before = src.read_bytes()
    model = f"{EXAMPLES}:mlp"
    for out in (src, tmp_path / "link"):
        result = run_cli(["convert", src, "--model", model, "--out", out, "--to", "tf2", "--force"], expect=2)
        assert "source" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert src.read_bytes() == before and (tmp_path / "link").is_symlink()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))  # under one data shard of tf1_adam


@needs_tf
@pytest.mark.tensorflow
@pytest.mark.parametrize(("to", "name"), [("keras", "out.keras"), ("tf2", "out")])
def test_a_full_disk_is_one_line_and_out_is_not_written(source: Path, tmp_path: Path, to: str, name: str) -> None:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "ckpt_tools", "convert", str(source), "--model", MODEL, "--out", str(out), "--to", to]
    env = child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"ckpt: error: {out}: ") and "not replaced" in lines[0], lines
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt-tmp-")]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("digits.json", '{"rules": [{"from": "a", "to": "b", "side": ' + "9" * 5000 + "}]}"),
        ("deep.yaml", "a: " + "[" * 20_000 + "]" * 20_000),
        (
            "aliases.yaml",
            "x: &x [" + ", ".join(["{from: a, to: b}"] * 200) + "]\nrules: [" + ", ".join(["*x"] * 200) + "]\n",
        ),
    ],
)
def test_bad_rules_files_are_one_line(source: Path, tmp_path: Path, name: str, text: str) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    rules = tmp_path / name
    rules.write_text(text)
    result = run_cli(
        ["convert", source, "--model", MODEL, "--out", tmp_path / "o", "--map", rules, "--dry-run"], expect=2
    )
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ckpt: error: "), result.stderr
    assert "internal error" not in result.stderr


def test_a_fifo_rules_file_is_refused_without_blocking(source: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "rules.json"
    os.mkfifo(fifo)
    code = (
        "import sys\nfrom ckpt_tools.cli import main\n"
        f"main(['convert', {str(source)!r}, '--model', {MODEL!r}, '--out', {str(tmp_path / 'o')!r}, "
        f"'--map', {str(fifo)!r}, '--dry-run'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "regular file" in proc.stderr, proc.stderr


@needs_tf
@pytest.mark.tensorflow
def test_thousands_of_retained_checkpoints_hold_no_files_open(tmp_path: Path) -> None:
    """`convert --all` over more checkpoints than the process may have open files."""
    many = tmp_path / "many"
    many.mkdir()
    src = FIXTURES / "tf1_adam"
    entries = []
    for step in range(1, 151):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(src / f"model.ckpt-6{suffix}", many / f"model.ckpt-{step}{suffix}")
        entries.append(f'all_model_checkpoint_paths: "model.ckpt-{step}"')
    shutil.copy(src / "model.ckpt-6.meta", many / "model.ckpt-150.meta")
    (many / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-150"\n' + "\n".join(entries) + "\n")

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (120, 120))

    cmd = [
        sys.executable,
        "-m",
        "ckpt_tools",
        "convert",
        str(many),
        "--all",
        "--dry-run",
        "--model",
        MODEL,
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(
        cmd, env=child_env(TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=600, preexec_fn=few_files
    )
    assert "Too many open files" not in proc.stderr, proc.stderr
    assert "same step" in proc.stderr  # every copy holds step 6: refused on its merits, after reading all 150
