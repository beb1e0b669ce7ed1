"""What a TF1 `.meta` graph shows about its RNN cells: the forget bias added to each LSTM f gate, and the ops
(cell clips, other activations, fused LSTM kernels) a Keras 3 LSTM/GRU would not reproduce. Never run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ckpt_tools.bundle.graph import GraphLike, MetaGraph, Node, read_meta_graph, scalar_constant
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.readers.confine import confine
from ckpt_tools.storage import suffixed

CELL_NAME = re.compile(r"^(basic_lstm_cell|lstm_cell|gru_cell)(_\d+)?$")
ADDS = frozenset({"Add", "AddV2"})
FUSED_LSTM_OPS = frozenset({"LSTMBlockCell", "BlockLSTM", "BlockLSTMV2", "CudnnRNN", "CudnnRNNV2", "CudnnRNNV3"})
OTHER_ACTIVATIONS = frozenset({"Relu", "Relu6", "Elu", "Selu", "Softsign", "Softplus", "LeakyRelu"})


@dataclass
class CellGraph:
    """Per op scope (`rnn/lstm_cell`, or `lstm_cell` inside a while-loop body): the forget-gate constants,
    the ops that take the j gate (TF1's candidate activation), and ops found there that no Keras 3 cell has."""

    forget: dict[str, list[float]] = field(default_factory=dict)
    candidate_ops: dict[str, set[str]] = field(default_factory=dict)
    odd: dict[str, set[str]] = field(default_factory=dict)
    fused: list[str] = field(default_factory=list)
    lengths: list[str] = field(default_factory=list)  # dynamic_rnn scopes given a sequence_length

    def sequence_length(self, scope: str) -> bool:
        """Whether the dynamic_rnn the cell `scope` runs under was given per-sequence lengths."""
        return any(scope.startswith(f"{s}/") for s in self.lengths)

    def _best(self, scope: str, table: dict[str, list[float]] | dict[str, set[str]]) -> list[str]:
        """The op scopes sharing the longest trailing run of components with the variable scope `scope`; among
        while-loop bodies (`enc_while_body_7` for `enc/while`), those of the loop whose name begins `scope`."""
        parts = scope.split("/")
        scored = [(_common_tail(parts, _body_scope(s).split("/")), s) for s in table]
        top = max((n for n, _ in scored), default=0)
        best = [s for n, s in scored if n == top and n > 0]
        flat = scope.replace("/", "_")
        mine = [s for s in best if flat.startswith(_loop_prefix(s))]
        return mine or best

    def forget_biases(self, scope: str) -> list[float]:
        """The distinct constants added to the f gate of the cell whose variables live under `scope`."""
        values = [v for s in self._best(scope, self.forget) for v in self.forget[s]]
        return list(dict.fromkeys(values))

    def problem(self, scope: str, kind: str) -> str | None:
        """Why the cell's graph computes something a Keras 3 LSTM/GRU does not (None: nothing found)."""
        if self.fused:
            return f"the graph runs fused LSTM kernels ({', '.join(sorted(set(self.fused))[:3])}); not translated"
        odd = sorted({op for s in self._best(scope, self.odd) for op in self.odd[s]})
        if odd:
            return (
                f"the cell's graph uses {', '.join(odd)} (a cell clip or another activation); Keras 3 "
                f"{kind.upper()} has none"
            )
        ops = sorted({op for s in self._best(scope, self.candidate_ops) for op in self.candidate_ops[s]})
        if kind == "lstm" and ops and ops != ["Tanh"]:
            return f"the cell's candidate activation is {', '.join(ops)}, Keras 3 LSTM's is tanh"
        return None


BODY = "//"  # joins a while-loop body function's name to the op scope inside it
LOOP = re.compile(r"_while_body_\d+$")


def _body_scope(key: str) -> str:
    return key.partition(BODY)[2] if BODY in key else key


def _loop_prefix(key: str) -> str:
    """`enc_` for a scope in function `enc_while_body_7` (the loop of tf.while_loop under `enc`), else ``."""
    function = key.partition(BODY)[0] if BODY in key else ""
    return LOOP.sub("_", function) if LOOP.search(function) else "\0"


def _common_tail(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def cell_graph(prefix: Path) -> CellGraph | None:
    """The cells' evidence in `PREFIX.meta` (None when there is no readable graph)."""
    meta = suffixed(prefix, ".meta")
    if not meta.is_file():
        return None
    try:
        confine(prefix.parent, meta, ".meta graph")
        graph = read_meta_graph(meta)
    except (CkptToolsError, OSError):
        return None
    return scan(graph)


def scan(graph: MetaGraph) -> CellGraph:
    """Every scope's forget-gate constants, candidate activations and unusual ops, graph and functions alike."""
    found = CellGraph()
    parts: list[GraphLike] = [graph, *graph.function_list]
    for part in parts:
        _scan_one(part, found)
    return found


def _scan_one(graph: GraphLike, found: CellGraph) -> None:
    for node in graph.node_list:
        if node.op in FUSED_LSTM_OPS:
            found.fused.append(node.op)
        parts = node.name.split("/")
        if parts[-1] == "CheckSeqLen":  # dynamic_rnn's assertion on its sequence_length argument
            found.lengths.append("/".join(parts[:-1]))
        cells = [i for i, p in enumerate(parts[:-1]) if CELL_NAME.match(p)]
        if not cells:
            continue
        scope = "/".join(parts[: cells[-1] + 1])
        if not isinstance(graph, MetaGraph):
            scope = f"{graph.name}{BODY}{scope}"
        if node.op in OTHER_ACTIVATIONS or "clip_by_value" in parts:
            found.odd.setdefault(scope, set()).add(node.op)
        if len(parts) != cells[-1] + 2:
            continue  # gate arithmetic sits directly in the cell's scope
        for ref in node.input_refs:
            producer = graph.nodes.get(ref.node)
            if _lstm_split(producer) and ref.output == 1:
                found.candidate_ops.setdefault(scope, set()).add(node.op)
        if node.op in ADDS and len(node.input_refs) == 2:
            value = _forget_constant(graph, node)
            if value is not None:
                found.forget.setdefault(scope, []).append(value)


def _lstm_split(node: Node | None) -> bool:
    return node is not None and node.op == "Split" and node.attrs.get("num_split") == 4


def _forget_constant(graph: GraphLike, node: Node) -> float | None:
    """The scalar constant `node` adds to output 2 (the f gate) of a 4-way Split, else None."""
    first, second = node.input_refs
    for gate, other in ((first, second), (second, first)):
        if gate.output == 2 and _lstm_split(graph.nodes.get(gate.node)):
            value = scalar_constant(graph, str(other))
            if isinstance(value, float) and not isinstance(value, bool):
                return value
    return None
