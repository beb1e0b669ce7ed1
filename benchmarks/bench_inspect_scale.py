"""`ckpt inspect` (table and --json) against `tf.train.list_variables` at 1k, 10k and 100k variables."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_SPEEDUP = 5.0  # at the largest size, ckpt inspect (table and --json) >= 5x faster than list_variables
GOAL_SMALL_SECONDS = 0.3  # at the smallest size, a whole `ckpt inspect` process takes at most this long
GOAL_LINEAR = 2.0  # the cost per variable from 10k to 100k is at most this many times that from 1k to 10k
FORMAT_VERSION = 2  # bump when GENERATE changes, so that cached checkpoints are rewritten

# Writes, with real TensorFlow, two checkpoints of `count` variables each under out/:
#   tf2/ckpt  tf.train.Checkpoint(model=...) of small float32 tf.Variables in nested tracked dicts (`count`
#             values: `count // 10` groups of ten), as a custom training loop saves them;
#   tf1/model.ckpt  a TF1 Saver-style bundle (written by the SaveV2 op) of dense layers' kernel and bias with
#             their two Adam slots (`<var>/Adam`, `<var>/Adam_1`), beta powers and global_step: `count` keys.
GENERATE = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
out, count = sys.argv[1], int(sys.argv[2])
groups = {}
for i in range(count):
    group = groups.setdefault(f"block_{i // 10}", {})
    group[f"w{i % 10}"] = tf.Variable(np.full((i % 7 + 1,), i, np.float32))
prefix_tf2 = tf.train.Checkpoint(model=groups).write(f"{out}/tf2/ckpt")
del groups
names, values = ["global_step", "beta1_power", "beta2_power"], [np.int64(7), np.float32(0.9), np.float32(0.99)]
layer = 0
while len(names) + 6 <= count:
    for weight, shape in ((f"dense_{layer}/kernel", (4, 3)), (f"dense_{layer}/bias", (3,))):
        for suffix in ("", "/Adam", "/Adam_1"):
            names.append(weight + suffix)
            values.append(np.full(shape, layer, np.float32))
    layer += 1
while len(names) < count:
    names.append(f"extra_{len(names)}")
    values.append(np.float32(len(names)))
os.makedirs(f"{out}/tf1", exist_ok=True)
prefix_tf1 = f"{out}/tf1/model.ckpt"
tf.raw_ops.SaveV2(prefix=prefix_tf1, tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[tf.constant(v) for v in values])
with open(f"{out}/tf1/checkpoint", "w") as fh:
    fh.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
print(json.dumps({"tf2": prefix_tf2, "tf1": prefix_tf1, "variables": count, "tensorflow": tf.__version__}))
"""

TF_LIST = "import sys, tensorflow as tf; print(len(tf.train.list_variables(sys.argv[1])))"


@dataclass
class Measure:
    """One command of one dataset, run `repeat` times in fresh processes."""

    size: int
    fmt: str
    tool: str
    argv: list[str]
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    output: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    def to_json(self) -> dict[str, Any]:
        return {
            "variables": self.size,
            "format": self.fmt,
            "tool": self.tool,
            "argv": self.argv,
            "seconds": self.wall,
            "runs": self.walls,
            "peak_rss_bytes": int(statistics.median(self.rss)),
        }


def child_env() -> dict[str, str]:
    # bytecode is written as usual (an installed package has it): a process that compiled ckpt_tools from source
    # each time would measure the compiler
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_measured(measure: Measure, scratch: Path) -> None:
    """A fresh process: wall time, and its own peak RSS from wait4 (the rusage of exactly this child). Output
    goes to files, so that no pipe fills up and the child is reaped by wait4 alone."""
    out_file, err_file = scratch / "stdout.txt", scratch / "stderr.txt"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(measure.argv, cwd=ROOT, env=child_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        stderr = err_file.read_text(errors="replace")
        raise SystemExit(f"{' '.join(measure.argv)} exited {proc.returncode}:\n{stderr[-3000:]}")
    measure.walls.append(wall)
    measure.rss.append(usage.ru_maxrss * 1024)
    measure.output = out_file.read_text()


def generate(out: Path, count: int) -> dict[str, Any]:
    """Both checkpoints of `count` variables, written by TensorFlow into out/, or reused from an earlier run."""
    meta_file = out / "bench_meta.json"
    if meta_file.is_file():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        present = all(Path(f"{meta[k]}.index").is_file() for k in ("tf1", "tf2"))
        if present and meta.get("variables") == count and meta.get("version") == FORMAT_VERSION:
            print(f"reusing the {count}-variable checkpoints in {out}")
            return meta
    print(f"writing two {count}-variable checkpoints (TF2, TF1) to {out} ...", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, str(out), str(count)], env=child_env(), capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"generating the checkpoints failed (TensorFlow installed?):\n{proc.stderr[-3000:]}")
    meta = {**json.loads(proc.stdout.strip().splitlines()[-1]), "version": FORMAT_VERSION}
    meta_file.write_text(json.dumps(meta, indent=1))
    print(f"  done in {time.perf_counter() - start:.1f} s")
    return meta


