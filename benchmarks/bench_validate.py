"""`ckpt validate` and `ckpt inspect --stats` on a 1.6 GB TF2 checkpoint (one 1 GiB tensor) and 1.1 GB Keras
files (one 1 GiB kernel): wall time, peak RSS and bytes read, against a Python read+CRC32C floor measured in the
same run."""

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
BLOCK = 8 << 20  # ckpt-tools' verification block (bundle.shards.CHUNK)
GOAL_THROUGHPUT = 0.5  # validate at least half as fast as the read+CRC32C floor
GOAL_BYTES = 1.1  # one pass: bytes read at most 1.1x the data
GOAL_MEMORY = 64 * 2**20 + BLOCK  # peak RSS at most 64 MiB + one block, whatever the tensor size

# tf2/ckpt: one 1 GiB float32 tensor plus `small` tensors of 2.5 MB (tf.train.Checkpoint.write).
GENERATE_TF2 = r"""
import sys
import numpy as np
import tensorflow as tf
out, big_mib, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
big = tf.Variable(rng.standard_normal(big_mib * 2**18, dtype=np.float32), name="big")
rest = [tf.Variable(rng.standard_normal((640, 1024), dtype=np.float32), name=f"w{i}") for i in range(small)]
tf.train.Checkpoint(big=big, rest=rest).write(f"{out}/ckpt")
"""

# keras/model.keras and keras/model.weights.h5: a Keras 3 model with a 16384 x 16384 kernel (1 GiB).
GENERATE_KERAS = r"""
import sys
import keras
out = sys.argv[1]
model = keras.Sequential([keras.Input((16384,)), keras.layers.Dense(16384), keras.layers.Dense(1024)])
model.save(f"{out}/model.keras")
model.save_weights(f"{out}/model.weights.h5")
"""

# Runs the `ckpt` command line in this process and, however it ends, writes /proc/self/io to $CKPT_BENCH_IO.
WRAP = r"""
import os, sys
try:
    from ckpt_tools.cli import main
    main(sys.argv[1:], prog_name="ckpt")
finally:
    with open(os.environ["CKPT_BENCH_IO"], "w") as out:
        out.write(open("/proc/self/io").read())
"""

# The floor: read every file in 8 MiB blocks into one page-aligned buffer (readinto) and CRC them, in one
# process. `crc32c` is the project's CRC32C (google_crc32c); `zlib` the CRC-32 a zip member stores.
FLOOR = r"""
import mmap, os, sys, time
kind, files = sys.argv[1], sys.argv[2:]
import numpy as np
if kind == "crc32c":
    import google_crc32c
    extend = google_crc32c.extend
else:
    import zlib
    def extend(crc, data):
        return zlib.crc32(data, crc)
buffer = mmap.mmap(-1, 8 << 20)  # page-aligned
view, array = memoryview(buffer), np.frombuffer(buffer, dtype=np.uint8)
crc = 0
started = time.perf_counter()
for name in files:
    with open(name, "rb", buffering=0) as fh:
        while got := fh.readinto(view):
            crc = extend(crc, array[:got])
seconds = time.perf_counter() - started
with open(os.environ["CKPT_BENCH_IO"], "w") as out:
    out.write(open("/proc/self/io").read() + f"inprocess: {seconds}\n")
"""


def child_env(io_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0",
        "CKPT_BENCH_IO": str(io_file),
    }


