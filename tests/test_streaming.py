"""One-pass `validate`, streamed `inspect --stats` and HDF5 streaming, against what TensorFlow, Keras, h5py and
numpy report for the same bytes; `--jobs` output against one job's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.bundle import BundleReader
from ckpt_tools.bundle.shards import CHUNK, PAGE, aligned_empty
from ckpt_tools.inspection import tensor_stats, variable_stats
from ckpt_tools.parallel import MAX_BATCH, ordered_batches
from ckpt_tools.readers import keras_h5
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.validation.checks import all_finite, count_nonfinite, required_checks, validate
from ckpt_tools.validation.run import validate_paths

from .conftest import FIXTURES, ROOT, child_env, needs_tf

TF_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
BLOCK = CHUNK // 4  # float32 elements per verification block
BIG = 3 * BLOCK + 1000  # a tensor of three and a bit blocks

# A TF2 object checkpoint (tf.train.CheckpointManager, so with a state file) with one large float32 tensor, a
# float16 one and a small one; clean/ is all finite, nan/ has NaN on both sides of the first block boundary and
# an Inf as the very last element. TF writes valid CRC32Cs for both.
BUNDLE_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
out, big, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(7)
base = rng.standard_normal(big).astype(np.float32)
for name in ("clean", "nan"):
    values = base.copy()
    if name == "nan":
        values[block - 1] = np.nan
        values[block] = np.nan
        values[-1] = np.inf
    ckpt = tf.train.Checkpoint(
        big=tf.Variable(values),
        half=tf.Variable(rng.standard_normal((300, 7)).astype(np.float16)),
        small=tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4)),
        steps=tf.Variable(np.arange(5, dtype=np.int64)),
    )
    tf.train.CheckpointManager(ckpt, f"{out}/{name}", max_to_keep=3).save()
np.save(f"{out}/values.npy", base)
"""

