"""Optimizer slot translation: how each source optimizer's stored state becomes Keras 3 optimizer state.

The facts (slot names, update rules, exactness) live in the optimizer catalogue; this module applies them to
one source artifact and one target optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ckpt_tools.facts import FLOAT32_MAX
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.catalogue import TF1_NON_SLOT, WRAPPERS, Family, SlotTranslation
from ckpt_tools.optimizers.lookup import family, inner_config, keras_family, wrapper_slots
from ckpt_tools.optimizers.translation import keras3_value

Transform = Literal["copy", "neg_lr", "minus_eps", "drop"]
Exactness = Literal["exact", "rounding", "approximate", "lossless-drop"]
SUPPORTED_TARGETS = ("Adam", "SGD", "RMSprop", "Adagrad", "Adamax", "Nadam", "Adadelta", "Ftrl", "AdamW")
KERAS2_HYPER = (
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "amsgrad",
    "momentum",
    "nesterov",
    "rho",
    "centered",
    "initial_accumulator_value",
    "learning_rate_power",
    "l1_regularization_strength",
    "l2_regularization_strength",
    "l2_shrinkage_regularization_strength",
    "beta",
    "decay",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
)


@dataclass(frozen=True)
class SlotRule:
    """How one source slot becomes one Keras 3 slot (`target` None: dropped)."""

    source: str
    target: str | None
    transform: Transform
    exactness: Exactness
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "transform": self.transform,
            "exactness": self.exactness,
            "note": self.note,
        }


@dataclass
class SourceOptimizer:
    """What the source says about its optimizer: family, slot names per weight, hyper-parameters."""

    origin: str  # "tf1", "keras2", "keras2-legacy"
    family: str | None
    slots: dict[str, dict[str, str]] = field(default_factory=dict)  # weight key -> canonical slot -> slot key
    hyper: dict[str, Any] = field(default_factory=dict)
    hyper_origin: str = "not recorded"
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what makes the state untranslatable whatever the target
    beta1_power_key: str | None = None

    @property
    def slot_names(self) -> set[str]:
        return {s for per in self.slots.values() for s in per}


@dataclass(frozen=True)
class HyperCheck:
    """One hyper-parameter, source vs target; `match` None when the source does not record it."""

    name: str
    source: Any
    target: Any
    match: bool | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "target": self.target, "match": self.match}


# ---------------------------------------------------------------------------------------------- source side
def source_optimizer(vmap: VariableMap) -> SourceOptimizer:
    """What the source's reader found: the family, canonical slots per weight key, hyper-parameters."""
    info = vmap.optimizer
    keys_by_name = {v.name: v.key for v in vmap.values()}
    source = SourceOptimizer(info.dialect or "tf1", None)
    for var in vmap.values():
        if var.role == "optimizer" and var.slot_of is not None and var.slot is not None:
            weight = keys_by_name.get(var.slot_of, var.slot_of)
            source.slots.setdefault(weight, {})[var.slot] = var.key
    source.beta1_power_key = next((k for k in sorted(vmap) if k.rpartition("/")[2] == TF1_NON_SLOT[0]), None)
    if info.dialect.startswith("keras2"):
        _keras2_hyper(source, info.recorded_config)
    else:
        source.hyper = dict(info.hyper)
        source.hyper_origin = info.hyper_origin or "not recorded"
        if info.evidence != "training ops":
            source.notes.append(
                f"{vmap.prefix or vmap.path}: no training graph to read hyper-parameters from; they are unknown"
            )
    names = (info.name or "").split("+") if info.name else []
    if len(names) > 1:
        source.family = info.name
        source.notes.append(f"slots of {', '.join(names)}: not a single supported optimizer")
    elif names:
        source.family = names[0]
    elif source.slots:
        source.family = None
    return source


