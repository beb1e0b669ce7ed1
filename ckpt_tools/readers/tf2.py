"""TF2 object checkpoints (`tf.train.Checkpoint`): the object graph gives every value a readable name."""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.model import Chunker, FoundOptimizer, Loader, OptimizerInfo, Role, Variable, VariableMap
from ckpt_tools.optimizers.catalogue import FORMAT_SPECIFIC, STEP_COUNTERS
from ckpt_tools.optimizers.coverage import FLOAT_DTYPES, NON_TRAINABLE, summarize
from ckpt_tools.optimizers.lookup import family_of_group, guess_family, hyperparameter_names, keras2_slot, slot_lists
from ckpt_tools.readers.bundles import (
    OBJECT_GRAPH_KEY,
    Bundle,
    checkpoint_state_directory,
    open_bundle,
    read_scalar,
    sniff_bundle,
    verify_bundle,
)
from ckpt_tools.readers.naming import (
    METRIC_STATE,
    SAVE_COUNTER,
    common_owner,
    keep_unique,
    mark_aliases,
    new_variable,
    slot_name,
    strip_model_scope,
    with_fields,
)
from ckpt_tools.readers.paths import bundle_prefix
from ckpt_tools.readers.registry import Reader

FORMAT = "tf2-checkpoint"
ATTR_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
MAX_PATHS_PER_NODE = 16
# Total characters of all the access paths kept for naming; a hostile graph (a deep chain of long names) would
# otherwise need memory quadratic in its size.
MAX_PATH_CHARS = 1 << 27
# Objects found to be optimizers by structure: real artifacts hold one or a few (a GAN two); each costs a pass
# over the graph, so a graph claiming thousands is refused rather than walked thousands of times.
MAX_OPTIMIZERS = 64
METRIC_PATH = re.compile(r"(^|/)(keras_api/)?metrics/\d+/(count|total)$")


def sniff(path: Path) -> str | None:
    try:
        prefix = bundle_prefix(path)
    except (CorruptCheckpointError, OSError) as exc:
        return str(exc)
    if prefix is None:
        return "no .index file or checkpoint state file"
    reason = sniff_bundle(prefix)
    return f"no {OBJECT_GRAPH_KEY} entry (TF1-style checkpoint)" if reason == "TF1" else reason


