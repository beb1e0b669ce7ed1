"""Pair the variables of two artifacts: by canonical name, the step by role, then layers by structure."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ckpt_tools.errors import UsageError
from ckpt_tools.messages import natural_key
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.renames import RenameRules, Side

STEP = "step"
# How a pair was made (`paired_by` in reports).
BY_NAME = "name"
BY_ROLE = "role"
BY_STRUCTURE = "structure"


@dataclass(frozen=True)
class Pair:
    """One variable of A and/or B under one canonical name; `paired_by` is empty for an unpaired variable."""

    name: str
    a: Variable | None
    b: Variable | None
    paired_by: str = ""


@dataclass(frozen=True)
class Selection:
    """What takes part in a comparison: `--weights-only` and `--exclude` patterns."""

    weights_only: bool = False
    exclude: tuple[str, ...] = ()

    def keeps(self, var: Variable, *also: str) -> bool:
        """Whether `var` takes part; `also` are other names it answers to (the step's `step`)."""
        if var.alias_of is not None:
            return False
        if self.weights_only and (var.role != "weight" or var.slot_of is not None):
            return False
        names = (var.name, var.key, *also)
        return not any(fnmatch.fnmatchcase(n, g) for g in self.exclude for n in names)


def pair_maps(map_a: VariableMap, map_b: VariableMap, rules: RenameRules, selection: Selection) -> list[Pair]:
    """Every selected variable of either side in one Pair, in canonical-name order."""
    side_a, step_a = _side(map_a, rules, selection, "a")
    side_b, step_b = _side(map_b, rules, selection, "b")
    whole = (_layer_sizes(side_a), _layer_sizes(side_b))
    same_optimizer = map_a.optimizer.name is not None and map_a.optimizer.name == map_b.optimizer.name
    names = _named_pairs(side_a, side_b, same_optimizer)
    pairs = [Pair(name, side_a.pop(name), side_b.pop(name), BY_NAME) for name in names]
    if step_a is not None and step_b is None and step_a.name in side_b:  # B keeps several counters: by name
        pairs.append(Pair(step_a.name, step_a, side_b.pop(step_a.name), BY_NAME))
    elif step_b is not None and step_a is None and step_b.name in side_a:
        pairs.append(Pair(step_b.name, side_a.pop(step_b.name), step_b, BY_NAME))
    elif step_a is not None or step_b is not None:
        pairs.append(Pair(STEP, step_a, step_b, BY_ROLE if step_a and step_b else ""))
    pairs += _by_structure(side_a, side_b, whole)
    pairs += [Pair(name, var, None) for name, var in side_a.items()]
    pairs += [Pair(name, None, var) for name, var in side_b.items()]
    return sorted(pairs, key=lambda p: natural_key(p.name))


def _side(
    vmap: VariableMap, rules: RenameRules, selection: Selection, side: Side
) -> tuple[dict[str, Variable], Variable | None]:
    """Canonical name -> variable of one side, and its step variable (paired by role, whatever its name).

    Only a side with one step counter pairs it by role: several (a GAN's two optimizers) pair by name. The
    step answers to `step` for `--exclude` and rules (a rule with `"to": null` matching its name drops it).
    """
    counters = [v for v in vmap.primaries() if v.role == "step"]
    step = counters[0] if len(counters) == 1 and counters[0].key == vmap.step_key else None
    if step is not None and (not selection.keeps(step, STEP) or rules.apply(step.name, side) is None):
        step = None
        counters = []
    chosen = [v for v in vmap.values() if selection.keeps(v) and v is not step and (v.role != "step" or counters)]
    named = rules.canonical(chosen, side)
    if step is not None and STEP in named:
        raise UsageError(
            f"{rules.source or 'rename rules'}: side {side} {named[STEP].name!r} maps to 'step', "
            f"the name of the step counter {step.name!r}"
        )
    return named, step


def _named_pairs(side_a: dict[str, Variable], side_b: dict[str, Variable], same_optimizer: bool) -> list[str]:
    """Names on both sides. Unless both sides report one and the same optimizer family, a slot pairs only when
    its weight keeps the same slots on both sides (Adam's `momentum` is not SGD's `momentum`)."""
    sets_a, sets_b = _slot_sets(side_a), _slot_sets(side_b)
    names = []
    for name in sorted(set(side_a) & set(side_b)):
        var_a, var_b = side_a[name], side_b[name]
        slot_sets_differ = sets_a.get(var_a.slot_of or "") != sets_b.get(var_b.slot_of or "")
        if var_a.slot_of is not None and not same_optimizer and slot_sets_differ:
            continue
        names.append(name)
    return names


def _slot_sets(side: dict[str, Variable]) -> dict[str, frozenset[str]]:
    sets: dict[str, set[str]] = {}
    for var in side.values():
        if var.slot_of is not None and not var.format_specific:
            sets.setdefault(var.slot_of, set()).add(var.slot or "")
    return {weight: frozenset(slots) for weight, slots in sets.items()}


def _is_weight(var: Variable) -> bool:
    return var.role == "weight" and var.slot_of is None


def _layer_sizes(variables: dict[str, Variable]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, var in variables.items():
        if _is_weight(var):
            layer = name.rpartition("/")[0]
            sizes[layer] = sizes.get(layer, 0) + 1
    return sizes


def _layers(variables: dict[str, Variable], sizes: dict[str, int]) -> dict[str, dict[str, tuple[str, Variable]]]:
    """Layers none of whose weights paired by name: layer -> weight leaf -> (canonical name, variable)."""
    layers: dict[str, dict[str, tuple[str, Variable]]] = {}
    for name, var in variables.items():
        if _is_weight(var):
            layer, _, leaf = name.rpartition("/")
            layers.setdefault(layer, {})[leaf] = (name, var)
    return {layer: weights for layer, weights in layers.items() if len(weights) == sizes.get(layer)}


def _signature(layer: dict[str, tuple[str, Variable]]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return tuple(sorted((leaf, var.shape, var.dtype) for leaf, (_, var) in layer.items()))


def _by_structure(
    side_a: dict[str, Variable], side_b: dict[str, Variable], whole: tuple[dict[str, int], dict[str, int]]
) -> list[Pair]:
    """Whole layers left unpaired on both sides whose weights (leaf names, shapes, dtypes) match one layer and
    only one on each side; their weights pair by leaf, then their slots by slot name. Ambiguous layers (two
    with one structure) and layers with some weights paired by name are left unpaired rather than guessed."""
    layers_a, layers_b = _layers(side_a, whole[0]), _layers(side_b, whole[1])
    by_sig: dict[tuple[object, ...], tuple[list[str], list[str]]] = {}
    for layer, weights in layers_a.items():
        by_sig.setdefault(_signature(weights), ([], []))[0].append(layer)
    for layer, weights in layers_b.items():
        by_sig.setdefault(_signature(weights), ([], []))[1].append(layer)
    pairs: list[Pair] = []
    weight_of: dict[str, str] = {}  # A weight's own name -> B weight's own name
    for names_a, names_b in by_sig.values():
        if len(names_a) != 1 or len(names_b) != 1:
            continue
        for leaf, (name_a, var_a) in layers_a[names_a[0]].items():
            name_b, var_b = layers_b[names_b[0]][leaf]
            pairs.append(Pair(name_a, side_a.pop(name_a), side_b.pop(name_b), BY_STRUCTURE))
            weight_of[var_a.name] = var_b.name
    return pairs + _slots_along(side_a, side_b, weight_of)


def _slots_along(side_a: dict[str, Variable], side_b: dict[str, Variable], weight_of: dict[str, str]) -> list[Pair]:
    """Slots of structurally paired weights, paired by (weight, slot name)."""
    if not weight_of:
        return []
    slots_b = {(v.slot_of, v.slot): name for name, v in side_b.items() if v.slot_of is not None}
    pairs = []
    for name_a, var_a in list(side_a.items()):
        target = weight_of.get(var_a.slot_of or "")
        name_b = slots_b.get((target, var_a.slot)) if target is not None else None
        if name_b is not None and name_b in side_b:
            pairs.append(Pair(name_a, side_a.pop(name_a), side_b.pop(name_b), BY_STRUCTURE))
    return pairs


def excluded_count(vmap: VariableMap, selection: Selection) -> int:
    """Variables of one side left out by the selection (aliases are not counted: they are not variables)."""
    return sum(1 for v in vmap.primaries() if not selection.keeps(v))
