"""Scanning TensorFlow graphs (SavedModel and `.meta`): every node and every library function's node, by op."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ckpt_tools.bundle import graph as g
from ckpt_tools.bundle import protos
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.scanning.findings import Collector
from ckpt_tools.scanning.rules import (
    CHECKPOINT_READ_OPS,
    CHECKPOINT_WRITE_OPS,
    FILENAME_INPUT,
    OP_RULES,
    Severity,
    tensorflow_ops,
)

MAX_EMBEDDED_DEPTH = 4  # DatasetFromGraph graphs inside embedded graphs are scanned this deep
MAX_SAVER_NODES = 1_000_000
MAX_ANCESTORS = 10_000  # nodes looked at backwards from a DatasetFromGraph's graph_def input
CHECKPOINT_OPS = CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS


@dataclass(frozen=True)
class GraphContext:
    """Where a graph sits: the file inside the artifact, its label (`meta_graph[0] {serve}`), asset tensors."""

    file: str
    label: str
    asset_tensors: frozenset[str] = frozenset()
    entry_functions: frozenset[str] = frozenset()
    depth: int = 0


def scan_meta_graph(graph: g.MetaGraph, context: GraphContext, out: Collector) -> None:
    """Report every denylisted or unknown op of the graph and of its function library."""
    saver_nodes = _saver_nodes(graph)
    saver_only = _saver_only_functions(graph, saver_nodes)
    live = _reach(graph, graph.node_list, context.entry_functions)
    custom: dict[str, tuple[str, int]] = {}
    for path, owner, node in _every_node(graph):
        where = _location(context, path, node)
        in_saver = node.name in saver_nodes if not path else path[-1] in saver_only
        if node.op in OP_RULES:
            dead = bool(path) and path[-1] not in live
            _flag(node, owner, graph, context, where, in_saver, Downgrading(out) if dead else out)
        elif node.op not in tensorflow_ops() and node.op not in graph.functions:
            first, count = custom.get(node.op, (where, 0))
            custom[node.op] = (first, count + 1)
    for op, (first, count) in sorted(custom.items()):
        nodes = f"{count} node{'s' if count != 1 else ''}"
        out.add(
            "graph.custom-op", context.file, first, f"op {op} ({nodes}; first shown) is not a TensorFlow op", subject=op
        )


class Downgrading(Collector):
    """Findings in a function nothing can call (no node, signature or object-graph function reaches it) are
    reported at low severity: the op is there, but loading and serving the artifact never runs it."""

    def __init__(self, target: Collector) -> None:
        super().__init__(target.limit, target.findings)
        self.target = target

    def add(
        self, rule: str, file: str, location: str, detail: str, severity: Severity | None = None, subject: str = ""
    ) -> None:
        self.target.add(
            rule, file, location, f"{detail} (in a function nothing in the file calls)", Severity.LOW, subject
        )


def _every_node(graph: g.MetaGraph) -> Iterator[tuple[tuple[str, ...], g.GraphLike, g.Node]]:
    for node in graph.node_list:
        yield (), graph, node
    for path, node in g.walk_functions(graph):
        yield path, graph.functions.get(path[-1], graph), node


def _location(context: GraphContext, path: tuple[str, ...], node: g.Node) -> str:
    functions = f"function {' > '.join(path)}: " if path else ""
    return f"{context.label}: {functions}node {node.name!r} (op {node.op})"


def _flag(
    node: g.Node,
    owner: g.GraphLike,
    graph: g.MetaGraph,
    context: GraphContext,
    where: str,
    in_saver: bool,
    out: Collector,
) -> None:
    rule = OP_RULES[node.op]
    if node.op in CHECKPOINT_OPS:
        if in_saver:
            return
        if isinstance(owner, g.MetaGraph) and _scope_is_a_saver(node.name, graph):
            out.add(
                "graph.checkpoint-io",
                context.file,
                where,
                f"{node.op} of the Saver in scope {_scope(node.name)}/",
                subject=node.op,
            )
            return
    if node.op == "PrintV2":
        stream = str(node.attrs.get("output_stream", ""))
        if stream.startswith("file://"):
            out.add("graph.file-write", context.file, where, f"PrintV2 appends to {stream[7:]!r}", subject=node.op)
        else:
            out.add(rule, context.file, where, f"PrintV2 to {stream or 'stderr'}", subject=node.op)
        return
    if node.op == "DatasetFromGraph":
        _embedded(node, owner, graph, context, where, out)
        return
    if rule == "graph.file-read":
        _file_read(node, owner, context, where, out)
        return
    detail = f"{node.op}" + _name_detail(node, owner)
    if rule == "graph.debug":
        detail += f" to {_attr_text(node, 'debug_urls') or 'its debug URLs'}"
    out.add(rule, context.file, where, detail, subject=node.op)


def _file_read(node: g.Node, owner: g.GraphLike, context: GraphContext, where: str, out: Collector) -> None:
    """A read is medium when the artifact fixes the file name, low when the caller supplies it."""
    if node.op == "ImmutableConst":
        region = _attr_text(node, "memory_region_name")
        out.add("graph.file-read", context.file, where, f"ImmutableConst maps the file {region!r}", subject=node.op)
        return
    source = _filename_source(node, owner)
    if source in context.asset_tensors:
        return  # the SavedModel's own asset, rebound to the asset file at load time
    value = _constant_text(owner, source)
    if value is not None:
        out.add("graph.file-read", context.file, where, f"{node.op} of the fixed name {value!r}", subject=node.op)
    else:
        origin = g.describe_source(owner, source) if source else "no input"
        out.add(
            "graph.file-read",
            context.file,
            where,
            f"{node.op} of a name given at run time ({origin})",
            Severity.LOW,
            subject=node.op,
        )


def _filename_source(node: g.Node, owner: g.GraphLike) -> str:
    position = FILENAME_INPUT.get(node.op, 0)
    if not node.input_refs or position >= len(node.input_refs):
        return ""
    return str(node.input_refs[position])


def _name_detail(node: g.Node, owner: g.GraphLike) -> str:
    source = _filename_source(node, owner)
    value = _constant_text(owner, source) if source else None
    return f" of the fixed name {value!r}" if value is not None else ""


def _constant_text(owner: g.GraphLike, tensor_name: str) -> str | None:
    """The first string of the Const feeding `tensor_name`, if any, shortened for a report."""
    value = _constant_bytes(owner, tensor_name)
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    return text if len(text) <= 200 else text[:200] + "..."


def _constant_bytes(owner: g.GraphLike, tensor_name: str) -> bytes | None:
    if not tensor_name:
        return None
    ref = g.parse_tensor_name(tensor_name)
    node = owner.nodes.get(ref.node)
    for _ in range(g.MAX_DEPTH):
        if node is None or node.op not in g.PASS_THROUGH_OPS or not node.input_refs:
            break
        node = owner.nodes.get(node.input_refs[0].node)
    if node is None or node.op != "Const":
        return None
    tensor = node.attrs.get("value")
    if not isinstance(tensor, g.ConstTensor) or tensor.value is None or tensor.value.size == 0:
        return None
    first = tensor.value.reshape(-1)[0]
    return first if isinstance(first, bytes) else None


def _attr_text(node: g.Node, name: str) -> str:
    value = node.attrs.get(name)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _embedded(
    node: g.Node, owner: g.GraphLike, graph: g.MetaGraph, context: GraphContext, where: str, out: Collector
) -> None:
    """Flag DatasetFromGraph, and scan every string constant its `graph_def` input is computed from that
    parses as a GraphDef (a graph can be spliced from pieces to dodge a scanner that looks at one Const)."""
    source = str(node.input_refs[0]) if node.input_refs else ""
    pieces = _ancestor_strings(owner, source)
    graphs = [(name, parsed) for name, data in pieces if (parsed := _as_graph(data)) is not None]
    if _constant_bytes(owner, source) is not None:
        how = "a constant graph"
    else:
        how = f"a graph computed at run time from {len(pieces)} string constant(s)"
    out.add("graph.embedded-graph", context.file, where, f"DatasetFromGraph of {how}", subject=node.op)
    if context.depth >= MAX_EMBEDDED_DEPTH:
        return
    for name, message in graphs:
        try:
            inner = g.meta_graph_from_proto(message, f"{graph.source} (embedded)")
        except CkptToolsError as exc:
            out.add("graph.embedded-graph", context.file, where, f"its graph is refused ({exc})", subject=node.op)
            continue
        label = f"{where} > embedded graph (constant {name!r})"
        scan_meta_graph(inner, GraphContext(context.file, label, depth=context.depth + 1), out)


def _ancestor_strings(owner: g.GraphLike, tensor_name: str) -> list[tuple[str, bytes]]:
    """String constants the tensor is computed from (data inputs, at most MAX_ANCESTORS nodes back)."""
    pending = [g.parse_tensor_name(tensor_name).node] if tensor_name else []
    seen: set[str] = set()
    found: list[tuple[str, bytes]] = []
    while pending and len(seen) < MAX_ANCESTORS:
        name = pending.pop()
        node = owner.nodes.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        if node.op == "Const":
            tensor = node.attrs.get("value")
            if isinstance(tensor, g.ConstTensor) and tensor.value is not None and tensor.value.dtype == object:
                found.extend(
                    (node.name, item) for item in tensor.value.reshape(-1)[:16] if isinstance(item, bytes) and item
                )
            continue
        pending.extend(node.inputs)
    return found


def _as_graph(data: bytes) -> Any:
    """A MetaGraphDef around `data` when it parses as a GraphDef holding any node or function, else None."""
    try:
        graph_def = protos.GraphDef.FromString(data)
    except Exception:  # protobuf's DecodeError and RecursionError: not a graph
        return None
    if not graph_def.node and not graph_def.library.function:
        return None
    return protos.MetaGraphDef(graph_def=graph_def)


# ------------------------------------------------------------------------------------------------ the saver
def _saver_nodes(graph: g.MetaGraph) -> set[str]:
    """Top-level nodes the graph's saver_def runs: everything its save tensor and restore op depend on."""
    saver = graph.saver_def
    if saver is None:
        return set()
    pending = [g.parse_tensor_name(saver.save_tensor).node, g.parse_tensor_name(saver.restore_op).node]
    seen: set[str] = set()
    while pending and len(seen) < MAX_SAVER_NODES:
        name = pending.pop()
        node = graph.nodes.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        pending.extend(node.inputs)
        pending.extend(c.removeprefix("^") for c in node.control_inputs)
    return seen


def _saver_only_functions(graph: g.MetaGraph, saver_nodes: set[str]) -> set[str]:
    """Library functions reached only from the saver's nodes (TF2's traced save and restore functions)."""
    from_saver = _reach(graph, (n for n in graph.node_list if n.name in saver_nodes))
    others = _reach(graph, (n for n in graph.node_list if n.name not in saver_nodes))
    unreached = [f for f in graph.function_list if f.name not in from_saver]
    others |= _reach(graph, (node for f in unreached for node in f.node_list))
    others |= {f.name for f in unreached}
    return from_saver - others


def _reach(graph: g.MetaGraph, nodes: Iterable[g.Node], functions: Iterable[str] = ()) -> set[str]:
    """Library functions the nodes call, and the named functions, with everything they call in turn."""
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
    return reached


def _scope(name: str) -> str:
    return name.rpartition("/")[0]


def _scope_is_a_saver(name: str, graph: g.MetaGraph) -> bool:
    """A tf.train.Saver's subgraph: its scope holds the Saver's `restore_all` op (TF1 graphs with two Savers)."""
    scope = _scope(name)
    return bool(scope) and f"{scope}/restore_all" in graph.nodes
