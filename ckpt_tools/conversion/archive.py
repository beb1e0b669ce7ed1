"""tf_keras `.keras` archives as convert sources: their config.json as configs, positional weights paired by path."""

from __future__ import annotations

import dataclasses
from typing import Any

from ckpt_tools.errors import ConversionError
from ckpt_tools.messages import printable
from ckpt_tools.model import VariableMap

CONFIG = "config.json"
LEGACY_DROPPED = frozenset({"module", "registered_name", "build_config"})
KERAS3_REFUSAL = (
    "a .keras archive whose metadata.json names no Keras 2.x version (a Keras 3 archive is loaded with "
    "keras.models.load_model); convert reads only tf_keras (Keras 2) archives"
)


def is_tf_keras(vmap: VariableMap) -> bool:
    """metadata.json says tf_keras (Keras 2.x) wrote the archive."""
    version = vmap.metadata.get("keras_version")
    return isinstance(version, str) and version.startswith("2.")


def recorded(vmap: VariableMap) -> tuple[Any, Any, str] | None:
    """(model_config, training_config, where) from config.json: the model's config, its compile_config as the
    training_config an .h5 would hold (parsed as data by the reader, never deserialized)."""
    from ckpt_tools.readers.keras_archive import read_config

    config = read_config(vmap.path)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        return None
    model_config = {"class_name": config.get("class_name"), "config": config["config"]}
    compile_config = config.get("compile_config")
    training = None
    if isinstance(compile_config, dict) and isinstance(compile_config.get("optimizer"), dict):
        training = {
            "optimizer_config": compile_config["optimizer"],
            "loss": compile_config.get("loss"),
            "loss_weights": compile_config.get("loss_weights"),
        }
    return model_config, training, CONFIG


def legacy(value: Any) -> Any:
    """config.json's model config in the form of an .h5 model_config (which Keras 3's legacy loader rebuilds):
    without the `module`, `registered_name` and `build_config` keys (checked by rebuild.py before they go)."""
    if isinstance(value, dict):
        return {k: legacy(v) for k, v in value.items() if k not in LEGACY_DROPPED}
    if isinstance(value, list):
        return [legacy(v) for v in value]
    return value


def layer_paths(keras_model: Any) -> dict[str, Any]:
    """`layers/<name>` -> layer, named as both saving_libs name a model's layers: the snake-case class name, a
    `_N` suffix from the second of a class on (tests/test_convert_archive.py checks it against Keras 3 saving)."""
    from keras.src.utils.naming import to_snake_case

    used: dict[str, int] = {}
    out: dict[str, Any] = {}
    for layer in keras_model.layers:
        name = to_snake_case(type(layer).__name__)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        out[f"layers/{name}"] = layer
    return out


def own_variables(layer: Any) -> list[Any]:
    """The variables Keras 3's saving writes under a layer's own path: its own trainable, then non-trainable ones
    (a sublayer's are written under the sublayer's path, so convert refuses a layer that has any)."""
    return [*layer._trainable_variables, *layer._non_trainable_variables]


def paired_all(vmaps: list[VariableMap], keras_model: Any) -> list[VariableMap]:
    """The sources as convert plans them for `keras_model`: a .keras archive `paired`, any other as it is."""
    return [paired(v, keras_model) if v.format == "keras-archive" else v for v in vmaps]


def paired(vmap: VariableMap, keras_model: Any) -> VariableMap:
    """The archive with each positional weight `layers/<path>/<i>` named after the model layer's i-th variable
    (trainable then non-trainable, the order both saving_libs write), shapes checked one by one; slots renamed
    with their weights. A count or shape difference is refused in one line."""
    layers = layer_paths(keras_model)
    by_layer: dict[str, list[str]] = {}
    for var in vmap.values():
        parts = var.name.split("/")
        if var.role == "weight" and parts[0] == "layers":
            if len(parts) != 3 or not parts[2].isdigit():
                raise ConversionError(f"{vmap.path}: {printable(var.name)} lies in a nested layer; {_HINT}")
            by_layer.setdefault(f"layers/{parts[1]}", []).append(var.key)
    names: dict[str, str] = {}
    for path, layer in layers.items():
        targets = own_variables(layer)
        keys = sorted(by_layer.pop(path, []), key=lambda k: int(vmap[k].name.rsplit("/", 1)[1]))
        if len(keys) != len(targets) or len(targets) != len(layer.weights):
            raise ConversionError(
                f"{vmap.path}: {path} stores {len(keys)} weight(s), the model's layer {printable(layer.name)} has "
                f"{len(layer.weights)}; {_HINT}"
            )
        for i, (key, target) in enumerate(zip(keys, targets, strict=True)):
            var = vmap[key]
            if var.name != f"{path}/{i}" or tuple(var.shape) != tuple(target.shape):
                raise ConversionError(
                    f"{vmap.path}: {printable(var.name)} {list(var.shape)} does not fit {target.path} "
                    f"{list(target.shape)} (the layer's weight {i}); {_HINT}"
                )
            names[key] = target.path
    if by_layer:
        raise ConversionError(f"{vmap.path}: the model has no layer for {printable(sorted(by_layer)[0])}; {_HINT}")
    return _renamed(vmap, names)


_HINT = "the archive's weights pair with the model's layers by position only (docs/convert.md)"


def _renamed(vmap: VariableMap, names: dict[str, str]) -> VariableMap:
    """Weights under their paired names, their slots as `optimizer/<name>/<slot>`; keys (and slot links) kept."""
    by_name = {vmap[key].name: new for key, new in names.items()}
    variables = {}
    for key, var in vmap.variables.items():
        if key in names:
            var = dataclasses.replace(var, name=names[key])
        elif var.slot_of in by_name and var.slot is not None:
            new = by_name[var.slot_of]
            var = dataclasses.replace(var, name=f"optimizer/{new}/{var.slot}", slot_of=new)
        variables[key] = var
    return dataclasses.replace(vmap, variables=variables)
