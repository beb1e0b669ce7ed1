"""Hostile HDF5 / .keras inputs, round 2 (issue #14): what the malformed-corpus harness cannot check by exit codes.

Every file is written here by h5py, zipfile or Keras; expected values come from h5py/numpy/Keras themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, UnsafeInputError
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.readers import keras2_h5, keras_archive, keras_h5
from ckpt_tools.readers.confine import FOLLOW_SYMLINKS

from .conftest import FIXTURES, run_cli, run_json

K3 = FIXTURES / "keras3_adam" / "model.weights.h5"
K2 = FIXTURES / "keras2_adam" / "model.h5"
KA = FIXTURES / "keras3_adam" / "model.keras"


@pytest.fixture(autouse=True)
def _no_following() -> Any:
    """`--follow-symlinks` sets a context variable that outlives an in-process CLI call: reset it per test."""
    token = FOLLOW_SYMLINKS.set(False)
    yield
    FOLLOW_SYMLINKS.reset(token)


def one_error_line(result: Any) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error: "), result.output
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    return str(lines[0])


def keras3_copy(tmp_path: Path, name: str = "model.weights.h5") -> Path:
    path = tmp_path / name
    shutil.copy(K3, path)
    return path


# ------------------------------------------------------------------------------------------------ walking
def test_walk_matches_h5py_visit_order_and_objects(tmp_path: Path) -> None:
    """On a benign file the iterative walk finds exactly what h5py's (recursive) visit finds, in its order."""
    seen: list[str] = []
    with h5py.File(K2, "r") as f:
        f.visit(seen.append)
        walked = [h5c.decode(o.raw) for o in h5c.walk(f, "x")]
    assert walked == seen


@pytest.mark.parametrize("depth", [h5c.MAX_DEPTH, h5c.MAX_DEPTH + 1])
def test_depth_limit_is_checked_before_descending(tmp_path: Path, depth: int) -> None:
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        f.create_group("/".join(["deep"] * depth))  # the root's child is level 1
    if depth > h5c.MAX_DEPTH:
        line = one_error_line(run_cli(["inspect", path], expect=2))
        assert f"nested deeper than {h5c.MAX_DEPTH}" in line and str(path) in line
    else:
        run_cli(["inspect", path])


def test_deeply_nested_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """20 000 levels crashed libhdf5's recursive visit (SIGSEGV): in a child process, to survive a crash."""
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+", libver="latest") as f:
        gid = f["layers"].id
        for _ in range(20_000):
            gid = h5py.h5g.create(gid, b"g")
    code = f"from ckpt_tools.cli import main; main(['validate', '--json', {str(path)!r}])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "nested deeper" in proc.stdout


# ------------------------------------------------------------------------------------------------ chunk decoding
FILTERS = [
    {"compression": "gzip"},
    {"compression": "gzip", "shuffle": True},
    {"compression": "gzip", "shuffle": True, "fletcher32": True},
    {"compression": "lzf"},
    {"compression": "lzf", "shuffle": True, "fletcher32": True},
    {"fletcher32": True},
    {"shuffle": True},
]


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u1", "bool", "S3", "bfloat16"])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "+".join(sorted(f)))
def test_own_chunk_decoding_equals_h5py(tmp_path: Path, dtype: str, filters: dict[str, Any]) -> None:
    """Edge chunks, unallocated chunks (fill value), a chunk stored unfiltered: read, streamed and verified the
    same as h5py reads them."""
    rng = np.random.RandomState(7)
    shape, chunks = (37, 5, 3), (8, 2, 3)
    if dtype == "bfloat16":
        data = rng.randn(*shape).astype(ml_dtypes.bfloat16).view("V2")
    elif dtype == "S3":
        data = np.array([b"ab", b"xyz", b""] * 185)[: np.prod(shape)].reshape(shape)
    else:
        data = (rng.randn(*shape) * 50).astype(dtype)
    data[:8] = data[:8] if dtype in ("S3", "bfloat16") else np.zeros((), dtype)  # compressible rows
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        ds = f.create_dataset(
            "layers/dense/vars/0",
            shape=shape,
            dtype=data.dtype,
            chunks=chunks,
            **filters,
            fillvalue=data.reshape(-1)[1],
        )
        ds[:24] = data[:24]  # rows 24.. stay unallocated: fill value
        if dtype == "bfloat16":
            ds.attrs["dtype"] = "bfloat16"
    with h5py.File(path, "r") as f:
        expected = f["layers/dense/vars/0"][()]
    vmap = keras_h5.open(path)
    var = next(v for v in vmap.values() if v.key == "layers/dense/vars/0")
    value = var.read()
    streamed = np.concatenate(list(var.iter_chunks(7))) if var.streamable else value.reshape(-1)
    if dtype == "bfloat16":
        expected = expected.view(ml_dtypes.bfloat16)
    if dtype == "S3":
        assert value.reshape(-1).tolist() == expected.reshape(-1).tolist()
        return
    np.testing.assert_array_equal(value, expected)
    np.testing.assert_array_equal(streamed, expected.reshape(-1))
    assert h5c.verify_file(path).endswith("read in full")


