"""Canonical names shared by every reader: Keras layer paths for weights, `optimizer/<weight>/<slot>` for slots."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from ckpt_tools.model import Variable

SLOT_PREFIX = "optimizer/"

# Variables only some formats hold, with the reason a report gives (optimizer ones live in the catalogue).
SAVE_COUNTER = "tf.train.Checkpoint save counter (number of saves, not training steps)"
METRIC_STATE = "Keras metric accumulator (evaluation state, not training state)"


def slot_name(weight: str, slot: str) -> str:
    """The canonical name of optimizer slot `slot` of weight `weight` (same in every format)."""
    return f"{SLOT_PREFIX}{weight}/{slot}"


def strip_model_scope(
    full_names: Mapping[str, str], inside_a_layer: Callable[[list[str]], bool] = lambda paths: False
) -> dict[str, str]:
    """Recorded Keras paths (object path -> full name) with the model's own scope removed where evidence shows it.

    Keras builds a model's layers inside the model's name scope when the model is built by its first call
    (`net/enc/kernel`), and outside it when each layer is built as it is added (`enc/kernel`); the model's name
    is not recorded. A shared first component is taken for the model's scope only when (1) every weight of the
    artifact (else: of one top-level object, such as a GAN's `generator`) carries it, (2) it encloses at least
    two different scopes below it, and (3) the weights' nearest common object in the object graph is not
    itself a layer (`inside_a_layer(object paths)`: a custom layer holding sublayers `p` and `q` records
    `blk/p/kernel`, and `blk` is that layer's name, not the model's). Otherwise full names are kept whole;
    docs/diff.md lists what this cannot tell apart.
    """
    split = {path: full.split("/") for path, full in full_names.items()}
    if _scoped(list(split.values())) and not inside_a_layer(list(split)):
        return {path: "/".join(parts[1:]) for path, parts in split.items()}
    groups: dict[str, dict[str, list[str]]] = {}
    for path, parts in split.items():
        groups.setdefault(path.split("/", 1)[0], {})[path] = parts
    out: dict[str, str] = {}
    for members in groups.values():
        scoped = _scoped(list(members.values())) and not inside_a_layer(list(members))
        out.update({path: "/".join(parts[1:] if scoped else parts) for path, parts in members.items()})
    return out


def _scoped(parts: list[list[str]]) -> bool:
    """All names share a first component that encloses two or more different scopes."""
    return (
        bool(parts)
        and len({p[0] for p in parts}) == 1
        and all(len(p) >= 3 for p in parts)
        and len({p[1] for p in parts}) >= 2
    )


def common_owner(paths: list[str]) -> str:
    """The object path that holds every one of these variables' owners (their longest common object prefix)."""
    owners = [p.split("/")[:-1] for p in paths]
    common: list[str] = []
    for parts in zip(*owners, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def keep_unique(variables: dict[str, Variable], fallback: Mapping[str, str]) -> dict[str, Variable]:
    """Variables whose canonical names collide fall back to `fallback[key]` (else the key), so names stay unique.

    Aliases share their primary's name and are not counted as collisions.
    """
    counts = Counter(v.name for v in variables.values() if v.alias_of is None)
    clashing = {name for name, n in counts.items() if n > 1}
    if not clashing:
        return variables
    out = dict(variables)
    for key, var in variables.items():
        if var.name in clashing and var.alias_of is None:
            out[key] = dataclasses.replace(var, name=fallback.get(key, key))
    return out


def mark_aliases(variables: dict[str, Variable], groups: Iterable[list[str]]) -> dict[str, Variable]:
    """Each group of keys storing one variable: the first key is the primary, the rest its aliases."""
    out = dict(variables)
    for keys in groups:
        if len(keys) < 2:
            continue
        primary, *rest = keys
        out[primary] = dataclasses.replace(out[primary], aliases=tuple(rest))
        for key in rest:
            p = out[primary]
            out[key] = dataclasses.replace(
                out[key], name=p.name, role=p.role, slot_of=p.slot_of, slot=p.slot, alias_of=primary
            )
    return out
