"""Optimizer findings shared by every reader: which weights have slots, which optimizer it looks like."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .model import OptimizerInfo, Variable

# Weights that optimizers never touch: batch-norm statistics and bookkeeping counters.
NON_TRAINABLE = re.compile(
    r"(moving_mean|moving_variance|running_mean|running_var|num_batches_tracked|seed_generator|/count$|/total$)"
)

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}

# Slot names (lower-case, any source) -> optimizer family they suggest, most specific first.
SLOT_FAMILIES: list[tuple[frozenset[str], str]] = [
    (frozenset({"m", "v", "vhat"}), "Adam(amsgrad)"),
    (frozenset({"momentum", "velocity", "velocity_hat"}), "Adam(amsgrad)"),
    (frozenset({"m", "v"}), "Adam"),
    (frozenset({"adam", "adam_1"}), "Adam"),
    (frozenset({"momentum", "velocity"}), "Adam"),
    (frozenset({"ftrl", "ftrl_1"}), "Ftrl"),
    (frozenset({"accumulator", "linear"}), "Ftrl"),
    (frozenset({"rms", "mg", "momentum"}), "RMSprop"),
    (frozenset({"rmsprop", "rmsprop_1"}), "RMSprop"),
    (frozenset({"rms", "momentum"}), "RMSprop"),
    (frozenset({"rms"}), "RMSprop"),
    (frozenset({"velocity"}), "RMSprop"),
    (frozenset({"adagrad"}), "Adagrad"),
    (frozenset({"accumulator"}), "Adagrad"),
    (frozenset({"momentum"}), "SGD(momentum)"),
]


def guess_optimizer(slot_names: Iterable[str]) -> str | None:
    """Name the optimizer family a set of slot names points at, or None."""
    names = frozenset(s.lower() for s in slot_names)
    if not names:
        return None
    for family_slots, family in SLOT_FAMILIES:
        if names == family_slots:
            return family
    return None


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
) -> OptimizerInfo:
    """Build the optimizer report from role-tagged variables.

    `trainable` names the trainable weights when the format records them; otherwise float weights that are
    not batch-norm statistics count as trainable. `state_present` overrides detection (e.g. an optimizer
    that stores only its iteration counter). `slots_expected=False` marks slot-free optimizers (plain SGD).
    `infer_name=False` keeps `name` None when the format cannot tell which optimizer it was.
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
        if name is None and present and not slot_names:
            name = "SGD"
    if slots_expected is None:
        slots_expected = bool(slot_names) or name not in (None, "SGD")
    weight_names = [v.name for v in variables if is_trainable_candidate(v)] if trainable is None else list(trainable)
    if present and slots_expected:
        # Weights that carry slots are trainable even if the heuristic said otherwise.
        weight_names = list(dict.fromkeys([*weight_names, *slots]))
    covered = [w for w in weight_names if _has_all_slots(slots.get(w, set()), slot_names)]
    covered_set = set(covered)
    uncovered = tuple(w for w in weight_names if w not in covered_set) if slots_expected else ()
    return OptimizerInfo(
        present=present,
        name=name if present else None,
        slots=tuple(slot_names),
        trainable=len(weight_names),
        covered=len(covered) if slots_expected else len(weight_names),
        uncovered=uncovered if present else tuple(weight_names),
        slots_expected=slots_expected,
    )