def test_fletcher32_damage_is_detected(tmp_path: Path) -> None:
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        ds = f.create_dataset(
            "layers/dense/vars/0", data=np.arange(32, dtype="f4").reshape(4, 8), chunks=(4, 8), fletcher32=True
        )
        mask, raw = ds.id.read_direct_chunk((0, 0))
        damaged = bytearray(raw)
        damaged[5] ^= 0x40
        ds.id.write_direct_chunk((0, 0), bytes(damaged), mask)
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f["layers/dense/vars/0"][()]  # h5py agrees that the chunk is damaged
    line = one_error_line(run_cli(["inspect", "--stats", path], expect=2))
    assert "fletcher-32" in line.lower() and str(path) in line


def bomb_file(tmp_path: Path, stream: bytes, chunk: int = 1024, **create: Any) -> Path:
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        ds = f.create_dataset("layers/dense/vars/0", dtype="f4", chunks=(chunk,), compression="gzip", **create)
        ds.id.write_direct_chunk((0,), stream)
    return path


def test_chunk_storing_more_than_its_size_is_refused_before_reading(tmp_path: Path) -> None:
    path = bomb_file(tmp_path, zlib.compress(bytes(32 << 20), 9), shape=(1024,))
    line = one_error_line(run_cli(["inspect", "--stats", path], expect=2))
    assert "a chunk stores" in line and str(path) in line


def test_chunk_inflating_past_its_size_is_stopped(tmp_path: Path) -> None:
    """A stream within the stored-size slack that inflates on: decoding stops at the chunk's size."""
    stream = zlib.compress(bytes(8 << 20), 9)[:4000]
    path = bomb_file(tmp_path, stream, shape=(1024,))
    line = one_error_line(run_cli(["diff", path, path], expect=2))
    assert "inflates past its chunk size" in line


def test_counter_bomb_never_inflates(tmp_path: Path) -> None:
    """Keras-2's iteration counter as a (1,) dataset whose 256-byte chunk holds 8 MB of deflate: refused without
    inflating it (h5py itself would allocate the whole stream)."""
    path = tmp_path / "model.h5"
    shutil.copy(K2, path)
    with h5py.File(path, "r+") as f:
        del f["optimizer_weights/iteration:0"]
        ds = f.create_dataset(
            "optimizer_weights/iteration:0", shape=(1,), maxshape=(None,), dtype="i8", chunks=(32,), compression="gzip"
        )
        ds.id.write_direct_chunk((0,), zlib.compress(bytes(8 << 20), 9))
    with pytest.raises(CorruptCheckpointError, match="a chunk stores"):
        keras2_h5.open(path)


def test_counter_in_a_benign_compressed_chunk_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    shutil.copy(K2, path)
    with h5py.File(path, "r+") as f:
        del f["optimizer_weights/iteration:0"]
        f.create_dataset(
            "optimizer_weights/iteration:0",
            data=[123456],
            maxshape=(None,),
            chunks=(32,),
            dtype="i8",
            compression="gzip",
        )
    assert keras2_h5.open(path).step == 123456


