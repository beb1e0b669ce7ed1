"""Wall time and peak RSS of `ckpt inspect` / `ckpt diff` against TensorFlow's own tools on a ~400 MB checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"
GOAL_SPEEDUP = 10.0  # ckpt inspect at least 10x faster than TF's listing tools
GOAL_MEMORY = 1 / 5  # ... with at most a fifth of their peak RSS
GOAL_DIFF = 2.0  # ckpt diff at most 2x numpy's raw read of both data files

# Writes two TF2 object checkpoints a/ckpt and b/ckpt of `count` float32 variables of varied sizes (log-normal,
# 1-D for the smallest, 2-D otherwise) totalling about `total` bytes; b adds 1e-3 to every tenth variable.
GENERATE = r"""
import json, sys
import numpy as np
import tensorflow as tf
out, count, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
weights = rng.lognormal(0.0, 1.5, count)
elements = np.maximum(1, weights / weights.sum() * (total // 4)).astype(np.int64)
shapes = []
for n in elements.tolist():
    if n < 256:
        shapes.append((n,))
        continue
    cols = next(c for c in (1024, 512, 256, 128, 64) if n >= 4 * c or c == 64)
    shapes.append((n // cols, cols))
variables = [
    tf.Variable(rng.standard_normal(shape, dtype=np.float32), name=f"layer_{i:03d}")
    for i, shape in enumerate(shapes)
]
ckpt = tf.train.Checkpoint(variables=variables)
prefix_a = ckpt.write(f"{out}/a/ckpt")
changed = list(range(0, count, 10))
for i in changed:
    variables[i].assign_add(tf.fill(variables[i].shape, 1e-3))
prefix_b = ckpt.write(f"{out}/b/ckpt")
nbytes = sum(int(np.prod(s)) * 4 for s in shapes)
print(json.dumps({"prefix_a": prefix_a, "prefix_b": prefix_b, "variables": count, "tensor_bytes": nbytes,
                  "changed": len(changed), "largest_bytes": max(int(np.prod(s)) * 4 for s in shapes),
                  "tensorflow": tf.__version__}))
"""

TF_LIST = "import sys, tensorflow as tf; print(len(tf.train.list_variables(sys.argv[1])))"

TF_FULL_READ = r"""
import sys
import numpy as np
import tensorflow as tf
a = tf.train.load_checkpoint(sys.argv[1])
b = tf.train.load_checkpoint(sys.argv[2])
differ = 0
for name in sorted(a.get_variable_to_shape_map()):
    if not np.array_equal(a.get_tensor(name), b.get_tensor(name)):
        differ += 1
print(differ)
"""

# The same raw read as a whole process (start-up and `import numpy` included), to compare with (d) like for like.
NUMPY_PROCESS = "import sys, numpy as np\nfor f in sys.argv[1:]:\n    np.fromfile(f, dtype=np.uint8)"

NUMPY_RAW = r"""
import json, sys, time
import numpy as np
files = sys.argv[1:]
for f in files:  # warm-up: same page-cache state as every other measurement
    np.fromfile(f, dtype=np.uint8)
best = None
for _ in range(3):
    start = time.perf_counter()
    for f in files:
        data = np.fromfile(f, dtype=np.uint8)
        del data
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"seconds": best}))
"""

# `ckpt diff A B` in one process with its phases timed: imports (the CLI and the diff command with everything they
# load), then the command itself (open both indexes, read, verify and compare every tensor).
DIFF_PHASES = r"""
import contextlib, io, json, sys, time
start = time.perf_counter()
from ckpt_tools.cli import main
import ckpt_tools.cli.diff_cmd
imported = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["diff", sys.argv[1], sys.argv[2]], standalone_mode=False)
done = time.perf_counter()
print(json.dumps({"seconds": done - imported, "import_seconds": imported - start, "exit": code}))
"""

# Fallback when /usr/bin/time is absent: run the command and report its rusage from RUSAGE_CHILDREN.
WRAPPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": wall, "maxrss_kb": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}, fh)
sys.exit(code)
"""


