"""What a TF1 graph does to a gradient between backprop and its training op: nothing, a known clip, or else."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ckpt_tools.bundle.graph import VARIABLE_OPS, MetaGraph, Node, scalar_constant, traced

# tf.gradients (and Optimizer.compute_gradients through it) builds backprop under a `gradients` name scope
# (uniquified `gradients_1`, nested in the caller's scope), each op's gradient under `<op>_grad`: a gradient
# read straight from there reached the training op unchanged.
BACKPROP_SCOPE = re.compile(r"(^|/)(gradients(_\d+)?/|[^/]+_grad/)")
MAX_NODES = 256  # nodes of a transform looked at before it is called unrecognized
MAX_LISTED_OPS = 6

# The Keras 3 optimizer option that reproduces each recognized clip (see docs/convert.md, "Approximations").
CLIP_OPTIONS = ("global_clipnorm", "clipnorm", "clipvalue")


@dataclass(frozen=True)
class GradientPath:
    """How the gradient fed to one training op was made from backprop's output.

    `kind`: "raw" (unchanged), "global_clipnorm" / "clipnorm" / "clipvalue" (tf.clip_by_global_norm,
    tf.clip_by_norm, a symmetric tf.clip_by_value, with `value` the constant), "transformed" (anything else:
    `ops` lists what), or "unknown" (the input is missing from the graph).
    """

    kind: str
    value: float | None = None
    ops: tuple[str, ...] = ()
    raw: str = ""  # the backprop node the gradient comes from (a recognized clip)
    scale: str = ""  # global_clipnorm: the scale node every clipped gradient must share
    norm_of: frozenset[str] = frozenset()  # global_clipnorm: the gradients its global norm is taken over
    axes: tuple[int, ...] | None = None  # clipnorm: the axes its norm sums over

    def describe(self) -> str:
        if self.kind in CLIP_OPTIONS:
            return f"{self.kind}={self.value:g}" if self.value is not None else self.kind
        if self.kind == "transformed":
            return f"transformed by {', '.join(self.ops) or 'unknown ops'}"
        return self.kind


UNKNOWN = GradientPath("unknown")


def gradient_path(graph: MetaGraph, tensor: str) -> GradientPath:
    """Classify the gradient `tensor` (a training op's gradient input); the graph is never run."""
    node = traced(graph, tensor)
    if node is None:
        return UNKNOWN
    if _backprop(node) or _deduplicated(graph, node):
        return GradientPath("raw", raw=node.name)
    for recognize in (_global_clip, _norm_clip, _value_clip):
        found = recognize(graph, node)
        if found is not None:
            return found
    return GradientPath("transformed", None, _transform_ops(graph, node))


def _backprop(node: Node) -> bool:
    return BACKPROP_SCOPE.search(node.name) is not None


def _deduplicated(graph: MetaGraph, node: Node) -> bool:
    """TF1 optimizers sum a sparse gradient's repeated rows (Unique + UnsortedSegmentSum) before the op."""
    inputs = _inputs(graph, node)
    return node.op == "UnsortedSegmentSum" and bool(inputs) and inputs[0] is not None and _backprop(inputs[0])


def _ancestors(graph: MetaGraph, start: Node | None, limit: int = MAX_NODES) -> list[Node]:
    """Nodes feeding `start` (itself included), breadth first, stopping at backprop, variables and constants."""
    out: list[Node] = []
    seen: set[str] = set()
    pending = [start] if start is not None else []
    while pending and len(out) < limit:
        node = pending.pop(0)
        if node.name in seen:
            continue
        seen.add(node.name)
        out.append(node)
        if not (_backprop(node) or node.op in VARIABLE_OPS or node.op == "Const"):
            pending += [n for n in _inputs(graph, node) if n is not None]
    return out


def _inputs(graph: MetaGraph, node: Node) -> list[Node | None]:
    return [traced(graph, str(ref)) for ref in node.input_refs]


def _constant(graph: MetaGraph, node: Node | None) -> float | None:
    if node is None or node.op != "Const":
        return None
    value = scalar_constant(graph, node.name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _split(graph: MetaGraph, node: Node, want: str) -> tuple[Node | None, Node | None] | None:
    """For a two-input node: (the input whose op is `want` or that comes from backprop, the other one)."""
    inputs = _inputs(graph, node)
    if len(inputs) != 2:
        return None
    a, b = inputs
    if a is not None and (a.op == want or (want == "backprop" and _backprop(a))):
        return a, b
    if b is not None and (b.op == want or (want == "backprop" and _backprop(b))):
        return b, a
    return None


def _global_clip(graph: MetaGraph, node: Node) -> GradientPath | None:
    """tf.clip_by_global_norm: `grad * scale`, scale = `c * min(1/global_norm, 1/c)` (TF 2 adds
    `global_norm - global_norm` to it, turning a non-finite norm into NaN)."""
    if node.op != "Mul" or (parts := _split(graph, node, "backprop")) is None or parts[1] is None:
        return None
    raw = parts[0]
    scale: Node | None = parts[1]
    if scale is not None and scale.op in ("AddV2", "Add"):
        halves = _split(graph, scale, "Mul")
        if halves is None or halves[1] is None or halves[1].op != "Sub":
            return None
        scale = halves[0]
    if scale is None or scale.op != "Mul" or (pair := _split(graph, scale, "Minimum")) is None:
        return None
    minimum, clip = pair
    c = _constant(graph, clip)
    if c is None or minimum is None:
        return None
    reciprocals = [n for n in _inputs(graph, minimum) if n is not None and n.op == "RealDiv"]
    if len(reciprocals) != 2 or any(_constant(graph, _inputs(graph, r)[0]) != 1.0 for r in reciprocals):
        return None
    denominators = [_inputs(graph, r)[1] for r in reciprocals]
    constants = [d for d in denominators if _constant(graph, d) is not None]
    norms = [d for d in denominators if d is not None and d.op == "Sqrt"]
    if len(constants) != 1 or len(norms) != 1 or not math.isclose(_constant(graph, constants[0]) or 0.0, c):
        return None
    squared = [n for n in _ancestors(graph, norms[0]) if n.op == "L2Loss"]
    norm_of = frozenset(i.name for n in squared for i in _inputs(graph, n)[:1] if i is not None and _backprop(i))
    if not squared or len(norm_of) != len(squared):
        return None  # a norm over something other than backprop's gradients
    return GradientPath("global_clipnorm", c, raw=raw.name if raw else "", scale=scale.name, norm_of=norm_of)


def _norm_clip(graph: MetaGraph, node: Node) -> GradientPath | None:
    """tf.clip_by_norm: `grad * c / max(l2norm(grad), c)`."""
    if node.op != "RealDiv":
        return None
    top, bottom = _inputs(graph, node) if len(node.input_refs) == 2 else (None, None)
    if top is None or bottom is None or top.op != "Mul" or bottom.op != "Maximum":
        return None
    scaled = _split(graph, top, "backprop")
    bounds = _inputs(graph, bottom)
    limit = [n for n in bounds if _constant(graph, n) is not None]
    if scaled is None or scaled[0] is None or len(limit) != 1 or len(bounds) != 2:
        return None
    c, c2 = _constant(graph, scaled[1]), _constant(graph, limit[0])
    if c is None or c2 is None or not math.isclose(c, c2):
        return None
    norm = next(n for n in bounds if n is not limit[0])
    axes = _norm_axes(graph, norm, scaled[0])
    if axes is None:
        return None
    return GradientPath("clipnorm", c, raw=scaled[0].name, axes=axes)


def _norm_axes(graph: MetaGraph, norm: Node | None, raw: Node) -> tuple[int, ...] | None:
    """The reduction axes when `norm` is the l2 norm of `raw` itself (`sqrt(sum(raw * raw, axes))`), else None."""
    found = [n for n in _ancestors(graph, norm) if n.op == "Sum"]
    if len(found) != 1 or len(found[0].input_refs) != 2:
        return None
    squares, axes = _inputs(graph, found[0])
    if squares is None or squares.op not in ("Mul", "Square"):
        return None
    factors = _inputs(graph, squares)
    if not factors or any(f is None or f.name != raw.name for f in factors):
        return None
    tensor = axes.attrs.get("value") if axes is not None and axes.op == "Const" else None
    value = getattr(tensor, "value", None)
    if value is None:
        return None
    return tuple(int(v) for v in value.reshape(-1))


def _value_clip(graph: MetaGraph, node: Node) -> GradientPath | None:
    """A symmetric tf.clip_by_value: `max(min(grad, c), -c)` (either nesting)."""
    if node.op not in ("Maximum", "Minimum"):
        return None
    inner_op = "Minimum" if node.op == "Maximum" else "Maximum"
    outer = _split(graph, node, inner_op)
    if outer is None or outer[0] is None:
        return None
    inner = _split(graph, outer[0], "backprop")
    if inner is None:
        return None
    lo_hi = [_constant(graph, outer[1]), _constant(graph, inner[1])]
    if any(v is None for v in lo_hi):
        return None
    lo, hi = sorted(v for v in lo_hi if v is not None)
    if not math.isclose(lo, -hi) or hi <= 0:
        return GradientPath("transformed", None, (f"clip_by_value({lo:g}, {hi:g})",))
    return GradientPath("clipvalue", hi)


def _transform_ops(graph: MetaGraph, start: Node) -> tuple[str, ...]:
    """The op types between backprop and the training op (a bounded walk back from `start`)."""
    seen: set[str] = set()
    ops: dict[str, None] = {}
    pending = [start]
    while pending and len(seen) < MAX_NODES:
        node = pending.pop()
        if node.name in seen or _backprop(node) or node.op in VARIABLE_OPS or node.op == "Const":
            continue
        seen.add(node.name)
        ops[node.op] = None
        pending += [n for n in _inputs(graph, node) if n is not None]
    listed = list(ops)[:MAX_LISTED_OPS]
    return (*listed, "...") if len(ops) > MAX_LISTED_OPS or pending else tuple(listed)
