"""Run `ckpt scan`, `saved_model_cli scan` and `modelscan` on every case of the hostile corpus (run on demand).

Usage: python benchmarks/scan_peers.py [--corpus fixtures/hostile] [--out benchmarks/results/scan_peers.json]
                                       [--ckpt "python -m ckpt_tools"] [--saved-model-cli PATH] [--modelscan PATH]

For every case of CORPUS/expected.json, each scanner runs in its own subprocess whose cwd is a fresh, empty
temporary directory. A trap in the corpus that fires writes `ckpt_scan_marker_<case>` relative to the cwd, so
after every run the script lists what that directory holds: it must stay empty. "Caught" means:

- ckpt scan --json: exit code 1 (a finding at or above the default --fail-on high);
- saved_model_cli scan --dir DIR (SavedModel directories only): its output names a denylisted op;
- modelscan scan -p PATH -r json: its report lists at least one issue.

Writes every run's figures to --out as JSON and prints a Markdown table: ✔ caught, ✘ missed, — not applicable;
for the clean twins "clean" or "false positive". A scanner that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARK = "ckpt_scan_marker_"
TIMEOUT_S = 600
CKPT, SMCLI, MODELSCAN = "ckpt scan", "saved_model_cli scan", "modelscan"
TOOLS = (CKPT, SMCLI, MODELSCAN)
NOT_SAVED_MODEL = "n/a (SavedModel only)"
# saved_model_cli prints one such line per MetaGraph it scans (tags and ops are Python reprs).
SMCLI_LINE = re.compile(
    r"MetaGraph with tag set (?P<tags>\[.*?\]) "
    r"(?P<verdict>contains the following denylisted ops:|does not contain the default denylisted ops:) "
    r"(?P<ops>\{.*\}|set\(\))"
)


@dataclass
class Run:
    """One subprocess: its command, outcome and what it left in its fresh working directory."""

    cmd: list[str]
    exit_code: int | None
    seconds: float
    stdout: str
    stderr: str
    cwd_left: list[str]
    timed_out: bool = False

    @property
    def markers(self) -> list[str]:
        return [name for name in self.cwd_left if name.startswith(MARK)]

    def tail(self, lines: int = 3) -> str:
        return " | ".join((self.stderr or self.stdout).strip().splitlines()[-lines:])


@dataclass
class Tool:
    """A scanner: its command prefix, whether it can run here, and the versions it runs with."""

    name: str
    cmd: list[str]
    available: bool = False
    note: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def run_in_fresh_cwd(cmd: list[str], env: dict[str, str], timeout: float = TIMEOUT_S) -> Run:
    """Run cmd with cwd = a new empty temporary directory; record what is left in it afterwards."""
    with tempfile.TemporaryDirectory(prefix="scan_peers_cwd_") as tmp:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
            code, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            code, out, err, timed_out = None, _text(exc.stdout), _text(exc.stderr), True
        seconds = time.perf_counter() - start
        left = sorted(p.name for p in Path(tmp).iterdir())
    return Run(cmd, code, round(seconds, 2), out, err, left, timed_out)


def base_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def interpreter_of(executable: str) -> str | None:
    """The Python interpreter named by a console script's #! line, if it has one."""
    try:
        first = Path(executable).read_bytes()[:512].split(b"\n", 1)[0]
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words and "python" in Path(words[0]).name else None