@dataclass
class Measure:
    """One command measured `repeat` times; `internal` is a time the process reports about itself."""

    name: str
    label: str
    argv: list[str]
    ok_codes: tuple[int, ...] = (0,)
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    internal: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.internal or self.walls)

    @property
    def peak(self) -> int:
        return int(statistics.median(self.rss))

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "argv": self.argv,
            "seconds": self.wall,
            "peak_rss_bytes": self.peak,
            "process_seconds": self.walls,
            "in_process_seconds": self.internal or None,
            "peak_rss_runs": self.rss,
            "cpu_seconds": self.cpu,
            "reported": self.extra or None,
        }


def child_env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_once(measure: Measure, scratch: Path) -> None:
    """Run the command once in a fresh process; append wall seconds, peak RSS bytes and CPU seconds."""
    report = scratch / "rusage.txt"
    report.unlink(missing_ok=True)
    if Path(TIME).is_file():
        argv = [TIME, "-v", "-o", str(report), *measure.argv]
    else:
        argv = [sys.executable, "-c", WRAPPER, str(report), *measure.argv]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in measure.ok_codes:
        raise SystemExit(f"{measure.name}: {' '.join(measure.argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    if Path(TIME).is_file():
        fields = {}
        for line in report.read_text().splitlines():
            key, sep, value = line.strip().rpartition(": ")
            if sep:
                fields[key] = value
        rss_kb = int(fields["Maximum resident set size (kbytes)"])
        cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    else:
        data = json.loads(report.read_text())
        wall, rss_kb, cpu = data["wall"], int(data["maxrss_kb"]), float(data["cpu"])
    measure.walls.append(wall)
    measure.rss.append(rss_kb * 1024)
    measure.cpu.append(cpu)
    measure.outputs.append(proc.stdout)
    if measure.name in ("numpy_raw", "ckpt_diff_phases"):
        report_line = json.loads(proc.stdout.strip().splitlines()[-1])
        measure.internal.append(float(report_line["seconds"]))
        measure.extra.append(report_line)


def generate(out: Path, count: int, total: int) -> dict[str, Any]:
    """Write the two checkpoints with real TensorFlow, or reuse them when `out` already holds matching ones."""
    meta_file = out / "bench_meta.json"
    if meta_file.is_file():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        present = all(Path(f"{meta[k]}.index").is_file() for k in ("prefix_a", "prefix_b"))
        if present and meta.get("variables") == count and meta.get("requested_bytes") == total:
            print(f"reusing checkpoints in {out}")
            return meta
    print(f"writing two checkpoints of {count} float32 variables (~{total / 1e6:.0f} MB each) to {out} ...")
    for side in ("a", "b"):
        shutil.rmtree(out / side, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, str(out), str(count), str(total)],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"generating the checkpoints failed (TensorFlow installed?):\n{proc.stderr[-3000:]}")
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    meta["requested_bytes"] = total
    meta_file.write_text(json.dumps(meta, indent=1))
    print(f"  done in {time.perf_counter() - start:.1f} s")
    return meta


