"""`ckpt validate` and `ckpt ls` over 500 small checkpoints: `-j1` against `-j2`, same output and exit code."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_SPEEDUP = 1.7  # -j2 at least 1.7x faster than -j1 on 2 cores

# Writes `runs` training folders, each with `keep` checkpoints of a small model trained with Adam (TF2 object
# checkpoints written by tf.train.CheckpointManager, so each folder has its `checkpoint` state file).
GENERATE = r"""
import json, sys
import numpy as np
import tensorflow as tf
out, runs, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
for run in range(runs):
    model = tf.keras.Sequential([tf.keras.Input((16,)), tf.keras.layers.Dense(32), tf.keras.layers.Dense(4)])
    optimizer = tf.keras.optimizers.Adam(1e-3)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(ckpt, f"{out}/run_{run:03d}", max_to_keep=keep)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    for step in range(keep):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        manager.save()
print(json.dumps({"runs": runs, "checkpoints": runs * keep, "tensorflow": tf.__version__}))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}


def compile_bytecode() -> None:
    """Byte-compile the checkout's ckpt_tools first, as `pip install` does: with PYTHONDONTWRITEBYTECODE set
    (or a read-only checkout) every measured process would otherwise compile each module it imports anew."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "ckpt_tools")], check=True, env=os.environ)


def generate(out: Path, runs: int, keep: int) -> list[str]:
    """The prefixes of every checkpoint under `out` (written first with real TensorFlow when absent)."""
    marker = out / "generated.json"
    if not marker.is_file() or json.loads(marker.read_text()).get("checkpoints") != runs * keep:
        print(f"writing {runs} x {keep} checkpoints with TensorFlow to {out} ...", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", GENERATE, str(out), str(runs), str(keep)],
            check=True,
            env=child_env(),
            capture_output=True,
            text=True,
        )
        marker.write_text(done.stdout.strip().splitlines()[-1])
        print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
    return sorted(str(p)[: -len(".index")] for p in out.glob("run_*/ckpt-*.index"))


def run_once(args: list[str]) -> tuple[float, int, bytes, float]:
    """(seconds, exit code, stdout, CPU seconds of the main process itself) of one whole `ckpt` process. The CPU
    time comes from the process's own rusage (wait4); with -j2 it leaves out the worker, a grandchild."""
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), cwd=ROOT)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    return time.monotonic() - started, os.waitstatus_to_exitcode(status), stdout, usage.ru_utime + usage.ru_stime


# The control: work that parallelizes perfectly (a pure-Python loop), `-j1` as one process doing all of it and
# `-j2` as two processes doing half each, side by side. Its speedup is what this machine's two CPUs deliver at
# best at that moment (vCPUs shared with other guests give less than 2x, and it varies from run to run).
CONTROL = "n = int(__import__('sys').argv[1])\nwhile n:\n    n -= 1"
CONTROL_STEPS = 20_000_000


def run_control(processes: int) -> float:
    """The control's wall time with its work split over `processes` processes started together."""
    started = time.monotonic()
    steps = str(CONTROL_STEPS // processes)
    procs = [subprocess.Popen([sys.executable, "-c", CONTROL, steps]) for _ in range(processes)]
    if any(proc.wait() for proc in procs):
        raise SystemExit("the control loop failed")
    return time.monotonic() - started


def measure(name: str, base: list[str], repeat: int) -> dict[str, Any]:
    """-j1 and -j2 of one command, round-robin with the control, `repeat` times each; outputs compared on every
    run."""
    times: dict[str, list[float]] = {"j1": [], "j2": [], "control_j1": [], "control_j2": []}
    cpu: dict[str, list[float]] = {"j1": [], "j2": []}
    same = True
    codes: set[tuple[int, int]] = set()
    for _ in range(repeat):
        t1, code1, out1, cpu1 = run_once([*base, "-j1"])
        t2, code2, out2, cpu2 = run_once([*base, "-j2"])
        times["control_j1"].append(run_control(1))
        times["control_j2"].append(run_control(2))
        times["j1"].append(t1)
        times["j2"].append(t2)
        cpu["j1"].append(cpu1)
        cpu["j2"].append(cpu2)
        same = same and out1 == out2 and code1 == code2
        codes.add((code1, code2))
    j1, j2 = statistics.median(times["j1"]), statistics.median(times["j2"])
    ceiling = statistics.median(times["control_j1"]) / statistics.median(times["control_j2"])
    # each round's speedup over that round's control (the control runs right after the pair it is read against)
    efficiency = statistics.median(
        (a / b) / (c / d)
        for a, b, c, d in zip(times["j1"], times["j2"], times["control_j1"], times["control_j2"], strict=True)
    )
    result = {
        "command": name,
        "j1_seconds": j1,
        "j2_seconds": j2,
        "speedup": j1 / j2,
        "control_speedup": ceiling,
        "efficiency_vs_control": efficiency,
        "identical_output_and_exit_code": same,
        "exit_codes": sorted(codes),
        "runs": times,
        "main_process_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
    }
    print(
        f"{name:10s} -j1 {j1:6.2f} s  -j2 {j2:6.2f} s  speedup {j1 / j2:4.2f}x  (control {ceiling:4.2f}x: "
        f"{efficiency:.0%} of it, median per round)  identical stdout+exit: {same}  exit codes {sorted(codes)}  "
        f"main-process CPU -j1 {statistics.median(cpu['j1']):.2f} s, -j2 {statistics.median(cpu['j2']):.2f} s",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to write (or reuse) the checkpoints")
    parser.add_argument("--runs", type=int, default=100, help="training folders")
    parser.add_argument("--keep", type=int, default=5, help="checkpoints per folder (500 in all by default)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        out = args.dir or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        prefixes = generate(out, args.runs, args.keep)
        compile_bytecode()
        ckpt = [sys.executable, "-m", "ckpt_tools"]
        results = [
            measure("validate", [*ckpt, "validate", *prefixes], args.repeat),
            measure("ls", [*ckpt, "ls", str(out)], args.repeat),
        ]
    goals = {r["command"]: r["speedup"] >= GOAL_SPEEDUP and r["identical_output_and_exit_code"] for r in results}
    report = {
        "benchmark": "bench_jobs",
        "checkpoints": len(prefixes),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "goal_speedup": GOAL_SPEEDUP,
        "results": results,
        "goals_met": goals,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        name, met = result["command"], goals[result["command"]]
        note = ""
        if not met and result["control_speedup"] < GOAL_SPEEDUP:
            note = f" (perfectly parallel work got only {result['control_speedup']:.2f}x in the same rounds)"
        print(f"goal {name}: -j2 >= {GOAL_SPEEDUP}x -j1 with identical output: {'met' if met else 'MISSED'}{note}")
    return 1 if args.check and not all(goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