def build_measures(size: int, meta: dict[str, Any]) -> list[Measure]:
    py = sys.executable
    out = []
    for fmt in ("tf2", "tf1"):
        prefix = meta[fmt]
        out += [
            Measure(size, fmt, "ckpt inspect", [py, "-m", "ckpt_tools", "inspect", prefix]),
            Measure(size, fmt, "ckpt inspect --json", [py, "-m", "ckpt_tools", "inspect", prefix, "--json"]),
            Measure(size, fmt, "tf.train.list_variables", [py, "-c", TF_LIST, prefix]),
        ]
    return out


def sanity(measures: list[Measure]) -> list[str]:
    """Each tool listed every variable: ckpt's table and JSON as many as TensorFlow (less the object graph)."""
    problems = []
    by_key = {(m.size, m.fmt, m.tool): m for m in measures}
    for (size, fmt, tool), m in by_key.items():
        if tool != "tf.train.list_variables":
            continue
        tf_count = int(m.output.strip()) - (1 if fmt == "tf2" else 0)  # TF also lists _CHECKPOINTABLE_OBJECT_GRAPH
        listed = len(json.loads(by_key[(size, fmt, "ckpt inspect --json")].output)["variables"])
        table = by_key[(size, fmt, "ckpt inspect")].output.split("\n\n", 1)[0].splitlines()
        rows = len(table) - 2  # header and rule
        if tf_count < size or listed != tf_count or rows != tf_count:
            problems.append(f"{fmt} {size}: TF listed {tf_count}, ckpt --json {listed}, ckpt table {rows} rows")
    return problems


def summarize(measures: list[Measure], sizes: list[int]) -> tuple[dict[str, Any], dict[str, bool]]:
    """Speed-ups against list_variables, per-variable costs between sizes, and the goals."""
    by_key = {(m.size, m.fmt, m.tool): m for m in measures}
    figures: dict[str, Any] = {}
    goals: dict[str, bool] = {}
    small, large = sizes[0], sizes[-1]
    for fmt in ("tf2", "tf1"):
        for tool in ("ckpt inspect", "ckpt inspect --json"):
            speedup = by_key[(large, fmt, "tf.train.list_variables")].wall / by_key[(large, fmt, tool)].wall
            figures[f"{fmt} {tool}: speedup vs list_variables at {large}"] = speedup
            goals[f"{fmt} {tool} >= {GOAL_SPEEDUP:g}x list_variables at {large}"] = speedup >= GOAL_SPEEDUP
            goals[f"{fmt} {tool} <= {GOAL_SMALL_SECONDS} s at {small}"] = (
                by_key[(small, fmt, tool)].wall <= GOAL_SMALL_SECONDS
            )
            marginal = [
                (by_key[(hi, fmt, tool)].wall - by_key[(lo, fmt, tool)].wall) / (hi - lo)
                for lo, hi in itertools.pairwise(sizes)
            ]
            figures[f"{fmt} {tool}: microseconds per variable between sizes"] = [round(1e6 * x, 2) for x in marginal]
            if len(marginal) >= 2:
                linear = marginal[-1] <= GOAL_LINEAR * max(marginal[0], 1e-9)
                goals[f"{fmt} {tool} linear (last/first cost per variable <= {GOAL_LINEAR:g})"] = linear
    return figures, goals


def print_table(measures: list[Measure]) -> None:
    print(f"{'variables':>9}  {'format':<6} {'tool':<24} {'median s':>9} {'us/var':>8} {'peak RSS':>10}   runs (s)")
    for m in measures:
        runs = " ".join(f"{t:.3f}" for t in m.walls)
        peak = statistics.median(m.rss) / 2**20
        per = 1e6 * m.wall / m.size
        print(f"{m.size:>9}  {m.fmt:<6} {m.tool:<24} {m.wall:9.3f} {per:8.1f} {peak:8.0f} MiB   {runs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp/bench-scale"), help="checkpoint cache (default %(default)s)"
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="variable counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    metas = {size: generate(args.dir / str(size), size) for size in sizes}
    measures = [m for size in sizes for m in build_measures(size, metas[size])]
    with tempfile.TemporaryDirectory(prefix="bench-scale-run-") as scratch:
        for m in measures:  # warm-up, not counted: page cache, bytecode
            run_measured(dataclasses.replace(m, walls=[], rss=[]), Path(scratch))
        for rep in range(args.repeat):  # round-robin: a burst of load elsewhere hits every tool alike
            for m in measures:
                print(f"  run {rep + 1}/{args.repeat}: {m.fmt} {m.size} {m.tool}", file=sys.stderr, flush=True)
                run_measured(m, Path(scratch))
    problems = sanity(measures)
    figures, goals = summarize(measures, sizes)
    print()
    print(f"TF {metas[sizes[0]]['tensorflow']}, {os.cpu_count()} cores, median of {args.repeat} fresh processes")
    print_table(measures)
    print()
    for key, value in figures.items():
        print(f"{key}: {value if isinstance(value, list) else f'{value:.2f}'}")
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'MISSED'}")
    for problem in problems:
        print(f"problem: {problem}")
    if args.json_out:
        result = {
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "datasets": {str(k): v for k, v in metas.items()},
            "repeat": args.repeat,
            "measurements": [m.to_json() for m in measures],
            "figures": figures,
            "goals": goals,
            "problems": problems,
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if problems:
        return 2
    return 1 if args.check and not all(goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