def diff_available() -> bool:
    env = child_env()
    proc = subprocess.run(
        [sys.executable, "-m", "ckpt_tools", "diff", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return proc.returncode == 0


def data_files(prefix: str) -> list[str]:
    return sorted(str(p) for p in Path(prefix).parent.glob(Path(prefix).name + ".data-*"))


def warm(files: list[str]) -> None:
    """Read every file once so each measurement starts with the same (warm) page cache."""
    for name in files:
        with open(name, "rb", buffering=0) as fh:
            while fh.read(16 << 20):
                pass


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None or y == 0 else x / y


def build_measures(meta: dict[str, Any], with_diff: bool) -> list[Measure]:
    py = sys.executable
    a, b = meta["prefix_a"], meta["prefix_b"]
    measures = [
        Measure("ckpt_inspect", "(a) ckpt inspect --json", [py, "-m", "ckpt_tools", "inspect", a, "--json"]),
        Measure(
            "tf_inspect_checkpoint",
            "(b) TF inspect_checkpoint",
            [py, "-m", "tensorflow.python.tools.inspect_checkpoint", f"--file_name={a}"],
        ),
        Measure("tf_list_variables", "(c) tf.train.list_variables", [py, "-c", TF_LIST, a]),
    ]
    if with_diff:
        measures.append(Measure("ckpt_diff", "(d) ckpt diff A B", [py, "-m", "ckpt_tools", "diff", a, b], (0, 1)))
        measures.append(Measure("ckpt_diff_phases", "(d') ckpt diff, after imports", [py, "-c", DIFF_PHASES, a, b]))
    measures += [
        Measure("tf_full_read", "(e) TF read + np compare", [py, "-c", TF_FULL_READ, a, b]),
        Measure("numpy_raw", "(f) np.fromfile both .data", [py, "-c", NUMPY_RAW, *data_files(a), *data_files(b)]),
        Measure(
            "numpy_process", "(f') python + np.fromfile both", [py, "-c", NUMPY_PROCESS, *data_files(a), *data_files(b)]
        ),
    ]
    return measures


def sanity(measures: dict[str, Measure], meta: dict[str, Any]) -> list[str]:
    """Check the tools really did the work: listed every variable, found the changed ones."""
    problems = []
    listed = json.loads(measures["ckpt_inspect"].outputs[0])["summary"]["tensors"]
    if listed < meta["variables"]:
        problems.append(f"ckpt inspect listed {listed} tensors, expected >= {meta['variables']}")
    tf_listed = int(measures["tf_list_variables"].outputs[0].strip())
    if tf_listed < meta["variables"]:
        problems.append(f"tf.train.list_variables listed {tf_listed}")
    tf_differ = int(measures["tf_full_read"].outputs[0].strip())
    if tf_differ != meta["changed"]:
        problems.append(f"TF full read found {tf_differ} differing tensors, expected {meta['changed']}")
    if "ckpt_diff" in measures:
        out = measures["ckpt_diff"].outputs[0]
        if f"{meta['changed']} values changed" not in out:
            problems.append(f"ckpt diff did not report {meta['changed']} changed variables: {out[-300:]!r}")
        if measures["ckpt_diff_phases"].extra[0]["exit"] != 1:
            problems.append(f"in-process ckpt diff returned {measures['ckpt_diff_phases'].extra[0]['exit']}, not 1")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to write (or reuse) the checkpoints; default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the default temp dir (its path is printed)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=400.0, help="size of each checkpoint in MB (10**6 bytes)")
    args = parser.parse_args()

    out = args.dir or Path(tempfile.mkdtemp(prefix="bench-native-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, out)
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        elif args.dir is None:
            print(f"checkpoints kept in {out}")


def run(args: argparse.Namespace, out: Path) -> int:
    meta = generate(out, args.variables, int(args.mb * 1e6))
    with_diff = diff_available()
    if not with_diff:
        print("ckpt diff is not available in this tree: (d) and the diff goal are skipped")
    measures = build_measures(meta, with_diff)
    files = [*data_files(meta["prefix_a"]), *data_files(meta["prefix_b"])]
    file_bytes = sum(os.path.getsize(f) for f in files)
    warm(files)
    measure_all(measures, args.repeat)
    by_name = {m.name: m for m in measures}
    problems = sanity(by_name, meta)
    ratios = compute_ratios(by_name)
    goals = check_goals(ratios, with_diff=by_name.get("ckpt_diff") is not None)
    print_results(meta, measures, file_bytes, args.repeat, ratios, goals, problems)
    if args.json_out:
        result = {
            "machine": machine(meta),
            "checkpoint": {**meta, "data_file_bytes_both": file_bytes},
            "repeat": args.repeat,
            "measurements": {m.name: m.to_json() for m in measures},
            "ratios": ratios,
            "goals": goals,
            "problems": problems,
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if problems:
        return 2
    return 1 if args.check and not all(goals.values()) else 0


def measure_all(measures: list[Measure], repeat: int) -> None:
    """Run every measurement `repeat` times, round-robin, so a burst of load elsewhere hits every tool alike."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-native-run-"))
    try:
        for rep in range(repeat):
            for m in measures:
                print(f"  run {rep + 1}/{repeat}: {m.label}", file=sys.stderr)
                run_once(m, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compute_ratios(by_name: dict[str, Measure]) -> dict[str, float | None]:
    insp, tf_b, tf_c = by_name["ckpt_inspect"], by_name["tf_inspect_checkpoint"], by_name["tf_list_variables"]
    dif = by_name.get("ckpt_diff")
    raw = by_name["numpy_raw"]
    return {
        "inspect_speedup_vs_inspect_checkpoint": ratio(tf_b.wall, insp.wall),
        "inspect_speedup_vs_list_variables": ratio(tf_c.wall, insp.wall),
        "inspect_memory_vs_inspect_checkpoint": ratio(insp.peak, tf_b.peak),
        "inspect_memory_vs_list_variables": ratio(insp.peak, tf_c.peak),
        "diff_time_vs_numpy_raw": ratio(dif.wall if dif else None, raw.wall),
        "diff_after_imports_vs_numpy_raw": ratio(by_name["ckpt_diff_phases"].wall if dif else None, raw.wall),
        "diff_process_vs_numpy_process": ratio(dif.wall if dif else None, by_name["numpy_process"].wall),
        "diff_speedup_vs_tf_full_read": ratio(by_name["tf_full_read"].wall, dif.wall if dif else None),
        "diff_memory_vs_tf_full_read": ratio(dif.peak if dif else None, by_name["tf_full_read"].peak),
    }


def check_goals(ratios: dict[str, float | None], *, with_diff: bool) -> dict[str, bool]:
    goals = {
        "inspect_speedup >= 10x": min(
            ratios["inspect_speedup_vs_inspect_checkpoint"] or 0, ratios["inspect_speedup_vs_list_variables"] or 0
        )
        >= GOAL_SPEEDUP,
        "inspect_memory <= 1/5": max(
            ratios["inspect_memory_vs_inspect_checkpoint"] or 1, ratios["inspect_memory_vs_list_variables"] or 1
        )
        <= GOAL_MEMORY,
    }
    if with_diff:
        # Like for like: whole process against whole process, and in-process against in-process.
        goals["diff <= 2x raw read"] = (
            max(ratios["diff_process_vs_numpy_process"] or 99, ratios["diff_after_imports_vs_numpy_raw"] or 99)
            <= GOAL_DIFF
        )
    return goals


def print_results(
    meta: dict[str, Any],
    measures: list[Measure],
    file_bytes: int,
    repeat: int,
    ratios: dict[str, float | None],
    goals: dict[str, bool],
    problems: list[str],
) -> None:
    print()
    print(
        f"checkpoints: 2 x {meta['variables']} float32 variables, {file_bytes / 2 / 1e6:.0f} MB per data file, "
        f"{meta['changed']} variables changed in B; TF {meta['tensorflow']}; {os.cpu_count()} cores; "
        f"median of {repeat}"
    )
    print(f"{'measurement':<30} {'wall s':>8} {'peak RSS':>10} {'cpu s':>7}   runs (s)")
    for m in measures:
        runs = " ".join(f"{t:.3f}" for t in (m.internal or m.walls))
        note = {"numpy_raw": "  (in-process, best of 3)", "ckpt_diff_phases": "  (in-process)"}.get(m.name, "")
        print(f"{m.label:<30} {m.wall:8.3f} {mb(m.peak):>10} {statistics.median(m.cpu):7.2f}   {runs}{note}")
    print()
    for key, value in ratios.items():
        print(f"{key:<40} {'n/a' if value is None else f'{value:.3f}'}")
    print()
    for goal, met in goals.items():
        print(f"goal {goal:<28} {'met' if met else 'MISSED'}")
    for problem in problems:
        print(f"problem: {problem}")


def machine(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": meta["tensorflow"],
        "rusage": TIME if Path(TIME).is_file() else "wrapper",
    }


if __name__ == "__main__":
    sys.exit(main())