def dist_versions(python: str, dists: list[str], env: dict[str, str]) -> dict[str, str]:
    """Installed versions of dists in another interpreter (importlib.metadata: nothing is imported)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    run = run_in_fresh_cwd([python, "-c", code, *dists], env, timeout=60)
    try:
        return dict(json.loads(run.stdout))
    except (json.JSONDecodeError, TypeError):
        return {}


def probe(tool: Tool, check_args: list[str], dists: list[str], ok: Callable[[Run], bool] | None = None) -> Tool:
    """Is the tool installed and runnable (ok(run), default exit 0)? Record its versions and its packages'."""
    exe = shutil.which(tool.cmd[0])
    if exe is None:
        tool.note = f"not installed: {tool.cmd[0]} not found (skipped)"
        return tool
    run = run_in_fresh_cwd([*tool.cmd, *check_args], tool.env, timeout=300)
    if not (ok(run) if ok else run.exit_code == 0):
        tool.note = f"not usable: `{shlex.join([*tool.cmd, *check_args])}` exited {run.exit_code}: {run.tail(1)}"
        return tool
    tool.available = True
    first = (run.stdout.strip().splitlines() or [""])[0]
    if "version" in first.lower():
        tool.versions["reported"] = first.strip()
    python = tool.cmd[0] if "python" in Path(tool.cmd[0]).name else interpreter_of(exe)
    if python:
        tool.versions.update(dist_versions(python, dists, tool.env))
    return tool


def printed_usage(run: Run) -> bool:
    """saved_model_cli (absl) exits 1 after printing its help: it is usable if it printed its usage line."""
    return "USAGE:" in run.stdout + run.stderr and not run.timed_out


def make_tools(args: argparse.Namespace) -> dict[str, Tool]:
    env = base_env()
    ckpt_cmd = shlex.split(args.ckpt) if args.ckpt else [sys.executable, "-m", "ckpt_tools"]
    ckpt_env = dict(env)
    if not args.ckpt:  # the default command measures the ckpt_tools of this checkout
        ckpt_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    tools = {
        CKPT: Tool(CKPT, ckpt_cmd, env=ckpt_env),
        SMCLI: Tool(SMCLI, [args.saved_model_cli], env=env),
        MODELSCAN: Tool(MODELSCAN, [args.modelscan], env=env),
    }
    probe(tools[CKPT], ["--version"], ["ckpt-tools"])
    if tools[CKPT].available:  # an older ckpt-tools has no scan command
        check = run_in_fresh_cwd([*ckpt_cmd, "scan", "--help"], ckpt_env, timeout=120)
        if check.exit_code != 0:
            tools[CKPT].available = False
            tools[CKPT].note = f"not usable: this ckpt has no `scan` command ({check.tail(1)})"
    probe(tools[SMCLI], ["--helpshort"], ["tensorflow", "tensorflow-cpu", "protobuf"], printed_usage)
    probe(tools[MODELSCAN], ["--version"], ["modelscan", "tensorflow", "tensorflow-cpu", "h5py", "keras", "numpy"])
    return tools


def artifact_kind(path: Path) -> str:
    """What the case's artifact is, from its file names only (independent of every scanner)."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names & {"saved_model.pb", "saved_model.pbtxt"}:
            return "saved-model"
        if "checkpoint" in names or any(n.endswith(".index") for n in names):
            return "tf-checkpoint"
        return "directory"
    if path.suffix == ".keras":
        return "keras-archive"
    if path.suffix in {".h5", ".hdf5"}:
        return "hdf5"
    return path.suffix.lstrip(".") or "file"


def parse_json(text: str) -> dict[str, Any] | None:
    """The JSON document in a tool's stdout (the whole of it, else its last line that parses)."""
    for candidate in [text, *reversed(text.strip().splitlines())]:
        try:
            doc = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def run_record(run: Run) -> dict[str, Any]:
    return {
        "exit_code": run.exit_code,
        "seconds": run.seconds,
        "timed_out": run.timed_out,
        "markers": run.markers,
        "cwd_left": run.cwd_left,
        "command": shlex.join(run.cmd),
    }


