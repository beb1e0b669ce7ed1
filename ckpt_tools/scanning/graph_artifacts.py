"""Scanning SavedModels (binary or text) and `.meta` graphs: each MetaGraph with what its file says around it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from ckpt_tools.bundle import graph as g
from ckpt_tools.bundle import protos
from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.scanning import containers
from ckpt_tools.scanning.findings import Collector
from ckpt_tools.scanning.graphs import GraphContext, scan_meta_graph
from ckpt_tools.scanning.keras_config import parse_config, scan_config

KERAS_METADATA = "keras_metadata.pb"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
MAX_PBTXT_BYTES = 256 << 20
MAX_METADATA_BYTES = 1 << 30


def has_saved_model(directory: Path) -> bool:
    return (directory / SAVED_MODEL_PB).is_file() or (directory / SAVED_MODEL_PBTXT).is_file()


def scan_saved_model(root: Path, out: Collector) -> list[str]:
    """Every MetaGraph (TensorFlow reads `saved_model.pb`, else `saved_model.pbtxt`), the Keras configs tf_keras
    keeps in `keras_metadata.pb` or, in older files, in the object graph, and symlinks leaving the folder."""
    file = SAVED_MODEL_PB if (root / SAVED_MODEL_PB).is_file() else SAVED_MODEL_PBTXT
    message = g.read_saved_model(root / file) if file == SAVED_MODEL_PB else _read_pbtxt(root / file)
    graphs = g.saved_model_graphs_of(message, str(root / file))
    for index, (meta, graph) in enumerate(zip(message.meta_graphs, graphs, strict=True)):
        label = f"meta_graph[{index}] {{{','.join(graph.tags)}}}"
        scan_meta_graph(graph, _context(meta, graph, root, file, label, out), out)
        _legacy_keras_metadata(meta, file, label, out)
    scanned = [file]
    if (root / KERAS_METADATA).is_file():
        _keras_metadata(root / KERAS_METADATA, out)
        scanned.append(KERAS_METADATA)
    containers.scan_symlinks(root, out)
    return scanned


def scan_meta_file(path: Path, out: Collector) -> list[str]:
    graph = g.read_meta_graph(path)
    scan_meta_graph(graph, GraphContext(path.name, "meta_graph"), out)
    return [path.name]


def _read_pbtxt(path: Path) -> Any:
    data = containers.read_limited(path, MAX_PBTXT_BYTES)
    message = protos.SavedModel()
    try:
        text = _ENUM.sub(_enum_number, data.decode("utf-8"))
        text_format.Parse(text, message, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{path}: not a valid text SavedModel ({type(exc).__name__})") from None
    if not message.meta_graphs:
        raise CorruptCheckpointError(f"{path}: holds no MetaGraphDef")
    return message


# Our message subset declares enum fields as integers; text format spells them by name. DataType names map to
# their numbers (TensorFlow's DT_* order is protos.DTYPE_NUMBERS's); other enums (Saver version, variable
# aggregation) are read as 0, which nothing in a scan depends on.
_ENUM = re.compile(r"^(\s*[A-Za-z_][A-Za-z0-9_]*\s*:\s*)([A-Z][A-Z0-9_]*)\s*$", re.MULTILINE)
_DT_SPELLING = {"float32": "FLOAT", "float64": "DOUBLE", "float16": "HALF"}
_DT_NUMBERS = {f"DT_{_DT_SPELLING.get(name, name.upper())}": number for name, number in protos.DTYPE_NUMBERS.items()}


def _enum_number(match: re.Match[str]) -> str:
    name = match.group(2)
    number = _DT_NUMBERS.get(name.removesuffix("_REF"), 0) + (100 if name.endswith("_REF") else 0)
    return f"{match.group(1)}{number if name.startswith('DT_') else 0}"


def _context(meta: Any, graph: g.MetaGraph, root: Path, file: str, label: str, out: Collector) -> GraphContext:
    entries = _object_graph_functions(meta) | {
        gradient.gradient_func for gradient in meta.graph_def.library.registered_gradients
    }
    signatures = frozenset(
        tensor.name
        for sig in meta.signature_def.values()
        for part in (sig.inputs, sig.outputs)
        for tensor in part.values()
    )
    return GraphContext(
        file,
        label,
        _assets(meta, root, file, label, out),
        frozenset(entries),
        _asset_args(meta, graph),
        signatures,
    )


def _assets(meta: Any, root: Path, file: str, label: str, out: Collector) -> frozenset[str]:
    """The asset tensors of a graph; an asset file name that leaves `assets/` is a path escape."""
    tensors = set()
    for asset in meta.asset_file_def:
        tensors.add(str(g.parse_tensor_name(asset.tensor_info.name)))
        name = asset.filename
        if Path(name).is_absolute() or not containers.inside(root / "assets", root / "assets" / name):
            out.add("path.escape", file, f"{label}: asset {asset.tensor_info.name}", f"asset file name {name!r}")
    if "asset_filepaths" in meta.collection_def:  # older SavedModels list their asset tensors here
        for name in meta.collection_def["asset_filepaths"].node_list.value:
            tensors.add(str(g.parse_tensor_name(name)))
    return frozenset(tensors)


def _object_graph_functions(meta: Any) -> set[str]:
    """Concrete functions the SavedObjectGraph exposes: what `tf.saved_model.load` makes callable."""
    names: set[str] = set(meta.object_graph_def.concrete_functions)
    for node in meta.object_graph_def.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            names.update(node.function.concrete_functions)
        elif kind == "bare_concrete_function":
            names.add(node.bare_concrete_function.concrete_function_name)
    return names


def _asset_args(meta: Any, graph: g.MetaGraph) -> dict[str, frozenset[str]]:
    """Per concrete function, the arguments TF2 binds to asset paths: captured inputs come last, one per
    `bound_inputs` object, and an asset object's path is what the function receives."""
    nodes = meta.object_graph_def.nodes
    out: dict[str, frozenset[str]] = {}
    for name, concrete in meta.object_graph_def.concrete_functions.items():
        function = graph.functions.get(name)
        bound = list(concrete.bound_inputs)
        if function is None or not bound or len(bound) > len(function.input_args):
            continue
        captured = function.input_args[len(function.input_args) - len(bound) :]
        assets = {arg for arg, node_id in zip(captured, bound, strict=True) if _is_asset(nodes, node_id)}
        if assets:
            out[name] = frozenset(assets)
    return out