def _keras2_hyper(source: SourceOptimizer, recorded: Mapping[str, Any] | None) -> None:
    """Hyper-parameters from a Keras-2 training_config's optimizer_config."""
    recorded = inner_config(recorded)  # a loss-scale wrapper records its optimizer as inner_optimizer
    if not isinstance(recorded, Mapping):
        return
    raw_config = recorded.get("config")
    config: Mapping[str, Any] = raw_config if isinstance(raw_config, Mapping) else {}
    for name in KERAS2_HYPER:
        value = config.get(name)
        if isinstance(value, (bool, int, float)):
            source.hyper[name] = value
        elif isinstance(value, Mapping):
            source.hyper[name] = f"schedule {str(value.get('class_name', '?'))[:80]}"
    if isinstance(config.get("lr"), (int, float)) and "learning_rate" not in source.hyper:
        source.hyper["learning_rate"] = config["lr"]
    if source.hyper:
        source.hyper_origin = "training_config"


# ---------------------------------------------------------------------------------------------- rules
def target_family(class_name: str, config: Mapping[str, Any]) -> Family | None:
    """The catalogue family of the factory's Keras 3 optimizer (SGD with momentum is SGD(momentum))."""
    return keras_family(class_name, config) if class_name in SUPPORTED_TARGETS else None


def target_slots(class_name: str, config: Mapping[str, Any]) -> list[str]:
    """The slots a Keras 3 optimizer of this class and config keeps per trainable variable (the EMA's included)."""
    fam = target_family(class_name, config)
    return [*fam.slots_for(config), *(s.name for s in wrapper_slots(config))] if fam is not None else []


def target_slot_attribute(class_name: str, config: Mapping[str, Any], slot: str) -> str:
    """The Keras 3 optimizer attribute holding one slot's per-variable list (`_momentums`)."""
    fam = target_family(class_name, config)
    spec = fam.slot(slot) if fam is not None else None
    spec = spec or next((s for s in wrapper_slots(config) if s.name == slot), None)
    if spec is None or not spec.lists:
        raise ValueError(f"{class_name} keeps no slot {slot!r}")
    return spec.lists[0]


def slot_rules(source: SourceOptimizer, class_name: str, config: Mapping[str, Any]) -> tuple[list[SlotRule], list[str]]:
    """The translation of every slot, and the problems that prevent one (empty when it can be done)."""
    wrapped = {s.name for w in WRAPPERS for s in w.slots}  # translated by conversion/wrappers.py
    wanted = [s for s in target_slots(class_name, config) if s not in wrapped]
    have = source.slot_names - wrapped
    if source.family is None:
        if not wanted:
            return [], []
        return [], [f"the source stores no optimizer slots, but {class_name} keeps {', '.join(wanted)}"]
    fam = family(source.family)
    if fam is None or fam.keras3 not in SUPPORTED_TARGETS:
        named = f"source optimizer {source.family}"
        if fam is not None and source.origin == "tf1" and fam.tf1_ops:
            named = f"the TF1 optimizer {fam.name} ({', '.join(op.op for op in fam.tf1_ops)})"
        return [], [
            f"{named} has no Keras 3 translation (supported: "
            f"{', '.join(SUPPORTED_TARGETS).replace('SGD', 'SGD/Momentum')})"
        ]
    if fam.keras3 != class_name:
        return [], [
            f"source optimizer {source.family} continues as Keras {fam.keras3}, but the factory compiled {class_name}"
        ]
    rules: list[SlotRule] = [_rule(fam, source, slot) for slot in wanted]
    refused = _refusals(fam, source, wanted)
    if refused:
        return [], refused
    problems = [
        f"the source has no {r.source!r} slots for {class_name} slot {r.target!r}"
        for r in rules
        if r.source not in have
    ]
    rules += _dropped(source, class_name, config, have - set(wanted), problems)
    return rules, problems


def _spec(fam: Family, source: SourceOptimizer, slot: str) -> SlotTranslation:
    """The catalogue's record for one slot in the source's dialect (a copy when it records none)."""
    table = fam.translations.get(source.origin) or fam.translations.get(source.origin.split("-")[0]) or {}
    return table.get(slot) or SlotTranslation(slot, "copy", "exact", "same update rule")


