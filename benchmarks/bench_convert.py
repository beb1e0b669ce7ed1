"""`ckpt convert` of a ~1.3 GB TF1 Adam checkpoint to .keras and tf2: time and peak RSS against a TensorFlow floor."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30

# Layer widths of the Dense chain: 73 layers = 146 weights, the first kernel 4096x5760 (94 MB), ~1.29 GB with Adam.
CYCLE = [1024, 1280, 768, 1024, 1664, 512, 1408, 1024, 896, 1152]
WIDTHS = [4096, 5760] + [CYCLE[i % len(CYCLE)] for i in range(72)]

# Writes DIR/src/model.ckpt-<step> with tf.compat.v1 (graph mode, AdamOptimizer, Saver): two training steps.
GENERATE = r"""
import json, sys
import numpy as np
import tensorflow as tf
out = sys.argv[1]
widths = json.load(open(f"{out}/widths.json"))
v1 = tf.compat.v1
v1.disable_eager_execution()
graph = tf.Graph()
with graph.as_default():
    step = v1.train.get_or_create_global_step()
    x = tf.constant(np.random.default_rng(0).standard_normal((2, widths[0]), dtype=np.float32))
    h = x
    for i in range(len(widths) - 1):
        with v1.variable_scope(f"dense_{i}"):
            kernel = v1.get_variable("kernel", (widths[i], widths[i + 1]), initializer=v1.glorot_uniform_initializer())
            bias = v1.get_variable("bias", (widths[i + 1],), initializer=v1.zeros_initializer())
        h = tf.tanh(tf.matmul(h, kernel) + bias)
    loss = tf.reduce_mean(tf.square(h))
    train = v1.train.AdamOptimizer(0.001, beta1=0.9, beta2=0.999, epsilon=1e-8).minimize(loss, global_step=step)
    saver = v1.train.Saver()
    with v1.Session(graph=graph) as sess:
        sess.run(v1.global_variables_initializer())
        sess.run(train)
        sess.run(train)
        saver.save(sess, f"{out}/src/model.ckpt", global_step=step)
"""

# The --model factory for `ckpt convert`: the same Dense chain in Keras 3, compiled with TF1's Adam constants.
MODELS = r'''"""Factory for benchmarks/bench_convert.py: the Dense chain of widths.json, compiled with Adam."""

import json
from pathlib import Path


def build():
    import keras

    widths = json.loads((Path(__file__).parent / "widths.json").read_text())
    layers = [keras.layers.Dense(w, activation="tanh", name=f"dense_{i}") for i, w in enumerate(widths[1:])]
    model = keras.Sequential([keras.Input((widths[0],)), *layers], name="mlp")
    model.compile(optimizer=keras.optimizers.Adam(0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8), loss="mse")
    return model
'''

# The floor: TensorFlow reads every tensor, assigns it into the model / optimizer, then Keras or TF writes.
FLOOR = r"""
import importlib.util, sys
import tensorflow as tf
import keras
models, prefix, out, to = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("bench_models", models)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.build()
optimizer = model.optimizer
optimizer.build(model.trainable_variables)
reader = tf.train.load_checkpoint(prefix)
for variable in model.trainable_variables:
    name = variable.path.split("/", 1)[1]
    index = optimizer._get_variable_index(variable)
    variable.assign(reader.get_tensor(name))
    optimizer._momentums[index].assign(reader.get_tensor(name + "/Adam"))
    optimizer._velocities[index].assign(reader.get_tensor(name + "/Adam_1"))
optimizer.iterations.assign(reader.get_tensor("global_step"))
if to == "keras":
    model.save(out)
else:
    tf.train.Checkpoint(model=model, optimizer=optimizer).write(out)
"""


def run_measured(args: list[str], stdout: Path | None = None) -> dict[str, Any]:
    """Run one child process; its exit code, peak RSS (the child's own rusage via wait4), wall and CPU time."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = stdout.open("wb") if stdout is not None else subprocess.DEVNULL
    started = time.monotonic()
    try:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if stdout is not None:
            out.close()  # type: ignore[union-attr]
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(args)} failed with exit {code}:\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024, "cpu": usage.ru_utime + usage.ru_stime}


def generate(data: Path) -> Path:
    """The TF1 checkpoint and the factory file under DATA (reused when present); returns the checkpoint prefix."""
    meta = data / "bench_meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("widths") == WIDTHS:
        prefix = Path(json.loads(meta.read_text())["prefix"])
        if prefix.with_suffix(prefix.suffix + ".index").is_file():
            print(f"reusing {prefix}")
            return prefix
    shutil.rmtree(data / "src", ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    (data / "widths.json").write_text(json.dumps(WIDTHS))
    (data / "models.py").write_text(MODELS)
    print(f"writing a TF1 Adam checkpoint of {2 * (len(WIDTHS) - 1)} weights to {data}/src ...")
    started = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", GENERATE, str(data)], check=True, env=env)
    prefix = data / "src" / "model.ckpt-2"
    print(f"  done in {time.monotonic() - started:.1f} s")
    meta.write_text(json.dumps({"widths": WIDTHS, "prefix": str(prefix)}))
    return prefix


def source_bytes(prefix: Path) -> int:
    """Bytes of the checkpoint's .index and .data files (the .meta graph is not tensor data)."""
    files = [p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + ".") and not p.name.endswith("meta")]
    return sum(p.stat().st_size for p in files)


