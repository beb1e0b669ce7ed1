"""Which parts of a graph are its own saver, and which library functions anything can call (from the graph's
own structure: saver_def, signatures, the object graph, gradients and implementation selection)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ckpt_tools.bundle import graph as g
from ckpt_tools.scanning.rules import FILENAME_INPUT

MAX_CLOSURE = 1_000_000  # top-level nodes followed backwards from the saver or the signatures
MAX_ANCESTORS = 10_000  # nodes followed backwards from one file-name input


@dataclass(frozen=True)
class SaverView:
    """`saver_nodes`: top-level nodes only the saver_def reaches (none a signature needs); `saver_only`:
    functions only those nodes call; `live`: functions a node, a signature, the object graph, a gradient or
    Grappler's implementation selection can run; `serving`: top-level nodes a signature needs."""

    graph: g.MetaGraph
    saver_nodes: frozenset[str]
    saver_only: frozenset[str]
    live: frozenset[str]
    serving: frozenset[str]

    def exempt(self, node: g.Node, owner: g.GraphLike, path: tuple[str, ...]) -> bool:
        """Checkpoint I/O of the graph's own saver: in its subgraph and naming the file the saver is given (the
        saver_def's filename tensor, or the traced save/restore function's argument), never a fixed one."""
        saver = self.graph.saver_def
        names = [_name_ancestors(owner, node, position) for position in _name_inputs(node)]
        if not names:
            return False
        if not path:
            if saver is None or node.name not in self.saver_nodes:
                return False
            filename = g.parse_tensor_name(saver.filename_tensor).node
            return all(filename in ancestors for ancestors in names)
        if path[-1] not in self.saver_only or not isinstance(owner, g.Function):
            return False
        return all(ancestors & set(owner.input_args) for ancestors in names)

    def second_saver_scope(self, node: g.Node, owner: g.GraphLike, path: tuple[str, ...]) -> str:
        """The scope of another tf.train.Saver whose checkpoint op this is ('' if it is not one): its scope has
        the Saver's `restore_all`, its file name comes from that scope's filename tensor, and no signature
        runs it."""
        scope = node.name.rpartition("/")[0]
        if path or not scope or node.name in self.serving or f"{scope}/restore_all" not in self.graph.nodes:
            return ""
        names = [_name_ancestors(owner, node, position) for position in _name_inputs(node)]
        return scope if names and all(f"{scope}/Const" in ancestors for ancestors in names) else ""


def saver_view(graph: g.MetaGraph, signature_tensors: Iterable[str], entries: Iterable[str]) -> SaverView:
    saver = graph.saver_def
    roots = [saver.save_tensor, saver.restore_op] if saver is not None else []
    saver_closure = _closure(graph, roots)
    serving = _closure(graph, signature_tensors)
    saver_nodes = saver_closure - serving
    from_saver = _reach(graph, (n for n in graph.node_list if n.name in saver_nodes))
    others = _reach(graph, (n for n in graph.node_list if n.name not in saver_nodes), entries)
    unreached = [f.name for f in graph.function_list if f.name not in from_saver and f.name not in others]
    others |= _reach(graph, (), unreached)
    live = _live(graph, entries)
    return SaverView(graph, frozenset(saver_nodes), frozenset(from_saver - others), frozenset(live), frozenset(serving))


def ancestors(owner: g.GraphLike, names: Iterable[str], limit: int, *, control: bool = False) -> list[str]:
    """The named nodes and every node they are computed from (data inputs, and control inputs when asked), in
    the order met, at most `limit`; names that are no node (function arguments) are included too."""
    pending = list(names)
    seen: dict[str, None] = {}
    while pending and len(seen) < limit:
        name = pending.pop()
        if name in seen:
            continue
        seen[name] = None
        node = owner.nodes.get(name)
        if node is not None:
            pending.extend(node.inputs)
            if control:
                pending.extend(c.removeprefix("^") for c in node.control_inputs)
    return list(seen)


def _closure(graph: g.MetaGraph, tensors: Iterable[str]) -> set[str]:
    """Top-level nodes the tensors depend on, data and control inputs."""
    starts = [g.parse_tensor_name(t.removeprefix("^")).node for t in tensors if t]
    return {name for name in ancestors(graph, starts, MAX_CLOSURE, control=True) if name in graph.nodes}


def _reach(graph: g.MetaGraph, nodes: Iterable[g.Node], functions: Iterable[str] = ()) -> set[str]:
    """Library functions the nodes call and the named functions, with everything they call and their
    gradient functions."""
    reached: set[str] = set()
    pending = [f for node in nodes for f in g.called_functions(node, graph.functions)]
    pending.extend(graph.functions[name] for name in functions if name in graph.functions)
    while pending:
        function = pending.pop()
        if function.name in reached:
            continue
        reached.add(function.name)
        for node in function.node_list:
            pending.extend(f for f in g.called_functions(node, graph.functions) if f.name not in reached)
        gradient = graph.functions.get(graph.gradients.get(function.name, ""))
        if gradient is not None:
            pending.append(gradient)
    return reached


def _live(graph: g.MetaGraph, entries: Iterable[str]) -> set[str]:
    """What can run: reached from the graph's nodes or the entries, plus every function Grappler may swap in for
    a live one (the same `api_implements`, e.g. the CPU twin of a cuDNN LSTM), until nothing changes."""
    live = _reach(graph, graph.node_list, entries)
    by_interface: dict[str, list[str]] = {}
    for function in graph.function_list:
        interface = function.attrs.get("api_implements")
        if isinstance(interface, str) and interface:
            by_interface.setdefault(interface, []).append(function.name)
    while True:
        interfaces = {graph.functions[name].attrs.get("api_implements") for name in live if name in graph.functions}
        twins = {n for i in interfaces if isinstance(i, str) for n in by_interface.get(i, ())} - live
        if not twins:
            return live
        live |= _reach(graph, (), twins)


def _name_inputs(node: g.Node) -> list[int]:
    """Positions of the inputs naming files: MergeV2Checkpoints also deletes the prefixes it merges."""
    positions = [0, 1] if node.op == "MergeV2Checkpoints" else [FILENAME_INPUT.get(node.op, 0)]
    return [p for p in positions if p < len(node.input_refs)]


def _name_ancestors(owner: g.GraphLike, node: g.Node, position: int) -> set[str]:
    """The input itself and the nodes (and function arguments) it is computed from, at most MAX_ANCESTORS."""
    return set(ancestors(owner, [node.input_refs[position].node], MAX_ANCESTORS))
