"""Hostile and broken inputs: every command answers each with one stderr line and exit 2 (validate: 1 or 2).

The corpus comes from fixtures/make_malformed.py, written into a session temporary directory. Two driver
subprocesses side by side (one per usable CPU, at most DRIVERS; each with a 4 GiB address-space cap and a
wall-clock timeout, under strace when it is available) each execute every other (case, command) job in-process
through the real click entry point, with stdout/stderr at the OS level redirected to files and re-wrapped as
strict UTF-8 text (what a user with a UTF-8 locale gets), and write one JSON line per job. The tests then check
exit codes, the stderr contract, timing, and that no file outside the artifact was ever opened (strace; without
strace, the exit codes alone show the honeypots were not read: they are valid artifacts that would have made
the command succeed).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
FACTORY = ROOT / "tests" / "convert_models.py"
MEMORY_CAP = 4 << 30
JOB_TIMEOUT = 20  # seconds; a job still running then is a hang
MAX_RSS_MIB = 1.2 * 1024  # peak resident memory of one job (issue #14)
SLOW_JOB = 20.0  # seconds: the issue's hang bound (wall clock, strace included, on a loaded 2-core CI box)
RUN_TIMEOUT = 900
DRIVERS = 2  # driver subprocesses run side by side (at most one per usable CPU)
MARKER = "/proc/self/ckpt-malformed-job/"  # a failing open() of MARKER + job id separates jobs in the strace log
HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_CONVERT = importlib.util.find_spec("ckpt_tools.conversion.run") is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BAD_WORDS = ("Traceback", "internal error", "out of memory")
COMMANDS = ("inspect", "stats", "json", "diff_self", "diff_good", "validate", "scan")


def load_generator() -> Any:
    """fixtures/make_malformed.py as a module (this file also runs standalone as the job driver)."""
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    import make_malformed

    return make_malformed


# ------------------------------------------------------------------------------------------------ the driver
def _limit_memory() -> None:  # preexec_fn of the driver subprocess
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


class JobTimeout(BaseException):
    """Raised by SIGALRM inside a job that runs too long."""


def _alarm(signum: int, frame: Any) -> None:
    raise JobTimeout()


def run_jobs(jobs: list[dict[str, Any]], results: Path) -> None:
    """Driver side: run each job through `ckpt_tools.cli.main`, one JSON line per job appended to `results`.

    Without convert jobs each job runs in a forked child, so that its peak RSS is its own (wait4's rusage) and
    a crash (a signal) is recorded instead of ending the run. Convert jobs import TensorFlow first, whose
    threads make fork unsafe: they run in this process, each with its own peak RSS (`_in_process`)."""
    forking = not any(job["args"][0] == "convert" for job in jobs)
    if forking:
        _warm_up()
    if not forking:
        # Importing TensorFlow and Keras takes seconds, more under strace on a busy machine: done before any
        # job's clock starts, so the per-job alarm detects hangs rather than slow imports.
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

    signal.signal(signal.SIGALRM, _alarm)
    with results.open("a", encoding="utf-8") as out:
        for job in jobs:
            record = _forked(job, results) if forking else _in_process(job, results)
            out.write(json.dumps(record) + "\n")
            out.flush()


def _warm_up() -> None:
    """Import what jobs use before forking (every reader, every command, h5py, tabulate), so that each child
    starts warm instead of importing them again."""
    import importlib

    import tabulate  # noqa: F401

    from ckpt_tools.cli import COMMANDS, main  # noqa: F401
    from ckpt_tools.readers import registry

    for name in COMMANDS:
        importlib.import_module(f"ckpt_tools.cli.{name}_cmd")
    for fmt in registry.formats():
        registry.reader(fmt)
    for module in ("ckpt_tools.scanning", "ckpt_tools.validation", "ckpt_tools.diffing", "ckpt_tools.inspection"):
        importlib.import_module(module)


def _forked(job: dict[str, Any], results: Path) -> dict[str, Any]:
    """One job in a child process: its record, with the child's peak RSS, or how it died."""
    record_file = Path(f"{results}.record")
    record_file.unlink(missing_ok=True)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run, write the record, leave without running the parent's cleanup
        try:
            record_file.write_text(json.dumps(_run_job(job, results)))
        finally:
            os._exit(0)
    status, rss_kib = _wait(pid, started)
    if record_file.exists() and os.WIFEXITED(status):
        record: dict[str, Any] = json.loads(record_file.read_text())
    else:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
        record = {
            "id": job["id"],
            "exit": how,
            "seconds": round(time.monotonic() - started, 3),
            "stdout": "",
            "stderr": "",
        }
    record["rss_mib"] = round(rss_kib / 1024, 1)
    return record


def _in_process(job: dict[str, Any], results: Path) -> dict[str, Any]:
    """One job in the driver itself, with its own peak RSS: the kernel's high-water mark is reset to the current
    RSS before the job (`/proc/self/clear_refs`, value 5) and read after it (VmHWM). A signal ends the driver,
    which `launch` reports as the first job without a record."""
    Path("/proc/self/clear_refs").write_text("5")
    record = _run_job(job, results)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            record["rss_mib"] = round(int(line.split()[1]) / 1024, 1)
    return record


def _wait(pid: int, started: float) -> tuple[int, int]:
    """The child's wait status and peak RSS (KiB); killed when it outlives the job timeout by 10 s (a hang in C
    code, where the alarm's Python handler never runs)."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, int(usage.ru_maxrss)
        if time.monotonic() - started > JOB_TIMEOUT + 10:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return status, int(usage.ru_maxrss)
        time.sleep(0.005)


def _run_job(job: dict[str, Any], results: Path) -> dict[str, Any]:
    import io

    from ckpt_tools.cli import main

    saved = os.dup(1), os.dup(2)
    with contextlib.suppress(OSError):  # fails (ENOENT); strace logs it, marking where this job starts
        os.close(os.open(MARKER + job["id"], os.O_RDONLY))
    files = [Path(f"{results}.{name}") for name in ("stdout", "stderr")]
    fds = [os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for f in files]
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="strict")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="strict")
    code: Any = None
    started = time.monotonic()
    signal.alarm(JOB_TIMEOUT)
    try:
        main(job["args"], prog_name="ckpt")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except JobTimeout:
        code = "timeout"
    except BaseException:  # what the interpreter would print for an escaped exception
        code = 1
        sys.stderr.write(traceback.format_exc())
    finally:
        signal.alarm(0)
    elapsed = time.monotonic() - started
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as exc:  # a strict-UTF-8 failure surfacing at flush
            code = f"flush failed: {type(exc).__name__}: {exc}"
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in fds:
        os.close(fd)
    return {
        "id": job["id"],
        "exit": code,
        "seconds": round(elapsed, 3),
        "stdout": files[0].read_bytes().decode("utf-8", "backslashreplace")[-(1 << 20) :],
        "stderr": files[1].read_bytes().decode("utf-8", "backslashreplace"),
    }


Results = dict[str, dict[str, Any]]


def launch(jobs: list[dict[str, Any]], workdir: Path, name: str) -> tuple[Results, dict[str, list[str]]]:
    """Run the jobs in capped driver subprocesses side by side (under strace if possible), one per usable CPU up
    to DRIVERS, each taking every n-th job; results by job id, opened paths by job (every job's, when traced)."""
    count = max(1, min(DRIVERS, len(os.sched_getaffinity(0)), len(jobs)))
    strace = strace_usable() if os.environ.get("CKPT_NO_STRACE") != "1" else None
    drivers: list[_Driver] = []
    by_id: Results = {}
    opened: dict[str, list[str]] = {}
    try:
        drivers += [_Driver(jobs[i::count], workdir, f"{name}.{i}", strace) for i in range(count)]
        deadline = time.monotonic() + RUN_TIMEOUT
        for driver in drivers:
            by_id.update(driver.results(deadline))
            for job, paths in (parse_trace(driver.trace) if strace else {}).items():
                opened.setdefault(job, []).extend(paths)
    finally:
        for driver in drivers:
            driver.stop()
    untraced = [j["id"] for j in jobs if strace and j["id"] not in opened]
    assert not untraced, f"no strace record of jobs {untraced[:5]}: the open() check would be blind to them"
    return by_id, opened


class _Driver:
    """One driver subprocess (in a session of its own, with strace when given) running its share of the jobs."""

    def __init__(self, jobs: list[dict[str, Any]], workdir: Path, name: str, strace: str | None) -> None:
        self.jobs = jobs
        jobs_file = workdir / f"{name}.jobs.json"
        self.output = workdir / f"{name}.results.jsonl"
        self.trace = workdir / f"{name}.strace"
        self.stderr = workdir / f"{name}.stderr"
        jobs_file.write_text(json.dumps(jobs))
        self.output.write_text("")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--driver", str(jobs_file), str(self.output)]
        if strace:
            traced = "trace=open,openat,openat2,creat"
            cmd = [strace, "-f", "-qq", "-s", "4096", "-e", traced, "-o", str(self.trace), *cmd]
        # The driver imports the installed ckpt_tools, as the tests do: nothing puts the checkout on sys.path.
        env = {**os.environ, "PYTHONSAFEPATH": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
        env.pop("PYTHONPATH", None)
        env.pop("CKPT_DEBUG", None)
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_limit_memory,
                start_new_session=True,  # stop() kills strace and the traced driver with its children together
            )

    def stop(self) -> None:
        """Kill whatever of the driver's process group still runs, and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def results(self, deadline: float) -> Results:
        """This driver's records by job id, once it has ended; a failure if it outlives the deadline or ends
        before its last job."""
        try:
            self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"a driver was still running after {RUN_TIMEOUT} s (killed)")
        by_id = {}
        for line in self.output.read_text().splitlines():
            record = json.loads(line)
            by_id[record["id"]] = record
        missing = [j["id"] for j in self.jobs if j["id"] not in by_id]
        assert not missing, (
            f"driver died (exit {self.proc.returncode}) before jobs {missing[:5]}; "
            f"stderr:\n{self.stderr.read_text(errors='replace')[-3000:]}"
        )
        return by_id


def strace_usable() -> str | None:
    """strace's path if it can trace here (ptrace may be forbidden in containers), else None."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    probe = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=openat", "-o", os.devnull, sys.executable, "-c", "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return strace if probe.returncode == 0 else None


def parse_trace(trace: Path) -> dict[str, list[str]]:
    """Paths each job tried to open, from an strace log split by the driver's marker opens."""
    opened: dict[str, list[str]] = {}
    current = "(startup)"
    pattern = re.compile(r'(?:open|openat|openat2|creat)\((?:AT_FDCWD|\d+)?,?\s*"((?:[^"\\]|\\.)*)"')
    for line in trace.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match is None:
            continue
        path = match.group(1).encode().decode("unicode_escape", "replace")
        if path.startswith(MARKER):
            current = path[len(MARKER) :]
            continue
        opened.setdefault(current, []).append(path)
    return opened


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    root = tmp_path_factory.mktemp("malformed")
    load_generator().build(root / "corpus")
    manifest = json.loads((root / "corpus" / "manifest.json").read_text())
    cases = [c for c in manifest["cases"] if not (c["needs_nonroot"] and IS_ROOT)]
    (root / "snapshot.json").write_text(json.dumps(snapshot(root / "corpus")))
    return root, cases, manifest


def snapshot(top: Path) -> dict[str, list[Any]]:
    """Every entry under `top` as (type, mode, size, mtime_ns, sha256 or link target); FIFOs are never opened."""
    import hashlib
    import stat as st

    out: dict[str, list[Any]] = {}
    for here, dirs, files in os.walk(top, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(here) / name
            info = path.lstat()
            entry: list[Any] = [st.S_IFMT(info.st_mode), st.S_IMODE(info.st_mode), info.st_size, info.st_mtime_ns]
            if st.S_ISLNK(info.st_mode):
                entry.append(os.readlink(path))
            elif st.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
            out[str(path.relative_to(top))] = entry
    return out


def job_args(case: dict[str, Any], command: str, corpus_dir: Path, good: str) -> list[str]:
    path = str(corpus_dir / case["path"])
    return {
        "inspect": ["inspect", path],
        "stats": ["inspect", "--stats", path],
        "json": ["inspect", "--json", path],
        "diff_self": ["diff", path, path],
        "diff_good": ["diff", str(ROOT / "fixtures" / (case["good"] or good)), path],
        "validate": ["validate", path],
        "scan": ["scan", path],
    }[command]


def allowed(case: dict[str, Any], command: str) -> set[int]:
    if command in ("inspect", "json"):
        return set(case["inspect"])
    if command == "stats":
        return set(case["stats"])
    if command == "diff_self":
        return set(case["diff"])
    if command == "diff_good":
        return set(case["diff_good"])
    if command == "scan":
        return {0, 1, 2}  # scan reads less than the other commands; what it must find is checked below
    return set(case[command])


@pytest.fixture(scope="session")
def outcomes(corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    root, cases, manifest = corpus
    corpus_dir = root / "corpus"
    jobs = [
        {"id": f"{c['name']}|{cmd}", "args": job_args(c, cmd, corpus_dir, manifest["good"])}
        for c in cases
        for cmd in COMMANDS
    ]
    started = time.monotonic()
    results, opened = launch(jobs, root, "cli")
    return {"results": results, "opened": opened, "seconds": time.monotonic() - started, "jobs": len(jobs)}


# ------------------------------------------------------------------------------------------------ checks
def contract_problems(result: dict[str, Any], codes: set[int]) -> list[str]:
    """What is wrong with one job's outcome: exit code, stderr shape, forbidden words."""
    problems = []
    code, stderr = result["exit"], result["stderr"]
    if code not in codes:
        problems.append(f"exit {code}, expected {sorted(codes)}")
    for word in BAD_WORDS:
        if word in stderr:
            problems.append(f"stderr contains {word!r}")
    lines = stderr.splitlines()
    reported = result["id"].endswith("|validate") and not lines and re.search(r"(?m)^error: \S", result["stdout"])
    if code == 2 and not reported and (len(lines) != 1 or not lines[0].startswith("ckpt: error: ")):
        # (validate reports an unreadable artifact in its report, on stdout, and goes on with the next one)
        problems.append(f"exit 2 needs exactly one 'ckpt: error:' line on stderr, got {len(lines)} lines")
    if code in (0, 1) and len(lines) > 1:
        problems.append(f"{len(lines)} stderr lines on exit {code}")
    if not problems:
        return []
    return [f"{result['id']}: {'; '.join(problems)}\n    stderr: {stderr.strip()[:600]!r}"]


def summarize(outcomes: dict[str, Any]) -> str:
    table: dict[str, dict[Any, int]] = {}
    for job_id, result in outcomes["results"].items():
        command = job_id.split("|")[1]
        table.setdefault(command, {}).setdefault(result["exit"], 0)
        table[command][result["exit"]] += 1
    lines = [f"{outcomes['jobs']} jobs in {outcomes['seconds']:.1f} s"]
    lines += [
        f"  {cmd:10} " + ", ".join(f"exit {k}: {v}" for k, v in sorted(counts.items(), key=str))
        for cmd, counts in table.items()
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_input_gets_one_line_and_the_right_exit_code(
    corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]], outcomes: dict[str, Any], command: str
) -> None:
    _, cases, _ = corpus
    problems = []
    for case in cases:
        result = outcomes["results"][f"{case['name']}|{command}"]
        problems += contract_problems(result, allowed(case, command))
        if command == "json" and result["exit"] == 0:
            try:
                json.loads(result["stdout"])
            except ValueError:
                problems.append(f"{result['id']}: --json output is not JSON")
    print(summarize(outcomes))
    assert not problems, f"{len(problems)} of {len(cases)} inputs broke the contract:\n" + "\n".join(problems)


def test_errors_name_the_artifact(
    corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]], outcomes: dict[str, Any]
) -> None:
    """The one-line error starts from a path the user can act on: the case's own directory appears in it."""
    _, cases, _ = corpus
    problems = []
    for case in cases:
        result = outcomes["results"][f"{case['name']}|inspect"]
        if result["exit"] == 2 and f"/{case['name']}" not in result["stderr"]:
            problems.append(f"{case['name']}: {result['stderr'].strip()}")
    assert not problems, "errors that do not name the artifact:\n" + "\n".join(problems)


def test_nothing_outside_the_artifact_is_opened(
    corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]], outcomes: dict[str, Any]
) -> None:
    root, cases, _ = corpus
    outside = str((root / "corpus" / "outside").resolve())
    hostile = [c for c in cases if c["hostile"]]
    assert len(hostile) >= 15
    for case in hostile:  # behaviour: the honeypots are valid artifacts, so following them would succeed
        for command in ("inspect", "stats"):
            result = outcomes["results"][f"{case['name']}|{command}"]
            assert result["exit"] in allowed(case, command), result
            assert "secret" not in result["stdout"] or "outside" not in result["stdout"], result
    if not outcomes["opened"]:
        pytest.skip("strace unavailable: only the behavioural check ran")
    violations = []
    for job_id, paths in outcomes["opened"].items():
        for path in paths:
            if path.startswith(outside) or "/outside/" in path or path in ("/etc/passwd", "/etc/shadow"):
                violations.append(f"{job_id}: opened {path}")
    assert not violations, "\n".join(violations)
    seen_jobs = set(outcomes["opened"])
    assert any(job.startswith("state_relative|") for job in seen_jobs), "strace markers missing: check is blind"


