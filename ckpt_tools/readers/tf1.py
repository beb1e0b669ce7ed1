"""TF1 `tf.train.Saver` checkpoints: V2 bundles read natively, the old V1 single file via `tf.compat.v1`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.messages import flat, os_reason
from ckpt_tools.model import Chunker, Loader, OptimizerInfo, Variable, VariableMap
from ckpt_tools.optimizers.catalogue import FORMAT_SPECIFIC
from ckpt_tools.readers.bundles import (
    checkpoint_state_directory,
    folder_guard,
    open_bundle,
    read_scalar,
    sniff_bundle,
    table_magic_at_end,
    verify_bundle,
)
from ckpt_tools.readers.naming import keep_unique, new_variable, slot_name, with_fields
from ckpt_tools.readers.paths import artifact_root, bundle_prefix, is_state_file, read_state, resolve_state_entry
from ckpt_tools.readers.registry import Reader
from ckpt_tools.readers.tf1_state import NON_SLOT, GraphSource, apply_graph, classify, decide, meta_graph_source
from ckpt_tools.storage import is_remote, local_copy, suffixed
from ckpt_tools.tfimport import import_tensorflow

if TYPE_CHECKING:
    import numpy as np

FORMAT = "tf1-checkpoint"
Entry = tuple[str, tuple[int, ...], str, Loader, Chunker | None]
# TensorFlow's V1 reader expands its argument as a glob pattern (fnmatch) and opens every match: a FIFO among
# them blocks forever, so a path holding these is never handed to it.
GLOB_CHARACTERS = "*?[\\"
# A V1 tensor's elements each take at least one byte of its TensorProto, which snappy shrinks at most ~21x:
# a declared shape with more elements than this per byte of the file is a lie, refused before TF allocates it.
V1_ELEMENTS_PER_BYTE = 32
V1_ELEMENT_SLACK = 1 << 20


def _v1_file(path: Path) -> Path | None:
    """The V1 single-file checkpoint `path` names (directly or through a state file), if any."""
    path = artifact_root(path)
    candidate = path
    if path.is_dir():
        state = read_state(path)
        if state is None or state.latest is None:
            return None
        candidate = resolve_state_entry(path, state.latest)
        if candidate.is_file():  # a file the state file names: never opened, even to sniff, through a link out
            folder_guard(path)(candidate, "V1 checkpoint file")
    if (
        candidate.is_file()
        and not candidate.name.endswith(".index")
        and not is_state_file(candidate)
        and not suffixed(candidate, ".index").exists()
        and table_magic_at_end(candidate)
    ):
        return candidate
    return None


def sniff(path: Path) -> str | None:
    try:
        if _v1_file(path) is not None:
            return None
        prefix = bundle_prefix(path)
    except (CorruptCheckpointError, MissingFileError):
        # A damaged state file, or one naming a checkpoint that is gone: the directory is a checkpoint directory
        # by TensorFlow's own convention, so accept it and let open() say what is wrong (sniffed last of all).
        return None
    except OSError as exc:
        return f"unreadable ({os_reason(exc)})"
    if prefix is None:
        return "no .index file, checkpoint state file or V1 checkpoint file"
    reason = sniff_bundle(prefix)
    if reason is None:
        return "has an object graph (TF2 checkpoint)"
    # A file named like a bundle index that does not parse is a damaged checkpoint: accept it, so that
    # open() reports what is wrong with it instead of "not a recognized checkpoint".
    return None if reason == "TF1" or suffixed(prefix, ".index").is_file() else reason


def build_map(path: Path, fmt: str, entries: Sequence[Entry], source: GraphSource, **extra: Any) -> VariableMap:
    """A VariableMap from TF1-style (key, shape, dtype, loader) entries, the optimizer decided by `source`."""
    roles = classify([entry[0] for entry in entries])
    if source.evidence is not None:
        roles = apply_graph(roles, source.evidence)
    variables: dict[str, Variable] = {}
    for key, shape, dtype, loader, chunker in entries:
        role, slot_of, slot = roles[key]
        variables[key] = new_variable(key, key, shape, dtype, role, slot_of, slot, loader, chunker)
    info = dataclasses.replace(decide(variables, source), dialect="tf1")
    variables = canonical_names(variables, info)
    step_var = next((v for v in variables.values() if v.role == "step"), None)
    step = read_scalar(step_var) if step_var is not None else None
    return VariableMap(path, fmt, variables, info, step, step_var.key if step_var else None, **extra)


def canonical_names(variables: dict[str, Variable], info: OptimizerInfo) -> dict[str, Variable]:
    """Slots named `optimizer/<weight>/<slot>` (the key keeps `<weight>/Adam`); beta powers, and an RMSProp
    momentum slot the training ops run at momentum 0, marked format-specific."""
    idle_momentum = info.name == "RMSprop" and info.hyper.get("momentum") == 0.0
    out = {}
    for key, var in variables.items():
        if var.slot_of is not None and var.slot is not None:
            idle = idle_momentum and var.slot == "momentum"
            var = with_fields(
                var,
                name=slot_name(var.slot_of, var.slot),
                format_specific=FORMAT_SPECIFIC["rmsprop_momentum_zero"] if idle else None,
            )
        elif var.role == "optimizer" and NON_SLOT.search(key):
            var = with_fields(var, format_specific=FORMAT_SPECIFIC["beta_power"])
        out[key] = var
    return keep_unique(out, {})


def open(path: Path) -> VariableMap:
    v1 = _v1_file(path)
    if v1 is not None:
        return _open_v1(path, v1)
    prefix = bundle_prefix(path)
    if prefix is None:
        raise CorruptCheckpointError(f"{path}: not a TF1 checkpoint")
    reader = open_bundle(prefix)
    entries = [(e.key, e.shape, e.dtype, load, chunks) for e, load, chunks in reader.access()]
    return build_map(
        path,
        FORMAT,
        entries,
        meta_graph_source(prefix),
        prefix=prefix,
        bundle="v2",
        metadata={"prefix": str(prefix), "bundle": "v2", **reader.describe()},
        files=tuple(reader.files()),
        closer=reader.close,
    )


def _tf_argument(file: Path) -> str:
    """The path to hand TensorFlow's V1 reader: relative when the file is under the working directory (fewer
    directory names for it to glob), refused when it holds glob characters."""
    relative = os.path.relpath(file)
    shown = str(file) if relative.startswith("..") else relative
    if any(c in shown for c in GLOB_CHARACTERS):
        raise UnsafeInputError(
            f"{file}: TensorFlow's V1 reader would expand this path as a glob pattern (it holds one of "
            f"{' '.join(GLOB_CHARACTERS)}) and open every file it matches; rename it or read it from another folder"
        )
    return shown


def _open_v1(path: Path, file: Path) -> VariableMap:
    # TensorFlow's V1 reader takes a file name only: a remote file is read from a private local copy of it.
    argument = _tf_argument(local_copy(file)) if is_remote(file) else _tf_argument(file)
    tf1 = import_tensorflow(f"{file}: reading a V1-format checkpoint").compat.v1
    try:
        reader = tf1.train.NewCheckpointReader(argument)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as exc:  # TF raises its own error types (OpError subclasses and others) for corrupt files
        raise CorruptCheckpointError(f"{file}: unreadable V1 checkpoint ({flat(exc)[:200]})") from exc
    size = file.stat().st_size
    limit = V1_ELEMENTS_PER_BYTE * size + V1_ELEMENT_SLACK

    def loader(key: str, shape: tuple[int, ...]) -> Loader:
        def load() -> np.ndarray:
            if math.prod(shape) > limit:
                raise UnsafeInputError(
                    f"{file}: tensor {key!r} declares shape {list(shape)}, more elements than a file of "
                    f"{size} bytes can hold (refused before reading)"
                )
            import numpy as np

            try:
                return np.asarray(reader.get_tensor(key))
            except Exception as exc:  # any TensorFlow error (NotFoundError, DataLossError, ...) is the file's
                raise CorruptCheckpointError(f"{file}: tensor {key!r} unreadable ({flat(exc)[:200]})") from exc

        return load

    from ckpt_tools.readers.bundles import tf_dtype_name

    entries = []
    for k in sorted(shapes):
        shape = tuple(int(d) for d in shapes[k])
        if any(d < 0 for d in shape):
            raise CorruptCheckpointError(f"{file}: tensor {k!r} has a negative dimension in shape {list(shape)}")
        entries.append((k, shape, tf_dtype_name(dtypes[k]), loader(k, shape), None))
    return build_map(
        path,
        FORMAT,
        entries,
        meta_graph_source(file),
        prefix=file,
        bundle="v1",
        metadata={"prefix": str(file), "bundle": "v1"},
        files=(file,),
    )


READER = Reader(FORMAT, sniff, open, verify_bundle, checkpoint_state_directory, group="bundle")
