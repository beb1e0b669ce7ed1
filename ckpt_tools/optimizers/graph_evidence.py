"""What a TF1 graph's training ops prove about the optimizer: families, slot variables, hyper-parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ckpt_tools.bundle.folding import constant_value
from ckpt_tools.bundle.graph import VARIABLE_OPS, ConstTensor, MetaGraph, Node, describe_source, walk_functions
from ckpt_tools.optimizers.catalogue import Family
from ckpt_tools.optimizers.gradients import CLIP_OPTIONS, UNKNOWN, GradientPath, gradient_path
from ckpt_tools.optimizers.lookup import display_name, training_op
from ckpt_tools.optimizers.training_graph import (
    FUSED_BATCH_NORM,
    SCATTER_OPS,
    hidden_training,
    shared_global_clips,
    source_node,
    training_writes,
)


@dataclass(frozen=True)
class OpUse:
    """One training op: which stored variable it updates, with which stored slot variables and settings."""

    family: Family
    op: str
    node: str
    variable: str
    slots: Mapping[str, str]
    extra_inputs: tuple[str, ...]
    hyper: Mapping[str, Any]
    sparse: bool
    gradient: GradientPath = UNKNOWN
    graph_variable: str = ""  # the graph variable it updates: one partition of a partitioned saved variable

    @property
    def name(self) -> str:
        return display_name(self.family, self.hyper)


@dataclass(frozen=True)
class GraphEvidence:
    """The training ops of one graph, the variables they update, and what the graph marks trainable."""

    source: str
    uses: tuple[OpUse, ...] = ()
    trainable: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Filled by with_training_traits (convert only):
    batch_norms: tuple[str, ...] = ()  # FUSED_BATCH_NORM nodes in training mode
    scatters: tuple[tuple[str, str], ...] = ()  # (saved variable written row by row, op type)
    written: tuple[str, ...] = ()  # saved variables some op writes
    stale: tuple[str, ...] = ()  # batch-norm statistics whose updates no training step runs
    assigned: tuple[tuple[str, str], ...] = ()  # (saved key, `node (Op)`): written by a non-training op in the step
    hidden: tuple[str, ...] = ()  # training-relevant ops inside library functions (not analysed)

    @property
    def families(self) -> tuple[str, ...]:
        """Display names of the optimizers the ops belong to, in first-use order."""
        return tuple(dict.fromkeys(u.name for u in self.uses))


def saved_names(graph: MetaGraph) -> dict[str, str]:
    """Graph variable name -> the key the Saver stores it under (partitions are saved under the full name)."""
    out: dict[str, str] = {}
    for var in graph.variables:
        out[var.name] = var.partition.full_name if var.partition is not None else var.name
    out.update(_saver_keys(graph))
    return out


SAVE_OPS = {"SaveV2": 3, "SaveSlices": 3, "Save": 2}  # op -> index of its first saved tensor (names at 1)
MAX_SAVE_WALK = 500


def _saver_keys(graph: MetaGraph) -> dict[str, str]:
    """Graph variable -> checkpoint key, as the Saver's own save op writes it (`Saver(var_list={key: var})`
    renames): the save ops behind the SaverDef's save tensor, each one's tensor_names Const paired with its
    tensor inputs traced back to variables. Empty when the graph has no SaverDef or the names are not decoded."""
    if graph.saver_def is None or not graph.saver_def.save_tensor:
        return {}
    pending, seen, saves = [graph.saver_def.save_tensor.split(":")[0]], set[str](), []
    while pending and len(seen) < MAX_SAVE_WALK:
        node = graph.nodes.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in SAVE_OPS:
            saves.append(node)
        else:
            pending += [*node.inputs, *node.control_inputs]
    out: dict[str, str] = {}
    for save in saves:
        names = graph.nodes.get(save.inputs[1]) if len(save.inputs) > 1 else None
        tensor = names.attrs.get("value") if names is not None and names.op == "Const" else None
        if not isinstance(tensor, ConstTensor) or tensor.value is None:
            continue
        keys = [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in tensor.value.reshape(-1)]
        for key, ref in zip(keys, save.inputs[SAVE_OPS[save.op] :], strict=False):
            variable = source_node(graph, ref)
            if variable is not None and variable.op in VARIABLE_OPS:
                out[variable.name] = key
    return out


def training_evidence(graph: MetaGraph, source: Path | str) -> GraphEvidence:
    """Every recognized training op of `graph`, tied to saved variable keys (the graph is never run)."""
    names = saved_names(graph)
    uses: list[OpUse] = []
    notes: list[str] = []
    for node in graph.node_list:
        spec = training_op(node.op)
        if spec is None:
            continue
        family, op, sparse = spec
        inputs = node.inputs
        if len(inputs) <= len(op.slots):
            notes.append(f"{node.name}: {node.op} with {len(inputs)} inputs; skipped")
            continue
        updated = source_node(graph, inputs[0])
        variable = _variable(graph, inputs[0], names)
        slots = {slot: _variable(graph, inputs[i + 1], names) for i, slot in enumerate(op.slots)}
        extra = _extra_variables(graph, node, names, len(op.slots) + 1)
        hyper: dict[str, Any] = dict(op.flags)
        for hname, index in op.hyper_inputs(sparse).items():
            if index < len(node.input_refs):
                tensor = str(node.input_refs[index])
                value = constant_value(graph, tensor)
                hyper[hname] = value if value is not None else describe_source(graph, tensor)
        if "use_nesterov" in node.attrs and op.op in ("ApplyMomentum", "ApplyAdam"):
            hyper["nesterov"] = bool(node.attrs["use_nesterov"])
        gradient = gradient_path(graph, str(node.input_refs[op.grad])) if op.grad < len(node.input_refs) else None
        if gradient is not None and gradient.kind in CLIP_OPTIONS:
            hyper[gradient.kind] = gradient.value  # the clip is part of how this op trains its variable
        path = gradient or UNKNOWN
        graph_variable = updated.name if updated is not None else variable
        uses.append(OpUse(family, node.op, node.name, variable, slots, extra, hyper, sparse, path, graph_variable))
    trainable = tuple(names.get(v.name, v.name) for v in graph.variables if v.trainable)
    return GraphEvidence(
        str(source),
        tuple(shared_global_clips(uses)),
        tuple(dict.fromkeys(trainable)),
        tuple(dict.fromkeys(names.values())),
        tuple(notes),
    )


def with_training_traits(evidence: GraphEvidence, graph: MetaGraph) -> GraphEvidence:
    """`evidence` with what only convert's exactness needs (it walks every node and function again, so inspect,
    validate and ls never pay for it): fused batch norms in training mode, scatters, writes, stale statistics,
    training ops hidden in functions."""
    names = saved_names(graph)
    writes = training_writes(graph, names)
    return replace(
        evidence,
        batch_norms=_training_batch_norms(graph),
        scatters=_scatters(graph, names),
        written=writes.written,
        stale=writes.stale,
        assigned=writes.assigned,
        hidden=hidden_training(graph),
    )


def _training_batch_norms(graph: MetaGraph) -> tuple[str, ...]:
    """Fused batch-norm ops in training mode, in the graph or in its functions (a `tf.cond` on `training`)."""
    nodes = [*graph.node_list, *(node for _, node in walk_functions(graph))]
    return tuple(n.name for n in nodes if n.op in FUSED_BATCH_NORM and bool(n.attrs.get("is_training", True)))


def _scatters(graph: MetaGraph, names: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out: dict[tuple[str, str], None] = {}
    for node in graph.node_list:
        if node.op in SCATTER_OPS and node.inputs:
            source = source_node(graph, node.inputs[0])
            if source is not None and source.op in VARIABLE_OPS:
                out[(names.get(source.name, source.name), node.op)] = None
    return tuple(out)


def _variable(graph: MetaGraph, name: str, names: Mapping[str, str]) -> str:
    """The saved key of the variable behind an op input (through Identity / ReadVariableOp chains)."""
    node = source_node(graph, name)
    base = node.name if node is not None else name
    return names.get(base, base)


def _extra_variables(graph: MetaGraph, node: Node, names: Mapping[str, str], start: int) -> tuple[str, ...]:
    """Variables feeding the op besides the updated one and its slots (Adam's beta powers)."""
    out = []
    for ref in node.inputs[start:]:
        source = source_node(graph, ref)
        if source is not None and source.op in VARIABLE_OPS:
            out.append(names.get(source.name, source.name))
    return tuple(out)
