"""SavedModel directories: the variables bundle plus tags and signatures parsed from `saved_model.pb`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError
from ckpt_tools.messages import counted
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.coverage import summarize
from ckpt_tools.optimizers.graph_evidence import training_evidence
from ckpt_tools.readers import magic, tf1, tf2
from ckpt_tools.readers.bundles import OBJECT_GRAPH_KEY, open_bundle, verify_bundle
from ckpt_tools.readers.confine import confine
from ckpt_tools.readers.registry import Reader
from ckpt_tools.readers.tf1_state import GraphSource
from ckpt_tools.storage import suffixed

FORMAT = "saved-model"


def sniff(path: Path) -> str | None:
    return magic.saved_model_prefilter(path)


def read_signatures(message: Any) -> dict[str, Any]:
    """Tags, TF version and signatures of a parsed SavedModel message, without loading the model."""
    from ckpt_tools.bundle.protos import DTYPE_NAMES

    graphs = []
    for meta in message.meta_graphs:
        signatures = {}
        for sig_name, sig in sorted(meta.signature_def.items()):
            signatures[sig_name] = {
                "method": sig.method_name,
                "inputs": {k: _tensor_info(v, DTYPE_NAMES) for k, v in sorted(sig.inputs.items())},
                "outputs": {k: _tensor_info(v, DTYPE_NAMES) for k, v in sorted(sig.outputs.items())},
            }
        graphs.append(
            {
                "tags": list(meta.meta_info_def.tags),
                "tensorflow_version": meta.meta_info_def.tensorflow_version or None,
                "signatures": signatures,
                "object_graph": meta.HasField("object_graph_def"),
            }
        )
    return {"meta_graphs": graphs}


def _tensor_info(info: Any, dtype_names: dict[int, str]) -> dict[str, Any]:
    dims = None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]
    return {"name": info.name or None, "dtype": dtype_names.get(info.dtype, str(info.dtype)), "shape": dims}


def open(path: Path) -> VariableMap:
    root = magic.saved_model_root(path)
    if root is None:
        raise CorruptCheckpointError(f"{path}: not a SavedModel directory")
    from ckpt_tools.bundle.graph import read_saved_model

    pb = root / "saved_model.pb"
    if pb.is_file():  # every file of the SavedModel resolves inside its folder (root), or is refused unopened
        confine(root, pb, "saved_model.pb")
    message = read_saved_model(pb) if pb.is_file() else None  # parsed once: signatures and training ops
    described = (
        read_signatures(message)
        if message is not None
        else {"saved_model": "pbtxt (text format; signatures not parsed)"}
    )
    metadata: dict[str, Any] = {"root": str(root), **described}
    prefix = root / "variables" / "variables"
    pb_files = (root / "saved_model.pb",)
    if not suffixed(prefix, ".index").is_file():
        _check_no_variables(prefix, message)
        metadata["variables"] = "none (no variables/variables.index)"
        return VariableMap(root, FORMAT, {}, summarize([]), root=root, metadata=metadata, files=pb_files)
    confine(root, prefix.parent, "variables/ directory")
    bundle = open_bundle(prefix, root)
    metadata.update(bundle.describe())
    common: dict[str, Any] = {"prefix": prefix, "bundle": "v2", "root": root, "metadata": metadata}
    if OBJECT_GRAPH_KEY in bundle.entries:
        vmap = tf2.describe_bundle(bundle, root, FORMAT, **common)
    else:
        entries = [
            (e.key, e.shape, e.dtype, bundle.loader(e.key), bundle.chunker(e.key)) for e in bundle.entries.values()
        ]
        source = _graph_source(message, pb)
        vmap = tf1.build_map(root, FORMAT, entries, source, files=tuple(bundle.files()), closer=bundle.close, **common)
    return dataclasses.replace(vmap, files=pb_files + vmap.files)


def _check_no_variables(prefix: Path, message: Any) -> None:
    """A SavedModel without `variables/variables.index` is whole only when it has no variables (TF1's builder
    then writes none): refuse one whose index is not a regular file, whose data shards are there, or whose
    saved_model.pb declares variables (a variable op in a graph, a variable node in the object graph)."""
    index = suffixed(prefix, ".index")
    if index.is_symlink() or index.exists():
        raise CorruptCheckpointError(f"{index}: not a regular file")
    shards: list[str] = []
    if prefix.parent.is_symlink() or prefix.parent.exists():
        confine(prefix.parent.parent, prefix.parent, "variables/ directory")  # nothing outside the folder is listed
        if prefix.parent.is_dir():
            shards = sorted(p.name for p in prefix.parent.glob("variables.data-*"))
    declared = declared_variables(message) if message is not None else 0
    if shards or declared:
        evidence = f"saved_model.pb declares {counted(declared, 'variable')}" if declared else f"{shards[0]} is there"
        raise MissingFileError(f"{index}: file of the artifact is missing ({evidence})")


def declared_variables(message: Any) -> int:
    """How many saved variables a parsed SavedModel declares, the most over its graphs: a TF2 graph's variable
    nodes in its object graph; a TF1 graph's variable ops when it has a saver (without one, as for a graph whose
    only variables are local ones, TF1's builder saves nothing and TensorFlow loads it without an index)."""
    from ckpt_tools.bundle.graph import VARIABLE_OPS

    counts = [0]
    for meta in message.meta_graphs:
        if meta.HasField("object_graph_def"):
            counts.append(sum(1 for node in meta.object_graph_def.nodes if node.WhichOneof("kind") == "variable"))
        elif meta.HasField("saver_def"):
            counts.append(sum(1 for node in meta.graph_def.node if node.op in VARIABLE_OPS))
    return max(counts)


def _graph_source(message: Any, pb: Path) -> GraphSource:
    """The training ops of every graph in saved_model.pb (an export's graphs serve; they rarely train)."""
    from ckpt_tools.bundle.graph import saved_model_graphs_of

    if message is None:
        return GraphSource(None, inference=True, problem="saved_model.pbtxt is not parsed")
    evidence = [training_evidence(g, pb.name) for g in saved_model_graphs_of(message, str(pb))]
    best = max(evidence, key=lambda e: len(e.uses))
    return GraphSource(best, inference=not best.uses)


def verify(vmap: VariableMap) -> str:
    if not len(vmap):
        missing = [f for f in vmap.files if not f.exists()]
        if missing:
            raise MissingFileError(f"{missing[0]}: file of the artifact is missing")
        return "saved_model.pb present; no variables to verify"
    return verify_bundle(vmap)


READER = Reader(FORMAT, sniff, open, verify, group="bundle")
