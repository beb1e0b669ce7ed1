"""Read-back verification of converted outputs: every weight, slot and the step found again, value for value.

What each variable must hold is kept as a digest (shape, dtype and the CRC32C of its bytes: the checksum tensor
bundles themselves rely on, hardware-accelerated), computed when the value is assigned; the written output is
read back block by block and digested the same way, so verification holds one block at a time, never a second
copy of the checkpoint. A difference goes unnoticed only if it leaves the CRC32C unchanged: never for one burst
of up to 32 bits (or up to 3 flipped bits in a tensor under 256 MiB), about 2**-32 for an arbitrary one.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.bundle.table import crc32c
from ckpt_tools.conversion.plan import Plan, listed_names
from ckpt_tools.errors import ConversionError
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.readers.registry import open_checkpoint

BLOCK_BYTES = 16 << 20  # read-back block: verification memory is one block, whatever the tensor size


@dataclass(frozen=True)
class ExpectedValue:
    """What one variable must hold: its kind (weight|slot|step), shape, dtype and the CRC32C of its bytes."""

    kind: str
    shape: tuple[int, ...]
    dtype: str
    digest: int


Expected = dict[str, ExpectedValue]  # Keras variable path -> what it must hold


def _native_bytes(block: np.ndarray) -> np.ndarray:
    """The block's elements as native-order contiguous bytes (how both sides are digested)."""
    if block.dtype.hasobject:
        raise ConversionError(f"cannot verify a {block.dtype} tensor bit for bit")
    if block.dtype.byteorder == ">":
        block = block.astype(block.dtype.newbyteorder("="))
    return np.ascontiguousarray(block).reshape(-1).view(np.uint8)


def _digest(blocks: Iterable[np.ndarray]) -> int:
    crc = 0
    for block in blocks:
        crc = crc32c(_native_bytes(block), crc)
    return crc


def expected_value(kind: str, value: np.ndarray) -> ExpectedValue:
    """The record verification compares the output against, for a value just assigned."""
    return ExpectedValue(kind, tuple(value.shape), str(value.dtype), _digest([value]))


class Fingerprints:
    """What each variable must hold, digested in a second thread (the CRC releases the GIL) while the next
    tensor is read and assigned; at most one value waits for its digest, so two tensors are alive at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ckpt-digest")
        self._futures: dict[str, Future[ExpectedValue]] = {}
        self._last: Future[ExpectedValue] | None = None

    def __enter__(self) -> Fingerprints:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(cancel_futures=True)

    def add(self, path: str, kind: str, value: np.ndarray) -> None:
        if self._last is not None:
            self._last.result()
        self._last = self._futures[path] = self._pool.submit(expected_value, kind, value)

    def expected(self) -> Expected:
        return {path: future.result() for path, future in self._futures.items()}


def _block_elements(var: Variable) -> int:
    itemsize = (var.nbytes or 0) // var.size if var.size else 1
    return max(1, BLOCK_BYTES // max(1, itemsize))


def stored_value(var: Variable) -> tuple[tuple[int, ...], str, int]:
    """Shape, dtype and digest of one stored tensor, read block by block."""
    return tuple(var.shape), var.dtype, _digest(var.iter_chunks(_block_elements(var)))


def _holds(var: Variable, want: ExpectedValue) -> bool:
    if (tuple(var.shape), var.dtype) != (want.shape, want.dtype):
        return False
    return stored_value(var)[2] == want.digest


def _holds_array(value: Any, want: ExpectedValue) -> bool:
    array = np.asarray(value)
    return (tuple(array.shape), str(array.dtype)) == (want.shape, want.dtype) and _digest([array]) == want.digest


@dataclass
class CheckpointResult:
    """One converted checkpoint: where from, which step, where to, and what read-back verification found."""

    source: str
    step: int
    step_from: str
    output: str | None = None
    weights_identical: int = 0
    slots_equal: int = 0
    step_ok: bool | None = None
    verified_by: list[str] = field(default_factory=list)
    weights_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "step": self.step,
            "step_from": self.step_from,
            "output": self.output,
            "verification": {
                "weights_identical": self.weights_identical,
                "slots_equal": self.slots_equal,
                "step_ok": self.step_ok,
                "by": self.verified_by,
            },
        }


def verify_tf2(prefix: Path, checkpoint: Any, plan: Plan, expected: Expected, result: CheckpointResult) -> None:
    """Read the written checkpoint back through ckpt-tools; each variable is found by its object-graph key."""
    from ckpt_tools.bundle import BundleReader

    keys = _object_graph_keys(BundleReader(prefix).object_graph(), checkpoint, expected)
    with open_checkpoint(prefix) as out:
        if len(keys) == len(expected):
            problems = _compare_by_key(out, expected, keys, result)
            result.verified_by.append("ckpt-tools tf2 reader, object-graph keys")
        else:
            problems = _compare_as_multiset(out, expected, result, keys)
            result.verified_by.append("ckpt-tools tf2 reader, values")
        _record_outputs(plan, out, keys)
        _step_check(out, result, problems)
    _raise_if(problems, prefix)


def _object_graph_keys(graph: Any, checkpoint: Any, expected: Expected) -> dict[str, str]:
    """Keras variable path -> the checkpoint key TensorFlow stored it under (empty when the graph does not fit)."""
    import tensorflow as tf

    objects = tf.train.TrackableView(checkpoint).descendants()
    keys: dict[str, str] = {}
    if graph is None or len(graph.nodes) != len(objects):
        return keys
    by_id = {id(obj): i for i, obj in enumerate(objects)}
    variables = _variables_by_path(checkpoint)
    for path in expected:
        variable = variables.get(path)
        node = by_id.get(id(variable)) if variable is not None else None
        if node is not None:
            for attr in graph.nodes[node].attributes:
                if attr.name == "VARIABLE_VALUE":
                    keys[path] = str(attr.checkpoint_key)
    return keys


def _variables_by_path(checkpoint: Any) -> dict[str, Any]:
    model, optimizer = checkpoint.model, getattr(checkpoint, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None else [])]
    found: dict[str, Any] = {}
    for variable in variables:
        found.setdefault(variable.path, variable)
    return found


def verify_keras(path: Path, order: list[str], plan: Plan, expected: Expected, result: CheckpointResult) -> None:
    """Read the .keras file back through ckpt-tools (values, block by block) and, at the same time in a second
    thread, through keras.models.load_model (placement: each loaded variable, in `order`, compared in turn).
    `order` is the converted model's variable paths, weights then optimizer variables."""
    with ThreadPoolExecutor(1, thread_name_prefix="ckpt-verify") as pool:
        native = pool.submit(_read_back, path, plan, expected, result)
        try:
            loaded = _compare_loaded(path, order, expected)
        finally:
            problems = native.result()  # also when Keras failed: the thread's files are closed before cleanup
    result.verified_by.append("keras.models.load_model, by variable order")
    _raise_if([*problems, *loaded], path)


