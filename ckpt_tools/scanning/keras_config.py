"""Scanning Keras configs (config.json, `model_config`, keras_metadata.pb): objects Keras would import or run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ckpt_tools.errors import UnsafeInputError
from ckpt_tools.readers.h5common import parse_json
from ckpt_tools.scanning.findings import Collector
from ckpt_tools.scanning.rules import (
    KERAS_BUILDING_BLOCKS,
    KERAS_NON_MODELING,
    KERAS_ROOT_OBJECTS,
    KERAS_ROOTS,
    LAMBDA_CLASSES,
    OP_RULES,
    TF_API_DENYLIST,
    UNSAFE_SWITCHES,
    tensorflow_ops,
)

MAX_CONFIG_BYTES = 64 << 20
MAX_NODES = 5_000_000  # JSON values visited per config


def parse_config(data: bytes | str, where: str) -> Any:
    """JSON of a config, refusing oversized text, text that would expand into too many values and over-deep
    nesting with one clear error (the readers' bounded parser: never a RecursionError or gigabytes of objects)."""
    if len(data) > MAX_CONFIG_BYTES:
        raise UnsafeInputError(f"{where}: {len(data)} bytes of config is over the {MAX_CONFIG_BYTES >> 20} MiB limit")
    return parse_json(data, where)


def scan_config(config: Any, file: str, label: str, out: Collector) -> None:
    """Flag Lambda layers, modules outside Keras, safe-mode switches, custom objects and TFSMLayers."""
    for path, value, layer in _objects(config):
        where = f"{label} {path}" + _named(value) + (f" (layer {layer!r})" if layer else "")
        if isinstance(value, str):
            if value in UNSAFE_SWITCHES:
                out.add("keras.unsafe-switch", file, where, f"names {value}")
            continue
        _check_object(value, file, where, out)


def _named(value: Any) -> str:
    """` keras.models.load_model`: the object a config entry names, when it names a module."""
    if isinstance(value, dict) and isinstance(value.get("module"), str) and value["module"]:
        return f" {value['module']}.{value.get('class_name')}"
    return ""


def _objects(root: Any) -> Iterator[tuple[str, Any, str]]:
    """Every dict with a `class_name` and every string, with its JSON path and the enclosing layer's name."""
    stack: list[tuple[str, Any, str]] = [("$", root, "")]
    visited = 0
    while stack:
        path, value, layer = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise UnsafeInputError(f"{path}: the config has more than {MAX_NODES} values")
        if isinstance(value, dict):
            if "class_name" in value:
                name = _layer_name(value)
                layer = name or layer
                yield path, value, layer
            children = [(f"{path}.{key}", item, layer) for key, item in value.items() if key != "class_name"]
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", item, layer) for i, item in enumerate(value)]))
        elif isinstance(value, str):
            yield path, value, layer


def _layer_name(obj: dict[str, Any]) -> str:
    config = obj.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else ""


def _check_object(obj: dict[str, Any], file: str, where: str, out: Collector) -> None:
    class_name = obj.get("class_name")
    module = obj.get("module")
    if class_name in UNSAFE_SWITCHES:
        out.add("keras.unsafe-switch", file, where, f"{module or '?'}.{class_name}")
    if class_name == "__lambda__":
        out.add("keras.lambda-bytecode", file, where, "a function serialized as Python bytecode")
    elif class_name in LAMBDA_CLASSES:
        _check_lambda(obj, file, where, out)
    elif class_name == "TFSMLayer":
        _check_tfsm(obj, file, where, out)
    elif class_name == "TFOpLambda":
        _check_tf_op_lambda(obj, file, where, out)
    elif class_name == "TensorFlowOpLayer":
        _check_tf_op_layer(obj, file, where, out)
    if isinstance(module, str) and module and _check_module(module, str(class_name), file, where, out):
        return
    registered = obj.get("registered_name")
    if module == "builtins" and class_name == "function":
        name = obj.get("config")
        detail = f"the function {name!r}, looked up among Keras built-ins and registered custom objects"
        out.add("keras.custom-object", file, where, detail, subject=str(name))
    elif isinstance(registered, str) and ">" in registered:
        package = registered.partition(">")[0]
        if package.split(".")[0] not in KERAS_ROOTS:
            out.add(
                "keras.custom-object",
                file,
                where,
                f"registered as {registered!r} by package {package!r}",
                subject=package,
            )


def _check_module(module: str, class_name: str, file: str, where: str, out: Collector) -> bool:
    """True when the module was flagged (a foreign module makes a custom-object finding redundant)."""
    parts = module.split(".")
    if module == "builtins" and class_name == "function":
        return False  # Keras' spelling of "a plain function": looked up by name, never imported (below)
    if parts[0] not in KERAS_ROOTS:
        out.add("keras.foreign-module", file, where, f"imports {module!r} for {class_name!r}", subject=module)
        return True
    rest = parts[2:] if len(parts) > 1 and parts[1] == "src" else parts[1:]
    if class_name in KERAS_NON_MODELING:
        pass  # Keras' own list of functions that are not model building blocks, whatever the namespace
    elif not rest:
        if class_name in KERAS_ROOT_OBJECTS:
            return False
    elif rest[0] in KERAS_BUILDING_BLOCKS or ".".join(rest[:2]) in KERAS_BUILDING_BLOCKS:
        return False
    out.add(
        "keras.unlisted-keras-object", file, where, f"calls {module}.{class_name}", subject=f"{module}.{class_name}"
    )
    return True


def _check_lambda(obj: dict[str, Any], file: str, where: str, out: Collector) -> None:
    config = _config_of(obj)
    function = config.get("function")
    kind = config.get("function_type")
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        return  # reported where the `__lambda__` object itself is visited
    if kind == "lambda" or (isinstance(function, list) and function and isinstance(function[0], str)):
        out.add("keras.lambda-bytecode", file, where, "Lambda layer whose function is marshalled bytecode")
        return
    module = config.get("module") or (function.get("module") if isinstance(function, dict) else None)
    name = function.get("config") if isinstance(function, dict) else function
    out.add(
        "keras.lambda", file, where, f"Lambda layer calling {module or '?'}.{name or '?'}", subject=str(module or "")
    )


def _check_tfsm(obj: dict[str, Any], file: str, where: str, out: Collector) -> None:
    target = str(_config_of(obj).get("filepath", ""))
    out.add("keras.tfsmlayer", file, where, f"loads and runs the SavedModel at {target!r}", subject=target)


def _check_tf_op_lambda(obj: dict[str, Any], file: str, where: str, out: Collector) -> None:
    """tf_keras calls `tf.<function>` with the layer's inputs; only tensor computations are passed."""
    function = str(_config_of(obj).get("function", ""))
    name = function
    for prefix in ("compat.v1.", "compat.v2."):
        name = name.removeprefix(prefix)
    if name.startswith(TF_API_DENYLIST) or name in ("py_func", "print"):
        out.add("keras.tf-op", file, where, f"TFOpLambda calls tf.{function}", subject=function)


def _check_tf_op_layer(obj: dict[str, Any], file: str, where: str, out: Collector) -> None:
    """tf_keras rebuilds the NodeDef of a TensorFlowOpLayer as it stands: its op is judged like a graph's."""
    node_def = _config_of(obj).get("node_def")
    op = str(node_def.get("op", "")) if isinstance(node_def, dict) else ""
    if op in OP_RULES:
        out.add(OP_RULES[op], file, f"{where} (op {op})", f"TensorFlowOpLayer runs the op {op}", subject=op)
    elif op and op not in tensorflow_ops():
        detail = f"TensorFlowOpLayer runs {op}, not a TensorFlow op"
        out.add("graph.custom-op", file, f"{where} (op {op})", detail, subject=op)


def _config_of(obj: dict[str, Any]) -> dict[str, Any]:
    config = obj.get("config")
    return config if isinstance(config, dict) else {}