def test_large_compressed_dataset_streams_but_is_not_read_whole(tmp_path: Path, monkeypatch: Any) -> None:
    """Past MAX_INFLATED_READ a compressed tensor is refused for whole reads; diff and --stats stream it."""
    monkeypatch.setattr(h5c, "MAX_INFLATED_READ", 1 << 16)
    path = keras3_copy(tmp_path)
    data = np.arange(64 * 1024, dtype="f4").reshape(64, 1024)
    data[3, 7] = np.nan
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", data=data, chunks=(8, 128), compression="gzip", shuffle=True)
    var = next(v for v in keras_h5.open(path).values() if v.key == "layers/dense/vars/0")
    with pytest.raises(CorruptCheckpointError, match="more than ckpt-tools inflates in one read"):
        var.read()
    rows = run_json(["inspect", "--stats", path])["variables"]
    stats = next(r["stats"] for r in rows if r["key"] == "layers/dense/vars/0")
    finite = data[np.isfinite(data)]
    assert stats["nan"] == 1 and stats["max"] == float(finite.max())
    assert stats["mean"] == pytest.approx(float(finite.astype(np.float64).mean()))
    run_cli(["diff", path, path])


def test_unsupported_filter_is_one_line(tmp_path: Path) -> None:
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", data=np.ones((4, 8), "f4"), scaleoffset=4, chunks=(4, 8))
    line = one_error_line(run_cli(["inspect", path], expect=2))
    assert "scaleoffset" in line


# ------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("kind", ["objref", "compound", "enum"])
def test_unreadable_dtype_diff_against_itself_claims_no_difference(tmp_path: Path, kind: str) -> None:
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        if kind == "objref":
            f.create_dataset("layers/dense/vars/0", data=np.array([f["layers"].ref] * 4, dtype=h5py.ref_dtype))
        elif kind == "compound":
            f.create_dataset("layers/dense/vars/0", data=np.zeros(3, dtype=[("a", "f4"), ("b", "i2")]))
        else:
            f.create_dataset("layers/dense/vars/0", data=np.zeros(3, "i1"), dtype=h5py.enum_dtype({"a": 0, "b": 1}))
    result = run_cli(["diff", path, path], expect=2)
    line = one_error_line(result)
    assert "unsupported HDF5 dtype" in line and str(path) in line
    assert "differ" not in result.stdout.lower()


def test_bool_weights_are_still_read(tmp_path: Path) -> None:
    """h5py stores numpy bool as an HDF5 enum: that one enum is data, not an unsupported type."""
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        f.create_dataset("layers/dense/vars/2", data=np.array([True, False, True]))
    var = next(v for v in keras_h5.open(path).values() if v.key == "layers/dense/vars/2")
    assert var.dtype == "bool" and var.read().tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------------ stats
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_stats_of_ml_dtypes_count_nan_and_inf_like_numpy(tmp_path: Path, dtype: str) -> None:
    """Keras 3's opaque + `dtype` attribute layout, NaN and Inf written into it; --stats must agree with numpy
    on the float32 values."""
    np_dtype = np.dtype(getattr(ml_dtypes, dtype))
    values = np.linspace(-3, 3, 40, dtype=np.float32)
    values[[1, 5, 9]] = np.nan
    if dtype != "float8_e4m3fn":  # e4m3fn has no Inf
        values[[2, 11]] = [np.inf, -np.inf]
    stored = values.astype(np_dtype)
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        ds = f.create_dataset("layers/dense/vars/0", data=stored.view(f"V{np_dtype.itemsize}").reshape(5, 8))
        ds.attrs["dtype"] = dtype
    rows = run_json(["inspect", "--stats", path])["variables"]
    stats = next(r["stats"] for r in rows if r["key"] == "layers/dense/vars/0")
    wide = stored.astype(np.float32)
    finite = wide[np.isfinite(wide)]
    assert stats["nan"] == int(np.isnan(wide).sum()) == 3
    assert stats["inf"] == int(np.isinf(wide).sum())
    assert stats["min"] == float(finite.min()) and stats["max"] == float(finite.max())
    assert stats["mean"] == pytest.approx(float(finite.astype(np.float64).mean()))


# ------------------------------------------------------------------------------------------------ JSON
def test_json_limits() -> None:
    assert h5c.parse_json(b'{"a": [1, 2, {"b": null}]}', "x") == {"a": [1, 2, {"b": None}]}
    with pytest.raises(UnsafeInputError, match="values"):
        h5c.parse_json(b"[" + b"[]," * h5c.MAX_JSON_VALUES + b"[]]", "x")
    depth = h5c.MAX_JSON_DEPTH + 1
    with pytest.raises(h5c.JsonError, match="nested deeper"):
        h5c.parse_json("[" * depth + "]" * depth, "x")
    with pytest.raises(h5c.JsonError, match="nested too deeply"):
        h5c.parse_json("[" * 100_000, "x")


