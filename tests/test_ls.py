"""`ckpt ls DIR...`: recursive discovery finds every fixture once, reads nothing twice and follows no symlink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ckpt_tools.discovery import Progress, list_artifacts, natural_key
from ckpt_tools.readers.paths import bundle_prefix, read_state

from .conftest import FIXTURES, HAS_TF, ROOT, child_env, expected_fixtures, run_cli, run_json

BUNDLE_FORMATS = {"tf1-checkpoint", "tf2-checkpoint"}
ARTIFACT_KEYS = {"path", "root", "format", "tensors", "parameters", "step", "epoch", "optimizer", "resumable", "prefix"}
SUMMARY_KEYS = {
    "artifacts",
    "resumable",
    "errors",
    "formats",
    "entries_scanned",
    "symlinks_skipped",
    "empty_roots",
    "truncated",
}
V1_FIXTURE = "tf1_v1format"
EXTRA = "ckpt-tools[tensorflow]"

HOSTILE = "fixtures/hostile/"  # the `ckpt scan` corpus


def _truth_key(truth: dict[str, Any]) -> Path:
    """What a truth file's path stands for: the bundle prefix for checkpoints (a directory means its latest),
    the path itself otherwise (and for V1 single files, which have no `.index`)."""
    path = FIXTURES / truth["path"]
    if truth["format"] in BUNDLE_FORMATS:
        path = bundle_prefix(path) or path
    return path.resolve()


def _row_key(row: dict[str, Any]) -> Path:
    path = row["prefix"] if row["format"] in BUNDLE_FORMATS and row["prefix"] else row["path"]
    return (ROOT / path).resolve()


def _retained(row: dict[str, Any]) -> bool:
    """A listed artifact no truth file names is justified when it is an older checkpoint that the state file
    beside it retains (all_model_checkpoint_paths), other than the latest."""
    prefix = ROOT / row["path"]
    state = read_state(prefix.parent)
    return (
        row["format"] in BUNDLE_FORMATS
        and Path(str(prefix) + ".index").is_file()
        and state is not None
        and prefix.name in state.all
        and prefix.name != state.latest
    )


@pytest.fixture(scope="module")
def listing() -> dict[str, Any]:
    """`ckpt ls fixtures/ --json`, run from the repository root so that paths come out as `fixtures/...`.

    fixtures/hostile/ (the scan corpus) holds artifacts ls must refuse (external links, ...): exit 1, and
    they are set aside here so the rest is checked against the truth files."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        report: dict[str, Any] = run_json(["ls", "fixtures/"], expect=1)
    finally:
        os.chdir(cwd)
    hostile = [e for e in report["errors"] if e["path"].startswith(HOSTILE)]
    assert len(hostile) >= 3, hostile  # at least the external link, external storage and the broken .keras
    report["errors"] = [e for e in report["errors"] if not e["path"].startswith(HOSTILE)]
    report["artifacts"] = [r for r in report["artifacts"] if not r["path"].startswith(HOSTILE)]
    return report


def test_ls_finds_every_fixture_exactly_once(listing: dict[str, Any]) -> None:
    truths = [t for t in expected_fixtures() if HAS_TF or t["id"] != V1_FIXTURE]
    rows = listing["artifacts"]
    keys = [_row_key(r) for r in rows]
    for truth in truths:
        matches = [r for r, k in zip(rows, keys, strict=True) if k == _truth_key(truth)]
        assert len(matches) == 1, f"{truth['id']} ({truth['path']}): listed {len(matches)} times"
        row = matches[0]
        assert row["path"].startswith("fixtures/"), row["path"]
        got = (row["format"], row["step"], row["resumable"])
        assert got == (truth["format"], truth["step"], truth["resumable"]), truth["id"]
    expected = {_truth_key(t) for t in truths}
    extras = [r for r, k in zip(rows, keys, strict=True) if k not in expected]
    print("listed beyond the truth files (retained older checkpoints):", [r["path"] for r in extras])
    assert all(_retained(r) for r in extras), [r["path"] for r in extras if not _retained(r)]
    assert len(set(keys)) == len(keys), "an artifact was listed twice"
    assert len(rows) == len(truths) + len(extras)