@dataclass
class Graph:
    """The trackable object graph with every node's access paths."""

    nodes: Any
    paths: dict[int, list[str]] = field(default_factory=dict)
    optimizer_paths: frozenset[str] = frozenset()
    # Per node, from its VARIABLE_VALUE attribute: the checkpoint key and the recorded full name (read once:
    # every protobuf field access builds a Python object).
    value_keys: list[str | None] = field(default_factory=list)
    full_names: list[str] = field(default_factory=list)
    key_node: dict[str, int] = field(default_factory=dict)  # every attribute's checkpoint key -> its node
    children: list[list[tuple[int, str]]] = field(default_factory=list)  # per node: (child id, local name)
    _by_path: dict[str, int] | None = field(default=None, repr=False)
    _lengths: tuple[frozenset[str], list[int]] = field(default=(frozenset(), []), repr=False)
    _names: tuple[frozenset[str], dict[int, str | None]] = field(default=(frozenset(), {}), repr=False)

    def through_optimizer(self, path: str) -> bool:
        """Whether `path` runs through (or is) an optimizer object found by structure (one prefix look-up per
        distinct optimizer path length: linear in the path, whatever its depth)."""
        if not self.optimizer_paths:
            return False
        if self._lengths[0] is not self.optimizer_paths:
            self._lengths = (self.optimizer_paths, sorted({len(p) for p in self.optimizer_paths}))
        for length in self._lengths[1]:
            if length > len(path):
                break
            if (length == len(path) or path[length] == "/") and path[:length] in self.optimizer_paths:
                return True
        return False

    def node_at(self, path: str) -> int | None:
        """The node reached by the access path `path` (a reverse index, built on first use)."""
        if self._by_path is None:
            self._by_path = {}
            for node_id, paths in self.paths.items():
                for known in paths:
                    self._by_path.setdefault(known, node_id)
        return self._by_path.get(path)

    @classmethod
    def parse(cls, graph: Any) -> Graph:
        self = cls(graph.nodes)
        self._index_nodes()
        count = len(self.children)
        if not count:
            return self
        paths = self.paths
        paths[0] = [""]
        queue = deque([0])
        budget = MAX_PATH_CHARS
        while queue:
            node_id = queue.popleft()
            for cid, local_name in self.children[node_id]:
                if cid < 0 or cid >= count:
                    raise CorruptCheckpointError(f"object graph child id {cid} out of range")
                known = paths.setdefault(cid, [])
                first_visit = not known
                if len(known) < MAX_PATHS_PER_NODE:
                    for parent in paths[node_id][:MAX_PATHS_PER_NODE]:
                        budget -= len(parent) + len(local_name) + 1
                        if budget < 0:
                            raise CorruptCheckpointError(
                                f"object graph paths exceed {MAX_PATH_CHARS} characters (implausibly deep nesting)"
                            )
                        known.append(f"{parent}/{local_name}" if parent else local_name)
                if first_visit:
                    queue.append(cid)
        return self

    def _index_nodes(self) -> None:
        """One pass over every node (each protobuf field access builds Python objects, so each is read once): its
        children, value key, full name, and the checkpoint key -> node index."""
        value_keys: list[str | None] = []
        full_names: list[str] = []
        children = self.children
        key_node = self.key_node
        for index, node in enumerate(self.nodes):
            children.append([(child.node_id, str(child.local_name)) for child in node.children])
            value_key: str | None = None
            full_name = ""
            for attr in node.attributes:
                key = str(attr.checkpoint_key)
                key_node[key] = index
                if value_key is None and attr.name == "VARIABLE_VALUE":
                    value_key, full_name = key, str(attr.full_name)
            value_keys.append(value_key)
            full_names.append(full_name)
        self.value_keys, self.full_names = value_keys, full_names

    def value_key(self, node_id: int) -> str | None:
        """The checkpoint key of the node's value (its VARIABLE_VALUE attribute), if it holds one."""
        return self.value_keys[node_id]

    def full_name(self, node_id: int) -> str:
        """The recorded full name of the node's value (a Keras path such as `dense/kernel`), else ""."""
        return self.full_names[node_id]

    def name(self, node_id: int) -> str | None:
        """The node's canonical path: its checkpoint key's path when that avoids the optimizer, else the
        shortest path that does, else the shortest (remembered while the optimizer paths stay the same)."""
        if self._names[0] is not self.optimizer_paths:
            self._names = (self.optimizer_paths, {})
        names = self._names[1]
        if node_id not in names:
            names[node_id] = self._name(node_id)
        return names[node_id]

    def _name(self, node_id: int) -> str | None:
        paths = self.paths.get(node_id)
        if not paths:
            return None
        key = self.value_keys[node_id]
        if key is not None and key.endswith(ATTR_SUFFIX) and not self.through_optimizer(key[: -len(ATTR_SUFFIX)]):
            return key[: -len(ATTR_SUFFIX)]
        return min(paths, key=lambda p: (self.through_optimizer(p), p.count("/"), len(p), p))