def _refusals(fam: Family, source: SourceOptimizer, wanted: list[str]) -> list[str]:
    """Why the catalogue refuses this family from this dialect (another update rule, not a slot difference)."""
    notes = dict.fromkeys(spec.note for spec in (_spec(fam, source, slot) for slot in wanted) if spec.how == "refuse")
    return [f"{source.origin} {fam.name} cannot continue as Keras 3 {fam.keras3}: {note}" for note in notes]


def _rule(fam: Family, source: SourceOptimizer, slot: str) -> SlotRule:
    """The catalogue's translation of one slot for the source's dialect."""
    spec = _spec(fam, source, slot)
    exactness: Exactness = spec.exactness
    note = spec.note
    if spec.exact_if is not None and _positive(source.hyper.get(spec.exact_if)):
        exactness, note = "exact", "same update rule"
    if spec.rounding_while is not None:
        exactness, note = _rounding_while(spec.rounding_while, source, note)
    transform: Transform = "copy" if spec.how == "refuse" else spec.how
    return SlotRule(slot, slot, transform, exactness, note)


def _rounding_while(rule: tuple[str, str, float], source: SourceOptimizer, note: str) -> tuple[Exactness, str]:
    """An epsilon placed differently changes the denominator by at most epsilon / sqrt(floor) relative to it
    (accumulators only grow from the floor): rounding when that is within the bound, else approximate."""
    name, floor_name, bound = rule
    epsilon, floor = source.hyper.get(name), source.hyper.get(floor_name)
    if not isinstance(epsilon, (int, float)) or not isinstance(floor, (int, float)):
        return "approximate", f"{note}; {name} or {floor_name} not recorded"
    relative = float(epsilon) / math.sqrt(float(floor)) if floor > 0 else math.inf
    values = f"({name} {epsilon:g}, {floor_name} {floor:g})"
    if relative <= bound:
        return "rounding", f"{note}: at most {relative:.2g} of the denominator {values}"
    return "approximate", f"{note}: up to {relative:.2g} of the denominator {values}"


def _dropped(
    source: SourceOptimizer, class_name: str, config: Mapping[str, Any], extra: set[str], problems: list[str]
) -> list[SlotRule]:
    """Source slots the target keeps no place for: dropped when they cannot change the run, else a problem."""
    rules = []
    for slot in sorted(extra):
        value = source.hyper.get(slot) if slot == "momentum" else None
        if slot == "momentum" and class_name == "RMSprop" and not _positive(value):
            if value is None:
                rules.append(
                    SlotRule(
                        slot,
                        None,
                        "drop",
                        "approximate",
                        "source momentum unknown; dropped because the factory's RMSprop has momentum=0",
                    )
                )
            else:
                rules.append(
                    SlotRule(slot, None, "drop", "lossless-drop", "momentum 0: the slot only holds the last increment")
                )
        elif slot == "momentum" and class_name == "RMSprop":
            problems.append(
                f"the source RMSprop uses momentum {value:g}; the factory's RMSprop (momentum=0) has no "
                "place for its momentum slot"
            )
        elif slot == "average_gradient" and class_name == "RMSprop":
            problems.append("the source RMSprop is centered (slot average_gradient) but the factory's RMSprop is not")
        else:
            problems.append(f"source slot {slot!r} has no place in Keras {class_name}({_brief(config)})")
    return rules


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _brief(config: Mapping[str, Any]) -> str:
    keys = [k for k in ("momentum", "centered", "amsgrad", "nesterov") if k in config]
    return ", ".join(f"{k}={config[k]}" for k in keys)


def translate(rule: SlotRule, value: np.ndarray, *, learning_rate: float, epsilon: float) -> np.ndarray:
    """The Keras 3 value of one slot (same dtype as the source)."""
    if rule.transform == "drop":
        raise ValueError(f"no value for a dropped slot ({rule.source})")
    return keras3_value(rule.transform, value, learning_rate=learning_rate, epsilon=epsilon)


