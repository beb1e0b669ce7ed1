"""Optimizer findings shared by every reader: which weights have slots, which optimizer it looks like."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ckpt_tools.model import OptimizerInfo, Variable
from ckpt_tools.optimizers.lookup import guess_family

# Weights that optimizers never touch: batch-norm statistics and bookkeeping counters.
NON_TRAINABLE = re.compile(
    r"(moving_mean|moving_variance|running_mean|running_var|num_batches_tracked|seed_generator|/count$|/total$)"
)

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}


def guess_optimizer(slot_names: Iterable[str]) -> str | None:
    """Name the optimizer family a set of canonical slot names points at (catalogue order), or None."""
    found = guess_family(s.rpartition("/")[2] for s in slot_names)
    return None if found is None else found.name


def _family(slot: str) -> str:
    """`Adagrad/accumulator` -> `Adagrad`; unprefixed slot names form one family."""
    return slot.rpartition("/")[0]


def _has_all_slots(have: set[str], every_slot: list[str]) -> bool:
    """A weight is covered when it has every slot of each optimizer family it takes part in.

    Models trained by several optimizers at once (Estimators: Adagrad for the DNN, Ftrl for the linear
    part) prefix slot names with the optimizer; a weight needs the slots of its own optimizer only.
    """
    if not have:
        return False
    families = {_family(s) for s in have}
    return all(s in have for s in every_slot if _family(s) in families)


def is_trainable_candidate(var: Variable) -> bool:
    return var.role == "weight" and var.dtype in FLOAT_DTYPES and not NON_TRAINABLE.search(var.name)


def summarize(
    variables: Iterable[Variable],
    *,
    name: str | None = None,
    state_present: bool | None = None,
    slots_expected: bool | None = None,
    trainable: Iterable[str] | None = None,
    infer_name: bool = True,
    undecided: bool = False,
    reason: str = "",
    evidence: str = "names",
) -> OptimizerInfo:
    """Build the optimizer report from role-tagged variables.

    `trainable` names the trainable weights when the format records them; otherwise float weights that are
    not batch-norm statistics count as trainable. `state_present` overrides detection (e.g. an optimizer
    that stores only its iteration counter). `slots_expected=False` marks slot-free optimizers (plain SGD).
    `infer_name=False` keeps `name` None when the format cannot tell which optimizer it was. `undecided`
    reports `present: None` (the evidence cannot tell), with `reason` saying why.
    """
    variables = list(variables)
    slots: dict[str, set[str]] = {}
    for var in variables:
        if var.role == "optimizer" and var.slot_of is not None and var.slot is not None:
            slots.setdefault(var.slot_of, set()).add(var.slot)
    slot_names = sorted({s for per_var in slots.values() for s in per_var})
    present = bool(state_present) if state_present is not None else any(v.role == "optimizer" for v in variables)
    if name is None and infer_name:
        name = guess_optimizer(slot_names)
    if slots_expected is None:
        slots_expected = bool(slot_names) or name not in (None, "SGD")
    weight_names = [v.name for v in variables if is_trainable_candidate(v)] if trainable is None else list(trainable)
    if present and slots_expected:
        # Weights that carry slots are trainable even if the heuristic said otherwise.
        weight_names = list(dict.fromkeys([*weight_names, *slots]))
    covered = [w for w in weight_names if _has_all_slots(slots.get(w, set()), slot_names)]
    covered_set = set(covered)
    uncovered = tuple(w for w in weight_names if w not in covered_set) if slots_expected else ()
    if not reason:
        reason = _reason(present, name, slot_names)
    return OptimizerInfo(
        present=None if undecided else present,
        reason=reason,
        evidence=evidence,
        name=name if present or undecided else None,
        slots=tuple(slot_names),
        trainable=len(weight_names),
        covered=len(covered) if slots_expected else len(weight_names),
        uncovered=uncovered if present else tuple(weight_names),
        slots_expected=slots_expected,
    )


def _reason(present: bool, name: str | None, slot_names: list[str]) -> str:
    if not present:
        return "no optimizer variables stored"
    if slot_names:
        return f"slot variables {', '.join(slot_names)} stored" + (f" ({name})" if name else "")
    return "optimizer variables stored (no per-weight slots)"