def describe_bundle(source: Bundle, path: Path, fmt: str, **extra: Any) -> VariableMap:
    """Build the variable map of an object-graph bundle (TF2 checkpoint or SavedModel variables)."""
    bundle = source
    graph = _parse_graph(bundle, path)
    key_node = graph.key_node
    try:
        optimizer_roots, wrappers = _optimizer_nodes(graph, bundle)
        graph.optimizer_paths = frozenset(p for r in [*optimizer_roots, *wrappers] for p in graph.paths.get(r, ()))
        findings = _positional_slots(graph, optimizer_roots, bundle)
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(f"{path}: {exc}") from exc
    roles = _Roles(
        {node: owner for f in findings for node, owner in f.slots.items()},
        {f.iterations for f in findings if f.iterations is not None},
        {w for f in findings for w in f.trainable},
    )
    variables = {
        entry.key: _variable(graph, entry, key_node.get(entry.key), roles, load, chunks)
        for entry, load, chunks in bundle.access()
        if entry.key != OBJECT_GRAPH_KEY
    }
    counters = [graph.value_key(f.iterations) for f in findings if f.iterations is not None]
    step_var = _pick_step(variables.values(), counters)
    if step_var is not None and step_var.role != "step":
        variables[step_var.key] = with_fields(step_var, role="step")
    info = _optimizer_info(graph, findings, variables, bundle)
    variables, info = _canonical(graph, bundle, key_node, variables, info, {f.root for f in findings})
    step = read_scalar(step_var) if step_var is not None else None
    if "epoch" not in extra:
        extra.update(_epoch(variables))
    metadata = {"object_graph_nodes": len(graph.nodes), **extra.pop("metadata", {})}
    step_key = step_var.key if step_var else None
    return VariableMap(
        path,
        fmt,
        variables,
        info,
        step,
        step_key,
        metadata=metadata,
        files=tuple(bundle.files()),
        closer=bundle.close,
        **extra,
    )


def _canonical(
    graph: Graph,
    bundle: Bundle,
    key_node: dict[str, int],
    variables: dict[str, Variable],
    info: OptimizerInfo,
    optimizer_roots: set[int],
) -> tuple[dict[str, Variable], OptimizerInfo]:
    """Weights renamed to their recorded Keras paths (model scope stripped), slots to `optimizer/<weight>/<slot>`,
    format-specific variables marked, and keys storing one variable twice folded into aliases."""
    aliases = _alias_groups(graph, bundle, key_node, variables)
    secondary = {key for keys in aliases for key in keys[1:]}
    full = {
        v.name: graph.full_name(key_node[v.key])
        for v in variables.values()
        if v.role == "weight" and v.slot_of is None and v.key in key_node and v.key not in secondary
    }
    recorded = {path: name for path, name in full.items() if name}
    at_root = "save_counter" in _children(graph, 0) if len(graph.nodes) else False  # a tf.train.Checkpoint
    renamed = (
        strip_model_scope(recorded, lambda paths: _is_layer(graph, common_owner(paths), at_root))
        if _usable(recorded, full)
        else {}
    )
    lr_keys = {
        graph.value_key(kid): graph.name(root) or "optimizer"
        for root in optimizer_roots
        for attr, kid in _children(graph, root).items()
        if attr in ("_learning_rate", "learning_rate")
    }
    optimizer_paths = {graph.name(root) or "" for root in optimizer_roots}
    out = {}
    for key, var in variables.items():
        if var.slot_of is not None and var.slot is not None:
            weight = renamed.get(var.slot_of, var.slot_of)
            var = with_fields(var, slot_of=weight, name=slot_name(weight, var.slot))
        elif var.name in renamed:
            var = with_fields(var, name=renamed[var.name])
        elif key in lr_keys:
            var = with_fields(
                var, name=f"{lr_keys[key]}/learning_rate", format_specific=FORMAT_SPECIFIC["learning_rate"]
            )
        elif var.role == "optimizer" and var.size == 1 and _hyper_attribute(var.name, optimizer_paths):
            var = with_fields(var, format_specific=FORMAT_SPECIFIC["hyperparameter"])
        elif var.name == "save_counter":
            var = with_fields(var, format_specific=SAVE_COUNTER)
        elif METRIC_PATH.search(var.name):
            var = with_fields(var, format_specific=METRIC_STATE)
        out[key] = var
    fallback = {key: variables[key].name for key in variables}
    unique = keep_unique({k: v for k, v in out.items() if k not in secondary}, fallback)
    out = mark_aliases({key: unique.get(key, out[key]) for key in variables}, aliases)
    return out, _renamed_info(info, renamed)


def _hyper_attribute(name: str, optimizer_paths: set[str]) -> bool:
    """A scalar hanging directly under an optimizer object by a hyper-parameter's name (`optimizer/beta_1`)."""
    parent, _, attr = name.rpartition("/")
    return parent in optimizer_paths and attr.lstrip("_") in hyperparameter_names()