def _is_asset(nodes: Any, node_id: int) -> bool:
    return 0 <= node_id < len(nodes) and nodes[node_id].WhichOneof("kind") == "asset"


def _legacy_keras_metadata(meta: Any, file: str, label: str, out: Collector) -> None:
    """tf_keras SavedModels without keras_metadata.pb keep each layer's config in the object graph's
    SavedUserObject.metadata, which tf_keras' loader reads in its place."""
    for index, node in enumerate(meta.object_graph_def.nodes):
        if node.WhichOneof("kind") != "user_object" or not node.user_object.metadata:
            continue
        where = f"{label}: object {index} ({node.user_object.identifier})"
        config = parse_config(node.user_object.metadata, f"{file} object {index}")
        scan_config(config, file, where, out)


def _keras_metadata(path: Path, out: Collector) -> None:
    data = containers.read_limited(path, MAX_METADATA_BYTES)
    try:
        message = protos.KerasSavedMetadata.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, RecursionError for over-deep nesting
        raise CorruptCheckpointError(f"{path}: not a valid keras_metadata.pb ({type(exc).__name__})") from exc
    for node in message.nodes:
        label = f"{KERAS_METADATA} node {node.node_id} ({node.node_path})"
        if node.metadata:
            scan_config(parse_config(node.metadata, f"{path} node {node.node_id}"), KERAS_METADATA, label, out)
