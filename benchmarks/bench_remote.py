"""Bytes and requests `ckpt inspect` / `ckpt validate` cost on a ~400 MB checkpoint behind s3:// (moto's server)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_native import ROOT, TIME, child_env, generate

BUCKET = "bench"
GOAL_INSPECT = 2.0  # inspect transfers at most 2x the index size
GOAL_NEEDED = 1.05  # ... and nothing but the index, the object-graph tensor and a step counter's block


class Traffic:
    """Response-body bytes and requests per (method, path), counted inside the server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()

    def add(self, method: str, path: str, size: int) -> None:
        with self.lock:
            self.bytes[path] += size
            self.requests[f"{method} {path}"] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.bytes), dict(self.requests)

    def reset(self) -> None:
        with self.lock:
            self.bytes.clear()
            self.requests.clear()


class Counting:
    """WSGI middleware: counts every response body moto's app sends."""

    def __init__(self, app: Any, traffic: Traffic) -> None:
        self.app, self.traffic = app, traffic

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        size = 0
        for chunk in self.app(environ, start_response):
            size += len(chunk)
            yield chunk
        self.traffic.add(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), size)


def start_s3(traffic: Traffic) -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    server._server.app = Counting(server._server.app, traffic)
    return server, f"http://{host}:{port}"


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        **child_env(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def upload(endpoint: str, prefix: Path) -> list[Path]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    for file in files:
        client.upload_file(str(file), BUCKET, f"a/{file.name}")
    return files


def run_once(argv: list[str], env: dict[str, str], scratch: Path) -> tuple[float, int]:
    """One whole process: wall seconds and peak RSS bytes (/usr/bin/time -v)."""
    report = scratch / "rusage.txt"
    timed = [TIME, "-v", "-o", str(report), *argv] if Path(TIME).is_file() else argv
    start = time.perf_counter()
    proc = subprocess.run(timed, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    rss = 0
    if report.is_file():
        for line in report.read_text().splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.rsplit(":", 1)[1]) * 1024
    return wall, rss


def measure(
    name: str, argv: list[str], env: dict[str, str], traffic: Traffic, repeat: int, scratch: Path
) -> dict[str, Any]:
    """Median wall time and peak RSS of `repeat` runs; bytes and requests of the last (they do not vary)."""
    walls, peaks = [], []
    for _ in range(repeat):
        traffic.reset()
        wall, rss = run_once(argv, env, scratch)
        walls.append(wall)
        peaks.append(rss)
    sent, requests = traffic.snapshot()
    return {
        "name": name,
        "argv": argv,
        "wall_seconds": statistics.median(walls),
        "peak_rss_bytes": statistics.median(peaks),
        "bytes_by_path": sent,
        "requests_by_path": requests,
        "bytes_total": sum(sent.values()),
        "requests_total": sum(requests.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to write (or reuse) the checkpoints (bench_native's layout)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=400.0, help="size of the checkpoint in MB (10**6 bytes)")
    args = parser.parse_args()
    out = args.dir or Path(tempfile.mkdtemp(prefix="bench-remote-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, out)
    finally:
        if args.dir is None:
            shutil.rmtree(out, ignore_errors=True)


def run(args: argparse.Namespace, out: Path) -> int:
    meta = generate(out, args.variables, int(args.mb * 1e6))
    prefix = Path(meta["prefix_a"])
    traffic = Traffic()
    server, endpoint = start_s3(traffic)
    scratch = Path(tempfile.mkdtemp(prefix="bench-remote-rusage-"))
    try:
        files = upload(endpoint, prefix)
        sizes = {f"/{BUCKET}/a/{f.name}": f.stat().st_size for f in files}
        env, local_env = s3_env(endpoint), child_env()
        url = f"s3://{BUCKET}/a/{prefix.name}"
        ckpt = [sys.executable, "-m", "ckpt_tools"]
        results = [
            measure("inspect_s3", [*ckpt, "inspect", url], env, traffic, args.repeat, scratch),
            measure("validate_s3", [*ckpt, "validate", url], env, traffic, args.repeat, scratch),
            measure("inspect_local", [*ckpt, "inspect", str(prefix)], local_env, traffic, args.repeat, scratch),
            measure("validate_local", [*ckpt, "validate", str(prefix)], local_env, traffic, args.repeat, scratch),
        ]
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return report(args, meta, sizes, {r["name"]: r for r in results}, graph_bytes(prefix))


def graph_bytes(prefix: Path) -> int:
    """The size of the TF2 object-graph tensor, which inspect must read to name the variables."""
    sys.path.insert(0, str(ROOT))
    from ckpt_tools.bundle import BundleReader

    return BundleReader(prefix).entries["_CHECKPOINTABLE_OBJECT_GRAPH"].size


def report(
    args: argparse.Namespace, meta: dict[str, Any], sizes: dict[str, int], by: dict[str, Any], graph: int
) -> int:
    index = next(size for path, size in sizes.items() if path.endswith(".index"))
    total = sum(sizes.values())
    inspect, validate = by["inspect_s3"], by["validate_s3"]
    object_bytes = sum(validate["bytes_by_path"].get(p, 0) for p in sizes)
    ratios = {
        "inspect_bytes_over_index": inspect["bytes_total"] / index,
        "inspect_bytes_over_index_plus_graph": inspect["bytes_total"] / (index + graph),
        "validate_object_bytes_over_file_bytes": object_bytes / total,
        "validate_each_file_once": all(validate["bytes_by_path"].get(p, 0) == n for p, n in sizes.items()),
        "inspect_s3_over_local_wall": inspect["wall_seconds"] / by["inspect_local"]["wall_seconds"],
        "validate_s3_over_local_wall": validate["wall_seconds"] / by["validate_local"]["wall_seconds"],
    }
    goals = {
        "inspect_at_most_2x_index": ratios["inspect_bytes_over_index"] <= GOAL_INSPECT,
        "inspect_only_index_and_graph": ratios["inspect_bytes_over_index_plus_graph"] <= GOAL_NEEDED,
        "validate_each_byte_once": bool(ratios["validate_each_file_once"]),
    }
    print(f"checkpoint: {meta['variables']} variables, {total / 1e6:.1f} MB in {len(sizes)} files, index {index:,} B")
    for name, r in by.items():
        print(
            f"  {name:15s} {r['wall_seconds']:6.2f} s  peak RSS {r['peak_rss_bytes'] / 2**20:6.0f} MiB  "
            f"{r['bytes_total']:>13,} B in {r['requests_total']:4d} requests"
        )
    print(f"  inspect: {ratios['inspect_bytes_over_index']:.2f}x the index (goal <= {GOAL_INSPECT}x)")
    print(
        f"  inspect: {ratios['inspect_bytes_over_index_plus_graph']:.3f}x the index + object graph ({graph:,} B) "
        f"(goal <= {GOAL_NEEDED}x)"
    )
    print(
        f"  validate: {ratios['validate_object_bytes_over_file_bytes']:.4f}x the checkpoint's bytes (goal: each once)"
    )
    for goal, met in goals.items():
        print(f"  {'met   ' if met else 'MISSED'} {goal}")
    if args.json_out:
        data = {"benchmark": "bench_remote", "meta": meta, "files": sizes, "graph_bytes": graph, "results": by}
        data["ratios"] = ratios
        args.json_out.write_text(json.dumps({**data, "goals": goals}, indent=1))
    return 1 if args.check and not all(goals.values()) else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
