"""Read-back verification of converted outputs: every weight, slot and the step found again, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.conversion.plan import Plan, listed_names
from ckpt_tools.errors import ConversionError
from ckpt_tools.model import VariableMap
from ckpt_tools.readers.registry import open_checkpoint

Expected = dict[str, tuple[str, np.ndarray]]  # Keras variable path -> (weight|slot|step, value it must hold)


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
    import tensorflow as tf

    from ckpt_tools.bundle import BundleReader

    out = open_checkpoint(prefix)
    graph = BundleReader(prefix).object_graph()
    objects = tf.train.TrackableView(checkpoint).descendants()
    keys: dict[str, str] = {}
    if graph is not None and len(graph.nodes) == len(objects):
        by_id = {id(obj): i for i, obj in enumerate(objects)}
        for path in expected:
            variable = _find_variable(checkpoint, path)
            node = by_id.get(id(variable)) if variable is not None else None
            if node is not None:
                for attr in graph.nodes[node].attributes:
                    if attr.name == "VARIABLE_VALUE":
                        keys[path] = str(attr.checkpoint_key)
    if len(keys) == len(expected):
        problems = _compare_by_key(out, expected, keys, result)
        result.verified_by.append("ckpt-tools tf2 reader, object-graph keys")
    else:
        problems = _compare_as_multiset(out, expected, result, keys)
        result.verified_by.append("ckpt-tools tf2 reader, values")
    _record_outputs(plan, out, keys)
    _step_check(out, result, problems)
    _raise_if(problems, prefix)


def _find_variable(checkpoint: Any, path: str) -> Any:
    model, optimizer = checkpoint.model, getattr(checkpoint, "optimizer", None)
    for variable in [*model.weights, *(optimizer.variables if optimizer is not None else [])]:
        if variable.path == path:
            return variable
    return None


def verify_keras(path: Path, keras_model: Any, plan: Plan, expected: Expected, result: CheckpointResult) -> None:
    """Read the .keras file back through ckpt-tools (values) and through keras.models.load_model (placement)."""
    import keras

    out = open_checkpoint(path)
    keys: dict[str, str] = {}
    problems = _compare_as_multiset(out, expected, result, keys)
    result.verified_by.append(f"ckpt-tools {out.format} reader, values")
    _record_outputs(plan, out, keys)
    _step_check(out, result, problems)
    try:
        loaded = keras.models.load_model(path)
    except Exception as exc:
        raise ConversionError(f"{path}: keras.models.load_model cannot load the output: {exc}") from exc
    # Same config, so the same variable order; paths may differ (Keras renames models and optimizers per process).
    mine = getattr(keras_model, "optimizer", None)
    ours = [*keras_model.weights, *(mine.variables if mine is not None else [])]
    loaded_opt = getattr(loaded, "optimizer", None)
    theirs = [*loaded.weights, *(loaded_opt.variables if loaded_opt is not None else [])]
    if len(ours) != len(theirs):
        problems.append(f"keras.models.load_model gives {len(theirs)} variables, expected {len(ours)}")
    for mine, other in zip(ours, theirs, strict=False):
        if mine.path in expected and not _same_bits(keras.ops.convert_to_numpy(other), expected[mine.path][1]):
            problems.append(f"{mine.path}: holds other values after keras.models.load_model")
    result.verified_by.append("keras.models.load_model, by variable order")
    _raise_if(problems, path)


def _compare_by_key(out: VariableMap, expected: Expected, keys: dict[str, str], result: CheckpointResult) -> list[str]:
    problems = []
    for path, (kind, value) in expected.items():
        var = out.variables.get(keys[path])
        if var is None:
            problems.append(f"{path}: {keys[path]} missing from the output")
        elif not _same_bits(var.read(), value):
            problems.append(f"{path}: {keys[path]} does not hold the expected {kind} values")
        else:
            _count(result, kind)
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
    """Each expected tensor must be found, bit for bit, in a distinct output variable of its shape and dtype."""
    buckets: dict[tuple[tuple[int, ...], str], list[str]] = {}
    for var in out.values():
        buckets.setdefault((tuple(var.shape), var.dtype), []).append(var.key)
    cache: dict[str, bytes] = {}
    problems = []
    for path, (kind, value) in expected.items():
        candidates = buckets.get((tuple(value.shape), str(value.dtype)), [])
        for key in candidates:
            if key not in cache:
                cache[key] = np.ascontiguousarray(out[key].read()).tobytes()
            if cache[key] == np.ascontiguousarray(value).tobytes():
                candidates.remove(key)
                found[path] = key
                _count(result, kind)
                break
        else:
            problems.append(f"{path}: no output tensor holds the expected {kind} values")
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


def _same_bits(a: Any, b: np.ndarray) -> bool:
    a = np.asarray(a)
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == b.tobytes()


def _raise_if(problems: list[str], where: Path) -> None:
    if problems:
        raise ConversionError(f"{where}: read-back verification failed, nothing written: {listed_names(problems)}")