def test_ls_json_shape_and_order(listing: dict[str, Any]) -> None:
    assert listing["schema"] == "ckpt-tools/ls/1"
    assert listing["roots"] == ["fixtures"]
    assert all(set(r) == ARTIFACT_KEYS for r in listing["artifacts"])
    assert all(r["optimizer"] in ("present", "absent", "unknown") for r in listing["artifacts"])
    assert set(listing["summary"]) == SUMMARY_KEYS
    assert listing["summary"]["artifacts"] >= len(listing["artifacts"])
    assert listing["summary"]["symlinks_skipped"] == 0 and not listing["summary"]["truncated"]
    paths = [r["path"] for r in listing["artifacts"]]
    assert paths == sorted(paths, key=natural_key)
    if HAS_TF:
        assert listing["errors"] == []
    else:
        assert [e["path"] for e in listing["errors"]] == [f"fixtures/{V1_FIXTURE}"]
        assert EXTRA in listing["errors"][0]["error"]


def test_ls_text_table() -> None:
    result = run_cli(["ls", FIXTURES / "tf1_adam", FIXTURES / "keras3_adam"])
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "format", "tensors", "parameters", "step", "epoch", "optimizer", "resumable"]
    body = [line.split() for line in lines[2:] if line and not line.startswith(("-", "4 artifacts"))]
    assert [row[0] for row in body] == [  # one natural order over every root, not root by root
        f"{FIXTURES}/keras3_adam/model.keras",
        f"{FIXTURES}/keras3_adam/model.weights.h5",
        f"{FIXTURES}/tf1_adam",
        f"{FIXTURES}/tf1_adam/model.ckpt-3",
    ]
    assert body[2][1:] == ["tf1-checkpoint", "15", "67", "6", "-", "present", "yes"]
    assert lines[-1] == "4 artifacts (4 resumable), 0 errors"
    assert result.stderr == ""


def test_natural_sort_of_paths(tmp_path: Path) -> None:
    weights = FIXTURES / "keras3_adam" / "model.weights.h5"
    for name in ("ckpt-10", "ckpt-2", "ckpt-1"):
        (tmp_path / name).mkdir()
        shutil.copy(weights, tmp_path / name / "model.weights.h5")
        shutil.copy(weights, tmp_path / f"{name}.weights.h5")
    report = run_json(["ls", tmp_path])
    names = [Path(r["path"]).relative_to(tmp_path).as_posix() for r in report["artifacts"]]
    assert names == [
        "ckpt-1/model.weights.h5",
        "ckpt-1.weights.h5",
        "ckpt-2/model.weights.h5",
        "ckpt-2.weights.h5",
        "ckpt-10/model.weights.h5",
        "ckpt-10.weights.h5",
    ]


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """root/ with a checkpoint dir (plus an export below it), a SavedModel, a corrupt and a truncated `.h5`,
    and symlinks to a directory and a file outside root/."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(FIXTURES / "keras2_adam" / "model.h5", outside / "secret.h5")
    shutil.copytree(FIXTURES / "tf1_adam", outside / "secret_ckpt")
    shutil.copytree(FIXTURES / "tf1_adam", root / "run" / "ckpts")
    (root / "run" / "ckpts" / "export").mkdir()
    shutil.copy(FIXTURES / "keras2_adam" / "model.h5", root / "run" / "ckpts" / "export" / "model.h5")
    shutil.copytree(FIXTURES / "saved_model_module", root / "sm")
    (root / "bad.h5").write_bytes(os.urandom(3000))
    (root / "cut.h5").write_bytes((FIXTURES / "keras2_adam" / "model.h5").read_bytes()[:200])
    (root / "notes.txt").write_text("not an artifact")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link.h5").symlink_to(outside / "secret.h5")
    return root, outside


def test_ls_tree_with_symlinks_and_corrupt_files(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    report = run_json(["ls", root], expect=1)
    listed = {Path(r["path"]).relative_to(root).as_posix(): r["format"] for r in report["artifacts"]}
    assert listed == {
        "run/ckpts": "tf1-checkpoint",
        "run/ckpts/model.ckpt-3": "tf1-checkpoint",
        "run/ckpts/export/model.h5": "keras2-h5",
        "sm": "saved-model",
    }
    assert not any(r["path"].startswith(str(outside)) for r in report["artifacts"])  # nothing via the links
    assert sorted(Path(e["path"]).name for e in report["errors"]) == ["bad.h5", "cut.h5"]
    assert all(e["error"] and "\n" not in e["error"] for e in report["errors"])
    assert report["summary"]["symlinks_skipped"] == 2
    assert report["exit_code"] == 1
    text = run_cli(["ls", root], expect=1).stdout
    assert "4 artifacts (3 resumable), 2 errors" in text
    assert f"error: {root / 'bad.h5'}: " in text and f"error: {root / 'cut.h5'}: " in text


def test_ls_keys_a_symlinked_prefix_by_its_target(tmp_path: Path) -> None:
    """A prefix name that is itself a symlink (beside a regular `.index`) counts as the checkpoint it points to,
    as `resolve()` says: the target is not listed a second time. Every other name is keyed without realpath."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for file in (FIXTURES / "tf2_keras3_adam").glob("ckpt-1.*"):
            shutil.copy(file, tmp_path / folder / file.name)
    (tmp_path / "b" / "ckpt-1").symlink_to(tmp_path / "a" / "ckpt-1")  # listed after its target
    for jobs in (1, 2):
        result = list_artifacts([tmp_path], jobs=jobs)
        assert [Path(a.path).relative_to(tmp_path).as_posix() for a in result.artifacts] == ["a/ckpt-1"]
        assert result.symlinks_skipped == 1 and result.errors == ()


