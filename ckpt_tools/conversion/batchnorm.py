"""Which tf_keras kernel trained each BatchNormalization layer of a Keras-2 model_config: fused or not.

tf_keras uses the fused kernel, whose moving variance takes the n/(n-1)-corrected batch variance, only for 4-D
and 5-D inputs normalized over one axis that is the channel axis (1 or the last), with no renorm, virtual
batches or synchronization; otherwise it computes plain moments, as Keras 3 always does. A saved config
records `axis` resolved against the input rank (build turns -1 into rank-1), which is the evidence used here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Layers that keep (or lower) the rank of a 2-D input: a model made only of these never feeds BN a 4-D tensor.
RANK_KEEPING = frozenset(
    {
        "InputLayer", "Dense", "Activation", "Dropout", "BatchNormalization", "LayerNormalization",
        "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax", "Add", "Subtract", "Multiply",
        "Average", "Maximum", "Minimum", "Concatenate", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "UnitNormalization",
    }
)  # fmt: skip
MAX_LAYERS = 100_000


def batch_norm_kernels(model_config: Any) -> dict[str, str]:
    """BatchNormalization layer name -> "fused", "plain" or "unknown" (the config cannot decide)."""
    layers = list(_layers(model_config))
    two_d = _two_d_model(model_config, layers)
    out: dict[str, str] = {}
    for class_name, config in layers:
        if class_name in ("BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2"):
            out[str(config.get("name", "?"))] = _kernel(config, two_d)
    return out


def _layers(config: Any, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """(class name, config) of every layer, nested models included (bounded)."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list) or depth > 32:
        return
    for layer in layers[:MAX_LAYERS]:
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            continue
        yield str(layer.get("class_name")), layer["config"]
        yield from _layers(layer, depth + 1)


def _two_d_model(model_config: Any, layers: list[tuple[str, dict[str, Any]]]) -> bool:
    """Every input is 2-D and no layer can raise the rank."""
    shapes = [c.get("batch_input_shape") or c.get("batch_shape") for k, c in layers if k == "InputLayer"]
    inner = model_config.get("config") if isinstance(model_config, dict) else None
    built = inner.get("build_input_shape") if isinstance(inner, dict) else None
    if built is not None:
        shapes.append(built)
    if not shapes or not all(isinstance(s, list) and len(s) == 2 for s in shapes):
        return False
    return all(k in RANK_KEEPING or k in ("Sequential", "Functional", "Model") for k, _ in layers)


def _kernel(config: dict[str, Any], two_d: bool) -> str:
    if config.get("fused") is False or config.get("renorm") or config.get("synchronized"):
        return "plain"
    if config.get("virtual_batch_size") is not None:
        return "plain"
    axis = config.get("axis")
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or not isinstance(axes[0], int) or isinstance(axes[0], bool):
        return "plain" if len(axes) > 1 else "unknown"
    (index,) = axes
    if index in (3, 4):  # the last axis of a 4-D / 5-D input
        return "fused"
    if index == 2:  # the channel axis of a 3-D input, or no channel axis a fused kernel supports
        return "plain"
    if index == 1:
        return "plain" if two_d else "unknown"  # 2-D, or channels-first 4-D / 5-D
    return "unknown"
