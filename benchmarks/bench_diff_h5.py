"""`ckpt diff` of two ~1 GB Keras 3 `.weights.h5` files and of two ~1 GB TF2 checkpoints, each holding a 512 MiB
tensor: time and peak RSS against a streaming numpy floor and a memory budget of 64 MiB + one block."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FORMAT_VERSION = 1  # bump when GENERATE changes, so that cached files are rewritten
GOAL_MEMORY_MIB = 64  # peak RSS above the interpreter baseline: at most this + one block ...
BLOCK_BYTES = (1 << 20) * 8  # ... one block: diff's STREAM_ELEMENTS (2**20) elements, read on each side as float32
GOAL_BUNDLE_RATIO = 2.0  # bundle diff time / streaming numpy floor
GOAL_H5_RATIO = 2.0  # HDF5 diff time / streaming h5py + numpy floor

# Real Keras 3 writes a/b.weights.h5 (model.save_weights) and real TensorFlow a/b TF2 checkpoints
# (tf.train.Checkpoint.write) of the same values: a 512 MiB kernel (16384 x 8192 float32), a 256 MiB kernel,
# a 256 MiB embedding and small biases, ~1 GiB in all. In b, the 512 MiB kernel has every element of its first
# 1024 rows changed (32 MiB of changed elements), the embedding every element (256 MiB), and one bias.
GENERATE = r"""
import json, os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np
import keras
import tensorflow as tf
out = sys.argv[1]
model = keras.Sequential([
    keras.Input((16,), dtype="int32"),
    keras.layers.Embedding(32768, 2048, name="embed"),
    keras.layers.Dense(16384, name="wide"),
    keras.layers.Dense(8192, name="big"),
])
rng = np.random.default_rng(0)
for var in model.weights:
    var.assign(rng.standard_normal(tuple(var.shape), dtype=np.float32))
def save(side):
    model.save_weights(f"{out}/{side}.weights.h5")
    ckpt = tf.train.Checkpoint(**{v.path.replace("/", "_"): v.value for v in model.weights})
    ckpt.write(f"{out}/{side}_ckpt/ckpt")