KERAS_SCRIPT = r"""
import sys
import numpy as np
import keras
out = sys.argv[1]
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2048), keras.layers.Dense(8)])
model.compile(optimizer="adam", loss="mse")
model.fit(np.ones((4, 64), np.float32), np.ones((4, 8), np.float32), epochs=1, verbose=0)
model.save(f"{out}/model.keras")
model.save_weights(f"{out}/model.weights.h5")
kernel = model.layers[0].kernel.numpy()
np.save(f"{out}/kernel.npy", kernel)
kernel[5, 7] = np.nan
model.layers[0].kernel.assign(kernel)
model.save(f"{out}/nan.keras")
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("bundles")
    subprocess.run(
        [sys.executable, "-c", BUNDLE_SCRIPT, str(out), str(BIG), str(BLOCK)], check=True, env=TF_ENV, timeout=600
    )
    return out


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("keras")
    out = tmp_path_factory.mktemp("keras")
    subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(out)], check=True, env=TF_ENV, timeout=600)
    return out


def _prefix(folder: Path) -> Path:
    return next(folder.glob("ckpt-*.index")).with_suffix("")


def _key_of(prefix: Path, name: str) -> str:
    with open_checkpoint(prefix) as vmap:
        return next(v.key for v in vmap.values() if v.name == name)


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# ------------------------------------------------------------------------------------------------ bundles
@needs_tf
def test_nan_at_a_block_boundary_and_inf_at_the_end_are_counted(bundles: Path) -> None:
    report = validate(_prefix(bundles / "nan"))
    assert report.check("files").status == "pass"
    finite = report.check("finite")
    assert finite.status == "fail"
    assert "big (2 NaN, 1 Inf)" in finite.reason
    clean = validate(_prefix(bundles / "clean"), allow_weights_only=True)
    assert clean.ok, clean.problems()
    assert clean.check("finite").reason == "3 float tensors checked, all finite"


@needs_tf
def test_finite_check_alone_streams_the_same_counts(bundles: Path) -> None:
    report = validate(_prefix(bundles / "nan"), require="finite")
    assert "big (2 NaN, 1 Inf)" in report.check("finite").reason


@needs_tf
def test_flipped_byte_in_a_large_tensor_fails_files_and_finite(bundles: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(bundles / "clean", folder)
    prefix = _prefix(folder)
    key = _key_of(prefix, "big")
    entry = BundleReader(prefix).entries[key]
    data = Path(f"{prefix}.data-00000-of-00001")
    with data.open("r+b") as fh:  # a byte in the third block of the tensor
        fh.seek(entry.offset + 2 * CHUNK + 12345)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))
    report = validate(prefix)
    assert report.check("files").status == "fail"
    assert "CRC32C mismatch" in report.check("files").reason and repr(key) in report.check("files").reason
    finite = report.check("finite")
    assert finite.status == "fail" and finite.reason.startswith("cannot read 1 tensor to check them")
    assert key in finite.reason


@needs_tf
def test_validate_reads_each_byte_once_in_bounded_memory(bundles: Path) -> None:
    prefix = _prefix(bundles / "clean")
    data = Path(f"{prefix}.data-00000-of-00001").stat().st_size
    report = validate(prefix, require="files,finite")  # warm up: imports, page cache
    assert report.ok, report.problems()
    before = _rchar()
    tracemalloc.start()
    try:
        report = validate(prefix, require="files,finite")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    read = _rchar() - before
    assert report.ok
    assert data <= read < 1.2 * data + (1 << 20), (read, data)  # one pass (the index and state file are small)
    assert peak < CHUNK + (8 << 20), peak  # one 8 MiB block and its temporaries, never the 24 MiB tensor


@needs_tf
def test_streamed_stats_equal_numpy_on_the_whole_tensor(bundles: Path) -> None:
    values = np.load(bundles / "values.npy")
    prefix = _prefix(bundles / "nan")
    with open_checkpoint(prefix) as vmap:
        big = next(v for v in vmap.values() if v.name == "big")
        half = next(v for v in vmap.values() if v.name == "half")
        stats = variable_stats(big)
        whole = big.read()
        half_stats = variable_stats(half)
        half_whole = half.read().astype(np.float64)
    finite = whole[np.isfinite(whole)]
    assert (stats.nan, stats.inf) == (2, 1)
    assert stats.min == float(finite.min()) and stats.max == float(finite.max())
    assert stats.mean == pytest.approx(float(finite.astype(np.float64).mean()), rel=1e-12)
    np.testing.assert_array_equal(np.delete(whole[:-1], [BLOCK - 1, BLOCK]), np.delete(values[:-1], [BLOCK - 1, BLOCK]))
    assert (half_stats.min, half_stats.max) == (half_whole.min(), half_whole.max())
    assert half_stats.mean == pytest.approx(half_whole.mean(), rel=1e-12)
    assert stats == tensor_stats(whole)


# ------------------------------------------------------------------------------------------------ small floats
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn])
def test_bit_test_for_small_floats_agrees_with_isfinite_on_every_pattern(dtype: Any) -> None:
    width = np.dtype(dtype).itemsize
    patterns = np.arange(1 << (8 * width), dtype=np.uint16 if width == 2 else np.uint8).view(dtype)
    widened = patterns.astype(np.float32)
    expected = np.isfinite(widened)
    assert not expected.all()
    for value, finite in zip(patterns.tolist(), expected.tolist(), strict=True):
        one = np.array([value], dtype=dtype)
        assert all_finite(one) == finite
    nan, inf = count_nonfinite(patterns)
    assert (nan, inf) == (int(np.isnan(widened).sum()), int(np.isinf(widened).sum()))


def test_aligned_buffers_start_on_a_page() -> None:
    for size in (1, PAGE, 3 * PAGE + 5, CHUNK):
        buffer = aligned_empty(size)
        assert buffer.ctypes.data % PAGE == 0 and buffer.size == size and buffer.flags.writeable


# ------------------------------------------------------------------------------------------------ HDF5
def _h5_cases() -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
    rng = np.random.default_rng(3)
    matrix = (rng.standard_normal((333, 71)) * 10).astype(np.float32)
    yield "contiguous", {}, matrix
    yield "big-endian", {}, matrix.astype(">f4")
    yield "float64", {}, matrix.astype(np.float64)
    yield "int64", {}, (matrix * 100).astype(np.int64)
    yield "chunked", {"chunks": (50, 20)}, matrix
    yield "gzip-shuffle", {"chunks": (64, 32), "compression": "gzip", "shuffle": True}, matrix
    yield "lzf-fletcher", {"chunks": (40, 71), "compression": "lzf", "fletcher32": True}, matrix.astype(">f8")
    yield "scalar", {}, np.float32(2.5)


@pytest.mark.parametrize("elements", [7, 1000, 1 << 20])
def test_hdf5_streamed_values_equal_h5py(tmp_path: Path, elements: int) -> None:
    from .test_hostile_h5 import keras3_copy

    path = keras3_copy(tmp_path)
    cases = list(_h5_cases())
    with h5py.File(path, "r+") as f:
        group = f["layers/dense/vars"]
        for name, options, data in cases:
            group.create_dataset(name, data=data, **options)
        group.create_dataset("bf16", data=matrix_bits(cases[0][2]))
        group["bf16"].attrs["dtype"] = "bfloat16"
    vmap = keras_h5.open(path)
    with h5py.File(path, "r", locking=False) as f:  # ckpt-tools opens without locks; HDF5 wants them to agree
        for name, _, _ in [*cases, ("bf16", {}, None)]:
            key = f"layers/dense/vars/{name}"
            expected = np.asarray(f[key][()])
            if name == "bf16":
                expected = expected.view(ml_dtypes.bfloat16)
            var = vmap[key]
            streamed = [block.copy() for block in var.iter_chunks(elements)]
            assert all(block.size <= elements for block in streamed)
            assert all(block.dtype == expected.dtype for block in streamed), name  # byte order as stored
            got = np.concatenate(streamed) if streamed else np.empty(0)
            np.testing.assert_array_equal(got, expected.reshape(-1), err_msg=name)
            np.testing.assert_array_equal(var.read(), expected, err_msg=name)


def matrix_bits(matrix: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of a float32 matrix, stored as Keras 3 stores them (opaque 2-byte values)."""
    return matrix.astype(ml_dtypes.bfloat16).view("V2")