def write_keras(path: Path, replace: dict[str, bytes], methods: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(KA) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**members, **replace}.items():
            zf.writestr(name, data, compress_type=(methods or {}).get(name, zipfile.ZIP_STORED))
    return path


def test_expanding_config_is_refused_and_deep_config_is_a_warning(tmp_path: Path) -> None:
    bomb = write_keras(
        tmp_path / "a.keras",
        {"config.json": b'{"a":0' + b',"a":0' * 1_100_000 + b"}"},
        {"config.json": zipfile.ZIP_DEFLATED},
    )
    line = one_error_line(run_cli(["inspect", bomb], expect=2))
    assert "config.json" in line and "limit" in line
    config = json.loads(zipfile.ZipFile(KA).read("config.json"))
    config["compile_config"]["optimizer"]["config"]["x"] = json.loads("[" * 900 + "]" * 900)
    deep = write_keras(tmp_path / "b.keras", {"config.json": json.dumps(config).encode()})
    report = run_json(["inspect", deep])
    assert any("config.json unreadable (nested deeper" in w for w in report["metadata"]["warnings"])


# ------------------------------------------------------------------------------------------------ zip
@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_zip_methods_other_than_stored_and_deflate(tmp_path: Path, method: int) -> None:
    path = write_keras(tmp_path / "m.keras", {}, {"config.json": method})
    assert zipfile.ZipFile(path).read("config.json")  # Python itself reads it
    line = one_error_line(run_cli(["inspect", path], expect=2))
    assert "ckpt-tools reads stored and deflate members only" in line and str(path) in line
    validated = run_cli(["validate", path], expect=2)
    assert "compressed with" in validated.stdout


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "d.keras", {"assets/blob": bytes(1 << 20)}, {"assets/blob": zipfile.ZIP_DEFLATED})
    raw = path.read_bytes()
    end = raw.rfind(b"PK\x05\x06")
    count, size, start = np.frombuffer(raw[end + 10 : end + 20], dtype="<u2,<u4,<u4")[0].tolist()
    directory = raw[start : start + size]
    entry = directory[directory.rfind(b"PK\x01\x02") :]
    twin = entry[:46] + b"assets/blub" + entry[46 + 11 :]
    tail = bytearray(raw[end:])
    tail[8:20] = np.array([(count + 1, count + 1, size + len(twin), start)], dtype="<u2,<u2,<u4,<u4").tobytes()
    path.write_bytes(raw[:start] + directory + twin + bytes(tail))
    assert len(zipfile.ZipFile(path).infolist()) == count + 1
    line = one_error_line(run_cli(["inspect", path], expect=2))
    assert "overlap" in line and "assets/blob" in line


# ------------------------------------------------------------------------------------------------ Keras-2 names
def test_keras2_underscore_runs_cost_linear_time_and_still_tie(tmp_path: Path, no_hang: None) -> None:
    """Keras 3's legacy .h5 names slots `<optimizer>/<weight path with _>_<slot>`: the tie is found, and names
    of 4000 underscores cost no more than linear time."""
    path = tmp_path / "model.h5"
    shutil.copy(K2, path)
    with h5py.File(path, "r+") as f:
        f.create_dataset("optimizer_weights/adam/dense_kernel_momentum", data=np.zeros((4, 8), "f4"))
        group = f.create_group("optimizer_weights/u")
        for n in range(200):
            group.create_dataset("_" * 4000 + str(n), data=np.zeros(3, "f4"))
    vmap = keras2_h5.open(path)
    tied = vmap["optimizer_weights/adam/dense_kernel_momentum"]
    assert (tied.slot_of, tied.slot) == ("dense/kernel", "momentum")


def test_keras2_layer_names_duplicates_and_limit(tmp_path: Path, no_hang: None) -> None:
    path = tmp_path / "model.h5"
    shutil.copy(K2, path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights"]
        del group.attrs["layer_names"]
        for index in range(10):
            group.attrs[f"layer_names{index}"] = np.array([b"dense", b"dense_1"] + [b"nope"] * 9_000, dtype="S")
    vmap = keras2_h5.open(path)
    assert {v.name for v in vmap.values() if v.role == "weight"} >= {"dense/kernel", "dense_1/bias"}
    assert any("1 layers named in layer_names have no group" in w for w in vmap.metadata["warnings"])
    with h5py.File(path, "r+") as f:
        f["model_weights"].attrs["layer_names10"] = np.array([b"x"] * 60_000, dtype="S")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5c, "MAX_LIST_ENTRIES", 100_000)
        with pytest.raises(CorruptCheckpointError, match="more than 100000 names"):
            keras2_h5.open(path)