save("a")
big = model.get_layer("big").kernel
value = big.numpy()
value[:1024] += np.float32(1e-3)
big.assign(value)
del value
embed = model.get_layer("embed").embeddings
embed.assign(embed.numpy() * np.float32(1.5))
bias = model.get_layer("wide").bias
bias.assign(bias.numpy() + np.float32(1))
save("b")
shapes = {v.path: list(v.shape) for v in model.weights}
print(json.dumps({"shapes": shapes, "changed": 3, "keras": keras.__version__, "tensorflow": tf.__version__}))
"""

# Streaming floor for two HDF5 files: every dataset read in blocks of 2**20 elements with h5py's read_direct into
# two reused buffers, then counted differing elements (np.not_equal) and max |a - b|.
H5_FLOOR = r"""
import sys
import h5py
import numpy as np
BLOCK = 1 << 20
changed = 0
with h5py.File(sys.argv[1], "r") as fa, h5py.File(sys.argv[2], "r") as fb:
    names = []
    fa.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in names:
        da, db = fa[name], fb[name]
        if da.shape != db.shape or da.dtype.kind != "f" or da.size == 0:
            continue
        rows = max(1, BLOCK // max(1, int(np.prod(da.shape[1:]))))
        buf_a = np.empty((rows, *da.shape[1:]), da.dtype)
        buf_b = np.empty((rows, *db.shape[1:]), db.dtype)
        differing = 0
        for start in range(0, da.shape[0] if da.shape else 1, rows):
            n = min(rows, da.shape[0] - start) if da.shape else 1
            sel = np.s_[start:start + n] if da.shape else np.s_[()]
            da.read_direct(buf_a, sel, np.s_[:n] if da.shape else np.s_[()])
            db.read_direct(buf_b, sel, np.s_[:n] if db.shape else np.s_[()])
            x, y = buf_a[:n], buf_b[:n]
            ne = np.not_equal(x, y)
            count = int(np.count_nonzero(ne))
            if count:
                differing += count
                float(np.max(np.abs(x - y, dtype=np.float64)))
        changed += differing > 0
print(changed)
"""

# Streaming floor for two bundles: both data files read in 8 MiB blocks into two reused page-aligned buffers, each
# pair compared as float32 (np.not_equal, counted; max |a - b| where any differ).
BUNDLE_FLOOR = r"""
import mmap, sys
import numpy as np
BLOCK = 8 << 20
a = mmap.mmap(-1, BLOCK)
b = mmap.mmap(-1, BLOCK)
va, vb = memoryview(a), memoryview(b)
differing = 0
with open(sys.argv[1], "rb", buffering=0) as fa, open(sys.argv[2], "rb", buffering=0) as fb:
    while True:
        na, nb = fa.readinto(va), fb.readinto(vb)
        n = min(na, nb) // 4
        if not n:
            break
        x = np.frombuffer(a, np.float32, n)
        y = np.frombuffer(b, np.float32, n)
        count = int(np.count_nonzero(np.not_equal(x, y)))
        if count:
            differing += count
            float(np.max(np.abs(x - y, dtype=np.float64)))
print(differing)
"""

BASELINE = "import numpy, h5py, ckpt_tools.cli, ckpt_tools.cli.diff_cmd"


@dataclass
class Measure:
    """One command run `repeat` times in fresh processes."""

    name: str
    argv: list[str]
    ok_codes: tuple[int, ...] = (0,)
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    output: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak(self) -> int:
        return int(statistics.median(self.rss))

    def to_json(self) -> dict[str, Any]:
        return {"argv": self.argv, "seconds": self.wall, "runs": self.walls, "peak_rss_bytes": self.peak}


def child_env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "KERAS_BACKEND": "tensorflow"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_measured(measure: Measure, scratch: Path) -> None:
    """A fresh process; wall time and its own peak RSS from wait4. Output goes to files (no pipe to fill)."""
    out_file, err_file = scratch / "stdout.txt", scratch / "stderr.txt"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(measure.argv, cwd=ROOT, env=child_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in measure.ok_codes:
        raise SystemExit(f"{' '.join(measure.argv)} exited {code}:\n{err_file.read_text(errors='replace')[-3000:]}")
    measure.walls.append(wall)
    measure.rss.append(usage.ru_maxrss * 1024)
    measure.output = out_file.read_text()


def generate(out: Path) -> dict[str, Any]:
    """The two .weights.h5 files and the two checkpoints, written by Keras / TensorFlow, or reused."""
    meta_file = out / "bench_meta.json"
    if meta_file.is_file():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        if meta.get("version") == FORMAT_VERSION and all((out / f).exists() for f in ("a.weights.h5", "b.weights.h5")):
            print(f"reusing the files in {out}")
            return meta
    print(f"writing two ~1 GiB .weights.h5 files and two ~1 GiB TF2 checkpoints to {out} ...", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", GENERATE, str(out)], env=child_env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"generating the files failed (Keras 3 and TensorFlow installed?):\n{proc.stderr[-3000:]}")
    meta = {**json.loads(proc.stdout.strip().splitlines()[-1]), "version": FORMAT_VERSION}
    meta_file.write_text(json.dumps(meta, indent=1))
    print(f"  done in {time.perf_counter() - start:.1f} s")
    return meta


def data_file(prefix: Path) -> Path:
    files = sorted(prefix.parent.glob(prefix.name + ".data-*"))
    if len(files) != 1:
        raise SystemExit(f"{prefix}: expected one data shard, found {len(files)}")
    return files[0]


def build(out: Path) -> list[Measure]:
    py = sys.executable
    a_h5, b_h5 = str(out / "a.weights.h5"), str(out / "b.weights.h5")
    a_ck, b_ck = out / "a_ckpt" / "ckpt", out / "b_ckpt" / "ckpt"
    return [
        Measure("baseline", [py, "-c", BASELINE]),
        Measure("h5_diff", [py, "-m", "ckpt_tools", "diff", a_h5, b_h5], (1,)),
        Measure("h5_floor", [py, "-c", H5_FLOOR, a_h5, b_h5]),
        Measure("bundle_diff", [py, "-m", "ckpt_tools", "diff", str(a_ck), str(b_ck)], (1,)),
        Measure("bundle_floor", [py, "-c", BUNDLE_FLOOR, str(data_file(a_ck)), str(data_file(b_ck))]),
    ]


def warm(paths: list[Path]) -> None:
    """Read every input once, so each measurement starts from the same (warm) page cache."""
    for path in paths:
        with path.open("rb", buffering=0) as fh:
            while fh.read(16 << 20):
                pass


def evaluate(by: dict[str, Measure], meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool], list[str]]:
    baseline = by["baseline"].peak
    budget = baseline + (GOAL_MEMORY_MIB << 20) + BLOCK_BYTES
    figures = {
        "baseline_peak_rss": baseline,
        "memory_budget": budget,
        "h5_diff_excess_mib": (by["h5_diff"].peak - baseline) / 2**20,
        "bundle_diff_excess_mib": (by["bundle_diff"].peak - baseline) / 2**20,
        "h5_diff_vs_floor": by["h5_diff"].wall / by["h5_floor"].wall,
        "bundle_diff_vs_floor": by["bundle_diff"].wall / by["bundle_floor"].wall,
    }
    goals = {
        f"h5 diff peak RSS <= baseline + {GOAL_MEMORY_MIB} MiB + one block": by["h5_diff"].peak <= budget,
        f"bundle diff peak RSS <= baseline + {GOAL_MEMORY_MIB} MiB + one block": by["bundle_diff"].peak <= budget,
        f"bundle diff <= {GOAL_BUNDLE_RATIO:g}x streaming numpy floor": figures["bundle_diff_vs_floor"]
        <= GOAL_BUNDLE_RATIO,
        f"h5 diff <= {GOAL_H5_RATIO:g}x streaming h5py floor": figures["h5_diff_vs_floor"] <= GOAL_H5_RATIO,
    }
    problems = []
    for name in ("h5_diff", "bundle_diff"):
        if f"{meta['changed']} values changed" not in by[name].output:
            problems.append(f"{name} did not report {meta['changed']} changed variables: {by[name].output[-400:]!r}")
    if by["h5_floor"].output.strip() != str(meta["changed"]):
        problems.append(f"the h5py floor found {by['h5_floor'].output.strip()} changed datasets")
    return figures, goals, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-diff-h5"), help="file cache (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    meta = generate(args.dir)
    measures = build(args.dir)
    inputs = [args.dir / "a.weights.h5", args.dir / "b.weights.h5"]
    inputs += [data_file(args.dir / side / "ckpt") for side in ("a_ckpt", "b_ckpt")]
    warm(inputs)
    with tempfile.TemporaryDirectory(prefix="bench-diff-h5-run-") as scratch:
        for rep in range(args.repeat):  # round-robin: a burst of load elsewhere hits every command alike
            for m in measures:
                print(f"  run {rep + 1}/{args.repeat}: {m.name}", file=sys.stderr, flush=True)
                run_measured(m, Path(scratch))
    by = {m.name: m for m in measures}
    figures, goals, problems = evaluate(by, meta)
    sizes = ", ".join(f"{os.path.getsize(p) / 2**30:.2f} GiB" for p in inputs)
    print(
        f"\ninputs: {sizes}; Keras {meta['keras']}, TF {meta['tensorflow']}; {os.cpu_count()} cores; "
        f"median of {args.repeat}"
    )
    for m in measures:
        runs = " ".join(f"{t:.2f}" for t in m.walls)
        print(f"{m.name:<14} {m.wall:8.2f} s {m.peak / 2**20:9.0f} MiB peak RSS   runs {runs}")
    for key, value in figures.items():
        print(
            f"{key}: {value / 2**20:.0f} MiB"
            if key.endswith("rss") or key == "memory_budget"
            else f"{key}: {value:.2f}"
        )
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'MISSED'}")
    for problem in problems:
        print(f"problem: {problem}")
    if args.json_out:
        result = {
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "dataset": meta,
            "repeat": args.repeat,
            "measurements": {m.name: m.to_json() for m in measures},
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