def test_hdf5_verification_hands_every_value_to_the_observer(tmp_path: Path) -> None:
    from .test_hostile_h5 import keras3_copy

    path = keras3_copy(tmp_path)
    data = np.arange(40 * 30, dtype=np.float32).reshape(40, 30)
    data[3, 4] = np.nan
    data[39, 29] = -np.inf
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        ds = f.create_dataset(
            "layers/dense/vars/0", shape=(40, 30), chunks=(16, 16), compression="gzip", fillvalue=np.nan
        )
        ds[:32] = data[:32]  # the last row of chunks stays unwritten: NaN fill
    report = validate(path)
    finite = report.check("finite")
    with h5py.File(path, "r") as f:
        whole = f["layers/dense/vars/0"][()]
    nan, inf = int(np.isnan(whole).sum()), int(np.isinf(whole).sum())
    assert (nan, inf) == (1 + 8 * 30, 0)
    assert finite.status == "fail" and f"({nan} NaN)" in finite.reason
    assert report.check("files").status == "pass"


@needs_tf
def test_keras_archive_one_pass_checks_zip_crc_and_values(keras_files: Path, tmp_path: Path) -> None:
    archive = keras_files / "model.keras"
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("model.weights.h5")
        assert info.compress_type == zipfile.ZIP_STORED  # what Keras writes
    clean = validate(archive, allow_weights_only=True)
    assert clean.ok, clean.problems()
    before = _rchar()
    validate(archive, require="files,finite")
    assert _rchar() - before < 1.2 * archive.stat().st_size + (1 << 20)
    nan = validate(keras_files / "nan.keras", require="files,finite")
    assert nan.check("files").status == "pass"
    assert "(1 NaN)" in nan.check("finite").reason
    kernel = np.load(keras_files / "kernel.npy")
    with open_checkpoint(archive) as vmap:
        var = next(v for v in vmap.values() if v.shape == kernel.shape and v.role == "weight")
        np.testing.assert_array_equal(np.concatenate([b.copy() for b in var.iter_chunks(1000)]), kernel.reshape(-1))
    damaged = tmp_path / "damaged.keras"
    raw = bytearray(archive.read_bytes())
    offset = raw.find(kernel.tobytes()[:64])
    assert offset > 0
    raw[offset + 1000] ^= 0x01
    damaged.write_bytes(bytes(raw))
    report = validate(damaged, require="files,finite")
    assert report.check("files").status == "fail" and "CRC-32 mismatch" in report.check("files").reason
    # HDF5 keeps no checksum per tensor: the values still read (as before), the member's CRC fails `files`
    assert report.check("finite").status == "pass"


@needs_tf
def test_weights_h5_streams_equal_keras_values(keras_files: Path) -> None:
    kernel = np.load(keras_files / "kernel.npy")
    with open_checkpoint(keras_files / "model.weights.h5") as vmap:
        var = next(v for v in vmap.values() if v.shape == kernel.shape and v.role == "weight")
        np.testing.assert_array_equal(np.concatenate([b.copy() for b in var.iter_chunks(4096)]), kernel.reshape(-1))
        stats = variable_stats(var)
    assert (stats.min, stats.max) == (float(kernel.min()), float(kernel.max()))


