"""Compare optimizer slots of two dialects in one meaning: the non-Keras-3 side translated as convert does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.optimizers.translation import NEEDS, keras3_value, slot_translation


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


# (translation, translated array of that side) or a reason the slot could not be translated, or None: no need.
Outcome = tuple[Translation, np.ndarray] | str | None
Translator = Callable[[Variable, Variable], Outcome]


def translator(map_a: VariableMap, map_b: VariableMap) -> Translator:
    """How to put slot pairs of these two maps in one meaning (a no-op unless exactly one side is Keras 3)."""
    dialects = (map_a.optimizer.dialect, map_b.optimizer.dialect)
    if dialects.count("keras3") != 1 or "" in dialects:
        return _none
    side = "a" if dialects[1] == "keras3" else "b"
    source, target = (map_a, map_b) if side == "a" else (map_b, map_a)

    def translate(var_a: Variable, var_b: Variable) -> Outcome:
        var = var_a if side == "a" else var_b
        spec = slot_translation(source.optimizer.name, source.optimizer.dialect, var.slot or "")
        if spec is None:
            return None
        hyper = _target_hyper(target)
        missing = [name for name in NEEDS.get(spec.how, ()) if name not in hyper]
        if missing:
            return f"{source.optimizer.dialect} slot not translated: the Keras 3 side records no {missing[0]}"
        value = keras3_value(
            spec.how, var.read(), learning_rate=hyper.get("learning_rate", 0.0), epsilon=hyper.get("epsilon", 0.0)
        )
        used = {k: hyper[k] for k in NEEDS.get(spec.how, ())}
        return Translation(side, source.optimizer.dialect, spec.how, used, spec.note), value

    return translate


def _none(var_a: Variable, var_b: Variable) -> Outcome:
    return None


def _target_hyper(vmap: VariableMap) -> dict[str, float]:
    """The Keras 3 side's rate (its stored learning-rate variable) and epsilon (its recorded config)."""
    out: dict[str, float] = {}
    rates = [v for v in vmap.primaries() if v.format_specific and v.name.rpartition("/")[2] == "learning_rate"]
    if len(rates) == 1 and rates[0].size == 1:
        out["learning_rate"] = float(np.asarray(rates[0].read()).reshape(-1)[0])
    config = (vmap.optimizer.recorded_config or {}).get("config") or {}
    epsilon = config.get("epsilon", vmap.optimizer.hyper.get("epsilon"))
    if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool):
        out["epsilon"] = float(epsilon)
    return out
