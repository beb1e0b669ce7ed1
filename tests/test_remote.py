"""Artifacts read in place behind URLs: moto's S3 server and a Range-serving HTTP server on the loopback."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FIXTURES, HAS_TF, child_env, expected_fixtures, read_through_tensorflow, run_cli

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("aiohttp")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.remote
BUCKET = "fixtures"


class Traffic:
    """Requests and response-body bytes a server sent, per path (counted by the server, not the client)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root  # the folder a web server serves
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def add(self, path: str, size: int) -> None:
        with self.lock:
            self.requests[path] += 1
            self.bytes[path] += size

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes.clear()

    def total_bytes(self, prefix: str = "") -> int:
        return sum(n for p, n in self.bytes.items() if p.startswith(prefix))

    def total_requests(self) -> int:
        return sum(self.requests.values())


class _Counting:
    """WSGI middleware around moto's app: counts the bytes of every response body by request path."""

    def __init__(self, app: Any, traffic: Traffic) -> None:
        self.app, self.traffic = app, traffic

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        size = 0
        for chunk in self.app(environ, start_response):
            size += len(chunk)
            yield chunk
        self.traffic.add(path, size)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Traffic]]:
    """moto's standalone S3 server on 127.0.0.1 (random port), every fixture uploaded under s3://fixtures/."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    traffic = Traffic()
    server._server.app = _Counting(server._server.app, traffic)
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        for file in sorted(FIXTURES.rglob("*")):
            if file.is_file() and not file.is_symlink() and "__pycache__" not in file.parts:
                client.upload_file(str(file), BUCKET, file.relative_to(FIXTURES).as_posix())
        yield endpoint, traffic
    server.stop()


@pytest.fixture
def s3_client(s3: tuple[str, Traffic]) -> Any:
    return boto3.client("s3", endpoint_url=s3[0])


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single `Range: bytes=a-b` support; `/_403/...` is forbidden, `/_503/...` always fails,
    `/_flaky/...` fails twice per path before serving it."""

    traffic: Traffic
    flaky: Counter[str]
    if_match: list[str]
    etag = ""

    def end_headers(self) -> None:
        if self.etag:
            self.send_header("ETag", self.etag)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _special(self) -> bool:
        for code, marker in ((403, "/_403/"), (503, "/_503/")):
            if self.path.startswith(marker):
                self.send_error(code)
                return True
        if self._versioned():
            return True
        if self.path.startswith("/_stall/"):
            time.sleep(30)  # accepts the connection and never answers in time
            return True
        for marker in ("/_norange/", "/_overlong/", "/_shifted/"):
            if self.path.startswith(marker) and self.command == "GET":
                self.path = self.path[len(marker) - 1 :]
                self._misbehave(marker)
                return True
            if self.path.startswith(marker):
                self.path = self.path[len(marker) - 1 :]
        if self.path.startswith("/_flaky/"):
            self.flaky[self.path] += 1
            if self.flaky[self.path] <= 2:
                self.send_error(503)
                return True
            self.path = self.path[len("/_flaky") :]
        return False

    def do_HEAD(self) -> None:
        if not self._special():
            super().do_HEAD()

    def do_GET(self) -> None:
        if self._special():
            return
        file = Path(self.translate_path(self.path))
        spec = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not file.is_file() or spec is None:
            body = self._whole()
            self.traffic.add(self.path, body)
            return
        data = file.read_bytes()
        start = int(spec.group(1))
        end = min(len(data), int(spec.group(2)) + 1 if spec.group(2) else len(data))
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start:end])
        self.traffic.add(self.path, end - start)

    def _versioned(self) -> bool:
        """`/_etag/`: a steady ETag honoring If-Match; `/_etagflip/`: another version after the HEAD (412)."""
        for marker in ("/_etag/", "/_etagflip/"):
            if self.path.startswith(marker):
                self.path = self.path[len(marker) - 1 :]
                self.etag = '"v1"' if marker == "/_etag/" or self.command == "HEAD" else '"v2"'
                if self.command == "GET":
                    self.if_match.append(self.headers.get("If-Match", ""))
                    if self.headers.get("If-Match") not in (None, self.etag):
                        self.send_error(412)
                        return True
        return False

    def _misbehave(self, marker: str) -> None:
        """`_norange`: every GET answered 200 with the whole file; `_overlong`: 206 without a length, sending the
        rest of the file past the range; `_shifted`: 206 whose Content-Range starts elsewhere."""
        file = Path(self.translate_path(self.path))
        if not file.is_file():
            self._whole()  # a folder's listing, or a 404
            return
        data = file.read_bytes()
        spec = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start = int(spec.group(1)) if spec else 0
        if marker == "/_norange/" or spec is None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.traffic.add(self.path, len(data))
            return
        self.send_response(206)
        shown = start + 1 if marker == "/_shifted/" else start
        self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[start:])
        self.traffic.add(self.path, len(data) - start)
        self.close_connection = True

    def _whole(self) -> int:
        fh = self.send_head()
        if fh is None:
            return 0
        try:
            data = fh.read()
            self.wfile.write(data)
            return len(data)
        finally:
            fh.close()


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Traffic]]:
    """A threaded HTTP server with Range support on 127.0.0.1 (random port), serving a copy of fixtures/."""
    root = tmp_path_factory.mktemp("web")
    shutil.copytree(FIXTURES, root / "fixtures", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name, entry in ESCAPES.items():  # state files whose entries a web client would send out of the folder
        run = root / "escapes" / name / "run"
        shutil.copytree(FIXTURES / "tf1_adam", run)
        (run / "checkpoint").write_text(f'model_checkpoint_path: "{entry}"\n')
    shutil.copytree(FIXTURES / "tf2_keras3_adam", root / "escapes" / "secret")
    traffic = Traffic(root)
    handler = type("Handler", (_RangeHandler,), {"traffic": traffic, "flaky": Counter(), "if_match": []})

    def make(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return handler(*args, directory=str(root))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    WEB_HANDLER.append(handler)
    yield f"http://127.0.0.1:{server.server_address[1]}", traffic
    server.shutdown()


WEB_HANDLER: list[Any] = []  # the web server's handler class: what the test server saw


ESCAPES = {
    "dots": "%2e%2e/%2e%2e/secret/ckpt-1",
    "mixed": ".%2E/%2e./secret/ckpt-1",
    "slashes": "..%2f..%2fsecret%2fckpt-1",
    "double": "%252e%252e/%252e%252e/secret/ckpt-1",
    "backslash": "..%5c..%5csecret%5cckpt-1",
}


@pytest.mark.parametrize("name", ESCAPES)
def test_percent_encoded_state_entries_never_leave_a_web_folder(web: tuple[str, Traffic], name: str) -> None:
    """A web client percent-decodes a path (`%2e%2e` climbs like `..`): such an entry is judged as it will be
    sent, and refused before any request reaches the folder it names."""
    base, traffic = web
    traffic.reset()
    line = _one_line_error(["inspect", f"{base}/escapes/{name}/run"])
    assert "outside its directory" in line or "escaped or backslashed" in line, line
    assert not [p for p in traffic.requests if "/secret" in p], traffic.requests


def test_keys_with_hash_or_question_mark_are_refused_not_skipped(s3: tuple[str, Traffic], s3_client: Any) -> None:
    """An S3 key holding '#' cannot be addressed yet; a scan must fail rather than pass what it never saw."""
    s3_client.upload_file(str(FIXTURES / "hostile" / "keras_lambda.keras"), BUCKET, "hashed/models/evil#1.keras")
    s3_client.upload_file(str(FIXTURES / "hostile" / "keras_clean.keras"), BUCKET, "hashed/models/clean.keras")
    result = run_cli(["scan", f"s3://{BUCKET}/hashed", "--json"], None)
    assert result.exit_code != 0 and "not supported" in result.output + result.stderr


def test_validate_reports_never_show_credentials(web: tuple[str, Traffic]) -> None:
    base, _ = web
    url = base.replace("http://", "http://alice:hunter2@") + "/fixtures/tf1_adam?X-Amz-Signature=SECRET"
    result = run_cli(["validate", url, "--json"], None)
    assert "hunter2" not in result.output and "SECRET" not in result.output and result.output


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    from ckpt_tools import storage

    storage.forget()


def _same(local: str, remote: str, args: list[str], expect: int | None = None) -> tuple[Any, Any]:
    """The JSON both give, paths spelled as `ROOT/...` (the local one possibly resolved)."""
    a = run_cli([*args, local, "--json"], expect)
    b = run_cli([*args, remote, "--json"], a.exit_code)
    base_local, base_remote = str(FIXTURES), remote.rsplit("/fixtures/", 1)[0] + "/fixtures"
    text_a = a.stdout.replace(str(FIXTURES.resolve()), "ROOT").replace(base_local, "ROOT")
    text_b = b.stdout.replace(base_remote, "ROOT")
    return json.loads(text_a), json.loads(text_b)


# V1-format checkpoints are read through TensorFlow (from a private local copy of the remote file).
REMOTE_FIXTURES = [t for t in expected_fixtures() if HAS_TF or not read_through_tensorflow(t)]
# One artifact per format family for the web server (every fixture goes through S3).
WEB_FIXTURES = [
    t
    for t in REMOTE_FIXTURES
    if t["id"]
    in (
        "tf1_sharded",
        "tf1_partitioned",
        "tf2_keras3_adam",
        "keras3_adam",
        "keras2_adam",
        "saved_model_module",
        "backup_keras3",
        "backup_tfkeras",
    )
    or t["path"].endswith(".weights.h5")
][:10]


@pytest.mark.parametrize("truth", REMOTE_FIXTURES, ids=[t["id"] for t in REMOTE_FIXTURES])
def test_s3_inspect_validate_diff_match_local(s3: tuple[str, Traffic], truth: dict[str, Any]) -> None:
    local, remote = str(FIXTURES / truth["path"]), f"s3://{BUCKET}/{truth['path']}"
    a, b = _same(local, remote, ["inspect"])
    assert a == b
    assert b["format"] == truth["format"] and b["step"] == truth["step"]
    got = sorted([v["key"], v["shape"], v["dtype"]] for v in b["variables"])
    assert got == sorted([k, list(s), d] for k, s, d in truth["tensors"])
    a, b = _same(local, remote, ["validate"])
    assert a == b
    run_cli(["diff", remote, local], 0)


@pytest.mark.parametrize("truth", WEB_FIXTURES, ids=[t["id"] for t in WEB_FIXTURES])
def test_http_inspect_validate_diff_match_local(web: tuple[str, Traffic], truth: dict[str, Any]) -> None:
    local, remote = str(FIXTURES / truth["path"]), f"{web[0]}/fixtures/{truth['path']}"
    assert _same(local, remote, ["inspect"]) == _same(local, local, ["inspect"])
    a, b = _same(local, remote, ["validate"])
    assert a == b
    run_cli(["diff", local, remote], 0)


def test_http_web_directory_listing_finds_the_bundle(web: tuple[str, Traffic]) -> None:
    """A folder URL without a state file: the one `.index` in the server's directory listing is the bundle."""
    data = run_cli(["inspect", f"{web[0]}/fixtures/tf2_keras3_adam", "--json"]).stdout
    assert json.loads(data)["format"] == "tf2-checkpoint"


def _one_line_error(args: list[str]) -> str:
    result = run_cli(args, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["inspect", "diff"])
def test_missing_bucket_and_key_are_one_line(s3: tuple[str, Traffic], command: str) -> None:
    extra = [str(FIXTURES / "tf1_adam")] if command == "diff" else []
    line = _one_line_error([command, "s3://no-such-bucket-here/ckpt", *extra])
    assert "no such bucket 'no-such-bucket-here'" in line
    line = _one_line_error([command, f"s3://{BUCKET}/tf1_adam/model.ckpt-404", *extra])
    assert "no such file or directory" in line and "s3://fixtures/tf1_adam/model.ckpt-404" in line


def test_validate_reports_a_missing_remote_artifact_as_unreadable(s3: tuple[str, Traffic]) -> None:
    result = run_cli(["validate", "--json", "s3://no-such-bucket-here/ckpt"], 2)
    report = json.loads(result.stdout)
    assert report["artifacts"][0]["verdict"] == "unreadable"
    assert "no such bucket" in json.dumps(report)


def test_forbidden_is_one_line_and_hides_the_query(web: tuple[str, Traffic]) -> None:
    line = _one_line_error(["inspect", f"{web[0]}/_403/fixtures/keras3_adam/model.keras?X-Amz-Signature=SECRET"])
    assert "access denied" in line
    assert "SECRET" not in line and "X-Amz-Signature" not in line


def test_user_and_password_in_a_url_are_never_printed(web: tuple[str, Traffic]) -> None:
    host = web[0].removeprefix("http://")
    line = _one_line_error(["inspect", f"http://alice:hunter2@{host}/_403/fixtures/tf1_adam"])
    assert "hunter2" not in line and "alice" not in line


def test_transient_failures_are_retried(web: tuple[str, Traffic], monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_tools import storage

    monkeypatch.setattr(storage, "BACKOFF", 0.0)
    remote = f"{web[0]}/_flaky/fixtures/keras3_adam/model.keras"
    data = json.loads(run_cli(["inspect", remote, "--json"]).stdout)
    assert data["format"] == "keras-archive"
    line = _one_line_error(["inspect", f"{web[0]}/_503/fixtures/keras3_adam/model.keras"])
    assert f"after {storage.RETRIES} attempts" in line


def test_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from ckpt_tools import storage

    def missing(protocol: str) -> Any:
        raise ImportError(f"Install {protocol} backend")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    monkeypatch.setattr(storage, "_STORES", {})
    line = _one_line_error(["inspect", "gs://bucket/run/ckpt-1"])
    assert line == "ckpt: error: gs:// needs gcsfs: pip install 'ckpt-tools[gcs]'"


def test_convert_refuses_a_remote_output(s3: tuple[str, Traffic]) -> None:
    line = _one_line_error(
        [
            "convert",
            f"s3://{BUCKET}/tf1_adam",
            "--model",
            f"{FIXTURES.parent}/tests/convert_models.py:adam",
            "--out",
            "s3://fixtures/out?token=SECRET",
        ]
    )
    assert "writes to a local folder" in line and "SECRET" not in line


def _put_state(client: Any, folder: str, entry: str) -> None:
    """A copy of tf1_adam under `folder`, its state file pointing at `entry`."""
    for file in (FIXTURES / "tf1_adam").iterdir():
        client.upload_file(str(file), BUCKET, f"{folder}/{file.name}")
    text = f'model_checkpoint_path: "{entry}"\nall_model_checkpoint_paths: "{entry}"\n'
    client.put_object(Bucket=BUCKET, Key=f"{folder}/checkpoint", Body=text.encode())


def test_state_entry_leaving_the_prefix_is_refused(s3: tuple[str, Traffic], s3_client: Any) -> None:
    """`../other/...` would read another prefix of the bucket: refused, and nothing there is fetched."""
    _put_state(s3_client, "escape/run", "../../tf2_keras3_adam/ckpt-1")
    s3[1].reset()
    line = _one_line_error(["inspect", f"s3://{BUCKET}/escape/run"])
    assert "points outside its directory" in line
    assert not [p for p in s3[1].requests if "tf2_keras3_adam" in p]


def test_absolute_state_entry_elsewhere_is_looked_up_in_the_folder(s3: tuple[str, Traffic], s3_client: Any) -> None:
    """A job that saved under another bucket: its entries' base names are found beside the state file."""
    prefix = next(p.name[: -len(".index")] for p in (FIXTURES / "tf1_adam").glob("*.index"))
    _put_state(s3_client, "moved/run", f"s3://other-bucket/jobs/run/{prefix}")
    s3[1].reset()
    data = json.loads(run_cli(["inspect", f"s3://{BUCKET}/moved/run", "--json"]).stdout)
    assert data["metadata"]["prefix"] == f"s3://{BUCKET}/moved/run/{prefix}"
    assert all(p.startswith(f"/{BUCKET}") for p in s3[1].requests)


_WRITE_BIG = """
import sys, numpy as np, tensorflow as tf
vs = {f"layer{i}": tf.Variable(np.full((256, 256), i, np.float32)) for i in range(24)}
step = tf.Variable(7, dtype=tf.int64)
manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step, **vs), sys.argv[1], max_to_keep=1)
manager.save()
"""


@pytest.fixture(scope="session")
def big(s3: tuple[str, Traffic], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 MiB TF2 checkpoint written by TensorFlow (24 variables of 256 KiB), uploaded to s3://fixtures/big/."""
    pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("big")
    env = {**child_env(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", _WRITE_BIG, str(folder)], check=True, env=env, timeout=300)
    client = boto3.client("s3", endpoint_url=s3[0])
    for file in folder.iterdir():
        client.upload_file(str(file), BUCKET, f"big/{file.name}")
    return folder


def _sent(s3: tuple[str, Traffic], folder: Path) -> dict[str, int]:
    return {f.name: s3[1].total_bytes(f"/{BUCKET}/big/{f.name}") for f in folder.iterdir()}


def test_listing_transfers_the_index_not_the_data(s3: tuple[str, Traffic], big: Path) -> None:
    """inspect reads the state file and index once each, and of the data shard the object graph (and the
    blocks of the step counter): not the weights."""
    from ckpt_tools.bundle import BundleReader
    from ckpt_tools.storage import BLOCK

    index = next(big.glob("*.index"))
    graph = BundleReader(index.with_suffix("")).entries["_CHECKPOINTABLE_OBJECT_GRAPH"].size
    s3[1].reset()
    report = json.loads(run_cli(["inspect", f"s3://{BUCKET}/big", "--json"]).stdout)
    assert report["step"] == 7 and len(report["variables"]) == 26  # 24 layers, step, save_counter
    sent = _sent(s3, big)
    data = next(name for name in sent if ".data-" in name)
    assert sent["checkpoint"] == (big / "checkpoint").stat().st_size
    assert sent[index.name] == index.stat().st_size
    assert sent[data] <= graph + 2 * BLOCK, sent
    assert sent[data] < (big / data).stat().st_size / 20


def test_validate_transfers_each_byte_once(s3: tuple[str, Traffic], big: Path) -> None:
    s3[1].reset()
    report = json.loads(run_cli(["validate", f"s3://{BUCKET}/big", "--json"], 1).stdout)  # no optimizer
    assert {c["name"]: c["status"] for c in report["artifacts"][0]["checks"]}["files"] == "pass"
    assert _sent(s3, big) == {f.name: f.stat().st_size for f in big.iterdir()}


def test_ls_lists_a_bucket_prefix_like_the_local_folder(s3: tuple[str, Traffic]) -> None:
    local = json.loads(run_cli(["ls", str(FIXTURES / "tf1_sharded"), "--json"]).stdout)
    remote = json.loads(run_cli(["ls", f"s3://{BUCKET}/tf1_sharded", "--json"]).stdout)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("path", "root", "prefix")} for r in rows]  # noqa: E731
    assert strip(remote["artifacts"]) == strip(local["artifacts"]) and remote["artifacts"]


HOSTILE = json.loads((FIXTURES / "hostile" / "expected.json").read_text())["cases"]


@pytest.mark.parametrize("case", HOSTILE, ids=[c["name"] for c in HOSTILE])
def test_scan_remote_finds_what_it_finds_locally(s3: tuple[str, Traffic], case: dict[str, Any]) -> None:
    """Every artifact of the hostile corpus scanned on S3: the same findings (rule, severity, where) and exit code
    as the local copy, which tests/test_scan.py checks against what loading it with TensorFlow/Keras does."""
    a, b = _same(str(FIXTURES / "hostile" / case["path"]), f"s3://{BUCKET}/hostile/{case['path']}", ["scan"])
    assert a["exit_code"] == b["exit_code"]
    assert _findings(a) == _findings(b)
    assert {f["rule"] for f in _findings(b)} >= {f["rule"] for f in case["findings"]}


def _findings(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k != "path"} for a in document["artifacts"] for f in a["findings"]]


def test_endpoint_from_fsspec_config(s3: tuple[str, Traffic], monkeypatch: pytest.MonkeyPatch) -> None:
    """FSSPEC_S3_ENDPOINT_URL (fsspec's configuration) works as well as botocore's AWS_ENDPOINT_URL."""
    import fsspec.config

    from ckpt_tools import storage

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3[0]})
    monkeypatch.setattr(storage, "_STORES", {})
    report = json.loads(run_cli(["inspect", f"s3://{BUCKET}/tf1_adam", "--json"]).stdout)
    assert report["format"] == "tf1-checkpoint"


def test_file_urls_are_local_paths() -> None:
    from ckpt_tools.storage import as_path

    assert as_path("file://" + str(FIXTURES / "tf1_adam")) == FIXTURES / "tf1_adam"
    a = json.loads(run_cli(["inspect", "file://" + str(FIXTURES / "tf1_adam"), "--json"]).stdout)
    b = json.loads(run_cli(["inspect", str(FIXTURES / "tf1_adam"), "--json"]).stdout)
    assert a["variables"] == b["variables"]


def test_remote_path_operations() -> None:
    from ckpt_tools.storage import as_path, scrub, suffixed

    path = as_path("s3://bucket/run/model.ckpt-5")
    assert str(path) == "s3://bucket/run/model.ckpt-5" and path.name == "model.ckpt-5"
    assert str(path.parent) == "s3://bucket/run" and str(path.parent.parent.parent) == "s3://bucket"
    assert str(suffixed(path, ".index")) == "s3://bucket/run/model.ckpt-5.index"
    assert str(path.parent / "checkpoint") == "s3://bucket/run/checkpoint"
    assert path.with_name("x.h5").suffix == ".h5" and path.resolve() == path and not path.is_symlink()
    assert (path / "../../b/./c").resolve() == path.parent.parent / "b" / "c"
    assert scrub("https://u:p@h/x?sig=1 and gs://b/k#frag") == "https://h/x and gs://b/k"
    assert os.fspath(as_path("plain/dir")) == "plain/dir"


# ------------------------------------------------------------------ misbehaving servers, bad URLs (red team)
def test_a_server_ignoring_range_is_read_once_into_the_spool(web: tuple[str, Traffic], big: Path) -> None:
    """`python -m http.server` answers every GET with the whole file: each file is fetched once, kept, and the
    artifact reads exactly as it does locally."""
    base, traffic = web
    keras = "fixtures/keras3_adam/model.keras"
    _same(str(FIXTURES.parent / keras), f"{base}/_norange/{keras}", ["inspect"])
    served = Path(traffic.root) / "big"
    shutil.copytree(big, served, dirs_exist_ok=True)
    traffic.reset()
    local = run_cli(["validate", str(big), "--json"], None)
    remote = run_cli(["validate", f"{base}/_norange/big", "--json"], local.exit_code)
    shown = local.stdout.replace(str(big), "ROOT"), remote.stdout.replace(f"{base}/_norange/big", "ROOT")
    assert json.loads(shown[0])["artifacts"] == json.loads(shown[1])["artifacts"]
    (data,) = served.glob("*.data-*")
    assert traffic.requests[f"/big/{data.name}"] == 1, traffic.requests
    assert traffic.bytes[f"/big/{data.name}"] == data.stat().st_size


def test_a_server_ignoring_range_past_the_spool_is_one_line(
    web: tuple[str, Traffic], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckpt_tools import storage

    monkeypatch.setattr(storage, "SPOOL_BYTES", 1024)
    line = _one_line_error(["inspect", f"{web[0]}/_norange/fixtures/keras3_adam/model.keras"])
    assert "ignores Range" in line


def test_a_range_answered_with_more_bytes_reads_only_the_range(web: tuple[str, Traffic]) -> None:
    """A 206 without Content-Length that goes on to the end of the file: only the asked bytes are taken."""
    local = str(FIXTURES / "keras3_adam" / "model.keras")
    _same(local, f"{web[0]}/_overlong/fixtures/keras3_adam/model.keras", ["inspect"])
    _same(local, f"{web[0]}/_overlong/fixtures/keras3_adam/model.keras", ["validate"])


def test_a_range_answered_from_another_offset_is_refused(web: tuple[str, Traffic]) -> None:
    line = _one_line_error(["inspect", f"{web[0]}/_shifted/fixtures/keras3_adam/model.keras"])
    assert "answered bytes" in line


def test_a_stalled_server_times_out_in_one_line(web: tuple[str, Traffic], monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_tools import storage

    monkeypatch.setenv("CKPT_REMOTE_TIMEOUT", "0.5")
    monkeypatch.setattr(storage, "_STORES", {})
    monkeypatch.setattr(storage, "BACKOFF", 0.0)
    started = time.monotonic()
    line = _one_line_error(["inspect", f"{web[0]}/_stall/fixtures/keras3_adam/model.keras"])
    assert f"after {storage.RETRIES} attempts" in line and "no such file" not in line
    assert time.monotonic() - started < 25  # bounded by the timeout, far below the server's 30 s stall


def test_an_unreachable_host_is_not_called_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_tools import storage

    monkeypatch.setattr(storage, "BACKOFF", 0.0)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _one_line_error(["inspect", f"http://127.0.0.1:{port}/run/model.keras"])
    assert "no such file" not in line and f"after {storage.RETRIES} attempts" in line


@pytest.mark.parametrize("url", ["s3://fixtures/other/../tf1_adam", "s3://fixtures/./tf1_adam", "HTTP/%2e%2e/x"])
def test_dot_components_in_a_url_are_refused(web: tuple[str, Traffic], url: str) -> None:
    """Object stores take `..` literally and web clients fold it: a URL holding one is ambiguous."""
    url = url.replace("HTTP", web[0] + "/fixtures")
    for command in ("inspect", "diff", "ls", "scan"):
        line = _one_line_error([command, url, *([url] if command == "diff" else [])])
        assert "'.' or '..'" in line, line
    result = run_cli(["validate", url, "--json"], 2)  # validate reports it as the artifact's verdict
    assert json.loads(result.stdout)["artifacts"][0]["verdict"] == "unreadable" and "'.' or '..'" in result.stdout


def test_a_state_entry_on_another_protocol_is_looked_up_in_the_folder(s3: tuple[str, Traffic], s3_client: Any) -> None:
    """A job that saved to gs:// (no gcsfs installed here): the base name is found beside the state file."""
    prefix = next(p.name[: -len(".index")] for p in (FIXTURES / "tf1_adam").glob("*.index"))
    _put_state(s3_client, "regs/run", f"gs://elsewhere/jobs/run/{prefix}")
    data = json.loads(run_cli(["inspect", f"s3://{BUCKET}/regs/run", "--json"]).stdout)
    assert data["metadata"]["prefix"] == f"s3://{BUCKET}/regs/run/{prefix}"


def test_ls_never_shows_credentials(web: tuple[str, Traffic]) -> None:
    url = web[0].replace("http://", "http://alice:hunter2@") + "/fixtures/tf1_adam/?X-Amz-Signature=SECRET"
    for args in (["ls", url], ["ls", url, "--json"]):
        result = run_cli(args, None)
        text = result.output + result.stderr
        assert "hunter2" not in text and "SECRET" not in text and "alice" not in text, text
        assert "tf1_adam" in text


@pytest.mark.parametrize(
    "text",
    ["https://u:p@ss@host/x?sig=1", "s3://AKIA:se@cr@t@bucket/k", "see http://a@b@c/d#frag and gs://x:y@z/w"],
)
def test_scrub_removes_every_credential(text: str) -> None:
    from ckpt_tools.storage import scrub

    out = scrub(text)
    assert "@" not in out and "sig" not in out and "frag" not in out and ":p" not in out, out


def test_ranges_are_pinned_to_the_version_first_seen(web: tuple[str, Traffic]) -> None:
    """A strong ETag from the first look goes with every ranged GET as If-Match: the same version throughout."""
    local = str(FIXTURES / "keras3_adam" / "model.keras")
    seen = WEB_HANDLER[0].if_match
    seen.clear()
    _same(local, f"{web[0]}/_etag/fixtures/keras3_adam/model.keras", ["validate"])
    assert seen and set(seen) == {'"v1"'}, seen


def test_an_object_replaced_while_read_is_one_line(web: tuple[str, Traffic]) -> None:
    line = _one_line_error(["inspect", f"{web[0]}/_etagflip/fixtures/keras3_adam/model.keras"])
    assert "changed while being read" in line


def test_an_s3_object_replaced_while_read_is_one_line(
    s3: tuple[str, Traffic], s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranged GetObjects carry IfMatch with the ETag of the first look: a new version is refused, not mixed."""
    from ckpt_tools import storage

    local = FIXTURES / "keras3_adam" / "model.keras"
    s3_client.upload_file(str(local), BUCKET, "versions/model.keras")
    url = f"s3://{BUCKET}/versions/model.keras"
    _same(str(local), url, ["validate"])  # the pinned reads themselves work
    storage.forget()
    remote = storage.as_path(url)
    assert remote.stat().st_size == local.stat().st_size  # the first look records the ETag
    changed = bytearray(local.read_bytes())
    changed[100] ^= 0xFF  # same size, other bytes: another version
    s3_client.put_object(Bucket=BUCKET, Key="versions/model.keras", Body=bytes(changed))
    line = _one_line_error(["inspect", url])
    assert "changed while being read" in line
