"""convert's source kinds: which artifacts it accepts, what each records (architecture, hyper-parameters, epoch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.conversion import archive
from ckpt_tools.conversion.slots import SourceOptimizer
from ckpt_tools.errors import ConversionError, UsageError
from ckpt_tools.messages import printable
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.lookup import hyperparameter_names
from ckpt_tools.readers.confine import confine

SOURCE_FORMATS = (
    "tf1-checkpoint",
    "keras2-h5",
    "tf2-checkpoint",
    "saved-model",
    "backup-and-restore",
    "keras-archive",
)
KERAS_METADATA = "keras_metadata.pb"
MAX_METADATA_BYTES = 64 << 20
# tf_keras BackupAndRestore's own counters (top-level checkpoint attributes): the callback's, not the model's.
BACKUP_COUNTERS = ("ckpt_saved_epoch", "ckpt_saved_batch", "train_counter")
REFUSED = {
    "keras-weights-h5": "a Keras 3 .weights.h5 file is loaded with model.load_weights; convert does not read it as a "
    "source",
}


def check_format(path: Path, fmt: str) -> None:
    """Refuse, before a reader parses it, a source kind convert does not read."""
    if fmt in SOURCE_FORMATS:
        return
    detail = REFUSED.get(fmt, f"this is a {fmt}")
    raise UsageError(
        f"{path}: convert reads TF1 Saver checkpoints, Keras-2 .h5 files, TF2 checkpoints (tf.train.Checkpoint, "
        f"save_weights TF format), tf_keras SavedModels and .keras archives, BackupAndRestore directories; {detail}"
    )


def prepared(vmap: VariableMap) -> VariableMap:
    """The source as convert plans it: refused when it cannot resume training, the callbacks' counters dropped."""
    if vmap.format == "saved-model":
        _check_saved_model(vmap)
    if vmap.format == "keras-archive" and not archive.is_tf_keras(vmap):
        raise ConversionError(f"{vmap.path}: {archive.KERAS3_REFUSAL}")
    if vmap.format == "backup-and-restore" and vmap.layout == "tf_keras BackupAndRestore":
        kept = {k: v for k, v in vmap.variables.items() if not _backup_counter(k)}
        return dataclasses.replace(vmap, variables=kept)
    return vmap


def _backup_counter(key: str) -> bool:
    return key.split("/")[0] in BACKUP_COUNTERS


def _check_saved_model(vmap: VariableMap) -> None:
    """A SavedModel converts only when tf_keras saved it with its optimizer (keras_metadata.pb + slots)."""
    root = vmap.root or vmap.path
    if not (root / KERAS_METADATA).is_file():
        raise ConversionError(
            f"{root}: a SavedModel without {KERAS_METADATA} (tf.saved_model.save, a Keras 3 model.export, a TF1 "
            "export) records no Keras model or optimizer to resume; convert reads tf_keras model.save(DIR) "
            "SavedModels only"
        )
    if not any(v.role == "optimizer" for v in vmap.values()) and vmap.step is None:
        raise ConversionError(
            f"{root}: this SavedModel stores no optimizer state (saved with include_optimizer=False, or never "
            "compiled), so there is no training to resume"
        )