def test_ls_a_prefix_that_is_a_symlink_loop_is_one_error_row(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "tf2_keras3_adam", tmp_path / "good")
    shutil.copy(FIXTURES / "tf2_keras3_adam" / "ckpt-1.index", tmp_path / "x.index")
    (tmp_path / "x").symlink_to("x")
    report = run_json(["ls", tmp_path], expect=1)
    assert [Path(e["path"]).name for e in report["errors"]] == ["x"]
    assert "cannot resolve this path" in report["errors"][0]["error"]
    assert len(report["artifacts"]) == 2


def test_ls_a_state_file_naming_a_symlink_loop_is_one_error_row(tmp_path: Path) -> None:
    """The latest checkpoint a state file names is a prefix that loops (`p -> p` beside `p.index`): an error row,
    not an internal error (Python 3.11's Path.resolve raises RuntimeError on a loop)."""
    source = bundle_prefix(FIXTURES / "tf1_adam")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(f"{source}{suffix}", tmp_path / f"p{suffix}")
    (tmp_path / "p").symlink_to("p")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "p"\n')
    for jobs in ("-j1", "-j2"):
        report = run_json(["ls", tmp_path, jobs], expect=1)
        assert report["errors"] and all("loop" in e["error"] or "resolve" in e["error"] for e in report["errors"])


def test_ls_error_rows_that_differ_only_in_case_come_out_alike_with_jobs(tmp_path: Path) -> None:
    """Error rows whose paths tie in the case-blind natural order (`P`, `p`) are ordered the same by -j1 and -j2
    (the walk records a loop at once and read errors later, in another order with jobs)."""
    (tmp_path / "P.index").write_bytes(b"junk")
    (tmp_path / "p.index").write_bytes(b"junk")
    (tmp_path / "p").symlink_to("p")
    one = run_cli(["ls", tmp_path, "-j1"], expect=1)
    two = run_cli(["ls", tmp_path, "-j2"], expect=1)
    assert one.stdout == two.stdout and one.stdout.count("error: ") == 2