def expected_missing(expected: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[str]:
    """Truth-file findings no reported one matches: same rule, every `where` in "file: location", "(op X)" there."""
    missing = []
    for want in expected:
        hits = [
            f
            for f in found
            if f.get("rule") == want["rule"]
            and all(w in f"{f.get('file')}: {f.get('location')}" for w in want.get("where", []))
            and (not want.get("op") or f"(op {want['op']})" in str(f.get("location")))
        ]
        if not hits:
            missing.append(f"{want['rule']}{' ' + want['op'] if want.get('op') else ''} at {want.get('where')}")
    return missing


def scan_ckpt(tool: Tool, path: Path, kind: str, case: dict[str, Any]) -> dict[str, Any]:
    run = run_in_fresh_cwd([*tool.cmd, "scan", "--json", str(path)], tool.env)
    report = parse_json(run.stdout) or {}
    artifacts = report.get("artifacts", [])
    findings = [f for a in artifacts for f in a.get("findings", [])]
    active = [f for f in findings if not f.get("suppressed")]
    errors = [a["error"] for a in artifacts if a.get("error")]
    rules = sorted({f"{f['rule']} ({f['severity']})" for f in active})
    reported = ", ".join(rules) or ("error: " + "; ".join(errors) if errors else "no findings")
    if not report:
        reported = f"no JSON report; exit {run.exit_code}: {run.tail()}"
    missing = expected_missing(case.get("findings", []), active) if case["hostile"] else []
    # Like the peers' "reported an issue": a hostile case is caught when every expected finding is reported,
    # at any severity (the exit code at the default gate is recorded too); a clean twin is a false positive
    # when the default gate fails it.
    caught = bool(active) and not missing if case["hostile"] else run.exit_code == 1
    return {
        "caught": caught,
        "fails_default_gate": run.exit_code == 1,
        "reported": reported,
        "rules": sorted({f["rule"] for f in active}),
        "kind": [a.get("kind") for a in artifacts],
        "errors": errors,
        "findings": [
            {k: f.get(k) for k in ("rule", "severity", "file", "location", "detail", "suppressed")} for f in findings
        ],
        "expected_missing": missing,
        **run_record(run),
    }


def parse_smcli(stdout: str) -> list[dict[str, Any]]:
    """One entry per MetaGraph line saved_model_cli printed: its tags and the denylisted ops it names."""
    graphs = []
    for match in SMCLI_LINE.finditer(stdout):
        try:
            tags = list(ast.literal_eval(match["tags"]))
            ops = [] if match["ops"] == "set()" else sorted(ast.literal_eval(match["ops"]))
        except (ValueError, SyntaxError):
            tags, ops = [match["tags"]], [match["ops"]]
        named = match["verdict"].startswith("contains")
        graphs.append({"tags": tags, "denylisted_ops": ops if named else [], "checked_for": [] if named else ops})
    return graphs


def scan_smcli(tool: Tool, path: Path, kind: str, case: dict[str, Any]) -> dict[str, Any]:
    if kind != "saved-model":
        return {"caught": "n/a", "reported": NOT_SAVED_MODEL}
    run = run_in_fresh_cwd([*tool.cmd, "scan", "--dir", str(path)], tool.env)
    graphs = parse_smcli(run.stdout)
    ops = sorted({op for g in graphs for op in g["denylisted_ops"]})
    if run.exit_code != 0 or not graphs:
        reported = f"crashed (exit {run.exit_code}): {run.tail()}"
    elif ops:
        reported = "denylisted ops: " + ", ".join(ops)
    else:
        reported = "no denylisted op in " + ", ".join(str(g["tags"]) for g in graphs)
    return {
        "caught": bool(ops),
        "reported": reported,
        "ops": ops,
        "meta_graphs": graphs,
        "crashed": run.exit_code != 0 or not graphs,
        "stdout": run.stdout.strip()[-2000:],
        **run_record(run),
    }


def summarize_issues(issues: list[dict[str, Any]]) -> str:
    seen: dict[str, int] = {}
    for issue in issues:
        key = f"{issue.get('severity')} {issue.get('operator')} ({issue.get('source')})"
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in seen.items())


