"""Questions readers, validate, diff and convert ask of the optimizer catalogue, in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from ckpt_tools.optimizers.catalogue import EMA, FAMILIES, MOMENTUM, RMSPROP, SGD, WRAPPERS, Family, Slot, TrainingOp

_SPARSE_PREFIXES = ("ResourceSparse", "Sparse")


def family(name: str | None) -> Family | None:
    """The family of a catalogue name (`Adam`, `SGD(momentum)`) or a Keras class name (`Adam`, `SGD`)."""
    if name is None:
        return None
    if name == MOMENTUM.name:
        return MOMENTUM
    base = name.split("(")[0]
    by_name = next((f for f in FAMILIES if f.name == base), None)
    return by_name or next((f for f in FAMILIES if base in f.keras2_classes), None)


def keras_family(class_name: str | None, config: Mapping[str, Any] | None) -> Family | None:
    """The family of a Keras optimizer class under its config (`SGD` with momentum > 0 is SGD(momentum))."""
    found = family(class_name)
    if found is SGD and config is not None and _positive(config.get("momentum")):
        return MOMENTUM
    return found


def display_name(found: Family, config: Mapping[str, Any] | None) -> str:
    """How reports name the optimizer: the family, with the flags that change its state (`Adam(amsgrad)`)."""
    if found.name == "Adam" and config is not None and config.get("amsgrad"):
        return "Adam(amsgrad)"
    if found is RMSPROP and config is not None and config.get("centered"):
        return "RMSprop(centered)"
    return found.display or found.name


@cache
def _tf1_suffixes() -> dict[str, tuple[Family, str]]:
    out: dict[str, tuple[Family, str]] = {}
    for fam in FAMILIES:
        for slot in fam.slots:
            if slot.tf1 is not None:
                out.setdefault(slot.tf1, (fam, slot.name))
    return out


def tf1_slot(suffix: str, *, centered: bool = False) -> tuple[Family, str] | None:
    """(family, canonical slot) of a TF1 slot-variable suffix (`Adam_1` -> Adam velocity). Centered RMSProp
    names its slots RMSProp (velocity), RMSProp_1 (average_gradient), RMSProp_2 (momentum)."""
    if centered and suffix in ("RMSProp_1", "RMSProp_2"):
        return RMSPROP, "average_gradient" if suffix == "RMSProp_1" else "momentum"
    return _tf1_suffixes().get(suffix)


def tf1_suffixes() -> frozenset[str]:
    """Every TF1 slot suffix the catalogue knows (`Adam`, `Adam_1`, `Momentum`, ...)."""
    return frozenset(_tf1_suffixes()) | {"RMSProp_2"}


def keras2_slot(found: Family | None, name: str) -> str | None:
    """The canonical slot of a tf_keras slot name (`m`, `rms`, `accum_grad`, ...) within a family; without a
    family, the name's meaning in the first family that uses it."""
    candidates = [found] if found is not None else list(FAMILIES)
    for fam in candidates:
        for slot in (*fam.slots, *(s for w in WRAPPERS for s in w.slots)):
            if name in slot.keras2 or name == slot.name:
                return slot.name
    return None


@cache
def slot_lists() -> dict[str, str]:
    """Object-graph attribute of an optimizer's per-weight slot list -> canonical slot (`_momentums`)."""
    out: dict[str, str] = {}
    for slot in (*(s for f in FAMILIES for s in f.slots), *(s for w in WRAPPERS for s in w.slots)):
        for attr in slot.lists:
            out.setdefault(attr, slot.name)
    return out


@cache
def _ops() -> dict[str, tuple[Family, TrainingOp, bool]]:
    out: dict[str, tuple[Family, TrainingOp, bool]] = {}
    for fam in FAMILIES:
        for op in fam.tf1_ops:
            out[op.op] = (fam, op, False)
            out["Resource" + op.op] = (fam, op, False)
            for prefix in _SPARSE_PREFIXES:
                out[prefix + op.op] = (fam, op, True)
    return out


def training_op(op_type: str) -> tuple[Family, TrainingOp, bool] | None:
    """(family, op record, sparse?) of a TF1 training op type (`ResourceSparseApplyMomentum`), else None."""
    return _ops().get(op_type)