def test_scan_flags_every_hostile_case(
    corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]], outcomes: dict[str, Any]
) -> None:
    """Every case built to reach outside its artifact (state-file escapes, HDF5 links and external storage,
    zip member names) is a finding at or above high for `ckpt scan`: exit 1, not a refusal or a pass."""
    _, cases, _ = corpus
    missed = [
        f"{c['name']}: exit {outcomes['results'][c['name'] + '|scan']['exit']}"
        for c in cases
        if c["hostile"] and outcomes["results"][f"{c['name']}|scan"]["exit"] != 1
    ]
    assert not missed, "hostile cases ckpt scan did not flag:\n" + "\n".join(missed)


def test_verdicts_agree_across_commands(outcomes: dict[str, Any]) -> None:
    """Truths that hold whatever a case's damage: validate cannot open exactly what inspect cannot list; an
    artifact never differs from itself, and diffing it fails exactly when reading its values (`--stats`) does;
    `--json` succeeds exactly when the table does."""
    exits: dict[str, dict[str, Any]] = {}
    for job, result in outcomes["results"].items():
        name, command = job.split("|")
        exits.setdefault(name, {})[command] = result["exit"]
    problems = []
    for name, got in sorted(exits.items()):
        if (got["validate"] == 2) != (got["inspect"] == 2):
            problems.append(f"{name}: validate exit {got['validate']} but inspect exit {got['inspect']}")
        if got["diff_self"] == 1 or (got["diff_self"] == 2) != (got["stats"] == 2):
            problems.append(f"{name}: diff against itself exit {got['diff_self']}, --stats exit {got['stats']}")
        if got["json"] != got["inspect"]:
            problems.append(f"{name}: inspect --json exit {got['json']}, the table exit {got['inspect']}")
    assert len(exits) >= 100
    assert not problems, "\n".join(problems)