# ------------------------------------------------------------------------------------------------ directories
@pytest.fixture(scope="module")
def keras_saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model saved by Keras 3 both ways: `zipped=False` (a directory) and as a .keras file."""
    pytest.importorskip("keras")
    out = tmp_path_factory.mktemp("saved")
    code = (
        "import keras, numpy as np\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(3)])\n"
        "m.compile(optimizer='adam', loss='mse')\n"
        "m.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=2, verbose=0)\n"
        f"m.save({str(out / 'unzipped')!r}, zipped=False)\n"
        f"m.save({str(out / 'zipped.keras')!r})\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_unzipped_keras_directory_is_a_valid_artifact(keras_saved: Path) -> None:
    directory, zipped = keras_saved / "unzipped", keras_saved / "zipped.keras"
    assert {"config.json", "metadata.json", "model.weights.h5"} <= {p.name for p in directory.iterdir()}
    assert "1 valid, 0 invalid" in run_cli(["validate", directory]).stdout
    run_cli(["diff", directory, zipped])
    run_cli(["diff", directory, directory])
    listing = run_json(["inspect", directory])
    assert listing["format"] == "keras-archive" and listing["step"] == 2


def test_symlink_out_of_a_directory_artifact(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(K3, outside / "w.h5")
    directory = tmp_path / "model"
    directory.mkdir()
    with zipfile.ZipFile(KA) as zf:
        for name in ("config.json", "metadata.json"):
            (directory / name).write_bytes(zf.read(name))
    (directory / "model.weights.h5").symlink_to(outside / "w.h5")
    backup = tmp_path / "backup"
    shutil.copytree(FIXTURES / "backup_keras3", backup)
    (backup / "latest.weights.h5").unlink()
    (backup / "latest.weights.h5").symlink_to(outside / "w.h5")
    for args in (["inspect", directory], ["diff", directory, directory], ["validate", directory], ["inspect", backup]):
        result = run_cli(args, expect=2)
        assert "symbolic link" in (result.stderr + result.stdout)
    run_cli(["inspect", "--follow-symlinks", directory])
    run_cli(["validate", "--follow-symlinks", directory])
    run_cli(["inspect", "--follow-symlinks", backup])


def test_a_file_named_by_the_user_may_be_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.weights.h5"
    link.symlink_to(K3)
    run_cli(["inspect", link])


# ------------------------------------------------------------------------------------------------ locks, permissions
def test_file_being_written_by_another_process_is_refused(tmp_path: Path) -> None:
    path = keras3_copy(tmp_path)
    code = "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'r+')\nprint('open', flush=True)\ntime.sleep(60)\n"
    writer = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        line = one_error_line(run_cli(["inspect", path], expect=2))
        assert "write lock" in line and str(path) in line
    finally:
        writer.kill()
        writer.wait()
    run_cli(["inspect", path])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_member_of_a_directory_artifact(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    with zipfile.ZipFile(KA) as zf:
        for name in zf.namelist():
            (directory / name).write_bytes(zf.read(name))
    (directory / "model.weights.h5").chmod(0)
    try:
        assert "permission denied" in one_error_line(run_cli(["inspect", directory], expect=2))
    finally:
        (directory / "model.weights.h5").chmod(0o644)


def test_every_reader_error_is_a_ckpt_tools_error(tmp_path: Path) -> None:
    """Garbage in the places the readers parse becomes CkptToolsError, never a third-party exception."""
    path = keras3_copy(tmp_path)
    with h5py.File(path, "r+") as f:
        f["vars"].attrs["name"] = np.zeros((3, 3), "f4")
        f.attrs.create("layer_names", data=np.array([1, 2, 3]))
    keras_h5.open(path)
    archive = write_keras(tmp_path / "x.keras", {"model.weights.h5": b"\x89HDF\r\n\x1a\n" + os.urandom(3000)})
    with pytest.raises(CkptToolsError):
        keras_archive.open(archive)
