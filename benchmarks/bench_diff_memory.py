"""Peak memory of `ckpt diff` on two ~400 MB checkpoints, against two largest tensors plus the interpreter."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Writes two TF2 checkpoints a/ and b/ of `count` float32 variables totalling about `total_mib`, one of them
# `big_mib` large; b differs from a in every tenth variable.
GENERATE = r"""
import sys
import numpy as np
import tensorflow as tf
out, count, total_mib, big_mib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
big = int(big_mib * 2**20 // 4)
small = max(1, int((total_mib * 2**20 // 4 - big) // max(count - 1, 1)))
rng = np.random.default_rng(0)
sizes = [big] + [small] * (count - 1) if big else [small] * count
variables = [tf.Variable(rng.standard_normal(n, dtype=np.float32), name=f"v{i}") for i, n in enumerate(sizes)]
ckpt = tf.train.Checkpoint(vars=variables)
ckpt.write(f"{out}/a/ckpt")
for i in range(0, count, 10):
    variables[i].assign_add(tf.ones_like(variables[i]) * 1e-3)
ckpt.write(f"{out}/b/ckpt")
"""


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[int, int, float]:
    """Run a child process; return (exit code, peak RSS in bytes, seconds).

    The peak comes from the child's own rusage (wait4), the per-child form of getrusage(RUSAGE_CHILDREN).
    """
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed with {proc.returncode}:\n{stderr[-2000:]}")
    return proc.returncode, usage.ru_maxrss * 1024, time.monotonic() - started


def generate(out: Path, count: int, total_mib: float, big_mib: float) -> None:
    if (out / "a" / "ckpt.index").is_file() and (out / "b" / "ckpt.index").is_file():
        print(f"reusing checkpoints in {out}")
        return
    print(f"writing two checkpoints of {count} float32 variables (~{total_mib:.0f} MiB each) to {out} ...")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", GENERATE, str(out), str(count), str(total_mib), str(big_mib)], check=True, env=env
    )
    print(f"  done in {time.monotonic() - started:.1f} s")


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "dir", nargs="?", type=Path, help="where to write (or reuse) the checkpoints; default: a temporary directory"
    )
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--mib", type=float, default=400.0, help="size of each checkpoint")
    parser.add_argument("--big-mib", type=float, default=32.0, help="size of the one large variable (0: none)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-diff-") as tmp:
        out = args.dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        generate(out, args.variables, args.mib, args.big_mib)
        sys.path.insert(0, str(ROOT))
        from ckpt_tools.readers.registry import open_checkpoint

        maps = [open_checkpoint(out / side) for side in ("a", "b")]
        largest = max(v.nbytes or 0 for m in maps for v in m.values())
        total = sum(m.nbytes for m in maps)

        python = sys.executable
        _, baseline, _ = run_measured([python, "-c", "import numpy, ckpt_tools.cli"])
        code, peak, seconds = run_measured([python, "-m", "ckpt_tools", "diff", str(out / "a"), str(out / "b")])
        _, peak_names, _ = run_measured(
            [python, "-m", "ckpt_tools", "diff", str(out / "a"), str(out / "b"), "--names-only"]
        )
        budget = baseline + 2 * largest
        figures = {
            "variables_per_checkpoint": len(maps[0]),
            "checkpoint_bytes": maps[0].nbytes,
            "both_inputs_bytes": total,
            "largest_tensor_bytes": largest,
            "baseline_peak_rss": baseline,
            "diff_peak_rss": peak,
            "names_only_peak_rss": peak_names,
            "budget": budget,
            "ratio_to_budget": peak / budget,
            "excess_over_baseline": peak - baseline,
            "diff_seconds": seconds,
            "diff_exit_code": code,
            "throughput_mib_s": total / 2**20 / seconds,
        }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"inputs:        2 x {mib(figures['checkpoint_bytes'])} ({figures['variables_per_checkpoint']} tensors each)")
    print(f"largest:       {mib(largest)}")
    print(f"baseline:      {mib(baseline)}  (python -c 'import numpy, ckpt_tools.cli')")
    print(f"budget:        {mib(budget)}  (baseline + 2 x largest tensor)")
    rate = figures["throughput_mib_s"]
    print(f"ckpt diff:     {mib(peak)} peak RSS, {seconds:.1f} s ({rate:.0f} MiB/s read), exit {code}")
    print(f"names-only:    {mib(peak_names)} peak RSS")
    print(
        f"ratio:         {figures['ratio_to_budget']:.2f} x budget; {mib(peak - baseline)} above baseline "
        f"(loading everything would add {mib(total)})"
    )


if __name__ == "__main__":
    main()