def test_each_job_stays_within_memory_and_alive(outcomes: dict[str, Any]) -> None:
    """No job dies by a signal, and none peaks above 1.2 GiB RSS (its own process, measured by wait4)."""
    died = sorted(job for job, r in outcomes["results"].items() if str(r["exit"]).startswith(("signal", "status")))
    assert not died, f"jobs killed by a signal: {died[:10]}"
    heavy = sorted(((r.get("rss_mib", 0), job) for job, r in outcomes["results"].items()), reverse=True)
    assert heavy and heavy[0][0] > 0, "no RSS measured: the driver did not fork"
    print("peak RSS (MiB), top 5:", heavy[:5])
    assert heavy[0][0] <= MAX_RSS_MIB, f"jobs above {MAX_RSS_MIB} MiB: {[h for h in heavy if h[0] > MAX_RSS_MIB][:10]}"


def test_each_job_is_quick(outcomes: dict[str, Any]) -> None:
    slow = sorted(
        ((r["seconds"], job) for job, r in outcomes["results"].items() if r["seconds"] > SLOW_JOB), reverse=True
    )
    print(summarize(outcomes))
    assert not slow, f"jobs slower than {SLOW_JOB} s: {slow[:10]}"


def test_corpus_covers_the_threat_list(corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]]) -> None:
    _, _, manifest = corpus
    names = {c["name"] for c in manifest["cases"]}
    for needed in (
        "tf1_index_cut_0",
        "tf1_index_bad_magic",
        "tf1_data_cut_0",
        "tf1_offset_past_end",
        "tf1_shape_2p40",
        "tf1_data_missing",
        "tf1_num_shards_lie",
        "state_etc_passwd_abs",
        "state_relative",
        "tf2_graph_garbage",
        "keras3_h5_external_link_abs",
        "keras3_h5_external_storage",
        "keras3_h5_virtual_dataset",
        "keras_missing_weights",
        "keras_bomb_member",
        "keras_size_lie",
        "keras_dotdot_member",
        "tf1_key_not_utf8",
        "keras3_h5_name_not_utf8",
        "empty_dir",
        "empty_file_model_keras",
        "index_unreadable",
        "index_is_dir",
        "sm_pb_garbage",
        "keras_evil_config",
    ):
        assert needed in names, needed
    assert len(names) == len(manifest["cases"]) >= 100