def compile_bytecode() -> None:
    """Byte-compile the checkout's ckpt_tools first, as `pip install` does: with PYTHONDONTWRITEBYTECODE set
    (or a read-only checkout) every measured process would otherwise compile each module it imports anew."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "ckpt_tools")], check=True, env=os.environ)


@dataclass
class Measure:
    name: str
    argv: list[str]
    data_bytes: int
    kind: str  # "validate", "stats" or "floor"
    walls: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    rchar: list[int] = field(default_factory=list)
    read_bytes: list[int] = field(default_factory=list)
    exit_codes: set[int] = field(default_factory=set)
    inprocess: list[float] = field(default_factory=list)  # the floor's read+CRC loop alone, timed inside

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "command": " ".join(self.argv),
            "data_bytes": self.data_bytes,
            "wall_s": statistics.median(self.walls),
            "walls_s": self.walls,
            "peak_rss_bytes": statistics.median(self.peaks),
            "rchar": statistics.median(self.rchar),
            "read_bytes": statistics.median(self.read_bytes),
            "rchar_per_data_byte": statistics.median(self.rchar) / self.data_bytes,
            "throughput_gb_s": self.data_bytes / statistics.median(self.walls) / 1e9,
            "exit_codes": sorted(self.exit_codes),
            "inprocess_s": statistics.median(self.inprocess) if self.inprocess else None,
        }


def run_once(measure: Measure, scratch: Path) -> None:
    """One whole process: wall time, peak RSS (its own rusage through wait4) and its /proc/<pid>/io counters."""
    io_file = scratch / f"{measure.name}.io"
    started = time.monotonic()
    proc = subprocess.Popen(
        measure.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(io_file), cwd=ROOT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if code not in (0, 1):
        raise SystemExit(f"{measure.name} failed with exit code {code}:\n{stderr[-2000:]}")
    counters = dict(line.split(": ") for line in io_file.read_text().splitlines())
    if "inprocess" in counters:
        measure.inprocess.append(float(counters["inprocess"]))
    measure.walls.append(wall)
    measure.peaks.append(usage.ru_maxrss * 1024)
    measure.rchar.append(int(counters["rchar"]))
    measure.read_bytes.append(int(counters["read_bytes"]))
    measure.exit_codes.add(code)


def generate(out: Path, big_mib: int, small: int) -> None:
    env = child_env(out / "unused.io")
    if not (out / "tf2" / "ckpt.index").is_file():
        print(f"writing a TF2 checkpoint ({big_mib} MiB tensor + {small} x 2.5 MiB) to {out / 'tf2'} ...", flush=True)
        started = time.monotonic()
        (out / "tf2").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-c", GENERATE_TF2, str(out / "tf2"), str(big_mib), str(small)], check=True, env=env
        )
        print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
    weights = out / "keras" / "model.weights.h5"
    if not weights.is_file() or weights.stat().st_size < 2**30:
        print(f"writing a Keras 3 model (16384 x 16384 kernel) to {out / 'keras'} ...", flush=True)
        started = time.monotonic()
        (out / "keras").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", GENERATE_KERAS, str(out / "keras")], check=True, env=env)
        print(f"  done in {time.monotonic() - started:.1f} s", flush=True)


def build_measures(out: Path) -> list[Measure]:
    ckpt = [sys.executable, "-c", WRAP]
    floor = [sys.executable, "-c", FLOOR]
    prefix = out / "tf2" / "ckpt"
    tf2_files = sorted(str(p) for p in (out / "tf2").glob("ckpt.data-*"))
    tf2_bytes = sum(Path(p).stat().st_size for p in tf2_files)
    h5 = out / "keras" / "model.weights.h5"
    archive = out / "keras" / "model.keras"
    weights_only = ["--allow-weights-only"]
    return [
        Measure("floor_tf2", [*floor, "crc32c", *tf2_files], tf2_bytes, "floor"),
        Measure("validate_tf2", [*ckpt, "validate", str(prefix), *weights_only], tf2_bytes, "validate"),
        Measure("stats_tf2", [*ckpt, "inspect", "--stats", "--json", str(prefix)], tf2_bytes, "stats"),
        Measure("floor_weights_h5", [*floor, "crc32c", str(h5)], h5.stat().st_size, "floor"),
        Measure("validate_weights_h5", [*ckpt, "validate", str(h5), *weights_only], h5.stat().st_size, "validate"),
        Measure("stats_weights_h5", [*ckpt, "inspect", "--stats", "--json", str(h5)], h5.stat().st_size, "stats"),
        Measure("floor_keras", [*floor, "crc32c", str(archive)], archive.stat().st_size, "floor"),
        Measure("floor_keras_zlib", [*floor, "zlib", str(archive)], archive.stat().st_size, "floor"),
        Measure("validate_keras", [*ckpt, "validate", str(archive), *weights_only], archive.stat().st_size, "validate"),
        Measure("stats_keras", [*ckpt, "inspect", "--stats", "--json", str(archive)], archive.stat().st_size, "stats"),
    ]


def warm(files: list[Path]) -> None:
    """Read every file once so that all runs see a warm page cache."""
    for file in files:
        with file.open("rb", buffering=0) as fh:
            while fh.read(BLOCK):
                pass


def goals(by_name: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for suffix in ("tf2", "weights_h5", "keras"):
        validate, stats, floor = by_name[f"validate_{suffix}"], by_name[f"stats_{suffix}"], by_name[f"floor_{suffix}"]
        ratio = floor["wall_s"] / validate["wall_s"]
        out[suffix] = {
            "throughput_vs_floor": ratio,
            "throughput_met": ratio >= GOAL_THROUGHPUT,
            "bytes_read_per_data_byte": validate["rchar_per_data_byte"],
            "one_pass_met": validate["rchar_per_data_byte"] <= GOAL_BYTES,
            "validate_peak_rss_bytes": validate["peak_rss_bytes"],
            "validate_memory_met": validate["peak_rss_bytes"] <= GOAL_MEMORY,
            "stats_peak_rss_bytes": stats["peak_rss_bytes"],
            "stats_memory_met": stats["peak_rss_bytes"] <= GOAL_MEMORY,
        }
    if "floor_keras_zlib" in by_name:
        out["keras"]["throughput_vs_zlib_floor"] = (
            by_name["floor_keras_zlib"]["wall_s"] / by_name["validate_keras"]["wall_s"]
        )
    return out


def print_table(results: list[dict[str, Any]], met: dict[str, Any]) -> None:
    print(f"\n{'measurement':22s} {'wall':>8s} {'GB/s':>6s} {'peak RSS':>10s} {'rchar/data':>10s}  exit")
    for r in results:
        print(
            f"{r['name']:22s} {r['wall_s']:7.2f}s {r['throughput_gb_s']:6.2f} {r['peak_rss_bytes'] / 2**20:8.1f}Mi "
            f"{r['rchar_per_data_byte']:10.3f}  {r['exit_codes']}"
        )
    print()
    for name, row in met.items():
        print(
            f"{name:10s} validate/floor throughput {row['throughput_vs_floor']:.2f} (>= {GOAL_THROUGHPUT}: "
            f"{'met' if row['throughput_met'] else 'MISSED'}); bytes read {row['bytes_read_per_data_byte']:.3f}x "
            f"({'met' if row['one_pass_met'] else 'MISSED'}); "
            f"validate peak {row['validate_peak_rss_bytes'] / 2**20:.1f} MiB, "
            f"stats peak {row['stats_peak_rss_bytes'] / 2**20:.1f} MiB (<= {GOAL_MEMORY / 2**20:.0f} MiB: "
            f"{'met' if row['validate_memory_met'] and row['stats_memory_met'] else 'MISSED'})"
        )
    if "throughput_vs_zlib_floor" in met.get("keras", {}):
        print(f".keras validate vs a read+zlib.crc32 floor: {met['keras']['throughput_vs_zlib_floor']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to write (or reuse) the artifacts (about 3.8 GB)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the large TF2 tensor")
    parser.add_argument("--small", type=int, default=200, help="2.5 MiB tensors beside it")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma list of measurement names to run")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        out = args.dir or Path(scratch) / "data"
        out.mkdir(parents=True, exist_ok=True)
        generate(out, args.big_mib, args.small)
        measures = build_measures(out)
        if args.only:
            measures = [m for m in measures if m.name in args.only.split(",")]
        warm([*(out / "tf2").glob("ckpt.*"), *(out / "keras").glob("model.*")])
        compile_bytecode()
        for _ in range(args.repeat):  # round-robin: load on the machine affects every measurement alike
            for measure in measures:
                run_once(measure, Path(scratch))
    results = [m.to_json() for m in measures]
    by_name = {r["name"]: r for r in results}
    met = goals(by_name) if len(by_name) == len(build_measures_names()) else {}
    print_table(results, met)
    report = {
        "benchmark": "bench_validate",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "block_bytes": BLOCK,
        "goal_memory_bytes": GOAL_MEMORY,
        "results": results,
        "goals": met,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    missed = any(not v for row in met.values() for k, v in row.items() if k.endswith("_met"))
    return 1 if args.check and (missed or not met) else 0


def build_measures_names() -> list[str]:
    return [
        "floor_tf2",
        "validate_tf2",
        "stats_tf2",
        "floor_weights_h5",
        "validate_weights_h5",
        "stats_weights_h5",
        "floor_keras",
        "floor_keras_zlib",
        "validate_keras",
        "stats_keras",
    ]


if __name__ == "__main__":
    sys.exit(main())
