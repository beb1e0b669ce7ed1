"""The layer tree of an artifact: layers -> weights -> optimizer slots, by canonical name, in natural order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckpt_tools.messages import natural_key
from ckpt_tools.model import Variable, VariableMap

__all__ = ["Node", "Tree", "build_tree", "natural_key"]


@dataclass
class Node:
    """One layer (or scope): its own weights, each with its slots, and nested layers."""

    name: str
    weights: list[tuple[Variable, list[Variable]]] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(w.size for w, _ in self.weights) + sum(c.parameters for c in self.children.values())

    def sorted_children(self) -> list[Node]:
        return [self.children[k] for k in sorted(self.children, key=natural_key)]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "weights": [
                {**_brief(w), "slots": [{**_brief(s), "slot": s.slot} for s in slots]} for w, slots in self.weights
            ],
            "layers": [c.to_json() for c in self.sorted_children()],
        }


def _brief(var: Variable) -> dict[str, Any]:
    return {"name": var.name, "key": var.key, "shape": list(var.shape), "dtype": var.dtype}


@dataclass
class Tree:
    """The root scope and the variables that belong to no layer (step, counters, learning rate, ...)."""

    root: Node
    other: list[Variable]

    def to_json(self) -> dict[str, Any]:
        return {
            "parameters": self.root.parameters,
            "layers": [c.to_json() for c in self.root.sorted_children()],
            "weights": self.root.to_json()["weights"],
            "other": [{**_brief(v), "role": v.role} for v in self.other],
        }


def build_tree(vmap: VariableMap) -> Tree:
    """Each weight under its layer path, its slots (matched by `slot_of`) under it; aliases left out."""
    variables = vmap.primaries()
    slots: dict[str, list[Variable]] = {}
    for var in variables:
        if var.slot_of is not None:
            slots.setdefault(var.slot_of, []).append(var)
    root = Node("")
    placed: set[str] = set()
    for var in sorted((v for v in variables if v.role == "weight" and v.slot_of is None), key=_by_name):
        node = root
        *scopes, _ = var.name.split("/")
        for scope in scopes:
            node = node.children.setdefault(scope, Node(scope))
        own = sorted(slots.get(var.name, []), key=lambda s: natural_key(s.slot or ""))
        node.weights.append((var, own))
        placed.update(s.key for s in own)
    other = [v for v in sorted(variables, key=_by_name) if v.role != "weight" and v.key not in placed]
    return Tree(root, other)


def _by_name(var: Variable) -> tuple[tuple[int, int, str], ...]:
    return natural_key(var.name)