def _is_layer(graph: Graph, path: str, checkpoint_root: bool) -> bool:
    """Whether the object at `path` is a layer rather than the model or a list of layers: children named like
    attributes (a layer list's children are `0`, `1`, ...). The root is the model when it is not a
    `tf.train.Checkpoint` (which records a `save_counter`); under a Checkpoint its attributes (`model=`) are."""
    if not path or ("/" not in path and checkpoint_root):
        return False
    node = graph.node_at(path)
    if node is None:
        return False
    names = [name for _, name in graph.children[node]]
    return any(not (name.isascii() and name.isdigit()) for name in names) and not path.endswith("/_functional")


def _usable(recorded: dict[str, str], full: dict[str, str]) -> bool:
    """Recorded full names name the weights when every weight has one and no two weights share one (plain
    `tf.Variable`s all default to `Variable`; object paths are better names then)."""
    return bool(recorded) and len(recorded) == len(full) and len(set(recorded.values())) == len(recorded)


def _alias_groups(
    graph: Graph, bundle: Bundle, key_node: dict[str, int], variables: dict[str, Variable]
) -> list[list[str]]:
    """Keys holding the same variable, as a Keras 3 export writes them: a key under the export's
    `_all_variables` list with the same recorded scoped name, shape, dtype and stored bytes (size and CRC32C as
    the index records them) as exactly one key elsewhere, the primary. Equal values alone prove nothing (two
    zero-initialized biases of one name in two models are two variables), so nothing else is folded."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for key, var in variables.items():
        entry = bundle.entries.get(key)
        if key not in key_node or entry is None or entry.partitioned:
            continue
        full = graph.full_name(key_node[key])
        if "/" not in full:
            continue
        groups.setdefault((full, var.shape, var.dtype, entry.size, entry.crc32c), []).append(key)
    out = []
    for keys in groups.values():
        primary = [k for k in keys if not k.startswith(EXPORT_ALIASES)]
        if len(primary) == 1 and len(keys) > 1:
            out.append([primary[0], *sorted(k for k in keys if k != primary[0])])
    return out


# keras.export.ExportArchive tracks every variable a second time in this list (its own SavedVariable nodes).
EXPORT_ALIASES = "_all_variables/"


def _renamed_info(info: OptimizerInfo, renamed: dict[str, str]) -> OptimizerInfo:
    if not renamed:
        return info

    def names(items: Iterable[str]) -> tuple[str, ...]:
        return tuple(renamed.get(n, n) for n in items)

    optimizers = tuple(
        dataclasses.replace(o, trainable=names(o.trainable), uncovered=names(o.uncovered)) for o in info.optimizers
    )
    return dataclasses.replace(info, uncovered=names(info.uncovered), optimizers=optimizers)


def _parse_graph(bundle: Bundle, path: Path) -> Graph:
    graph_proto = bundle.reader.object_graph()
    if graph_proto is None:
        raise CorruptCheckpointError(f"{path}: no object graph in this bundle")
    try:
        return Graph.parse(graph_proto)
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class _Roles:
    """What the optimizer objects say about nodes: slot owners, iteration counters, weights they train."""

    slot_owner: dict[int, tuple[int, str]]
    counters: set[int]
    trainable: set[int]


def _variable(
    graph: Graph, entry: Any, node_id: int | None, roles: _Roles, load: Loader, chunks: Chunker | None
) -> Variable:
    """One stored value with its readable name and role (slots named `<weight>/<slot>`), read by `load` and
    `chunks`."""
    name = _display_name(graph, node_id, entry.key)
    role: Role = "weight"
    slot_of: str | None = None
    slot: str | None = None
    owner = roles.slot_owner.get(node_id) if node_id is not None else None
    if owner is not None:
        slot_of, slot = graph.name(owner[0]) or str(owner[0]), owner[1]
        name, role = f"{slot_of}/{slot}", "optimizer"
    elif node_id is not None and node_id in roles.counters:
        role = "step"
    elif node_id in roles.trainable:
        role = "weight"
    elif graph.through_optimizer(name):
        role = "optimizer"
    elif name == "save_counter" or METRIC_PATH.search(name) or entry.dtype in ("string", "resource", "variant"):
        role = "other"
    return new_variable(
        entry.key,
        name,
        entry.shape,
        entry.dtype,
        role,
        slot_of,
        slot,
        load,
        chunks,
    )


def _epoch(variables: dict[str, Variable]) -> dict[str, Any]:
    """A top-level integer `epoch` variable: completed epochs (`tf.train.Checkpoint(..., epoch=...)`)."""
    for var in variables.values():
        if var.name in EPOCH_NAMES and var.size == 1 and var.dtype.startswith(("int", "uint")):
            return {"epoch": read_scalar(var), "epoch_key": var.key}
    return {}


def _display_name(graph: Graph, node_id: int | None, key: str) -> str:
    """The key's own path when it does not run through an optimizer, else the best other path."""
    own = key[: -len(ATTR_SUFFIX)] if key.endswith(ATTR_SUFFIX) else key
    if not graph.through_optimizer(own):
        return own
    name = graph.name(node_id) if node_id is not None else None
    return own if name is None else name


