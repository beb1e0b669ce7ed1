"""What an artifact records about itself, for summaries: hyper-parameters, the writer, SavedModel signatures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ckpt_tools.model import VariableMap

# Optimizer config keys that are bookkeeping, not hyper-parameters of the update rule.
_NOT_HYPER = frozenset({"name", "jit_compile", "is_legacy_optimizer", "registered_name", "module"})


@dataclass(frozen=True)
class Signature:
    """One SavedModel signature: method, inputs and outputs as (key, dtype, shape) triples."""

    name: str
    method: str
    inputs: tuple[tuple[str, str, tuple[int, ...] | None], ...]
    outputs: tuple[tuple[str, str, tuple[int, ...] | None], ...]

    def to_json(self) -> dict[str, Any]:
        def side(items: tuple[tuple[str, str, tuple[int, ...] | None], ...]) -> list[dict[str, Any]]:
            return [{"key": k, "dtype": d, "shape": None if s is None else list(s)} for k, d, s in items]

        return {"name": self.name, "method": self.method, "inputs": side(self.inputs), "outputs": side(self.outputs)}


@dataclass(frozen=True)
class Facts:
    """Hyper-parameters (and where they were read), who wrote the artifact and when, tags and signatures."""

    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters_from: str | None = None
    writer: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    signatures: tuple[Signature, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "hyperparameters": dict(self.hyperparameters),
            "hyperparameters_from": self.hyperparameters_from,
            "writer": dict(self.writer),
            "tags": list(self.tags),
            "signatures": [s.to_json() for s in self.signatures],
        }


def facts(vmap: VariableMap) -> Facts:
    """The facts `vmap`'s reader found (its optimizer findings and descriptive metadata); nothing is executed."""
    hyper, origin = _hyperparameters(vmap)
    tags, signatures = _signatures(vmap.metadata)
    return Facts(hyper, origin, _writer(vmap.metadata), tags, signatures)


def _hyperparameters(vmap: VariableMap) -> tuple[dict[str, Any], str | None]:
    info = vmap.optimizer
    if info.hyper:
        return dict(info.hyper), info.hyper_origin
    recorded = info.recorded_config or vmap.metadata.get("optimizer_config")
    config = recorded.get("config") if isinstance(recorded, Mapping) else None
    if not isinstance(config, Mapping):
        return {}, None
    hyper = {k: v for k, v in config.items() if k not in _NOT_HYPER and v is not None and not isinstance(v, dict)}
    schedules = {k: v.get("class_name", "schedule") for k, v in config.items() if isinstance(v, Mapping)}
    hyper.update({k: f"schedule {v}" for k, v in schedules.items()})
    where = "the model file's training config" if vmap.format == "keras2-h5" else "the archive's compile config"
    return hyper, where


def _writer(metadata: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key in ("keras_version", "backend", "date_saved"):
        if isinstance(metadata.get(key), str):
            out[key] = metadata[key]
    versions = {g.get("tensorflow_version") for g in metadata.get("meta_graphs", []) if isinstance(g, Mapping)}
    versions.discard(None)
    if len(versions) == 1:
        out["tensorflow_version"] = str(versions.pop())
    return out


def _signatures(metadata: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[Signature, ...]]:
    tags: list[str] = []
    found: list[Signature] = []
    for graph in metadata.get("meta_graphs", []):
        if not isinstance(graph, Mapping):
            continue
        tags += [t for t in graph.get("tags", []) if t not in tags]
        for name, sig in sorted(graph.get("signatures", {}).items()):
            if name.startswith("__"):
                continue  # __saved_model_init_op: the restore op, not a callable signature
            found.append(Signature(name, sig.get("method", ""), _side(sig.get("inputs")), _side(sig.get("outputs"))))
    return tuple(tags), tuple(found)


def _side(items: Any) -> tuple[tuple[str, str, tuple[int, ...] | None], ...]:
    if not isinstance(items, Mapping):
        return ()
    out = []
    for key, info in sorted(items.items()):
        shape = info.get("shape")
        out.append((str(key), str(info.get("dtype")), None if shape is None else tuple(int(d) for d in shape)))
    return tuple(out)


FLOAT32_MAX = 3.4028234663852886e38  # float(np.finfo(np.float32).max), without importing numpy to list


def short_number(value: Any) -> str:
    """A recorded number without float32 noise: 0.009999999776482582 (float32 0.01 widened) prints as 0.01."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        return str(value)
    import numpy as np

    narrow = np.float32(value)
    return str(narrow) if float(narrow) == value else repr(value)
