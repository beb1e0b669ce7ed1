"""What a Keras-2 source's model_config and optimizer state show its run did that the Keras 3 run would not."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ckpt_tools.conversion import slots as sl
from ckpt_tools.messages import listed
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.catalogue import SPARSE_ROWS_ONLY

LISTED = 3
SPARSE_LAYERS = ("Embedding",)  # layers whose weights get row-wise (IndexedSlices) gradients
LINEAR_IN_GRADIENT = ("SGD", "SGD(momentum)")  # repeated ids sum to the same update in every framework
HALF_POLICIES = ("float16", "bfloat16")
REPEATED = (
    "tf_keras merges repeated ids of a batch before the update, Keras 3 applies their rows one by one (squares of "
    "parts instead of the square of their sum); the same only when no batch repeats an id, which the artifact "
    "cannot show"
)


def config_reasons(
    vmap: VariableMap, source: sl.SourceOptimizer, model_config: Any, trained: Iterable[tuple[str, bool]]
) -> list[str]:
    """Approximations read from a Keras-2 `model_config` (None when the source records none) and from which
    weights the source's optimizer holds state for; `trained`: (source key, whether the factory trains it)."""
    out = _sparse(source, model_config) + _policy(model_config)
    out += _coverage(vmap, source, list(trained))
    if source.origin.startswith("keras2") and _weight_decay(source):
        out.append(
            "weight decay: which variables the source excluded from it (exclude_from_weight_decay) is not "
            "recorded, so the factory's exclusions cannot be checked"
        )
    return out


def layers(model_config: Any) -> Iterator[Mapping[str, Any]]:
    """Every layer config inside a model_config, nested models' layers included (no recursion)."""
    stack = [model_config]
    while stack:
        item = stack.pop()
        if not isinstance(item, Mapping):
            continue
        yield item
        inner = item.get("config")
        nested = inner.get("layers") if isinstance(inner, Mapping) else None
        stack.extend(nested if isinstance(nested, list) else [])


def _name(layer: Mapping[str, Any]) -> str:
    inner = layer.get("config")
    return str(inner.get("name") if isinstance(inner, Mapping) else layer.get("name", "?"))


def _sparse(source: sl.SourceOptimizer, model_config: Any) -> list[str]:
    """Trained Embedding layers get row-wise gradients, which tf_keras and Keras 3 apply differently."""
    sparse = [
        _name(layer)
        for layer in layers(model_config)
        if layer.get("class_name") in SPARSE_LAYERS and (layer.get("config") or {}).get("trainable", True) is not False
    ]
    if not sparse or source.family is None:
        return []
    names = listed(sparse, LISTED)
    if source.origin == "keras2-legacy" and source.family in SPARSE_ROWS_ONLY:
        return [
            f"sparse updates ({names}): legacy tf_keras {source.family} updates only the rows in each batch (the "
            "others' state does not decay), Keras 3 updates every row"
        ]
    if source.family in LINEAR_IN_GRADIENT:
        return []
    return [f"sparse updates ({names}, {source.family}): {REPEATED}"]


def _policy(model_config: Any) -> list[str]:
    """A source trained under a reduced-precision dtype policy (recorded per layer)."""
    policies = []
    for layer in layers(model_config):
        inner = layer.get("config")
        dtype = inner.get("dtype") if isinstance(inner, Mapping) else None
        if isinstance(dtype, Mapping):
            dtype = (dtype.get("config") or {}).get("name")
        if isinstance(dtype, str) and dtype.startswith("mixed_") and any(h in dtype for h in HALF_POLICIES):
            policies.append(dtype)
    if not policies:
        return []
    return [
        f"the source's model computed in reduced precision (dtype policy {listed(list(dict.fromkeys(policies)), 2)}): "
        "its forward and backward passes rounded differently from a float32 or another framework's run"
    ]


def _coverage(vmap: VariableMap, source: sl.SourceOptimizer, trained: list[tuple[str, bool]]) -> list[str]:
    """Weights one side trains and the other does not, told by which weights hold the source's optimizer state
    (only for optimizers that keep state per weight: a weight without slots was not trained)."""
    if source.origin == "tf1" or not source.slots:
        return []
    stated = set(source.slots)
    only_source = [key for key, trainable in trained if not trainable and key in stated]
    only_keras = [key for key, trainable in trained if trainable and key not in stated]
    shown = {key: vmap[key].name if key in vmap else key for key, _ in trained}
    out = []
    if only_source:
        out.append(
            f"the source trained {listed([shown[k] for k in only_source], LISTED)} (it holds optimizer state for "
            "them), which the factory's model does not train"
        )
    if only_keras:
        out.append(
            f"Keras 3 would train {listed([shown[k] for k in only_keras], LISTED)}, for which the source holds no "
            "optimizer state (the source did not train them)"
        )
    return out


def _weight_decay(source: sl.SourceOptimizer) -> bool:
    value = source.hyper.get("weight_decay")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# Layer options that change how a layer trains, compared between the source's model_config and the factory.
TRAINING_OPTIONS = {
    "BatchNormalization": ("momentum", "epsilon", "center", "scale"),
}
COMMON_OPTIONS = (
    "activation",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "beta_regularizer",
    "gamma_regularizer",
    "embeddings_regularizer",
    "kernel_constraint",
    "bias_constraint",
    "embeddings_constraint",
)
LayerConfig = tuple[str, str, Mapping[str, Any]]  # (name, class, config)


def factory_layers(keras_model: Any) -> tuple[LayerConfig, ...]:
    """Every layer of the factory's model with its config (layers whose config Keras cannot give are left out)."""
    out = []
    stack = list(getattr(keras_model, "layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []) if layer is not keras_model else [])
        try:
            config = layer.get_config()
        except Exception:  # custom layers raise anything from get_config; they are not compared
            continue
        if isinstance(config, Mapping):
            out.append((str(layer.name), type(layer).__name__, config))
    return tuple(out)


def layer_reasons(model_config: Any, factory: Iterable[LayerConfig]) -> list[str]:
    """Options of same-named, same-class layers that differ between the source's model_config and the factory:
    batch-norm momentum and epsilon, activations, regularizers, constraints."""
    theirs = {name: (cls, config) for name, cls, config in factory}
    out = []
    for layer in layers(model_config):
        cls, name = layer.get("class_name"), _name(layer)
        config = layer.get("config")
        if name not in theirs or theirs[name][0] != cls or not isinstance(config, Mapping):
            continue
        other = theirs[name][1]
        for option in (*TRAINING_OPTIONS.get(str(cls), ()), *COMMON_OPTIONS):
            if option in config and option in other and not _same_option(config[option], other[option]):
                out.append(
                    f"layer {name} {option}: source {_shown(config[option])}, factory {_shown(other[option])} "
                    "(the factory's model trains differently)"
                )
    return out


def _core(value: Any) -> Any:
    """A serialized option without what only the serialization differs in (module, registered name, dtype)."""
    if isinstance(value, Mapping):
        if "class_name" in value:
            config = value.get("config")
            return (value["class_name"], _core(config) if isinstance(config, Mapping) else config)
        return tuple(sorted((k, _core(v)) for k, v in value.items() if k not in ("name", "dtype")))
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _same_option(a: Any, b: Any) -> bool:
    return bool(_core(a) == _core(b))


def _shown(value: Any) -> str:
    core = _core(value)
    return str(core[0] if isinstance(core, tuple) and len(core) == 2 and isinstance(core[0], str) else core)[:60]
