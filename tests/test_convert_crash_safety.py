"""`ckpt convert` killed with SIGKILL at any moment: OUT is absent or complete and valid, SOURCE is untouched.

Each run converts a copy of a real TF1 checkpoint in a subprocess and is killed at a fixed delay, or the moment
the temporary output beside OUT appears (plus a few offsets into the write), or just after OUT appears. After
every kill: SOURCE hashes as before; OUT either does not exist or validates and matches a reference conversion
value for value. The same holds when --force replaces an existing OUT: the old OUT survives intact until the new
one is complete. A kill leaves the temporary `.ckpt-tmp-<pid>-*` path behind (nothing can clean up after
SIGKILL); the next conversion to the same OUT succeeds and removes it, since its process is gone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import child_env

ROOT = Path(__file__).resolve().parents[1]
FACTORY = f"{ROOT / 'examples' / 'fixture_models.py'}:tf1_adam"  # the fixture's own model: an exact conversion
SOURCE_FIXTURE = ROOT / "fixtures" / "tf1_adam"
HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_CONVERT = importlib.util.find_spec("ckpt_tools.conversion.run") is not None
RUN_TIMEOUT = 180

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(not (HAS_TF and HAS_CONVERT), reason="needs TensorFlow and ckpt_tools.conversion.run"),
]


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def env() -> dict[str, str]:
    out = child_env(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    out.pop("CKPT_DEBUG", None)
    return out


def ckpt(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckpt_tools", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def convert_args(source: Path, out: Path, to: str, force: bool) -> list[str]:
    args = ["convert", str(source), "--model", FACTORY, "--out", str(out), "--to", to]
    if to == "tf2":
        args.append("--all")  # every retained checkpoint: a longer write
    return [*args, "--force"] if force else args


def temps(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".ckpt-*{out.name}"))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], limit: float) -> bool:
    """Poll every millisecond until `condition` holds or the process ends; True if the condition held."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.001)
    return False


def kill_run(source: Path, out: Path, to: str, moment: str, force: bool = False) -> str:
    """Start a conversion and SIGKILL it at `moment`; returns what happened ('killed' or 'finished')."""
    existing = set(temps(out))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckpt_tools", *convert_args(source, out, to, force)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        kind, _, value = moment.partition(":")
        if kind == "after":
            time.sleep(float(value))
        elif kind == "temp":
            wait_for(lambda: bool(set(temps(out)) - existing), proc, 120)
            time.sleep(float(value or 0))
        elif kind == "out":
            old = out.stat().st_mtime_ns if out.exists() else None
            wait_for(lambda: out.exists() and out.stat().st_mtime_ns != old, proc, 120)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return "finished" if finished else "killed"
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion interrupted the wait
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash")
    source = root / "source"
    shutil.copytree(SOURCE_FIXTURE, source)
    refs = {}
    for to in ("tf2", "keras"):
        ref = root / ("ref" if to == "tf2" else "ref.keras")
        done = ckpt(*convert_args(source, ref, to, force=False))
        assert done.returncode == 0, done.stderr
        refs[to] = ref
    return {"root": root, "source": source, **refs}


def assert_complete(out: Path, ref: Path) -> None:
    """OUT is a finished conversion: it validates and equals the reference conversion value for value."""
    valid = ckpt("validate", str(out))
    assert valid.returncode == 0, f"{out} exists but does not validate:\n{valid.stdout}{valid.stderr}"
    same = ckpt("diff", str(ref), str(out))
    assert same.returncode == 0, f"{out} differs from a full conversion:\n{same.stdout}{same.stderr}"


MOMENTS = {"tf2": ["after:1", "temp:0", "temp:0.05", "out"], "keras": ["temp:0", "temp:0.05", "out"]}


@pytest.mark.parametrize("to", ["tf2", "keras"])
def test_sigkill_never_leaves_a_partial_output(workspace: dict[str, Path], to: str) -> None:
    source, ref = workspace["source"], workspace[to]
    before = tree_hash(source)
    outcomes = []
    for i, moment in enumerate(MOMENTS[to]):
        out = workspace["root"] / (f"out-{to}-{i}" + (".keras" if to == "keras" else ""))
        outcomes.append((moment, kill_run(source, out, to, moment), out.exists(), len(temps(out))))
        assert tree_hash(source) == before, f"SOURCE changed after a kill at {moment}"
        if out.exists():
            assert_complete(out, ref)
    print(f"\n{to}: (moment, outcome, OUT existed, stale temporaries): {outcomes}")
    assert any(outcome == "killed" for _, outcome, _, _ in outcomes), "no run was actually killed"
    interrupted = [i for i, (_, _, exists, stale) in enumerate(outcomes) if stale and not exists]
    assert interrupted, "no kill landed while the output was being written"
    # the interrupted conversion can simply be run again; it also removes the dead run's leftover temporary
    out = workspace["root"] / (f"out-{to}-{interrupted[0]}" + (".keras" if to == "keras" else ""))
    done = ckpt(*convert_args(source, out, to, force=False))
    assert done.returncode == 0, done.stderr
    assert_complete(out, ref)
    assert not temps(out), f"stale temporaries left beside {out}: {temps(out)}"


def test_sigkill_during_force_keeps_the_old_output(workspace: dict[str, Path]) -> None:
    """--force over an existing OUT: a kill leaves either the old OUT byte for byte or the complete new one."""
    source, ref = workspace["source"], workspace["tf2"]
    before = tree_hash(source)
    out = workspace["root"] / "forced"
    shutil.copytree(ref, out)
    (out / "marker-of-the-old-output").write_text("old")
    old = tree_hash(out)
    for moment in ["temp:0", "temp:0.1", "out"]:
        kill_run(source, out, "tf2", moment, force=True)
        assert tree_hash(source) == before
        assert out.exists(), f"OUT vanished after a kill at {moment} during --force"
        if tree_hash(out) != old:  # replaced: then completely, by a valid conversion
            assert not (out / "marker-of-the-old-output").exists()
            assert_complete(out, ref)
            shutil.rmtree(out)
            shutil.copytree(ref, out)
            (out / "marker-of-the-old-output").write_text("old")
            old = tree_hash(out)
