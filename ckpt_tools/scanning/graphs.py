"""Scanning TensorFlow graphs (SavedModel and `.meta`): every node and every library function's node, by op."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ckpt_tools.bundle import graph as g
from ckpt_tools.bundle import protos
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.scanning.findings import Collector
from ckpt_tools.scanning.rules import (
    CHECKPOINT_READ_OPS,
    CHECKPOINT_WRITE_OPS,
    FILENAME_ATTR,
    FILENAME_INPUT,
    LOCAL_SCHEMES,
    NOT_A_FILE,
    OP_RULES,
    Severity,
    tensorflow_ops,
)
from ckpt_tools.scanning.saver import SaverView, ancestors, saver_view

MAX_EMBEDDED_DEPTH = 4  # DatasetFromGraph graphs inside embedded graphs are scanned this deep
MAX_ANCESTORS = 10_000  # nodes looked at backwards from one input
CHECKPOINT_OPS = CHECKPOINT_WRITE_OPS | CHECKPOINT_READ_OPS
DEAD = " (in a function nothing in the file calls)"


@dataclass(frozen=True)
class GraphContext:
    """Where a graph sits and what the file around it says: the file inside the artifact, its label
    (`meta_graph[0] {serve}`), asset tensors, the functions the object graph exposes (and registered gradients),
    each function's arguments bound to assets, and the tensors its signatures return."""

    file: str
    label: str
    asset_tensors: frozenset[str] = frozenset()
    entry_functions: frozenset[str] = frozenset()
    asset_args: Mapping[str, frozenset[str]] = field(default_factory=dict)
    signature_tensors: frozenset[str] = frozenset()
    depth: int = 0


@dataclass(frozen=True)
class _Site:
    """One node being judged: where it is, which graph or function owns it, and what the saver analysis says."""

    node: g.Node
    owner: g.GraphLike
    path: tuple[str, ...]
    file: str
    where: str
    live: bool
    exempt: bool


def scan_meta_graph(graph: g.MetaGraph, context: GraphContext, out: Collector) -> None:
    """Report every denylisted or unknown op of the graph and of its function library."""
    view = saver_view(graph, context.signature_tensors, context.entry_functions)
    custom: dict[str, tuple[str, int]] = {}
    for path, owner, node in _every_node(graph):
        where = _location(context, path, node)
        if node.op in OP_RULES:
            live = not path or path[-1] in view.live
            site = _Site(node, owner, path, context.file, where, live, view.exempt(node, owner, path))
            _flag(site, graph, context, view, out)
        elif node.op not in tensorflow_ops() and node.op not in graph.functions:
            first, count = custom.get(node.op, (where, 0))
            custom[node.op] = (first, count + 1)
    for op, (first, count) in sorted(custom.items()):
        nodes = f"{count} node{'s' if count != 1 else ''}"
        detail = f"op {op} ({nodes}; first shown) is not a TensorFlow op"
        out.add("graph.custom-op", context.file, first, detail, subject=op)


def _every_node(graph: g.MetaGraph) -> Iterator[tuple[tuple[str, ...], g.GraphLike, g.Node]]:
    for node in graph.node_list:
        yield (), graph, node
    for path, node in g.walk_functions(graph):
        yield path, graph.functions.get(path[-1], graph), node


def _location(context: GraphContext, path: tuple[str, ...], node: g.Node) -> str:
    functions = f"function {' > '.join(path)}: " if path else ""
    return f"{context.label}: {functions}node {node.name!r} (op {node.op})"


def _add(site: _Site, out: Collector, rule: str, detail: str, severity: Severity | None = None) -> None:
    """A finding about the site; in a function nothing can call it is kept, at low severity."""
    if not site.live:
        out.add(rule, site.file, site.where, detail + DEAD, Severity.LOW, site.node.op)
    else:
        out.add(rule, site.file, site.where, detail, severity, site.node.op)


def _flag(site: _Site, graph: g.MetaGraph, context: GraphContext, view: SaverView, out: Collector) -> None:
    node = site.node
    rule = OP_RULES[node.op]
    if node.op in CHECKPOINT_OPS:
        if site.exempt:
            return
        scope = view.second_saver_scope(node, site.owner, site.path)
        if scope:
            _add(site, out, "graph.checkpoint-io", f"{node.op} of the Saver in scope {scope}/")
            return
    if node.op == "PrintV2":
        stream = _attr_text(node, "output_stream")
        if stream.startswith("file://"):
            _add(site, out, "graph.file-write", f"PrintV2 appends to {stream[7:]!r}")
        else:
            _add(site, out, rule, f"PrintV2 to {stream or 'stderr'!r}")
        return
    if node.op == "DatasetFromGraph":
        _embedded(site, graph, context, out)
        return
    if rule in ("graph.file-read", "graph.file-write"):
        _file_op(site, rule, context, out)
        return
    detail = node.op
    if rule == "graph.debug":
        detail += f" to {_attr_text(node, 'debug_urls') or 'its debug URLs'!r}"
    _add(site, out, rule, detail)