# A top-level integer `epoch` variable (tf.train.Checkpoint(..., epoch=tf.Variable(n))) counts completed epochs.
EPOCH_NAMES = ("epoch",)
COUNTERS = tuple(c for c in STEP_COUNTERS if c != "global_step")
OPTIMIZER_MARKS = ("_learning_rate", "learning_rate", "_variables")


def _optimizer_nodes(graph: Graph, bundle: Bundle) -> tuple[list[int], list[int]]:
    """Optimizer objects found by structure, wherever they hang and whatever the attribute is called: an
    integer iteration counter beside a learning rate or a variable list (Keras 3, tf_keras), or slot
    references (tf_keras legacy). The checkpoint root itself counts only with slot lists or references (a
    custom loop's `Checkpoint(iterations=..., learning_rate=...)` is not an optimizer). Returns (optimizers,
    wrappers): an optimizer holding another (LossScaleOptimizer) is a wrapper; the inner one is reported."""
    found = [n for n in range(len(graph.nodes)) if n in graph.paths and _looks_like_optimizer(graph, bundle, n)]
    if len(found) > MAX_OPTIMIZERS:
        raise CorruptCheckpointError(
            f"object graph holds {len(found)} optimizer-like objects (more than {MAX_OPTIMIZERS}; refused)"
        )
    paths = {n: graph.paths[n] for n in found}
    wrappers = [
        n
        for n in found
        if any(o != n and any(q.startswith(p + "/") for p in paths[n] for q in paths[o]) for o in found)
    ]
    return [n for n in found if n not in wrappers], wrappers


def _looks_like_optimizer(graph: Graph, bundle: Bundle, node_id: int) -> bool:
    if not graph.children[node_id] and not len(graph.nodes[node_id].slot_variables):  # a leaf: ruled out cheaply
        return False
    node = graph.nodes[node_id]
    kids = _children(graph, node_id)
    lists = any(k in slot_lists() for k in kids) or "_variables" in kids
    if len(node.slot_variables):
        return True
    if node_id == 0 and not lists:
        return False
    counter = any(c in kids and _integer_scalar(graph, bundle, kids[c]) for c in COUNTERS)
    marked = lists or any(m in kids for m in OPTIMIZER_MARKS)
    return counter and marked


def _integer_scalar(graph: Graph, bundle: Bundle, node_id: int) -> bool:
    entry = _entry_of(graph, bundle, node_id)
    return entry is not None and entry.shape in ((), (1,)) and entry.dtype.startswith(("int", "uint"))


def _entry_of(graph: Graph, bundle: Bundle, node_id: int) -> Any | None:
    """The bundle entry holding a node's value, if the node is in range and stores one."""
    key = graph.value_key(node_id) if 0 <= node_id < len(graph.nodes) else None
    return bundle.entries.get(key) if key else None


def _children(graph: Graph, node_id: int) -> dict[str, int]:
    return {name: child for child, name in graph.children[node_id]}