def test_ls_resolves_only_the_root_of_a_deep_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk 300 folders deep resolves the root, not each folder (each resolve costs one lstat per level: deep
    trees were quadratic, 2,000 levels took 100 s)."""
    deep = tmp_path
    for _ in range(300):
        deep = deep / "d"
    deep.mkdir(parents=True)
    calls: list[Path] = []
    original = Path.resolve

    def counting(self: Path, strict: bool = False) -> Path:
        calls.append(self)
        return original(self, strict)

    monkeypatch.setattr(Path, "resolve", counting)
    result = list_artifacts([tmp_path])
    assert result.empty_roots == (str(tmp_path),)
    assert len(calls) <= 5, f"{len(calls)} resolves for 301 folders"


def test_ls_escapes_a_newline_in_a_file_name(tmp_path: Path) -> None:
    """A file name holding a newline and a made-up row cannot add a row or an error line to the text output."""
    fake = "m.keras\nfake.keras   keras-archive  22  99  3  -  present  yes\nx.keras"
    shutil.copy(FIXTURES / "keras3_adam" / "model.keras", tmp_path / fake)
    (tmp_path / "bad\nerror: spoofed.keras").write_bytes(b"junk")
    out = run_cli(["ls", tmp_path], expect=1).stdout
    assert not any(line.startswith(("fake.keras", "error: spoofed")) for line in out.splitlines()), out
    assert "m.keras\\nfake.keras" in out and "bad\\nerror: spoofed.keras" in out
    assert len(out.splitlines()) == 6, out  # header, rule, one row, blank, counts, one error line


def test_ls_reads_each_artifact_once_across_overlapping_roots(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    calls: list[Progress] = []
    result = list_artifacts([root / "run" / "ckpts", root, root / "sm"], progress=calls.append)
    assert len(calls) == len(result.artifacts) + len(result.errors) == 6
    assert len({Path(a.path).resolve() for a in result.artifacts}) == len(result.artifacts) == 4
    assert result.empty_roots == ()


def test_ls_empty_directory(tmp_path: Path) -> None:
    result = run_cli(["ls", tmp_path], expect=0)
    assert result.stdout == ""
    assert result.stderr == f"ckpt ls: no artifacts found under {tmp_path}\n"
    report = run_json(["ls", tmp_path], expect=0)
    assert report["artifacts"] == [] and report["errors"] == [] and report["exit_code"] == 0
    assert report["summary"]["empty_roots"] == [str(tmp_path)]


@pytest.mark.parametrize("kind", ["missing", "file", "none"])
def test_ls_usage_errors(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("x")
    args = ["ls"] if kind == "none" else ["ls", tmp_path, target]
    result = run_cli(args, expect=2)
    assert result.stdout == ""
    assert result.stderr.startswith("ckpt: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    if kind != "none":
        assert str(target) in result.stderr


def test_ls_entry_limit(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    report = run_json(["ls", root, "--max-entries", "3"], expect=1)
    assert report["summary"]["truncated"] is True
    assert report["summary"]["entries_scanned"] == 4  # the entry past the limit stops the listing
    assert any("stopped after 3 directory entries" in e["error"] for e in report["errors"])


# Lists fixture directories in a child process and reports which TensorFlow-family modules got imported.
NO_TF_CHECK = r"""
import json, sys
from click.testing import CliRunner
from ckpt_tools.cli import main

run = CliRunner().invoke(main, ["ls", *sys.argv[1:], "--json"])
report = json.loads(run.stdout)
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"exit": run.exit_code, "artifacts": len(report["artifacts"]), "heavy": heavy}))
"""


def test_ls_does_not_import_tensorflow() -> None:
    """Every fixture but the V1 checkpoint (the one format read through TensorFlow) lists without it."""
    skip = (V1_FIXTURE, "expected", "hostile")
    roots = sorted(str(p) for p in FIXTURES.iterdir() if p.is_dir() and p.name not in skip)
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF_CHECK, *roots],
        cwd=ROOT,
        env=child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["exit"] == 0
    assert out["artifacts"] >= len(expected_fixtures()) - 1
    assert out["heavy"] == [], f"ckpt ls imported {out['heavy']}"


def test_ls_unlistable_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subdirectory that cannot be listed (permission denied) is one error; the rest is still listed."""
    root, _ = _tree(tmp_path)
    denied = str(root / "run")
    real_scandir = os.scandir

    def scandir(path: str) -> Any:
        if os.fspath(path) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_scandir(path)

    monkeypatch.setattr("ckpt_tools.discovery.os.scandir", scandir)
    result = list_artifacts([root])
    assert [(e.path, e.error) for e in result.errors if e.path == denied] == [
        (denied, "cannot list this directory: Permission denied")
    ]
    assert [Path(a.path).name for a in result.artifacts] == ["sm"]
    assert result.exit_code == 1


def test_ls_counter_for_terminals(capsys: pytest.CaptureFixture[str]) -> None:
    from ckpt_tools.cli.ls_cmd import _counter

    _counter()(Progress(entries=12, artifacts=3, path="runs/ckpt-2"))
    err = capsys.readouterr().err
    assert err.startswith("\rckpt ls: 3 read, 12 entries: runs/ckpt-2") and "\n" not in err


def test_docs_example_is_real_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first console example of docs/ls.md is what `ckpt ls` prints, from the repository root."""
    doc = (ROOT / "docs" / "ls.md").read_text()
    block = doc.split("```console\n", 1)[1].split("```", 1)[0]
    command, _, shown = block.partition("\n")
    assert command.startswith("$ ckpt ls ")
    monkeypatch.chdir(ROOT)
    assert run_cli(command.split()[2:]).stdout == shown
