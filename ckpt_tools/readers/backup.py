"""`keras.callbacks.BackupAndRestore` directories: the backed-up weights, optimizer state and completed epochs.

Keras 3 writes `latest.weights.h5` and `training_metadata.json` (`{"epoch": E, "batch": B}`, E = the epoch
`fit()` resumes at); tf_keras writes a TF2 checkpoint under `chief/` whose `ckpt_saved_epoch` variable is the
0-based index of the last completed epoch (tf_keras resumes at `ckpt_saved_epoch + 1`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.messages import os_reason
from ckpt_tools.model import VariableMap
from ckpt_tools.readers.bundles import read_scalar, verify_bundle
from ckpt_tools.readers.confine import confine
from ckpt_tools.readers.paths import STATE_FILE, is_state_file
from ckpt_tools.readers.registry import Reader, reader

FORMAT = "backup-and-restore"
KERAS3_WEIGHTS = "latest.weights.h5"
KERAS3_METADATA = "training_metadata.json"
TF_KERAS_WORKER = "chief"
TF_KERAS_EPOCH = "ckpt_saved_epoch"
TF_KERAS_BATCH = "ckpt_saved_batch"
MAX_METADATA_BYTES = 1 << 16


def _kind(path: Path) -> str | None:
    if not path.is_dir():
        return None
    if (path / KERAS3_WEIGHTS).is_file() and (path / KERAS3_METADATA).is_file():
        return "keras3"
    if is_state_file(path / TF_KERAS_WORKER / STATE_FILE):
        return "tf_keras"
    return None


def sniff(path: Path) -> str | None:
    if _kind(path) is None:
        return f"no {KERAS3_WEIGHTS} + {KERAS3_METADATA} (Keras 3) or {TF_KERAS_WORKER}/{STATE_FILE} (tf_keras)"
    return None


def open(path: Path) -> VariableMap:
    kind = _kind(path)
    if kind == "keras3":
        return _open_keras3(path)
    if kind == "tf_keras":
        return _open_tf_keras(path)
    raise CorruptCheckpointError(f"{path}: not a BackupAndRestore directory")


def _open_keras3(path: Path) -> VariableMap:
    """The backed-up weights file and training_metadata.json, each refused when it resolves (through a symlink)
    outside the folder, unless --follow-symlinks."""
    meta_file = confine(path, path / KERAS3_METADATA, "training metadata")
    inner = reader("keras-weights-h5").open(confine(path, path / KERAS3_WEIGHTS, "weights file"))
    epoch, batch, problem = _keras3_metadata(meta_file)
    described: dict[str, Any] = {**inner.metadata, "inner_format": inner.format, "epoch": epoch, "batch": batch}
    if batch:
        described["resume_note"] = (
            f"saved mid-epoch (batch {batch}): fit() resumes at epoch {epoch} and runs that epoch's batches again"
        )
    if problem:
        described["warnings"] = [*inner.metadata.get("warnings", []), problem]
    return dataclasses.replace(
        inner,
        path=path,
        format=FORMAT,
        epoch=epoch,
        epoch_key=None if epoch is None else f"{KERAS3_METADATA}:epoch",
        layout="keras3 BackupAndRestore",
        root=path,
        metadata=described,
        files=(*inner.files, meta_file),
    )


def _keras3_metadata(meta_file: Path) -> tuple[int | None, int | None, str | None]:
    """(epoch, batch, problem) from training_metadata.json; only these two integers are kept."""
    try:
        if meta_file.stat().st_size > MAX_METADATA_BYTES:
            raise CorruptCheckpointError(f"{meta_file}: larger than {MAX_METADATA_BYTES} bytes")
        with meta_file.open("rb") as fh:
            data = fh.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise CorruptCheckpointError(f"{meta_file}: cannot read ({os_reason(exc)})") from exc
    try:
        metadata = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{meta_file}: not valid JSON ({type(exc).__name__})") from exc
    values = [metadata.get(k) if isinstance(metadata, dict) else None for k in ("epoch", "batch")]
    epoch, batch = (v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None for v in values)
    problem = None if epoch is not None else f"{meta_file.name}: no non-negative integer 'epoch'; epoch unknown"
    return epoch, batch, problem


def _open_tf_keras(path: Path) -> VariableMap:
    """tf_keras saves `ckpt_saved_epoch` (the epoch index) and `ckpt_saved_batch` (-1 at an epoch's end, else
    the batch index): it resumes at the next epoch after an epoch-end save, inside the same epoch otherwise."""
    inner = reader("tf2-checkpoint").open(path / TF_KERAS_WORKER)
    saved = next((v for v in inner.values() if v.name == TF_KERAS_EPOCH), None)
    value = read_scalar(saved) if saved is not None else None
    if saved is None or value is None:
        raise CorruptCheckpointError(f"{path / TF_KERAS_WORKER}: no readable {TF_KERAS_EPOCH} variable")
    batch_var = next((v for v in inner.values() if v.name == TF_KERAS_BATCH), None)
    batch = read_scalar(batch_var) if batch_var is not None else -1
    mid_epoch = batch is not None and batch >= 0
    described: dict[str, Any] = {
        **inner.metadata,
        "inner_format": inner.format,
        TF_KERAS_EPOCH: value,
        TF_KERAS_BATCH: batch,
    }
    if mid_epoch:
        described["resume_note"] = (
            f"saved mid-epoch: tf_keras resumes epoch {value} after batch {batch} (unless "
            "that was the epoch's last batch, which the checkpoint does not record)"
        )
    return dataclasses.replace(
        inner,
        path=path,
        format=FORMAT,
        epoch=value if mid_epoch else value + 1,
        epoch_key=saved.key,
        layout="tf_keras BackupAndRestore",
        root=path,
        metadata=described,
    )


def verify(vmap: VariableMap) -> str:
    """The inner artifact's own check (CRC32C for the tf_keras bundle, full reads for the HDF5 file)."""
    if _kind(vmap.path) == "keras3":
        from ckpt_tools.readers.h5common import verify_file

        return verify_file(confine(vmap.path, vmap.path / KERAS3_WEIGHTS, "weights file"))
    return verify_bundle(vmap)


def state_directory(vmap: VariableMap) -> Path | None:
    worker = vmap.path / TF_KERAS_WORKER
    return worker if is_state_file(worker / STATE_FILE) else None


READER = Reader(FORMAT, sniff, open, verify, state_directory, group="directory")
