"""h5guard: a forked child reads HDF5 metadata first; its crash, CPU spin or memory blow-up refuses the file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.readers import h5common, h5guard
from ckpt_tools.readers.registry import open_checkpoint

from .conftest import FIXTURES, child_env


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.weights.h5"
    shutil.copy(FIXTURES / "keras3_adam" / "model.weights.h5", path)
    return path


def _refusal(path: Path, touch: object) -> str:
    with pytest.raises(CorruptCheckpointError) as info:
        h5guard.check(path, str(path), touch)  # type: ignore[arg-type]
    return str(info.value)


def test_a_crash_in_the_child_refuses_the_file(weights: Path) -> None:
    text = _refusal(weights, lambda f, label: os.kill(os.getpid(), signal.SIGSEGV))
    assert "crashed" in text and "SIGSEGV" in text and str(weights) in text


def test_a_spinning_child_is_stopped_by_its_cpu_limit(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPT_HDF5_CHECK_SECONDS", "1")

    def spin(f: h5py.File, label: str) -> None:
        while True:
            pass

    assert "more than 1 s of CPU" in _refusal(weights, spin)


def test_a_child_that_exhausts_memory_refuses_the_file(weights: Path) -> None:
    def hog(f: h5py.File, label: str) -> None:
        bytearray(h5guard.MEMORY_BYTES + (1 << 30))

    assert "GiB of memory" in _refusal(weights, hog)


def test_an_ordinary_error_is_left_to_the_reader(weights: Path) -> None:
    def fails(f: h5py.File, label: str) -> None:
        raise OSError("address of object past end of allocation")  # libhdf5's words, not an allocation failure

    h5guard.check(weights, str(weights), fails)  # no refusal: the reading process reports it itself


def test_the_child_touches_every_attribute_and_the_file_is_then_read(weights: Path) -> None:
    touched: list[str] = []
    h5common.touch_metadata(h5py.File(weights, "r"), str(weights))  # runs in-process here: must not raise
    h5guard.check(weights, str(weights), lambda f, label: touched.append(label))
    assert touched == []  # it ran in the child, not here
    assert open_checkpoint(weights).variables


def _gcol_edited(path: Path) -> Path:
    """The one-byte class of edit the fuzzer found: the global heap collection (variable-length strings) sized
    0x5000 instead of 0x1000, on which libhdf5 loops forever when it reads a string from it."""
    data = bytearray(path.read_bytes())
    assert data.count(b"GCOL") == 1
    at = data.index(b"GCOL")
    data[at + 8 : at + 16] = struct.pack("<Q", 0x5000)
    path.write_bytes(bytes(data))
    return path


def _keras3_shaped(path: Path, *, named_type: bool = False, string_dataset: bool = False) -> Path:
    """A Keras-3-layout .weights.h5 written by h5py; its `name` attributes are variable-length strings unless the
    only global-heap user is to be a string dataset."""
    text = (lambda t: np.bytes_(t)) if string_dataset else (lambda t: t)
    with h5py.File(path, "w") as f:
        if named_type:
            f["a_type"] = np.dtype("f4")  # a committed datatype, first in name order
        if string_dataset:  # written first: the heap must lie well inside the file for its false size to loop
            lookup = f.create_group("layers/string_lookup/vars")
            lookup.attrs["name"] = text("string_lookup")
            lookup.create_dataset("0", data=np.array(["a", "bb"], dtype=object), dtype=h5py.string_dtype())
        dense = f.create_group("layers/dense/vars")
        dense.attrs["name"] = text("dense")
        dense["0"] = np.ones((64, 128), "f4")  # the file must outgrow the heap's false size, or libhdf5 just errs
        dense["1"] = np.zeros(8, "f4")
        f.create_group("optimizer/vars").attrs["name"] = text("adam")
        f.create_group("vars").attrs["name"] = text("model")
    return _gcol_edited(path)


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`ckpt validate` in its own process: if the guard missed the file, libhdf5 spins there until the timeout."""
    env = child_env(CKPT_HDF5_CHECK_SECONDS="1")
    return subprocess.run(
        [sys.executable, "-m", "ckpt_tools", "validate", str(path)], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    "shape",
    [{}, {"named_type": True}, {"string_dataset": True}],
    ids=["attributes", "behind-a-named-datatype", "string-dataset"],
)
def test_every_place_libhdf5_reads_the_global_heap_is_checked(tmp_path: Path, shape: dict[str, bool]) -> None:
    done = _validate(_keras3_shaped(tmp_path / "model.weights.h5", **shape))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "libhdf5 spent more than 1 s of CPU" in done.stdout + done.stderr


