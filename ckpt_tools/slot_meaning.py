"""Compare optimizer slots of two dialects in one meaning: the non-Keras-3 side translated as convert does."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckpt_tools.facts import facts, short_number
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.optimizers.translation import NEEDS, adam_steps_from_power, keras3_value, slot_translation


@dataclass(frozen=True)
class Translation:
    """Which side's slot was translated into Keras 3's meaning before comparing, how, and with what values."""

    side: str
    dialect: str
    how: str
    hyper: dict[str, float]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"side": self.side, "dialect": self.dialect, "how": self.how, "hyper": self.hyper, "note": self.note}


@dataclass(frozen=True)
class Outcome:
    """How to compare one slot pair: `value` (the translated side's values) with `translation`, or not at all
    (`comparable` False: the Keras 3 side does not record what the rule needs); `note` says why."""

    translation: Translation | None = None
    value: np.ndarray | None = None
    note: str | None = None
    comparable: bool = True


Translator = Callable[[Variable, Variable], Outcome | None]


def translator(map_a: VariableMap, map_b: VariableMap) -> Translator:
    """How to put slot pairs of these two maps in one meaning (a no-op unless exactly one side is Keras 3).

    The rule is the catalogue's, as `ckpt convert` applies it. Its learning rate is the source's own (TF1
    training ops, a Keras 2 config), so a conversion onto a different rate shows as changed values; the
    epsilon is the Keras 3 side's recorded one (TF1 Adagrad has none)."""
    dialects = (map_a.optimizer.dialect, map_b.optimizer.dialect)
    if dialects.count("keras3") != 1 or "" in dialects:
        return _none
    side = "a" if dialects[1] == "keras3" else "b"
    source, target = (map_a, map_b) if side == "a" else (map_b, map_a)
    hyper = _translation_hyper(source, target)

    def translate(var_a: Variable, var_b: Variable) -> Outcome | None:
        var = var_a if side == "a" else var_b
        spec = slot_translation(source.optimizer.name, source.optimizer.dialect, var.slot or "")
        if spec is None:
            return None
        missing = [name for name in NEEDS.get(spec.how, ()) if name not in hyper.values]
        if missing:
            where = "the source" if missing[0] == "learning_rate" else "the Keras 3 side"
            note = f"{source.optimizer.dialect} slot not compared: {where} records no {missing[0]} to translate it"
            return Outcome(note=note, comparable=False)
        used = {k: hyper.values[k] for k in NEEDS.get(spec.how, ())}
        value = keras3_value(
            spec.how, var.read(), learning_rate=used.get("learning_rate", 0.0), epsilon=used.get("epsilon", 0.0)
        )
        notes = [n for k, n in hyper.notes.items() if k in used]
        translation = Translation(side, source.optimizer.dialect, spec.how, used, spec.note)
        return Outcome(translation, value, "; ".join(notes) or None)

    return translate


def _none(var_a: Variable, var_b: Variable) -> Outcome | None:
    return None


@dataclass(frozen=True)
class _Hyper:
    values: dict[str, float]
    notes: dict[str, str]


def _translation_hyper(source: VariableMap, target: VariableMap) -> _Hyper:
    """The source's learning rate and the Keras 3 side's epsilon, with a note where the two sides disagree."""
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    own = _number(facts(source).hyperparameters.get("learning_rate"))
    stored = _stored_rate(target)
    if own is not None:
        values["learning_rate"] = own
        if stored is not None and np.float32(stored) != np.float32(own):
            notes["learning_rate"] = (
                f"learning rates differ: the source trains at {short_number(own)}, the Keras 3 side at "
                f"{short_number(stored)}"
            )
    epsilon = _number(facts(target).hyperparameters.get("epsilon"))
    if epsilon is not None:
        values["epsilon"] = epsilon
    return _Hyper(values, notes)


def _stored_rate(vmap: VariableMap) -> float | None:
    rates = [v for v in vmap.primaries() if v.format_specific and v.name.rpartition("/")[2] == "learning_rate"]
    if len(rates) == 1 and rates[0].size == 1:
        return float(np.asarray(rates[0].read()).reshape(-1)[0])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def implied_step(var: Variable, vmap: VariableMap) -> tuple[int | None, str]:
    """The Adam steps a TF1 beta power implies (`beta1_power` holds beta1^(t+1) after t steps, `beta2_power`
    beta2^(t+1)), from the source's own recorded beta; None with the reason when that cannot be decided."""
    which = beta_power(var) or "beta1"
    name = "beta_1" if which == "beta1" else "beta_2"
    beta = _number(facts(vmap).hyperparameters.get(name))
    if beta is None:
        return None, f"{which}_power not checked against the step: the source records no {name} (no training ops)"
    power = float(np.asarray(var.read(), dtype=np.float64).reshape(-1)[0])
    steps = adam_steps_from_power(power, beta)
    if steps is None:
        return None, f"{which}_power {power:.7g} is no power of {name}={short_number(beta)}: no step implied"
    return steps, ""


def power_matches_step(var: Variable, vmap: VariableMap, step: int) -> tuple[bool | None, str]:
    """Whether a TF1 beta power equals beta^(step+1), as Adam at `step` holds it (float32 products: relative
    tolerance 1e-6 per step); None when undecidable (no recorded beta, or a power that underflowed)."""
    which = beta_power(var) or "beta1"
    name = "beta_1" if which == "beta1" else "beta_2"
    beta = _number(facts(vmap).hyperparameters.get(name))
    if beta is None:
        return None, f"{which}_power not checked against the step: the source records no {name} (no training ops)"
    expected = beta ** (step + 1)
    if not 0.0 < beta < 1.0 or expected < 1e-30:
        return None, f"{which}_power not checked: beta^(step+1) underflows float32 at step {step}"
    power = float(np.asarray(var.read(), dtype=np.float64).reshape(-1)[0])
    if abs(power - expected) <= 1e-6 * (step + 2) * expected:
        return True, f"{which}_power consistent with step {step}"
    implied = adam_steps_from_power(power, beta)
    said = f"implies {implied} Adam steps" if implied is not None else f"= {power:.7g} is no power of {name}"
    return False, f"{which}_power {said}, the step is {step}: a resumed run's bias correction differs"


def beta_power(var: Variable) -> str | None:
    """`beta1` or `beta2` for a TF1 Adam beta-power variable (marked format-specific by its reader), else None."""
    match = re.search(r"(?:^|/)(beta[12])_power(?:_\d+)?$", var.key)
    return match.group(1) if match and var.format_specific else None


def is_beta1_power(var: Variable) -> bool:
    return beta_power(var) == "beta1"