# ------------------------------------------------------------------------------------------------ convert
@pytest.mark.slow  # TensorFlow in every job: `tox -e slow` (keeps the CI gate under 30 minutes)
@pytest.mark.tensorflow
@pytest.mark.skipif(not (HAS_TF and HAS_CONVERT), reason="needs TensorFlow and ckpt_tools.conversion.run")
def test_convert_refuses_every_malformed_input(corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]]) -> None:
    root, cases, _ = corpus
    corpus_dir = root / "corpus"
    outs = root / "convert-out"
    outs.mkdir(exist_ok=True)
    # Every case to Keras; the cases that convert also to a TF2 checkpoint (the other writer; reading is shared).
    runs = [(c, "convert", "keras") for c in cases] + [(c, "convert_tf2", "tf2") for c in cases if 0 in c["convert"]]
    jobs = [
        {
            "id": f"{c['name']}|{command}",
            "args": [
                "convert",
                str(corpus_dir / c["path"]),
                "--model",
                f"{FACTORY}:adam",
                "--to",
                to,
                "--out",
                str(outs / f"{c['name']}.{to}"),
                "--allow-approximate",  # hostile hyper-parameters make a conversion approximate: still exercised
            ],
        }
        for c, command, to in runs
    ]
    started = time.monotonic()
    results, opened = launch(jobs, root, "convert")
    problems = []
    for case, command, to in runs:
        result = results[f"{case['name']}|{command}"]
        problems += contract_problems(result, set(case["convert"]))
        if result["exit"] != 0 and (outs / f"{case['name']}.{to}").exists():
            problems.append(f"{case['name']}: convert --to {to} failed but left its OUT")
    problems += _outputs_not_resumable(results, runs, outs)
    leftovers = [p.name for p in outs.iterdir() if p.name.startswith(".ckpt-")]
    outside = str((corpus_dir / "outside").resolve())
    violations = [
        f"{job}: opened {p}"
        for job, paths in opened.items()
        for p in paths
        if p.startswith(outside) or p in ("/etc/passwd", "/etc/shadow")
    ]
    heavy = sorted(((r.get("rss_mib", 0), job) for job, r in results.items()), reverse=True)
    seconds = time.monotonic() - started
    print(summarize({"results": results, "jobs": len(jobs), "seconds": seconds}), "\ntop RSS (MiB):", heavy[:3])
    assert heavy and heavy[0][0] > 0, "no RSS measured"
    problems += [f"{job}: peak RSS {rss} MiB > {MAX_RSS_MIB}" for rss, job in heavy if rss > MAX_RSS_MIB]
    problems += [f"{job}: {r['seconds']} s > {SLOW_JOB}" for job, r in results.items() if r["seconds"] > SLOW_JOB]
    assert not problems, "\n".join(problems)
    assert not leftovers, f"temporary outputs left behind: {leftovers}"
    assert not violations, "\n".join(violations)


def _outputs_not_resumable(results: Results, runs: list[tuple[dict[str, Any], str, str]], outs: Path) -> list[str]:
    """Every OUT a convert job wrote, judged independently of convert's own verification: `validate` (native
    readers, no TensorFlow) must call it resumable."""
    import ckpt_tools

    problems = []
    for case, command, to in runs:
        if results[f"{case['name']}|{command}"]["exit"] != 0:
            continue
        out = outs / f"{case['name']}.{to}"
        report = ckpt_tools.validate(out)
        if report.exit_code != 0:
            problems.append(f"{case['name']}|{command}: convert exit 0 but validate {out.name}: {report.to_json()}")
    return problems


def test_no_job_modified_the_corpus(
    corpus: tuple[Path, list[dict[str, Any]], dict[str, Any]], outcomes: dict[str, Any]
) -> None:
    """Run last: after every command (and convert, when it ran) the corpus and its honeypots are as built."""
    root = corpus[0]
    before = json.loads((root / "snapshot.json").read_text())
    after = snapshot(root / "corpus")
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert outcomes["jobs"] > 0
    assert not changed, f"{len(changed)} corpus entries changed: {changed[:10]}"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--driver":
    run_jobs(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