def guess_family(slots: Iterable[str]) -> Family | None:
    """The family whose canonical slots are exactly `slots` (when the artifact names no class), else None.

    Families with the same slot set (Adam, AdamW, Nadam, Lamb keep momentum + velocity) resolve to the first,
    most common one; callers report the name as inferred.
    """
    wanted = frozenset(slots)
    if not wanted:
        return None
    for fam in FAMILIES:
        own = {s.name for s in fam.slots}
        required = {s.name for s in fam.slots if s.when is None}
        if required <= wanted <= own:
            return fam
    return None


def keras3_layout_family(class_name: str | None, config: Mapping[str, Any] | None) -> Family | None:
    """The family whose Keras 3 slot layouts to try: a plain `SGD` with no known config may have momentum."""
    if class_name == "SGD" and config is None:
        return MOMENTUM
    return keras_family(class_name, config)


def wrapper_groups(config: Mapping[str, Any] | None) -> list[tuple[tuple[str, ...], ...]]:
    """Slot groups Keras 3 wrappers (EMA, gradient accumulation) create before the optimizer's own, under
    `config`; every combination when the config is unknown."""
    wrappers = [w for w in WRAPPERS if w.slots and w.keras3_flag]
    if config is not None:
        chosen = [[w for w in wrappers if _truthy(config.get(w.keras3_flag or ""))]]
    else:
        chosen = [[w for w in wrappers if w.name in pick] for pick in _combinations([w.name for w in wrappers])]
    return [tuple(tuple(s.name for s in w.slots) for w in combo) for combo in chosen]


def is_loss_scale(class_name: str | None) -> bool:
    """A tf_keras or Keras 3 loss-scale wrapper class (`LossScaleOptimizer`, tf_keras' `LossScaleOptimizerV3`)."""
    return bool(class_name) and str(class_name).split(">")[-1].startswith("LossScaleOptimizer")


def inner_config(recorded: Any) -> Any:
    """A serialized optimizer with a loss-scale wrapper taken off (its `inner_optimizer`), else as given."""
    if isinstance(recorded, Mapping) and is_loss_scale(recorded.get("class_name")):
        config = recorded.get("config")
        inner = config.get("inner_optimizer") if isinstance(config, Mapping) else None
        return inner if isinstance(inner, Mapping) else recorded
    return recorded


def wrapper_slots(config: Mapping[str, Any]) -> tuple[Slot, ...]:
    """The per-weight slots Keras 3 wrappers add under `config` that convert translates (the EMA's averages)."""
    return EMA.slots if config.get(EMA.keras3_flag or "") is True else ()


def _combinations(names: list[str]) -> list[set[str]]:
    out: list[set[str]] = [set()]
    for name in names:
        out += [s | {name} for s in out]
    return out


@cache
def factored_slots() -> dict[str, Slot]:
    """Slots whose shape is derived from the weight's (Adafactor's factored moments), by canonical name."""
    return {s.name: s for f in FAMILIES for s in f.slots if s.factored is not None}


def _truthy(value: Any) -> bool:
    return bool(value) and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def snake_case(name: str) -> str:
    """Keras' default object naming (class `RMSprop` -> `rm_sprop`), used for optimizer group names."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def family_of_group(group_name: str) -> Family | None:
    """The family a Keras 3 optimizer group is named after (`adam`, `rm_sprop_1`), or the class name tf_keras'
    new optimizers put before their slots' names (`RMSprop/velocity/dense/kernel`)."""
    base = re.sub(r"_\d+$", "", group_name)
    return next((f for f in FAMILIES if f.keras3 is not None and base in (snake_case(f.keras3), f.keras3)), None)


@cache
def hyperparameter_names() -> frozenset[str]:
    """Every hyper-parameter a catalogued optimizer takes (Keras 3 names and each framework's), plus `decay`."""
    from ckpt_tools.optimizers.catalogue import FRAMEWORK_DEFAULTS

    names = {name for fam in FAMILIES for name in fam.keras3_hyper}
    names |= {name for frameworks in FRAMEWORK_DEFAULTS.values() for d in frameworks.values() for name in d}
    return frozenset(names | {"decay"})
