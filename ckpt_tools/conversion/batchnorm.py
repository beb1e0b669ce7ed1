"""Which tf_keras kernel trained each BatchNormalization layer of a Keras-2 model_config: fused or not.

tf_keras uses the fused kernel, whose moving variance takes the n/(n-1)-corrected batch variance, only for 4-D
and 5-D inputs normalized over one axis that is the channel axis (1 or the last), with no renorm, virtual
batches or synchronization; otherwise it computes plain moments, as Keras 3 always does. A saved config
records `axis` resolved against the input rank (build turns -1 into rank-1), which is the evidence used here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# How a layer changes the rank of its input (batch axis included), for the layers whose effect is fixed.
RANK_KEEPING = frozenset(
    {
        "Dense", "Activation", "Dropout", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU",
        "PReLU", "ELU", "ThresholdedReLU", "Softmax", "Add", "Subtract", "Multiply", "Average", "Maximum",
        "Minimum", "Concatenate", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
        "UnitNormalization", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D",
        "DepthwiseConv2D", "Conv2DTranspose", "Conv3DTranspose", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "ZeroPadding1D", "ZeroPadding2D",
        "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
        "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Permute",
    }
)  # fmt: skip
TO_TWO_D = frozenset(
    {
        "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    }
)  # fmt: skip
BATCH_NORMS = ("BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2")
MAX_LAYERS = 100_000


def batch_norm_kernels(model_config: Any) -> dict[str, str]:
    """BatchNormalization layer name -> "fused", "plain" or "unknown" (the config cannot decide)."""
    ranks = _input_ranks(model_config)
    out: dict[str, str] = {}
    for class_name, config in _layers(model_config):
        if class_name in BATCH_NORMS:
            name = str(config.get("name", "?"))
            out[name] = _kernel(config, ranks.get(name))
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


def _input_ranks(model_config: Any) -> dict[str, int]:
    """Layer name -> the rank of its input, for a Sequential model's top-level layers (None where unknown)."""
    inner = model_config.get("config") if isinstance(model_config, dict) else None
    if not isinstance(model_config, dict) or model_config.get("class_name") != "Sequential":
        return _flat_model_ranks(model_config)
    layers = inner.get("layers") if isinstance(inner, dict) else None
    rank = _shape_rank(inner.get("build_input_shape")) if isinstance(inner, dict) else None
    out: dict[str, int] = {}
    for layer in layers if isinstance(layers, list) else []:
        config = layer.get("config") if isinstance(layer, dict) else None
        if not isinstance(config, dict):
            return out
        kind = str(layer.get("class_name"))
        if kind == "InputLayer" or (rank is None and config.get("batch_input_shape")):
            rank = _shape_rank(config.get("batch_input_shape") or config.get("batch_shape"))
        if kind == "InputLayer":
            continue
        if rank is not None:
            out[str(config.get("name"))] = rank
        rank = _next_rank(kind, config, rank)
    return out


def _flat_model_ranks(model_config: Any) -> dict[str, int]:
    """A functional model whose inputs are all 2-D and whose layers never raise the rank: every layer sees 2-D."""
    layers = list(_layers(model_config))
    shapes = [c.get("batch_input_shape") or c.get("batch_shape") for k, c in layers if k == "InputLayer"]
    flat = bool(shapes) and all(_shape_rank(shape) == 2 for shape in shapes)
    if not flat or not all(k in RANK_KEEPING or k in TO_TWO_D or k in ("InputLayer", *BATCH_NORMS) for k, _ in layers):
        return {}
    return {str(c.get("name")): 2 for k, c in layers if k in BATCH_NORMS}


def _shape_rank(shape: Any) -> int | None:
    return len(shape) if isinstance(shape, list) else None


def _next_rank(kind: str, config: dict[str, Any], rank: int | None) -> int | None:
    if rank is None:
        return None
    if kind in RANK_KEEPING or kind in BATCH_NORMS:
        return rank
    if kind in TO_TWO_D:
        return 2
    if kind == "Reshape" and isinstance(config.get("target_shape"), list):
        return len(config["target_shape"]) + 1
    if kind == "Embedding":
        return rank + 1
    return None


def _kernel(config: dict[str, Any], rank: int | None) -> str:
    """tf_keras fuses only for a 4-D input over axis 1 or 3, or a 5-D one over axis 1 or 4 (one axis, no renorm,
    virtual batches or synchronization); `axis` is saved resolved against the input rank."""
    if config.get("fused") is False or config.get("renorm") or config.get("synchronized"):
        return "plain"
    if config.get("virtual_batch_size") is not None:
        return "plain"
    axis = config.get("axis")
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or not isinstance(axes[0], int) or isinstance(axes[0], bool):
        return "plain" if len(axes) > 1 else "unknown"
    (index,) = axes
    if rank is not None:
        fused = (rank == 4 and index in (1, 3)) or (rank == 5 and index in (1, 4))
        return "fused" if fused else "plain"
    if index == 2:
        return "plain"  # a 3-D input's channel axis, or an axis no fused kernel takes
    return "unknown"
