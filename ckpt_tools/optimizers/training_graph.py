"""Around a TF1 graph's training ops: which clips are really global, what state training writes, and what hides."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ckpt_tools.bundle.graph import VARIABLE_OPS, MetaGraph, Node, walk_functions
from ckpt_tools.optimizers.gradients import GradientPath
from ckpt_tools.optimizers.lookup import training_op

if TYPE_CHECKING:
    from ckpt_tools.optimizers.graph_evidence import OpUse

# Batch normalization in training mode whose moving variance TF updates with the n/(n-1)-corrected batch variance.
FUSED_BATCH_NORM = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
# Row-wise writes: a TF1 optimizer's sparse update (Adam on an embedding scatters into its slots).
SCATTER_OPS = frozenset(
    f"{prefix}Scatter{kind}" for prefix in ("", "Resource") for kind in ("Add", "Sub", "Update", "Mul", "Div")
)
WRITE_OPS = re.compile(r"^(Resource)?(Assign\w*|Scatter\w*|(Sparse)?Apply\w+)$|^AssignVariableOp$")
MOVING_STATISTIC = re.compile(r"(^|/)moving_(mean|variance)$")
PASS_THROUGH = ("Identity", "ReadVariableOp", "Cast", "Snapshot")
MAX_HOPS = 8


def shared_global_clips(uses: list[OpUse]) -> list[OpUse]:
    """Keep a recognized clip_by_global_norm only when it is what Keras' `global_clipnorm` does: one scale for
    every training op, over the norm of exactly their gradients; otherwise the gradients are `transformed`."""
    clipped = [u for u in uses if u.gradient.kind == "global_clipnorm"]
    if not clipped:
        return uses
    scales = {u.gradient.scale for u in clipped}
    raws = frozenset(u.gradient.raw for u in uses)
    whole = len(clipped) == len(uses) and len(scales) == 1 and all(u.gradient.norm_of == raws for u in clipped)
    if whole:
        return uses
    partial = GradientPath("transformed", None, ("clip_by_global_norm over another set of gradients",))
    out = []
    for use in uses:
        if use.gradient.kind == "global_clipnorm":
            hyper = {k: v for k, v in use.hyper.items() if k != "global_clipnorm"}
            use = dataclasses.replace(use, gradient=partial, hyper=hyper)
        out.append(use)
    return out


@dataclasses.dataclass(frozen=True)
class Writes:
    """What a TF1 training step writes: saved keys of every variable written, batch-norm moving statistics that
    are written but by no op a training step runs (TF1's forgotten UPDATE_OPS), and the writes by ops that are
    not training ops — (saved key, `node (Op)`): an optimizer's own bookkeeping, a constraint's assignment after
    the update, a hand-written update. Initializers and restores are not training."""

    written: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    assigned: tuple[tuple[str, str], ...] = ()


def training_writes(graph: MetaGraph, names: Mapping[str, str]) -> Writes:
    """The variables a training step writes, and by which ops (see Writes)."""
    run = _inputs_of_training_sinks(graph)
    written: dict[str, None] = {}
    idle: dict[str, None] = {}
    assigned: dict[tuple[str, str], None] = {}
    for node in graph.node_list:
        if not (WRITE_OPS.match(node.op) and node.inputs):
            continue
        source = source_node(graph, node.inputs[0])
        if source is None or source.op not in VARIABLE_OPS:
            continue
        key = names.get(source.name, source.name)
        if node.name in run:
            written[key] = None
            if training_op(node.op) is None:
                assigned[(key, f"{node.name} ({node.op})")] = None
        elif MOVING_STATISTIC.search(key) and not _initializer(node, source):
            idle[key] = None
    return Writes(tuple(written), tuple(k for k in idle if k not in written), tuple(assigned))


def _initializer(node: Node, variable: Node) -> bool:
    """An Assign of the variable's initial value (`dense/kernel/Assign`), or a Saver's restore (`save/...`)."""
    return node.name.startswith((f"{variable.name}/", "save/", "save_")) or "/Initializer" in node.name


def _inputs_of_training_sinks(graph: MetaGraph) -> set[str]:
    """Every node a training step runs: the data and control inputs, transitively, of each sink (a node no
    other node consumes) that depends on a training op."""
    consumers: dict[str, list[str]] = {}
    for node in graph.node_list:
        for source in (*node.inputs, *node.control_inputs):
            consumers.setdefault(source, []).append(node.name)
    pending = [n.name for n in graph.node_list if training_op(n.op) is not None]
    after: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in after:
            after.add(name)
            pending += consumers.get(name, [])
    sinks = [name for name in after if not consumers.get(name)]
    return _closure(graph, sinks)


def _closure(graph: MetaGraph, start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(start)
    while pending:
        name = pending.pop()
        node = graph.nodes.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        pending += [*node.inputs, *node.control_inputs]
    return seen


def hidden_training(graph: MetaGraph) -> tuple[str, ...]:
    """Training and scatter ops inside library functions (tf.cond / while bodies under control flow
    v2), which the analysis of the top-level graph does not see: (function/node) names."""
    out = []
    for path, node in walk_functions(graph):
        if training_op(node.op) is not None or node.op in SCATTER_OPS:
            out.append(f"{path[-1]}/{node.name} ({node.op})")
    return tuple(out)


def source_node(graph: MetaGraph, name: str) -> Node | None:
    """The node behind an input through Identity / ReadVariableOp / Cast chains (a variable for its reads)."""
    node = graph.nodes.get(name)
    for _ in range(MAX_HOPS):
        if node is None or node.op in VARIABLE_OPS or node.op not in PASS_THROUGH or not node.inputs:
            return node
        node = graph.nodes.get(node.inputs[0])
    return node