def scan_modelscan(tool: Tool, path: Path, kind: str, case: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scan_peers_report_") as out_dir:
        out = Path(out_dir) / "modelscan.json"  # written outside the run's cwd, which must stay empty
        cmd = [*tool.cmd, "scan", "-p", str(path), "-r", "json", "--show-skipped", "-o", str(out)]
        run = run_in_fresh_cwd(cmd, tool.env)
        report = parse_json(out.read_text()) if out.exists() else parse_json(run.stdout)
    report = report or {}
    issues = list(report.get("issues", []))
    errors = [f"{e.get('category', '')} {e.get('description', '')}".strip() for e in report.get("errors", [])]
    scanned = report.get("summary", {}).get("scanned", {})
    skipped = report.get("summary", {}).get("skipped", {}).get("skipped_files", [])
    skip_reasons = sorted({f"{s.get('category')}: {s.get('description')}" for s in skipped})
    if not report:
        reported = f"no JSON report; exit {run.exit_code}: {run.tail()}"
    elif issues:
        reported = summarize_issues(issues)
    else:
        reported = f"no issues ({scanned.get('total_scanned', 0)} files scanned)"
        if not scanned.get("total_scanned") and skip_reasons:
            reported += "; skipped: " + "; ".join(skip_reasons)
        if errors:
            reported += "; errors: " + "; ".join(errors)
    return {
        "caught": bool(issues),
        "reported": reported,
        "issues": [{k: i.get(k) for k in ("severity", "operator", "module", "source", "scanner")} for i in issues],
        "errors": errors,
        "scanned_files": scanned.get("scanned_files", []),
        "skipped_files": [f"{s.get('source')} ({s.get('category')}: {s.get('description')})" for s in skipped],
        **run_record(run),
    }


SCANNERS: dict[str, Callable[[Tool, Path, str, dict[str, Any]], dict[str, Any]]] = {
    CKPT: scan_ckpt,
    SMCLI: scan_smcli,
    MODELSCAN: scan_modelscan,
}


def scan_case(case: dict[str, Any], corpus: Path, tools: dict[str, Tool]) -> dict[str, Any]:
    path = (corpus / case["path"]).resolve()
    kind = artifact_kind(path)
    results: dict[str, Any] = {}
    for name in TOOLS:
        tool = tools[name]
        if name == SMCLI and kind != "saved-model":
            results[name] = {"caught": "n/a", "reported": NOT_SAVED_MODEL, "exit_code": None, "seconds": None}
        elif not tool.available:
            results[name] = {"caught": None, "reported": tool.note, "exit_code": None, "seconds": None}
        else:
            results[name] = SCANNERS[name](tool, path, kind, case)
        print(f"  {case['name']:24s} {name:22s} {results[name]['reported'][:90]}", file=sys.stderr)
    return {
        "name": case["name"],
        "path": case["path"],
        "hostile": bool(case["hostile"]),
        "kind": kind,
        "twin_of": case.get("twin_of"),
        "tools": results,
    }


def cell(result: dict[str, Any], hostile: bool) -> str:
    """A table cell: ✔/✘ for hostile cases, clean/false positive for clean twins, — when not applicable."""
    caught = result["caught"]
    if caught == "n/a":
        return "—"
    if caught is None:
        return "skipped"
    verdict = ("✔" if caught else "✘") if hostile else ("false positive" if caught else "clean")
    if result.get("crashed") or result.get("timed_out"):
        return f"{verdict} (crashed)"
    short = result.get("rules") or result.get("ops") or sorted({str(i["operator"]) for i in result.get("issues", [])})
    if result.get("fails_default_gate") is False and caught and hostile:
        return f"{verdict} {result['reported']}, passes the default gate"
    if caught and short:
        return f"{verdict} {', '.join(short)}"
    if short:  # findings, but none at or above the tool's failing level
        return f"{verdict} (only {result['reported']})"
    if result.get("errors"):
        return f"{verdict} (error)"
    if "scanned_files" in result and not result["scanned_files"]:
        return f"{verdict} (nothing scanned)"
    return verdict


def markdown_table(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| case | hostile | ckpt scan | saved_model_cli scan | modelscan |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        cells = [cell(case["tools"][name], case["hostile"]) for name in TOOLS]
        lines.append(f"| {case['name']} | {'yes' if case['hostile'] else 'no'} | {' | '.join(cells)} |")
    return "\n".join(lines)


def notes(cases: list[dict[str, Any]], tools: dict[str, Tool], stray: list[str]) -> list[str]:
    """What a reader of the table should know: skipped tools, markers, ckpt misses and false positives, crashes."""
    out = [f"{t.name}: {t.note}" for t in tools.values() if not t.available]
    for case in cases:
        for name, res in case["tools"].items():
            if res.get("markers") or res.get("cwd_left"):
                out.append(f"{case['name']} / {name}: left {res.get('cwd_left')} in its cwd (markers {res['markers']})")
            if res.get("crashed") or res.get("timed_out"):
                out.append(f"{case['name']} / {name}: crashed or timed out: {res['reported']}")
            elif name != CKPT and res.get("errors"):
                out.append(f"{case['name']} / {name}: exit {res.get('exit_code')}, errors: {res['errors']}")
        ckpt = case["tools"][CKPT]
        if ckpt["caught"] is None:
            continue
        if case["hostile"] and not ckpt["caught"]:
            out.append(f"ckpt scan MISSED {case['name']} (exit {ckpt.get('exit_code')}): {ckpt['reported']}")
        if not case["hostile"] and ckpt["caught"]:
            out.append(f"ckpt scan FALSE POSITIVE on {case['name']}: {ckpt['reported']}")
        if ckpt.get("exit_code") == 2 or ckpt.get("errors"):
            out.append(f"ckpt scan could not read {case['name']}: {ckpt.get('errors') or ckpt['reported']}")
        for miss in ckpt.get("expected_missing", []):
            out.append(f"ckpt scan on {case['name']}: expected finding not reported: {miss}")
    out += [f"marker file in the corpus after the runs: {p}" for p in stray]
    return out


def stray_markers(corpus: Path) -> list[str]:
    return sorted(str(p.relative_to(corpus)) for p in corpus.rglob(MARK + "*"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help='ckpt command line (default: "<this python> -m ckpt_tools" on this checkout)')
    parser.add_argument("--saved-model-cli", default="/work/venv/bin/saved_model_cli", help="%(default)s")
    parser.add_argument("--modelscan", default="/work/peers-venv/bin/modelscan", help="%(default)s")
    parser.add_argument("--corpus", type=Path, default=REPO / "fixtures" / "hostile", help="fixtures/hostile")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scan_peers.json")
    parser.add_argument("--cases", nargs="*", metavar="NAME", help="only these cases (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    truth_file = args.corpus / "expected.json"
    if not truth_file.is_file():
        print(f"{truth_file}: no truth file (generate the corpus with fixtures/gen_hostile.py)", file=sys.stderr)
        return 2
    truth = json.loads(truth_file.read_text(encoding="utf-8"))
    selected = [c for c in truth["cases"] if not args.cases or c["name"] in args.cases]
    tools = make_tools(args)
    for tool in tools.values():
        print(f"{tool.name}: {'ok' if tool.available else tool.note} {tool.versions or ''}", file=sys.stderr)
    before = stray_markers(args.corpus)
    cases = [scan_case(case, args.corpus, tools) for case in selected]
    stray = [p for p in stray_markers(args.corpus) if p not in before]
    doc = {
        "schema": "ckpt-tools/scan-peers/1",
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": str(args.corpus),
        "corpus_versions": truth.get("versions", {}),
        "skipped_cases": truth.get("skipped", []),
        "tools": {
            t.name: {"command": t.cmd, "available": t.available, "note": t.note, "versions": t.versions}
            for t in tools.values()
        },
        "cases": cases,
        "new_markers_in_corpus": stray,
        "notes": notes(cases, tools, stray),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown_table(cases))
    print()
    for line in doc["notes"] or ["no marker file appeared; nothing else to note"]:
        print(f"- {line}")
    print(f"\nwritten: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
