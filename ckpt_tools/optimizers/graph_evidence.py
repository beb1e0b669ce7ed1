"""What a TF1 graph's training ops prove about the optimizer: families, slot variables, hyper-parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_tools.bundle.graph import VARIABLE_OPS, MetaGraph, Node, describe_source, scalar_constant
from ckpt_tools.optimizers.catalogue import Family
from ckpt_tools.optimizers.lookup import display_name, training_op

MAX_HOPS = 8
_PASS_THROUGH = ("Identity", "ReadVariableOp", "Cast", "Snapshot")


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

    @property
    def families(self) -> tuple[str, ...]:
        """Display names of the optimizers the ops belong to, in first-use order."""
        return tuple(dict.fromkeys(u.name for u in self.uses))


def saved_names(graph: MetaGraph) -> dict[str, str]:
    """Graph variable name -> the key the Saver stores it under (partitions are saved under the full name)."""
    out: dict[str, str] = {}
    for var in graph.variables:
        out[var.name] = var.partition.full_name if var.partition is not None else var.name
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
        variable = _variable(graph, inputs[0], names)
        slots = {slot: _variable(graph, inputs[i + 1], names) for i, slot in enumerate(op.slots)}
        extra = _extra_variables(graph, node, names, len(op.slots) + 1)
        hyper: dict[str, Any] = dict(op.flags)
        for hname, index in op.hyper_inputs(sparse).items():
            if index < len(node.input_refs):
                tensor = str(node.input_refs[index])
                value = scalar_constant(graph, tensor)
                hyper[hname] = value if value is not None else describe_source(graph, tensor)
        if "use_nesterov" in node.attrs and op.op == "ApplyMomentum":
            hyper["nesterov"] = bool(node.attrs["use_nesterov"])
        uses.append(OpUse(family, node.op, node.name, variable, slots, extra, hyper, sparse))
    trainable = tuple(names.get(v.name, v.name) for v in graph.variables if v.trainable)
    return GraphEvidence(
        str(source), tuple(uses), tuple(dict.fromkeys(trainable)), tuple(dict.fromkeys(names.values())), tuple(notes)
    )


def _variable(graph: MetaGraph, name: str, names: Mapping[str, str]) -> str:
    """The saved key of the variable behind an op input (through Identity / ReadVariableOp chains)."""
    node = _source_node(graph, name)
    base = node.name if node is not None else name
    return names.get(base, base)


def _source_node(graph: MetaGraph, name: str) -> Node | None:
    node = graph.nodes.get(name)
    for _ in range(MAX_HOPS):
        if node is None or node.op in VARIABLE_OPS or node.op not in _PASS_THROUGH or not node.inputs:
            return node
        node = graph.nodes.get(node.inputs[0])
    return node


def _extra_variables(graph: MetaGraph, node: Node, names: Mapping[str, str], start: int) -> tuple[str, ...]:
    """Variables feeding the op besides the updated one and its slots (Adam's beta powers)."""
    out = []
    for ref in node.inputs[start:]:
        source = _source_node(graph, ref)
        if source is not None and source.op in VARIABLE_OPS:
            out.append(names.get(source.name, source.name))
    return tuple(out)