def warm(prefix: Path) -> None:
    """Read the source once so every command starts with the same warm page cache."""
    for path in prefix.parent.iterdir():
        if path.name.startswith(prefix.name + "."):
            with path.open("rb") as f:
                while f.read(1 << 24):
                    pass


def commands(data: Path, prefix: Path, out: Path) -> dict[str, tuple[list[str], Path]]:
    """Row name -> (command, the output it writes)."""
    models = data / "models.py"
    py = sys.executable
    convert = [py, "-m", "ckpt_tools", "convert", str(prefix), "--model", f"{models}:build", "--json"]
    return {
        "floor_keras": (
            [py, "-c", FLOOR, str(models), str(prefix), str(out / "floor.keras"), "keras"],
            out / "floor.keras",
        ),
        "convert_keras": ([*convert, "--to", "keras", "--out", str(out / "conv.keras")], out / "conv.keras"),
        "floor_tf2": (
            [py, "-c", FLOOR, str(models), str(prefix), str(out / "floor_tf2" / "ckpt"), "tf2"],
            out / "floor_tf2",
        ),
        "convert_tf2": ([*convert, "--to", "tf2", "--out", str(out / "conv_tf2")], out / "conv_tf2"),
    }


def check_report(path: Path, weights: int) -> None:
    """The convert run verified every weight and both Adam slots of each."""
    report = json.loads(path.read_text())
    (result,) = report["checkpoints"]
    verification = result["verification"]
    if (verification["weights_identical"], verification["slots_equal"], verification["step_ok"]) != (
        weights,
        2 * weights,
        True,
    ):
        raise SystemExit(f"convert verified less than expected: {verification}")


def measure(data: Path, prefix: Path, repeat: int) -> dict[str, list[dict[str, Any]]]:
    out = data / "out"
    rows: dict[str, list[dict[str, Any]]] = {}
    weights = 2 * (len(WIDTHS) - 1)
    for i in range(repeat):
        for name, (args, target) in commands(data, prefix, out).items():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            (out / "floor_tf2").mkdir()
            report = out / "report.json"
            figures = run_measured(args, stdout=report)
            if name.startswith("convert"):
                check_report(report, weights)
            figures["output_bytes"] = sum(p.stat().st_size for p in [target, *target.rglob("*")] if p.is_file())
            rows.setdefault(name, []).append(figures)
            print(f"  run {i + 1}/{repeat} {name:14} {figures['seconds']:6.1f} s  {figures['peak_rss'] / GIB:5.2f} GiB")
    shutil.rmtree(out, ignore_errors=True)
    return rows


def summarise(rows: dict[str, list[dict[str, Any]]], size: int) -> dict[str, Any]:
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "peak_rss", "cpu")} for k, v in rows.items()}
    budget = GIB + 1.5 * size
    goals = {}
    for to in ("keras", "tf2"):
        conv = med[f"convert_{to}"]
        goals[f"{to}_time"] = {
            "ratio_to_floor": conv["seconds"] / med["floor_keras"]["seconds"],
            "ratio_to_own_floor": conv["seconds"] / med[f"floor_{to}"]["seconds"],
            "goal": 1.5,
        }
        goals[f"{to}_time"]["met"] = goals[f"{to}_time"]["ratio_to_floor"] <= 1.5
        goals[f"{to}_memory"] = {"peak_rss": conv["peak_rss"], "budget": budget, "met": conv["peak_rss"] <= budget}
    return {"medians": med, "goals": goals, "source_bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to write (or reuse) the dataset; default: a temporary one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    temporary = None if args.dir else tempfile.mkdtemp(prefix="bench-convert-")
    data = args.dir or Path(temporary or ".")
    try:
        prefix = generate(data)
        size = source_bytes(prefix)
        print(f"source {size / 1e9:.2f} GB, {2 * (len(WIDTHS) - 1)} weights; {args.repeat} round(s)")
        warm(prefix)
        summary = summarise(measure(data, prefix, args.repeat), size)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    for name, fig in summary["medians"].items():
        peak = fig["peak_rss"] / GIB
        print(f"{name:14} median {fig['seconds']:6.1f} s  peak {peak:5.2f} GiB  cpu {fig['cpu']:6.1f} s")
    for name, goal in summary["goals"].items():
        if "budget" in goal:
            detail = f"{goal['peak_rss'] / GIB:.2f} GiB <= {goal['budget'] / GIB:.2f} GiB (1 GiB + 1.5x source)"
        else:
            detail = (
                f"{goal['ratio_to_floor']:.2f}x the model.save floor <= 1.5x "
                f"({goal['ratio_to_own_floor']:.2f}x its own target's floor)"
            )
        print(f"goal {name:13} {'met ' if goal['met'] else 'MISSED'}  {detail}")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    missed = [n for n, g in summary["goals"].items() if not g["met"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