# ---------------------------------------------------------------------------------------------- hyper-parameters
def compare_hyper(
    source: SourceOptimizer, class_name: str, config: Mapping[str, Any], learning_rate: float
) -> list[HyperCheck]:
    """Source hyper-parameters against the factory optimizer's (learning rate as of the resumed step)."""
    checks = []
    target_fam = target_family(class_name, config)
    source_fam = family(source.family)
    for name in target_fam.keras3_hyper if target_fam is not None else ():
        target = learning_rate if name == "learning_rate" else config.get(name)
        value = source.hyper.get(name)
        if name == "momentum" and value is None and source_fam is not None and not source_fam.slots:
            value = 0.0  # a slot-free family (plain SGD) has no momentum
        if source_fam is not None and source_fam.name == "Ftrl" and source.origin == "tf1":
            if name == "beta":
                continue  # TF1 folds beta into the op's l2 (compared there)
            value, target = _tf1_ftrl(source, name, value, target, config, learning_rate)
        if value is None and _not_an_input(source, source_fam, name):
            continue  # e.g. TF1 Adagrad has no epsilon; the accumulator offset compensates (see slot_rules)
        if name == "initial_accumulator_value":
            continue  # only shapes the state at step 0, which the translated accumulator replaces
        if isinstance(value, str):  # e.g. "computed by ExponentialDecay ...": no constant to compare
            checks.append(HyperCheck(name, value, target, None))
            continue
        checks.append(HyperCheck(name, value, target, None if value is None else _same(value, target)))
    for name, default in (
        ("decay", 0.0),
        ("weight_decay", None),
        ("clipnorm", None),
        ("clipvalue", None),
        ("global_clipnorm", None),
        ("use_ema", False),
    ):
        if any(c.name == name for c in checks):
            continue  # the family's own hyper-parameter (AdamW's weight_decay), compared above
        src = source.hyper.get(name)
        tgt = config.get(name, default) if name != "decay" else 0.0
        if (src not in (None, default) or tgt not in (None, default)) and not _same(src, tgt):
            checks.append(HyperCheck(name, src, tgt, False))
    return checks


def _tf1_ftrl(
    source: SourceOptimizer, name: str, value: Any, target: Any, config: Mapping[str, Any], learning_rate: float
) -> tuple[Any, Any]:
    """TF1 Ftrl's op inputs against the factory's Keras 3 Ftrl: the op's l2 is l2 + beta/(2*lr), and ApplyFtrl
    (no l2_shrinkage input) is Ftrl without shrinkage."""
    ops_read = "training ops" in source.hyper_origin
    if name == "l2_regularization_strength" and isinstance(target, (int, float)) and learning_rate:
        target = target + float(config.get("beta") or 0.0) / (2.0 * learning_rate)
    if name == "l2_shrinkage_regularization_strength" and value is None and ops_read:
        value = 0.0
    return value, target


def _not_an_input(source: SourceOptimizer, fam: Family | None, name: str) -> bool:
    """The source's TF1 training ops were read and take no such input (TF1 Adagrad has no epsilon)."""
    if source.origin != "tf1" or fam is None or name in ("learning_rate", "momentum"):
        return False
    return "training ops" in source.hyper_origin and name not in source.hyper


def same_value(a: Any, b: Any) -> bool:
    """Two hyper-parameter values agree (numbers up to float32 rounding)."""
    return _same(a, b)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return bool(a) == bool(b) if isinstance(a, bool) or isinstance(b, bool) else a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        close = math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)
        if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in (a, b)):
            return close  # no float32 rounding to forgive (and a cast would overflow: 1e300 and 1e301 both inf)
        return bool(np.float32(a) == np.float32(b)) or close
    return False


# ---------------------------------------------------------------------------------------------- step
