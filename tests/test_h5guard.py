"""h5guard: a forked child reads HDF5 metadata first; its crash, CPU spin or memory blow-up refuses the file."""

from __future__ import annotations

import os
import shutil
import signal
import struct
from pathlib import Path

import h5py
import pytest

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.readers import h5common, h5guard
from ckpt_tools.readers.registry import open_checkpoint

from .conftest import FIXTURES


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


def test_libhdf5_looping_on_a_global_heap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real input tests/test_fuzz.py found: without the guard this process would spin forever."""
    monkeypatch.setenv("CKPT_HDF5_CHECK_SECONDS", "1")
    path = tmp_path / "model.h5"
    data = bytearray((FIXTURES / "keras2_adam" / "model.h5").read_bytes())
    at = data.index(b"GCOL")
    data[at + 8 : at + 16] = struct.pack("<Q", 0x5000)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="libhdf5 spent more than 1 s of CPU"):
        open_checkpoint(path)
