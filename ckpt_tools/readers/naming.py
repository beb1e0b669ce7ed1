"""Canonical names shared by every reader: Keras layer paths for weights, `optimizer/<weight>/<slot>` for slots."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ckpt_tools.model import Chunker, Loader, Role, Variable

SLOT_PREFIX = "optimizer/"

# Variables only some formats hold, with the reason a report gives (optimizer ones live in the catalogue).
SAVE_COUNTER = "tf.train.Checkpoint save counter (number of saves, not training steps)"
METRIC_STATE = "Keras metric accumulator (evaluation state, not training state)"


# `dataclasses.replace` re-runs the generated __init__ through keyword arguments (~3 us a call); readers rename
# every variable of an artifact, 100,000 and more. Variable is a frozen dataclass without __post_init__ or slots,
# so a copy of its field dict with the changes applied is the same object replace() would build.
_FIELDS = frozenset(f.name for f in dataclasses.fields(Variable))
_PLAIN = not hasattr(Variable, "__post_init__") and not hasattr(Variable, "__slots__")


def with_fields(var: Variable, **changes: Any) -> Variable:
    """`dataclasses.replace(var, **changes)`, several times faster."""
    if not _PLAIN or not _FIELDS.issuperset(changes):
        return dataclasses.replace(var, **changes)
    new: Variable = object.__new__(Variable)
    object.__setattr__(new, "__dict__", {**var.__dict__, **changes})
    return new


_NEW_VARIABLE_FIELDS = ("key", "name", "shape", "dtype", "role", "slot_of", "slot", "loader", "chunker")


def new_variable(
    key: str,
    name: str,
    shape: tuple[int, ...],
    dtype: str,
    role: Role,
    slot_of: str | None = None,
    slot: str | None = None,
    loader: Loader | None = None,
    chunker: Chunker | None = None,
) -> Variable:
    """`Variable(key, name, shape, dtype, role, slot_of, slot, loader, chunker)`, without the frozen dataclass's
    field-by-field `object.__setattr__` (the other fields keep their defaults)."""
    if not _PLAIN:
        return Variable(key, name, shape, dtype, role, slot_of, slot, loader, chunker)
    new: Variable = object.__new__(Variable)
    fields: dict[str, Any] = {"key": key, "name": name, "shape": shape, "dtype": dtype, "role": role}
    fields["slot_of"] = slot_of
    fields.update(slot=slot, loader=loader, chunker=chunker, **_OTHER_DEFAULTS)
    object.__setattr__(new, "__dict__", fields)
    return new


_DEFAULTS = dict(Variable("", "", (), "float32").__dict__)
_OTHER_DEFAULTS = {k: v for k, v in _DEFAULTS.items() if k not in _NEW_VARIABLE_FIELDS}


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
            out[key] = with_fields(var, name=fallback.get(key, key))
    return out


def mark_aliases(variables: dict[str, Variable], groups: Iterable[list[str]]) -> dict[str, Variable]:
    """Each group of keys storing one variable: the first key is the primary, the rest its aliases."""
    out = dict(variables)
    for keys in groups:
        if len(keys) < 2:
            continue
        primary, *rest = keys
        out[primary] = with_fields(out[primary], aliases=tuple(rest))
        for key in rest:
            p = out[primary]
            out[key] = with_fields(out[key], name=p.name, role=p.role, slot_of=p.slot_of, slot=p.slot, alias_of=primary)
    return out