def _read_back(path: Path, plan: Plan, expected: Expected, result: CheckpointResult) -> list[str]:
    """The file's values through ckpt-tools' reader, matched to what each variable must hold."""
    keys: dict[str, str] = {}
    with open_checkpoint(path) as out:
        problems = _compare_as_multiset(out, expected, result, keys)
        result.verified_by.append(f"ckpt-tools {out.format} reader, values")
        _record_outputs(plan, out, keys)
        _step_check(out, result, problems)
    return problems


def _compare_loaded(path: Path, order: list[str], expected: Expected) -> list[str]:
    """Load the file with Keras; the same config gives the same variable order (paths may differ: Keras renames
    models and optimizers per process)."""
    import keras

    from ckpt_tools.conversion.factory import weights_through_disk

    try:
        with weights_through_disk():
            loaded = keras.models.load_model(path)
    except Exception as exc:
        raise ConversionError(f"{path}: keras.models.load_model cannot load the output: {exc}") from exc
    loaded_opt = getattr(loaded, "optimizer", None)
    theirs = [*loaded.weights, *(loaded_opt.variables if loaded_opt is not None else [])]
    problems = []
    if len(order) != len(theirs):
        problems.append(f"keras.models.load_model gives {len(theirs)} variables, expected {len(order)}")
    for mine, other in zip(order, theirs, strict=False):
        if mine in expected and not _holds_array(keras.ops.convert_to_numpy(other), expected[mine]):
            problems.append(f"{mine}: holds other values after keras.models.load_model")
    return problems


def _compare_by_key(out: VariableMap, expected: Expected, keys: dict[str, str], result: CheckpointResult) -> list[str]:
    problems = []
    for path, want in expected.items():
        var = out.variables.get(keys[path])
        if var is None:
            problems.append(f"{path}: {keys[path]} missing from the output")
        elif not _holds(var, want):
            problems.append(f"{path}: {keys[path]} does not hold the expected {want.kind} values")
        else:
            _count(result, want.kind)
    return problems


def _record_outputs(plan: Plan, out: VariableMap, keys: dict[str, str]) -> None:
    """Remember the names the output's reader gives each converted variable (for reports and diff rules)."""
    for pair in plan.pairs:
        if pair.target in keys and keys[pair.target] in out:
            pair.output = out[keys[pair.target]].name
        for slot, path in pair.slot_paths.items():
            if path in keys and keys[path] in out:
                pair.slot_outputs[slot] = out[keys[path]].name
    plan.step_output = out[out.step_key].name if out.step_key is not None and out.step_key in out else None


def _compare_as_multiset(
    out: VariableMap, expected: Expected, result: CheckpointResult, found: dict[str, str]
) -> list[str]:
    """Each expected tensor must be found, by shape, dtype and CRC32C, in a distinct output variable.
    Every candidate is digested once, block by block; candidates are taken in the output's order."""
    kinds = {(want.shape, want.dtype) for want in expected.values()}
    holding: dict[tuple[tuple[int, ...], str, int], list[str]] = {}
    for var in out.values():
        if (tuple(var.shape), var.dtype) in kinds:
            holding.setdefault(stored_value(var), []).append(var.key)
    problems = []
    for path, want in expected.items():
        keys = holding.get((want.shape, want.dtype, want.digest))
        if keys:
            found[path] = keys.pop(0)
            _count(result, want.kind)
        else:
            problems.append(f"{path}: no output tensor holds the expected {want.kind} values")
    return problems


def _count(result: CheckpointResult, kind: str) -> None:
    if kind == "weight":
        result.weights_identical += 1
    elif kind == "slot":
        result.slots_equal += 1


def _step_check(out: VariableMap, result: CheckpointResult, problems: list[str]) -> None:
    """A resumable output holds the step; a weights-only one holds no optimizer state at all."""
    if result.weights_only:
        result.step_ok = out.step is None and out.optimizer.present is False
        if not result.step_ok:
            problems.append("the weights-only output reads back with optimizer state or a step")
        return
    result.step_ok = out.step == result.step
    if not result.step_ok:
        problems.append(f"the output's step reads back as {out.step}, expected {result.step}")


def _raise_if(problems: list[str], where: Path) -> None:
    if problems:
        raise ConversionError(f"{where}: read-back verification failed, nothing written: {listed_names(problems)}")
