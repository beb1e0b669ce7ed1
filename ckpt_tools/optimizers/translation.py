"""Slot values in Keras 3's meaning: the catalogue's per-dialect translations applied to stored arrays."""

from __future__ import annotations

import math

import numpy as np

from ckpt_tools.optimizers.catalogue import SlotTranslation
from ckpt_tools.optimizers.lookup import family

# Hyper-parameters each transform needs (of the Keras 3 side: the rate and epsilon the resumed run uses).
NEEDS: dict[str, tuple[str, ...]] = {"copy": (), "neg_lr": ("learning_rate",), "minus_eps": ("epsilon",)}


def keras3_value(how: str, value: np.ndarray, *, learning_rate: float, epsilon: float) -> np.ndarray:
    """The Keras 3 value of a slot stored in another dialect (same dtype as the source)."""
    dtype = value.dtype
    out: np.ndarray
    if how == "copy":
        return value
    if how == "neg_lr":
        out = np.negative(np.multiply(value, dtype.type(learning_rate), dtype=dtype), dtype=dtype)
        return out
    if how == "minus_eps":
        out = np.subtract(value, dtype.type(epsilon), dtype=dtype)
        return out
    raise ValueError(f"no Keras 3 value for translation {how!r}")


def slot_translation(family_name: str | None, dialect: str, slot: str) -> SlotTranslation | None:
    """The catalogue's translation of `slot` of `family_name` stored in `dialect` into Keras 3 (None: a copy)."""
    fam = family(family_name)
    if fam is None or dialect in ("", "keras3"):
        return None
    table = fam.translations.get(dialect) or fam.translations.get(dialect.split("-")[0]) or {}
    spec = table.get(slot)
    return None if spec is None or spec.how in ("copy", "refuse") else spec


def adam_steps_from_power(beta1_power: float, beta1: float) -> int | None:
    """Applied Adam steps t from TF1's beta1_power, which holds beta1^(t+1) after t steps."""
    if not (0.0 < beta1 < 1.0) or not (0.0 < beta1_power <= beta1):
        return None
    exponent = math.log(beta1_power) / math.log(beta1)
    t = round(exponent) - 1
    if abs(exponent - round(exponent)) > 1e-3 * max(1.0, exponent):
        return None
    return t