@dataclass
class RootFinding:
    """One optimizer object: its counter, the weights it is built for, its slots (node -> (weight, slot))."""

    root: int
    iterations: int | None = None
    trainable: list[int] = field(default_factory=list)
    slots: dict[int, tuple[int, str]] = field(default_factory=dict)
    stateless: bool = False
    dialect: str = ""  # whose layout: "keras3" (a `_trainable_variables` list), "keras2", "keras2-legacy"
    untied: int = 0  # optimizer state variables that could not be tied to the weights


def _positional_slots(graph: Graph, optimizer_roots: list[int], bundle: Bundle) -> list[RootFinding]:
    """Slots of each optimizer object, however it records them.

    tf_keras legacy optimizers keep `.OPTIMIZER_SLOT` references on the optimizer node. Keras 3 tracks
    `_trainable_variables` (the weights, in order) and one list per slot kind (`_momentums`, ...) whose entry
    i belongs to weight i. tf_keras tracks the slot lists too but no trainable list; there the weights are
    the float model weights in path order, checked by shape. Without slot lists, the positional `_variables`
    list is split by the number of trainable weights.
    """
    return [_root_finding(graph, root, bundle) for root in optimizer_roots]


def _root_finding(graph: Graph, root: int, bundle: Bundle) -> RootFinding:
    found = RootFinding(root)
    kids = _children(graph, root)
    # the same counter test that made this node an optimizer (an integer scalar), so both agree on the step
    found.iterations = next((kids[c] for c in COUNTERS if c in kids and _integer_scalar(graph, bundle, kids[c])), None)
    refs = graph.nodes[root].slot_variables
    if len(refs):
        for ref in refs:
            ids = (ref.slot_variable_node_id, ref.original_variable_node_id)
            if not all(0 <= i < len(graph.nodes) for i in ids):
                raise CorruptCheckpointError(f"object graph slot reference to node {max(ids)} out of range")
            slot = keras2_slot(None, str(ref.slot_name)) or str(ref.slot_name)
            found.slots[ref.slot_variable_node_id] = (ref.original_variable_node_id, slot)
        found.trainable = list(dict.fromkeys(owner for owner, _ in found.slots.values()))
        found.dialect = "keras2-legacy"
        return found
    found.dialect = "keras3" if "_trainable_variables" in kids else "keras2"
    trainable = _ordered(graph, kids["_trainable_variables"]) if "_trainable_variables" in kids else None
    lists = {slot_lists()[k]: _ordered(graph, v) for k, v in kids.items() if k in slot_lists()}
    lists = {k: v for k, v in lists.items() if v}
    weights = trainable if trainable is not None else _guess_trainable(graph, root, bundle)
    if lists:
        found.trainable = weights
        by_shape = _weights_by_shape(graph, bundle, weights)
        for slot_name, members in lists.items():
            for i, slot_node in enumerate(members):
                owner = weights[i] if i < len(weights) else None
                if owner is None or _shape_of(graph, bundle, slot_node) != _shape_of(graph, bundle, owner):
                    owner = _match_by_shape(graph, bundle, slot_node, by_shape)
                if owner is not None:
                    found.slots[slot_node] = (owner, slot_name)
        if trainable is None and found.slots:  # guessed weights: the trained ones are those with slots
            found.trainable = list(dict.fromkeys(owner for owner, _ in found.slots.values()))
        return found
    if "_variables" not in kids and trainable is None:
        # tf_keras legacy optimizers create their slots on the first update; one that stores a counter and
        # no slot references keeps no per-weight state (SGD without momentum), or never ran (iteration 0).
        found.trainable, found.stateless = weights, True
        return found
    _split_variables(graph, bundle, kids, trainable, found)
    return found