def _file_op(site: _Site, rule: str, context: GraphContext, out: Collector) -> None:
    """File ops by where their name comes from: a URL is the network; for reads, a name fixed in the artifact
    is medium and one the caller supplies is low; an asset of the SavedModel's own is not reported."""
    node = site.node
    if node.op in FILENAME_ATTR:
        name: str | None = _attr_text(node, FILENAME_ATTR[node.op])
        source = ""
    else:
        source = _filename_source(node)
        name = _constant_text(site.owner, source)
    if name in NOT_A_FILE and (node.op in FILENAME_ATTR or node.op.startswith("CacheDataset")):
        return  # the in-memory cache, the compiled-in descriptor pool
    if name is not None and _is_url(name):
        _add(site, out, "graph.network", f"{node.op} of {name!r}")
        return
    if name is not None:
        _add(site, out, rule, f"{node.op} of the fixed name {name!r}")
        return
    if rule == "graph.file-write":
        _add(site, out, rule, f"{node.op} of a name given at run time ({_origin(site.owner, source)})")
        return
    if source in context.asset_tensors or _arg_of(source, site) in context.asset_args.get(_function(site), ()):
        return  # the SavedModel's own asset, bound to the asset file at load time
    _add(site, out, rule, f"{node.op} of a name given at run time ({_origin(site.owner, source)})", Severity.LOW)


def _is_url(name: str) -> bool:
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and scheme.lower() not in LOCAL_SCHEMES


def _function(site: _Site) -> str:
    return site.path[-1] if site.path else ""


def _arg_of(source: str, site: _Site) -> str:
    """The function argument a tensor name is (or passes through), else ''."""
    if not isinstance(site.owner, g.Function) or not source:
        return ""
    ref = g.parse_tensor_name(source)
    for _ in range(g.MAX_DEPTH):
        if ref.node in site.owner.input_args:
            return ref.node
        node = site.owner.nodes.get(ref.node)
        if node is None or node.op not in g.PASS_THROUGH_OPS or not node.input_refs:
            return ""
        ref = node.input_refs[0]
    return ""


def _origin(owner: g.GraphLike, source: str) -> str:
    return g.describe_source(owner, source) if source else "no input"


def _filename_source(node: g.Node) -> str:
    position = FILENAME_INPUT.get(node.op, 0)
    if position >= len(node.input_refs):
        return ""
    return str(node.input_refs[position])


def _constant_text(owner: g.GraphLike, tensor_name: str) -> str | None:
    """The first string of the Const feeding `tensor_name`, if any, shortened for a report."""
    value = _constant_bytes(owner, tensor_name)
    if value is None:
        return None
    text = value.decode("utf-8", "backslashreplace")
    return text if len(text) <= 200 else text[:200] + "..."


def _constant_bytes(owner: g.GraphLike, tensor_name: str) -> bytes | None:
    if not tensor_name:
        return None
    node = owner.nodes.get(g.parse_tensor_name(tensor_name).node)
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


# ----------------------------------------------------------------------------------------- embedded graphs
def _embedded(site: _Site, graph: g.MetaGraph, context: GraphContext, out: Collector) -> None:
    """Flag DatasetFromGraph, and scan every string constant its `graph_def` input is computed from that
    parses as a GraphDef (a graph can be spliced from pieces to dodge a scanner that looks at one Const)."""
    node = site.node
    source = str(node.input_refs[0]) if node.input_refs else ""
    pieces = _ancestor_strings(site.owner, source)
    graphs = [(name, parsed) for name, data in pieces if (parsed := _as_graph(data)) is not None]
    if _constant_bytes(site.owner, source) is not None:
        how = "a constant graph"
    else:
        how = f"a graph computed at run time from {len(pieces)} string constant(s)"
    _add(site, out, "graph.embedded-graph", f"DatasetFromGraph of {how}")
    if context.depth >= MAX_EMBEDDED_DEPTH:
        return
    for name, message in graphs:
        try:
            inner = g.meta_graph_from_proto(message, f"{graph.source} (embedded)")
        except CkptToolsError as exc:
            _add(site, out, "graph.embedded-graph", f"its graph is refused ({exc})")
            continue
        label = f"{site.where} > embedded graph (constant {name!r})"
        scan_meta_graph(inner, GraphContext(context.file, label, depth=context.depth + 1), out)


def _ancestor_strings(owner: g.GraphLike, tensor_name: str) -> list[tuple[str, bytes]]:
    """String constants the tensor is computed from (data inputs, at most MAX_ANCESTORS nodes back)."""
    starts = [g.parse_tensor_name(tensor_name).node] if tensor_name else []
    nodes = [owner.nodes.get(name) for name in ancestors(owner, starts, MAX_ANCESTORS)]
    return [(node.name, item) for node in nodes if node is not None and node.op == "Const" for item in _strings(node)]


def _strings(node: g.Node) -> Iterable[bytes]:
    tensor = node.attrs.get("value")
    if isinstance(tensor, g.ConstTensor) and tensor.value is not None and tensor.value.dtype == object:
        return [item for item in tensor.value.reshape(-1)[:16] if isinstance(item, bytes) and item]
    return []


def _as_graph(data: bytes) -> Any:
    """A MetaGraphDef around `data` when it parses as a GraphDef holding any node or function, else None."""
    try:
        graph_def = protos.GraphDef.FromString(data)
    except Exception:  # protobuf's DecodeError and RecursionError: not a graph
        return None
    if not graph_def.node and not graph_def.library.function:
        return None
    return protos.MetaGraphDef(graph_def=graph_def)
