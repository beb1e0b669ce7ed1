"""The Keras 3 model of a Keras-2 `.h5` or tf_keras SavedModel, rebuilt from its recorded configs (parsed as data)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_tools.conversion import archive
from ckpt_tools.conversion.config_reasons import layers
from ckpt_tools.conversion.slots import SUPPORTED_TARGETS
from ckpt_tools.conversion.sources import no_architecture, recorded_configs
from ckpt_tools.errors import CkptToolsError, ConversionError
from ckpt_tools.messages import printable
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.catalogue import FRAMEWORK_DEFAULTS
from ckpt_tools.optimizers.lookup import inner_config, is_loss_scale, keras_family

REBUILT = "<rebuilt from model_config>"
HINT = "give a factory with model= (docs/convert.md, Without --model)"
CODE_CLASSES = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"})
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
KERAS_MODULES = ("keras", "tf_keras")
# Optimizer options every Keras 3 optimizer takes with the tf_keras meaning (beside each family's own).
COMMON_OPTIONS = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "weight_decay",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
)
# Loss config keys tf_keras writes that Keras 3's loss classes do not take.
TF_KERAS_LOSS_KEYS = ("fn",)


@dataclass(frozen=True)
class RebuildSpec:
    """What the source's configs say to build: the architecture, the Keras 3 optimizer and its arguments."""

    label: str
    model_config: dict[str, Any]
    optimizer_class: str | None  # None: the source records no optimizer (a weights-only output)
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    loss: Any = None
    loss_weights: Any = None  # training_config's loss_weights: a list or dict of numbers


def rebuild_spec(vmap: VariableMap, *, allow_weights_only: bool) -> RebuildSpec:
    """Check, from the parsed JSON alone, that the source can be rebuilt safely (no Keras or TensorFlow import
    yet, no model code run); a one-line refusal naming model= otherwise."""
    label = str(vmap.path)
    if vmap.format == "keras2-h5":
        model_config, training = _configs(Path(vmap.path), label)
    else:
        recorded = recorded_configs(vmap)
        if recorded is None:
            raise ConversionError(no_architecture(vmap))
        model_config, training, _ = recorded
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise ConversionError(f"{label}: no readable model_config attribute, so the architecture is unknown; {HINT}")
    _refuse_code(model_config, label)
    _refuse_policies(model_config, label)
    if vmap.format == "keras-archive":
        model_config = archive.legacy(model_config)
    if not isinstance(training, dict):
        if not allow_weights_only:
            raise ConversionError(
                f"{label}: no training_config, so the optimizer is unknown; {HINT} for a resumable output, or "
                "pass allow_weights_only=True for the weights alone"
            )
        return RebuildSpec(label, model_config, None)
    optimizer_class, args = _optimizer(training.get("optimizer_config"), label)
    return RebuildSpec(label, model_config, optimizer_class, args, training.get("loss"), _loss_weights(training, label))


def _loss_weights(training: dict[str, Any], label: str) -> Any:
    """training_config's loss_weights (a list or a dict of numbers), refused when malformed."""
    weights = training.get("loss_weights")
    values = list(weights.values()) if isinstance(weights, dict) else weights
    if weights is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConversionError(f"{label}: training_config's loss_weights are not a list or dict of numbers; {HINT}")
    return weights


def _refuse_policies(model_config: dict[str, Any], label: str) -> None:
    """A mixed-precision dtype policy is not rebuilt (tf_keras writes it in a form Keras 3 does not read)."""
    for obj in _objects(model_config):
        dtype = obj.get("dtype")
        if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
            name = printable(str((dtype.get("config") or {}).get("name", "?")))[:40]
            if name not in ("float32", "float64", "float16", "bfloat16"):
                raise ConversionError(f"{label}: the model was trained under the dtype policy {name}; {HINT}")


def _configs(path: Path, label: str) -> tuple[Any, Any]:
    """The model_config and training_config attributes, parsed within the readers' JSON limits."""
    from ckpt_tools.readers import h5common as h5c

    out = []
    try:
        with h5c.open_h5(path, label) as f:
            for name in ("model_config", "training_config"):
                text = h5c.attr_text(f, name)
                out.append(h5c.parse_json(text, f"{label}: {name} attribute") if text is not None else None)
    except h5c.JsonError as exc:
        raise ConversionError(f"{exc}; {HINT}") from exc
    return out[0], out[1]


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside `value`, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def _refuse_code(model_config: dict[str, Any], label: str) -> None:
    """Refuse what would run code or reach outside Keras: Lambda bytecode, other modules, custom objects."""
    for obj in _objects(model_config):
        cls = obj.get("class_name")
        raw = obj.get("config")
        inner: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = printable(str(inner.get("name", obj.get("name", "?"))))[:80]
        module, registered = obj.get("module"), obj.get("registered_name")
        if cls in CODE_CLASSES or isinstance(obj.get("function"), list):
            what = "Python code in the file, never run" if cls in ("Lambda", "__lambda__") else "a function by name"
            raise ConversionError(f"{label}: layer {name} is a {cls} ({what}); {HINT}")
        if isinstance(module, str) and module.split(".")[0] not in KERAS_MODULES:
            raise ConversionError(f"{label}: {name} refers to module {printable(module)[:80]!r}; {HINT}")
        if any(isinstance(v, str) and ">" in v for v in (cls, registered)):
            shown = printable(str(registered if isinstance(registered, str) else cls))[:80]
            raise ConversionError(f"{label}: {name} is the custom object {shown}; {HINT}")