# ---------------------------------------------------------------------------------------------- recorded configs
def keras_metadata(vmap: VariableMap) -> dict[str, Any] | None:
    """The root object's metadata JSON in a tf_keras SavedModel's keras_metadata.pb (parsed as data, once per
    file version: planning, exactness and the rebuild all ask)."""
    if vmap.format != "saved-model":
        return None
    root = vmap.root or vmap.path
    path = root / KERAS_METADATA
    if not path.is_file():
        return None
    confine(root, path, KERAS_METADATA)
    stat = path.stat()
    return _parsed_metadata(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _parsed_metadata(path: Path, _mtime: int, _size: int) -> dict[str, Any] | None:
    from ckpt_tools.bundle import protos
    from ckpt_tools.readers import h5common as h5c

    with path.open("rb") as fh:
        data = fh.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise ConversionError(f"{path}: larger than {MAX_METADATA_BYTES >> 20} MiB; refused")
    try:
        message = protos.KerasSavedMetadata.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, RecursionError for over-deep nesting
        raise ConversionError(f"{path}: not a valid {KERAS_METADATA} ({type(exc).__name__})") from exc
    root = next((n for n in message.nodes if n.node_path == "root"), None)
    if root is None or not root.metadata:
        return None
    parsed = h5c.parse_json(root.metadata, f"{path}: root metadata")
    return parsed if isinstance(parsed, dict) else None


def recorded_configs(vmap: VariableMap) -> tuple[Any, Any, str] | None:
    """(model_config, training_config, where) of a source that records its architecture; None otherwise."""
    if vmap.format == "keras-archive":
        return archive.recorded(vmap)
    metadata = keras_metadata(vmap)
    if metadata is None:
        return None
    model_config = metadata.get("model_config")
    if not isinstance(model_config, dict) and isinstance(metadata.get("config"), dict):
        model_config = {"class_name": metadata.get("class_name"), "config": metadata["config"]}
    return _untupled(model_config), metadata.get("training_config"), KERAS_METADATA


def _untupled(value: Any) -> Any:
    """tf_keras' `{"class_name": "__tuple__", "items": [...]}` as the plain list an .h5 model_config holds."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and isinstance(value.get("items"), list):
            return [_untupled(v) for v in value["items"]]
        return {k: _untupled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untupled(v) for v in value]
    return value


def no_architecture(vmap: VariableMap) -> str:
    """The one-line refusal of a source without --model that records no architecture."""
    label = str(vmap.path)
    kind = {
        "tf1-checkpoint": "a TF1 Saver checkpoint",
        "tf2-checkpoint": "a TF2 checkpoint (tf.train.Checkpoint or save_weights TF format)",
        "backup-and-restore": "a BackupAndRestore directory",
        "saved-model": "this SavedModel",
    }.get(vmap.format, f"a {vmap.format}")
    return (
        f"{label}: {kind} needs model= (MODULE:FACTORY): it stores variables but no architecture or optimizer "
        "settings, so convert cannot build the Keras 3 model; only a Keras-2 .h5 (model_config, training_config) "
        f"or a tf_keras SavedModel ({KERAS_METADATA}) or .keras archive converts without one"
    )


# ---------------------------------------------------------------------------------------------- hyper-parameters
def recorded_hyper(vmap: VariableMap) -> tuple[dict[str, Any], str | None]:
    """Hyper-parameters the source records outside a Keras-2 training_config: a tf_keras SavedModel's
    training_config in keras_metadata.pb, else the optimizer's scalar hyper-parameter variables (tf_keras' legacy
    optimizers store learning_rate, beta_1, ...; the new ones and Keras 3 store learning_rate)."""
    if vmap.format == "keras-archive":
        recorded = vmap.metadata.get("optimizer_config")
        found = config_hyper(recorded) if isinstance(recorded, Mapping) else {}
        return found, ("config.json compile_config" if found else None)
    metadata = keras_metadata(vmap)
    training = metadata.get("training_config") if metadata is not None else None
    config = training.get("optimizer_config") if isinstance(training, Mapping) else None
    if isinstance(config, Mapping):
        return config_hyper(config), f"{KERAS_METADATA} training_config"
    found = _variable_hyper(vmap)
    return found, ("optimizer variables" if found else None)


def config_hyper(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers (and schedules, by name) of a serialized optimizer's config."""
    raw = recorded.get("config")
    config: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {}
    for name, value in config.items():
        if name not in hyperparameter_names() and name not in ("clipnorm", "clipvalue", "global_clipnorm", "use_ema"):
            continue
        if isinstance(value, (bool, int, float)):
            out[name] = value
        elif isinstance(value, Mapping):
            out[name] = f"schedule {printable(str(value.get('class_name', '?')))[:80]}"
    if isinstance(config.get("lr"), (int, float)) and "learning_rate" not in out:
        out["learning_rate"] = config["lr"]
    return out


def _variable_hyper(vmap: VariableMap) -> dict[str, Any]:
    """`optimizer/<name>` scalars named like a hyper-parameter, read as floats."""
    names = hyperparameter_names()
    out: dict[str, Any] = {}
    for var in vmap.values():
        parts = var.name.split("/")
        attr = parts[-1].lstrip("_")
        if var.role != "optimizer" or var.slot is not None or var.size != 1 or len(parts) < 2:
            continue
        if parts[-2] != "optimizer" or attr not in names or not var.dtype.startswith(("float", "bfloat")):
            continue
        out[attr] = float(np.asarray(var.read(), dtype=np.float64).reshape(-1)[0])
    return out


def epoch_note(vmap: VariableMap) -> str | None:
    """Where the epoch of a BackupAndRestore source goes: nowhere in the output, so the user carries it."""
    if vmap.epoch is None:
        return None
    return (
        f"{vmap.path}: the source resumes at epoch {vmap.epoch} ({vmap.layout}); the output stores no epoch, so pass "
        f"initial_epoch={vmap.epoch} to fit()"
    )


def add_recorded_hyper(vmap: VariableMap, source: SourceOptimizer) -> None:
    """Fill a SourceOptimizer's hyper-parameters from what a TF2-era source records (TF1 and Keras-2 .h5 sources
    have their own readers' findings)."""
    if vmap.format in ("tf1-checkpoint", "keras2-h5") or source.hyper:
        return
    source.notes = [n for n in source.notes if "no training graph" not in n]  # TF2-era sources never have one
    hyper, origin = recorded_hyper(vmap)
    if hyper:
        source.hyper = hyper
        source.hyper_origin = origin or "not recorded"