def test_a_failed_allocation_inside_the_walk_is_reported(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """touch_metadata skips ordinary errors, never a failed allocation (the reader would repeat it, uncapped)."""
    monkeypatch.setattr(h5common, "_attr_value", lambda obj, name: bytearray(h5guard.MEMORY_BYTES + (1 << 30)))
    assert "GiB of memory" in _refusal(weights, h5common.touch_metadata)


def test_an_ignored_sigchld_does_not_lose_the_child(weights: Path, tmp_path: Path) -> None:
    """With SIGCHLD ignored the kernel would reap the child itself and its crash would go unseen."""
    other = tmp_path / "other.weights.h5"
    shutil.copy(weights, other)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert h5guard.check(weights, str(weights), lambda f, label: None) is not None
        assert "SIGSEGV" in _refusal(other, lambda f, label: os.kill(os.getpid(), signal.SIGSEGV))
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_deflated_keras_member_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each open of a deflated member inflates a new private copy; the check is keyed by the member, not the copy."""
    deflated = tmp_path / "model.keras"
    with zipfile.ZipFile(FIXTURES / "keras3_adam" / "model.keras") as src, zipfile.ZipFile(deflated, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    runs: list[str] = []
    real = h5guard._run_child
    monkeypatch.setattr(h5guard, "_run_child", lambda *args: runs.append("child") or real(*args))
    vmap = open_checkpoint(deflated)
    for var in vmap.values():
        var.read()
    assert runs == ["child"]


def test_a_file_replaced_after_the_check_is_refused(weights: Path) -> None:
    stamp = h5guard.check(weights, str(weights), lambda f, label: None)
    replacement = weights.with_name("other.h5")
    shutil.copy(FIXTURES / "keras2_adam" / "model.h5", replacement)
    os.replace(replacement, weights)
    with (
        h5py.File(weights, "r") as f,
        pytest.raises(CorruptCheckpointError, match="changed while it was being checked"),
    ):
        h5guard.verify(f, stamp, str(weights))


def test_libhdf5_looping_on_a_global_heap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real input tests/test_fuzz.py found: without the guard this process would spin forever."""
    monkeypatch.setenv("CKPT_HDF5_CHECK_SECONDS", "1")
    path = tmp_path / "model.h5"
    shutil.copy(FIXTURES / "keras2_adam" / "model.h5", path)
    _gcol_edited(path)
    with pytest.raises(CorruptCheckpointError, match="libhdf5 spent more than 1 s of CPU"):
        open_checkpoint(path)


def test_the_callers_children_are_still_reaped_while_sigchld_is_ignored(weights: Path) -> None:
    """A caller ignoring SIGCHLD never waits for its children: one that exits while the check has SIGCHLD at its
    default must not be left a zombie."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        other = subprocess.Popen(["sleep", "0.1"])
        h5guard.check(weights, str(weights), lambda f, label: time.sleep(0.5))
        state = Path(f"/proc/{other.pid}/stat")
        assert not state.exists() or state.read_text().split()[2] != "Z"
        other.returncode = 0
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_child_reaped_elsewhere_refuses_the_file(weights: Path) -> None:
    """A SIGCHLD handler reaping every child (old asyncio watchers do) takes the child's status: unknown, refused."""

    def reap_all(signum: int, frame: object) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    previous = signal.signal(signal.SIGCHLD, reap_all)
    try:
        text = _refusal(weights, lambda f, label: os.kill(os.getpid(), signal.SIGSEGV))
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert "crashed" in text or "outcome is unknown" in text


def test_string_datasets_are_read_in_slices_after_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 million strings declared in a few MB are left to the reader's cap (5e7 such cost the child 1.2 GB, 6 s of
    CPU); a real string dataset is read 65,536 rows at a time."""
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("declared", shape=(200_000_000,), dtype=h5py.string_dtype(), chunks=(1 << 16,))
        f.create_dataset(
            "real", data=np.array([str(i) for i in range(150_000)], dtype=object), dtype=h5py.string_dtype()
        )
    reads: list[tuple[str, int]] = []
    real_getitem = h5py.Dataset.__getitem__

    def recording(self: h5py.Dataset, key: object) -> object:
        value = real_getitem(self, key)
        reads.append((str(self.name), int(np.size(value))))
        return value

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    with h5py.File(path, "r") as f:
        h5common.touch_metadata(f, str(path))
    assert [name for name, _ in reads if name == "/declared"] == []
    assert [n for name, n in reads if name == "/real"] == [65_536, 65_536, 150_000 - 2 * 65_536]