def _split_variables(
    graph: Graph, bundle: Bundle, kids: dict[str, int], trainable: list[int] | None, found: RootFinding
) -> None:
    """Ties from the positional `_variables` list: counter, learning rate, then the slots in build order."""
    ordered = _ordered(graph, kids["_variables"]) if "_variables" in kids else []
    if ordered and found.iterations is None:
        found.iterations = ordered[0]
    if trainable is None or not ordered:
        return
    skip = 2 if "_learning_rate" in kids and kids["_learning_rate"] in ordered[:2] else 1
    slots = ordered[skip:]
    found.trainable = trainable
    if not slots:
        found.stateless = True
        return
    assignment = (
        _assign(graph, bundle, slots, trainable, len(slots) // len(trainable))
        if trainable and not len(slots) % len(trainable)
        else None
    )
    if assignment is None:
        found.untied = len(slots)
        return
    for slot_node, (var_node, index) in assignment.items():
        found.slots[slot_node] = (var_node, _slot_name_of(graph, slot_node) or f"slot{index}")


def _slot_name_of(graph: Graph, node_id: int) -> str | None:
    """A Keras 3 slot's own name, from its recorded full name (`adam/dense_kernel_momentum`)."""
    full = graph.full_name(node_id)
    tail = full.rpartition("/")[2]
    names = sorted(set(slot_lists().values()), key=len, reverse=True)
    return next((n for n in names if tail.endswith("_" + n) or tail == n), None)


def _ordered(graph: Graph, list_node: int) -> list[int]:
    members = _children(graph, list_node)
    # ASCII digits only, and short: int() rejects other scripts' digits mixed in and strings over 4300 digits
    return [members[k] for k in sorted((k for k in members if k.isascii() and k.isdigit() and len(k) < 19), key=int)]


def _weights_by_shape(graph: Graph, bundle: Bundle, weights: list[int]) -> dict[tuple[int, ...] | None, list[int]]:
    """The weights (with repeats, in order) of each shape: one pass, so matching every slot stays linear."""
    out: dict[tuple[int, ...] | None, list[int]] = {}
    for weight in weights:
        out.setdefault(_shape_of(graph, bundle, weight), []).append(weight)
    return out


def _match_by_shape(
    graph: Graph, bundle: Bundle, slot_node: int, by_shape: dict[tuple[int, ...] | None, list[int]]
) -> int | None:
    """The weight a slot belongs to when positions disagree: the only one with the same shape."""
    same = by_shape.get(_shape_of(graph, bundle, slot_node), [])
    return same[0] if len(same) == 1 else None


def _shape_of(graph: Graph, bundle: Bundle, node_id: int) -> tuple[int, ...] | None:
    entry = _entry_of(graph, bundle, node_id)
    return entry.shape if entry is not None else None


def _assign(
    graph: Graph, bundle: Bundle, slots: list[int], trainable: list[int], per: int
) -> dict[int, tuple[int, int]] | None:
    """Slot node -> (weight node, slot index), trying the interleaved then the grouped layout; shapes must agree."""
    n = len(trainable)
    interleaved = {slot: (trainable[j // per], j % per) for j, slot in enumerate(slots)}  # w0.s0, w0.s1, w1.s0
    grouped = {slot: (trainable[j % n], j // n) for j, slot in enumerate(slots)}  # all s0, then all s1
    for mapping in (interleaved, grouped):
        if all(_shape_of(graph, bundle, s) == _shape_of(graph, bundle, w) for s, (w, _) in mapping.items()):
            return mapping
    return None


def _guess_trainable(graph: Graph, optimizer_root: int, bundle: Bundle) -> list[int]:
    """Float weights outside the optimizer, in path order (tf_keras records no trainable list)."""
    found = []
    for node_id, key in enumerate(graph.value_keys):
        if key is None or key not in bundle.entries:
            continue
        name = graph.name(node_id)
        if name is None or graph.through_optimizer(name):
            continue
        entry = bundle.entries[key]
        if entry.dtype in FLOAT_DTYPES and not NON_TRAINABLE.search(name) and not name.startswith("keras_api/metrics"):
            found.append(node_id)
    return found


def _pick_step(variables: Iterable[Variable], counters: list[str | None]) -> Variable | None:
    """The step: the first optimizer's iteration counter, else a `global_step` / `step` integer scalar."""
    by_key = {v.key: v for v in variables}
    for key in counters:
        if key is not None and key in by_key:
            return by_key[key]
    for v in by_key.values():
        if v.name.rsplit("/", 1)[-1] in ("global_step", "step") and v.dtype.startswith("int") and v.size == 1:
            return v
    return None


def _optimizer_info(
    graph: Graph, findings: list[RootFinding], variables: dict[str, Variable], bundle: Bundle
) -> OptimizerInfo:
    """Each optimizer object with the weights it covers; model weights no optimizer covers are uncovered."""
    if not findings:
        return summarize(variables.values(), reason="no optimizer object in the object graph", evidence="object graph")
    found = [_found(graph, f, variables) for f in findings]
    names = {v.name for v in variables.values()}
    covered_any = {w for o in found for w in o.trainable}
    weights = {v.name for v in variables.values() if v.role == "weight"}
    # Float weights no optimizer is built for: the weights of a model whose optimizer was not saved (a GAN's
    # discriminator) — but not the frozen / non-trainable weights of a model whose optimizer is saved, for
    # which Keras keeps no slots. Models are told apart by the top-level object they hang under.
    owned_groups = {w.split("/")[0] for w in covered_any}
    orphans = [
        n
        for n in (graph.name(i) for i in _guess_trainable(graph, -1, bundle))
        if n and n in weights and n not in covered_any and n.split("/")[0] not in owned_groups
    ]
    trainable = list(dict.fromkeys([*(w for o in found for w in o.trainable), *orphans]))
    uncovered = [*dict.fromkeys(w for o in found for w in o.uncovered), *orphans]
    stateless = all(f.stateless for f in findings)
    label = "+".join(dict.fromkeys(o.name or "unknown" for o in found))
    paths = ", ".join(o.path for o in found)
    reason = f"{len(found)} optimizer object{'s' if len(found) > 1 else ''} in the object graph ({paths})"
    if orphans:
        reason += f"; {len(orphans)} model weights belong to no saved optimizer"
    untied = sum(f.untied for f in findings)
    if untied:
        reason += f"; {untied} optimizer variables could not be tied to weights (layout not decoded)"
    slots = tuple(sorted({s for o in found for s in o.slots}))
    return OptimizerInfo(
        True,
        name=label if label != "unknown" else None,
        slots=slots,
        trainable=len([w for w in trainable if w in names]),
        covered=len(trainable) - len(uncovered),
        uncovered=tuple(uncovered),
        slots_expected=not stateless,
        reason=reason,
        evidence="object graph",
        optimizers=tuple(found),
        dialect=next(iter(dialects)) if len(dialects := {f.dialect for f in findings}) == 1 else "",
    )


def _found(graph: Graph, finding: RootFinding, variables: dict[str, Variable]) -> FoundOptimizer:
    path = graph.name(finding.root) or str(finding.root)
    weights = [n for n in (graph.name(w) for w in finding.trainable) if n]
    per_weight: dict[str, set[str]] = {}
    for owner, slot in finding.slots.values():
        per_weight.setdefault(graph.name(owner) or "", set()).add(slot)
    slots = tuple(sorted({s for per in per_weight.values() for s in per}))
    uncovered = tuple(
        w for w in weights if finding.untied or (not finding.stateless and per_weight.get(w, set()) != set(slots))
    )
    step = None
    if finding.iterations is not None:
        key = graph.value_key(finding.iterations)
        step = read_scalar(variables[key]) if key in variables else None
    group = next((graph.full_name(n).partition("/")[0] for n in finding.slots), "")
    fam = family_of_group(group) if group else None
    fam = fam or guess_family(slots)
    return FoundOptimizer(
        path, fam.name if fam else ("SGD" if finding.stateless else None), step, slots, tuple(weights), uncovered
    )


def open(path: Path) -> VariableMap:
    prefix = bundle_prefix(path)
    if prefix is None:
        raise CorruptCheckpointError(f"{path}: not a TF2 checkpoint")
    bundle = open_bundle(prefix)
    return describe_bundle(
        bundle, path, FORMAT, prefix=prefix, bundle="v2", metadata={"prefix": str(prefix), **bundle.describe()}
    )


READER = Reader(FORMAT, sniff, open, verify_bundle, checkpoint_state_directory, group="bundle")