def _optimizer(recorded: Any, label: str) -> tuple[str, dict[str, Any]]:
    """The Keras 3 class the catalogue continues the source's optimizer as, with the source's hyper-parameters."""
    # A loss-scale wrapper continues as its inner optimizer: the scale's state is not in the file, which
    # exactness.py names as an approximation (wrappers.loss_scale_reasons).
    recorded = inner_config(recorded)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("class_name"), str):
        raise ConversionError(f"{label}: training_config records no optimizer_config; {HINT}")
    cls = recorded["class_name"].split(">")[-1]
    raw = recorded.get("config")
    config: dict[str, Any] = raw if isinstance(raw, dict) else {}
    fam = keras_family(cls, config)
    if is_loss_scale(cls) or fam is None or fam.keras3 not in SUPPORTED_TARGETS:
        raise ConversionError(
            f"{label}: the source optimizer {printable(cls)[:60]} has no Keras 3 translation in the optimizer "
            f"catalogue (supported: Adam, SGD/Momentum, RMSprop, Adagrad); {HINT}"
        )
    if "lr" in config and "learning_rate" not in config:
        config = {**config, "learning_rate": config["lr"]}
    decay = config.get("decay")
    if isinstance(decay, (int, float)) and decay > 0:
        raise ConversionError(f"{label}: the legacy optimizer option decay={decay:g} has no Keras 3 equivalent; {HINT}")
    args = dict(FRAMEWORK_DEFAULTS.get(fam.name, {}).get("tf_keras", {}))
    for name in (*fam.keras3_hyper, *COMMON_OPTIONS):
        value = config.get(name)
        if isinstance(value, dict):
            schedule = printable(str(value.get("class_name", "?")))[:60]
            raise ConversionError(
                f"{label}: {name} is the schedule {schedule}; rebuilding does not translate schedules, {HINT}"
            )
        if value is not None and not isinstance(value, (bool, int, float)):
            raise ConversionError(f"{label}: optimizer option {name}={printable(repr(value))[:60]} is not a number")
        if value is not None:
            args[name] = value
    return str(fam.keras3), {k: v for k, v in args.items() if v is not None}


# ---------------------------------------------------------------------------------------------- Keras side
def build(spec: RebuildSpec, keras: Any) -> tuple[Any, list[str]]:
    """The model, built from model_config with Keras' safe mode on and compiled with the translated optimizer
    (and the source's loss when Keras 3 can rebuild it); and the warnings to report."""
    _refuse_unknown_layers(spec, keras)
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    try:
        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
            model = saving_utils.model_from_config(copy.deepcopy(spec.model_config), custom_objects={})
    except CkptToolsError:
        raise
    except Exception as exc:  # Keras raises many types for configs it cannot rebuild
        text = " ".join(str(exc).split())[:200]
        raise ConversionError(
            f"{spec.label}: Keras 3 cannot rebuild the model from model_config ({type(exc).__name__}: {text}); {HINT}"
        ) from exc
    warnings: list[str] = []
    if spec.optimizer_class is None:
        optimizer = keras.optimizers.SGD()  # a placeholder: the output is written without any optimizer
        loss = None
    else:
        optimizer = getattr(keras.optimizers, spec.optimizer_class)(**spec.optimizer_args)
        loss = _loss(spec, keras, warnings)
    weights = spec.loss_weights if loss is not None else None
    if isinstance(weights, list) and len(weights) > 1:
        loss = [loss] * len(weights)  # tf_keras applies one loss to every output; Keras 3 wants one per weight
    elif isinstance(weights, dict):
        loss = dict.fromkeys(weights, loss)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=weights)
    if spec.loss_weights is not None and loss is None:
        warnings.append(f"training_config's loss_weights {spec.loss_weights} are not applied: the loss is not rebuilt")
    return model, warnings


def _refuse_unknown_layers(spec: RebuildSpec, keras: Any) -> None:
    """Every layer must be a Keras 3 built-in: a custom layer needs its code, which only a factory brings."""
    for layer in layers(spec.model_config):
        name = layer.get("class_name")
        if name not in MODEL_CLASSES and not isinstance(getattr(keras.layers, str(name), None), type):
            raise ConversionError(
                f"{spec.label}: layer class {printable(str(name))[:60]} is not a Keras 3 built-in layer; {HINT}"
            )


def _loss(spec: RebuildSpec, keras: Any, warnings: list[str]) -> Any:
    """The source's loss in Keras 3, or None with a warning (the loss does not affect the optimizer state)."""
    raw = spec.loss
    if raw is None:
        return None
    from keras.src.saving import serialization_lib

    try:
        with serialization_lib.SafeModeScope(True):
            if isinstance(raw, str):
                return keras.losses.get(raw)
            if _single_keras_object(raw):
                config = dict(raw.get("config") or {})
                for key in TF_KERAS_LOSS_KEYS:
                    config.pop(key, None)
                if config.get("reduction") == "auto":
                    config["reduction"] = "sum_over_batch_size"
                return keras.losses.deserialize({"class_name": raw["class_name"], "config": config})
            raise ValueError("not a single loss")
    except Exception as exc:  # Keras raises many types for configs it cannot rebuild
        shown = printable(str(raw))[:80]
        warnings.append(
            f"training_config's loss {shown} cannot be rebuilt in Keras 3 ({type(exc).__name__}); the model is "
            "compiled with the optimizer only (the loss does not affect the optimizer state; compile your own "
            "loss before training)"
        )
        return None


def _single_keras_object(raw: Any) -> bool:
    """One serialized object of Keras' own (`{"class_name": ..., "config": ...}`, no other module)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("class_name"), str) or ">" in raw["class_name"]:
        return False
    module = raw.get("module")
    return module is None or (isinstance(module, str) and module.split(".")[0] in KERAS_MODULES)