# ------------------------------------------------------------------------------------------------ --jobs
def _artifacts() -> list[str]:
    paths = sorted(str(p)[: -len(".index")] for p in FIXTURES.glob("*/*.index"))
    paths += sorted(str(p) for p in FIXTURES.glob("*/*.keras")) + sorted(str(p) for p in FIXTURES.glob("*/*.h5"))
    paths += [str(FIXTURES / "hostile" / "keras_lambda.keras"), str(FIXTURES / "no_such_thing")]
    return list(dict.fromkeys(paths))


def _ckpt(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ckpt_tools", *args], capture_output=True, env=child_env(), cwd=ROOT, timeout=600
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_validate_jobs_output_is_byte_identical(as_json: bool) -> None:
    args = ["validate", *_artifacts(), *(["--json"] if as_json else [])]
    one = _ckpt([*args, "-j1"])
    two = _ckpt([*args, "--jobs", "2"])
    assert one.returncode == two.returncode == 2  # one path does not exist
    assert one.stdout == two.stdout and one.stdout
    if as_json:
        assert len(json.loads(one.stdout)["artifacts"]) == len(_artifacts())


def test_ls_jobs_output_is_byte_identical() -> None:
    roots = [str(FIXTURES / "tf1_adam"), str(FIXTURES / "keras3_adam"), str(FIXTURES / "hostile"), str(FIXTURES)]
    for extra in ([], ["--json"]):
        one = _ckpt(["ls", *roots, *extra, "-j1"])
        two = _ckpt(["ls", *roots, *extra, "-j", "2"])
        zero = _ckpt(["ls", *roots, *extra, "-j0"])
        assert one.returncode == two.returncode == zero.returncode
        assert one.stdout == two.stdout == zero.stdout and one.stdout


def test_jobs_in_the_api_give_the_same_run() -> None:
    paths = _artifacts()
    one = validate_paths(paths, required_checks(), jobs=1)
    two = validate_paths(paths, required_checks(), jobs=3)
    assert [r.to_json() for r in one] == [r.to_json() for r in two]
    assert one.exit_code == two.exit_code == 2


def _tagged(batch: list[int]) -> list[tuple[int, int]]:
    return [(item, os.getpid()) for item in batch]


@pytest.mark.parametrize("jobs", [2, 3])
def test_ordered_batches_keep_order_and_this_process_takes_the_last_batches(jobs: int) -> None:
    """Workers take batches from the front, handed out a few at a time; this process takes them from the back
    (the last batch is always its own), and every result lands in item order."""
    items = list(range(40 * MAX_BATCH + 3))
    out = ordered_batches(_tagged, items, jobs)
    assert [item for item, _ in out] == items
    pids = {pid for _, pid in out}
    assert out[-1][1] == os.getpid() and len(pids) >= 2
    assert out[0][1] != os.getpid()  # the first batch went to a worker


@needs_tf
def test_damaged_retained_checkpoint_is_reported_the_same_with_the_run_memo(bundles: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(bundles / "clean", folder)
    prefix = _prefix(folder)
    keep = sorted(folder.glob("ckpt-*.index"))
    assert len(keep) == 1
    for step in (2, 3):  # two more retained checkpoints: copies, the last one damaged
        for file in folder.glob(f"{prefix.name}.*"):
            shutil.copy(file, folder / file.name.replace(prefix.name, f"ckpt-{step}"))
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-3"\n' + "".join(f'all_model_checkpoint_paths: "ckpt-{s}"\n' for s in (1, 2, 3))
    )
    data = folder / "ckpt-3.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    alone = validate(folder / "ckpt-1")
    together = validate([str(folder / "ckpt-3"), str(folder / "ckpt-1"), str(folder / "ckpt-2")])
    assert alone.check("state").status == "fail" and "ckpt-3" in alone.check("state").reason
    assert together.reports[1].check("state") == alone.check("state")
    assert together.reports[0].check("files").status == "fail"
    assert together.reports[2].check("state").reason == alone.check("state").reason


@pytest.mark.parametrize("size", [0, 1, 4095, 5 << 10, (8 << 20) + 3])
def test_the_zip_crc32_equals_the_stdlib_one(size: int) -> None:
    """The zip CRC-32 validate uses (zlib-ng's when installed) is the value zipfile and zlib compute."""
    from ckpt_tools.readers.h5common import zip_crc32

    crc32 = zip_crc32()
    data = np.random.default_rng(size).bytes(size)
    assert crc32(data, 0) == zlib.crc32(data)
    half = size // 2
    assert crc32(data[half:], crc32(data[:half], 0)) == zlib.crc32(data)
