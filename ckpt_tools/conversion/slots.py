"""Optimizer slot translation: what each source optimizer stores, and how it becomes Keras 3 optimizer state."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .model import VariableMap

Transform = Literal["copy", "neg_lr", "minus_eps", "drop"]
Exactness = Literal["exact", "rounding", "approximate", "lossless-drop"]

# Keras 3 optimizer class -> (slot name, attribute holding the per-variable list), in build order.
TARGET_SLOT_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    "Adam": (("momentum", "_momentums"), ("velocity", "_velocities"), ("velocity_hat", "_velocity_hats")),
    "SGD": (("momentum", "momentums"),),
    "RMSprop": (("velocity", "_velocities"), ("momentum", "_momentums"), ("average_gradient", "_average_gradients")),
    "Adagrad": (("accumulator", "_accumulators"),),
}
# Hyper-parameters compared per Keras 3 optimizer class (Keras config names).
TARGET_HYPER: dict[str, tuple[str, ...]] = {
    "Adam": ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad"),
    "SGD": ("learning_rate", "momentum", "nesterov"),
    "RMSprop": ("learning_rate", "rho", "momentum", "epsilon", "centered"),
    "Adagrad": ("learning_rate", "initial_accumulator_value", "epsilon"),
}
# Source family -> the Keras 3 class that continues it.
FAMILY_TARGET = {"Adam": "Adam", "Momentum": "SGD", "GradientDescent": "SGD", "SGD": "SGD", "RMSprop": "RMSprop",
                 "Adagrad": "Adagrad"}

# TF1 slot suffixes (`<var>/<suffix>`) per optimizer, in slot-creation order.
TF1_SUFFIX = re.compile(
    r"^(?P<base>Adam|Momentum|RMSProp|Adagrad|Ftrl|Adadelta|AdagradDA|ProximalAdagrad)(?:_(?P<n>\d+))?$"
)
TF1_FAMILY = {"Adam": "Adam", "Momentum": "Momentum", "RMSProp": "RMSprop", "Adagrad": "Adagrad"}
TF1_SLOT_ORDER = {
    "Adam": ("m", "v"),
    "Momentum": ("momentum",),
    "RMSprop": ("rms", "momentum"),
    "RMSprop-centered": ("rms", "mg", "momentum"),
    "Adagrad": ("accumulator",),
}
# Keras-2 slot names (tf_keras new and legacy optimizers) -> canonical source slot names.
KERAS2_SLOTS = {
    "m": "m", "v": "v", "vhat": "vhat", "momentum": "momentum", "velocity": "v", "velocity_hat": "vhat",
    "rms": "rms", "mg": "mg", "average_gradient": "mg", "accumulator": "accumulator",
}
# TF1 training ops: op type -> (family, {hyper-parameter: input index}).
TF1_OPS: dict[str, tuple[str, dict[str, int]]] = {
    "ApplyAdam": ("Adam", {"learning_rate": 5, "beta_1": 6, "beta_2": 7, "epsilon": 8}),
    "ApplyMomentum": ("Momentum", {"learning_rate": 2, "momentum": 4}),
    "ApplyRMSProp": ("RMSprop", {"learning_rate": 3, "rho": 4, "momentum": 5, "epsilon": 6}),
    "ApplyCenteredRMSProp": ("RMSprop", {"learning_rate": 4, "rho": 5, "momentum": 6, "epsilon": 7}),
    "ApplyAdagrad": ("Adagrad", {"learning_rate": 2}),
    "ApplyGradientDescent": ("GradientDescent", {"learning_rate": 1}),
}
# TF1 training ops: which inputs are the variable and its slots (the slot variables' names, whatever the
# optimizer was called).
TF1_SLOT_INPUTS: dict[str, tuple[str, ...]] = {
    "ApplyAdam": ("var", "m", "v"),
    "ApplyMomentum": ("var", "momentum"),
    "ApplyRMSProp": ("var", "rms", "momentum"),
    "ApplyCenteredRMSProp": ("var", "mg", "rms", "momentum"),
    "ApplyAdagrad": ("var", "accumulator"),
    "ApplyGradientDescent": ("var",),
}
for _op in list(TF1_OPS):
    TF1_SLOT_INPUTS["Resource" + _op] = TF1_SLOT_INPUTS[_op]
    TF1_SLOT_INPUTS["Sparse" + _op] = TF1_SLOT_INPUTS[_op]
    TF1_SLOT_INPUTS["ResourceSparse" + _op] = TF1_SLOT_INPUTS[_op]
    TF1_OPS["Resource" + _op] = TF1_OPS[_op]
    TF1_OPS["Sparse" + _op] = TF1_OPS[_op]
    TF1_OPS["ResourceSparse" + _op] = TF1_OPS[_op]


@dataclass(frozen=True)
class SlotRule:
    """How one source slot becomes one Keras 3 slot (`target` None: dropped)."""

    source: str
    target: str | None
    transform: Transform
    exactness: Exactness
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "transform": self.transform,
                "exactness": self.exactness, "note": self.note}


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
def tf1_source(vmap: VariableMap) -> SourceOptimizer:
    """Slots of a TF1 Saver checkpoint, from its keys (`<var>/Adam`, `<var>/Adam_1`, ...)."""
    keys = set(vmap)
    found: dict[str, dict[str, tuple[str, int]]] = {}
    bases: set[str] = set()
    for key in keys:
        head, _, suffix = key.rpartition("/")
        match = TF1_SUFFIX.match(suffix)
        if head in keys and match is not None:
            found.setdefault(head, {})[key] = (match.group("base"), int(match.group("n") or 0))
            bases.add(match.group("base"))
    source = SourceOptimizer("tf1", None)
    source.beta1_power_key = next((k for k in sorted(keys) if k.rpartition("/")[2] == "beta1_power"), None)
    if not bases:
        return source
    if len(bases) > 1 or any(b not in TF1_FAMILY for b in bases):
        source.family = "+".join(sorted(bases))
        source.notes.append(f"slots of {', '.join(sorted(bases))}: not a single supported TF1 optimizer")
        return source
    base = bases.pop()
    family = TF1_FAMILY[base]
    source.family = family
    centered = family == "RMSprop" and any(n == 2 for per in found.values() for _, n in per.values())
    order = TF1_SLOT_ORDER["RMSprop-centered" if centered else family]
    for weight, per in found.items():
        for key, (_, index) in per.items():
            if index < len(order):
                source.slots.setdefault(weight, {})[order[index]] = key
            else:
                source.notes.append(f"{key}: more slots than {base} creates (two optimizers on one variable?)")
    if centered:
        source.hyper["centered"] = True
    return source


def keras2_source(vmap: VariableMap, training_config: Mapping[str, Any] | None) -> SourceOptimizer:
    """Slots of a legacy Keras-2 .h5 file, from the reader's slot labels and the training config."""
    legacy = True
    family = None
    hyper: dict[str, Any] = {}
    opt = training_config.get("optimizer_config") if training_config else None
    if isinstance(opt, Mapping):
        class_name = str(opt.get("class_name", "")).split(">")[-1]
        raw_config = opt.get("config")
        config: Mapping[str, Any] = raw_config if isinstance(raw_config, Mapping) else {}
        legacy = config.get("is_legacy_optimizer") is not False
        family = class_name or None
        for name in ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "momentum", "nesterov", "rho",
                     "centered", "initial_accumulator_value", "decay", "weight_decay", "clipnorm", "clipvalue",
                     "global_clipnorm", "use_ema"):
            value = config.get(name)
            if isinstance(value, (bool, int, float)):
                hyper[name] = value
            elif isinstance(value, Mapping):
                hyper[name] = f"schedule {str(value.get('class_name', '?'))[:80]}"
        if isinstance(config.get("lr"), (int, float)) and "learning_rate" not in hyper:
            hyper["learning_rate"] = config["lr"]
    source = SourceOptimizer("keras2-legacy" if legacy else "keras2", family, hyper=hyper,
                             hyper_origin="training_config" if hyper else "not recorded")
    for var in vmap.values():
        if var.role == "optimizer" and var.slot_of is not None and var.slot is not None:
            slot = KERAS2_SLOTS.get(var.slot.lower().split(":")[0])
            if family == "SGD" and slot == "m":
                slot = "momentum"  # tf_keras 2.11+ SGD names its momentum slot `m`
            elif family == "RMSprop" and slot == "v":
                slot = "rms"  # tf_keras 2.11+ RMSprop calls its mean square `velocity`
            if slot is None:
                source.notes.append(f"{var.key}: unknown slot {var.slot!r}")
                continue
            source.slots.setdefault(var.slot_of, {})[slot] = var.key
    if family is None and source.slots:
        names = source.slot_names
        family = "Adam" if "v" in names else "RMSprop" if "rms" in names else "SGD" if "momentum" in names else None
        source.family = family
    return source


@dataclass
class GraphFindings:
    """What the training ops of a TF1 `.meta` graph say: family, constant hyper-parameters, slot variables."""

    family: str | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, dict[str, str]] = field(default_factory=dict)  # variable -> slot -> slot variable
    notes: list[str] = field(default_factory=list)


def tf1_graph_findings(meta_path: Any) -> GraphFindings:
    """Parse a TF1 `.meta` file (protobuf only; the graph is never imported) for its training ops."""
    found = GraphFindings()
    family, found.hyper, found.notes = tf1_hyperparameters(meta_path, found.slots)
    found.family = family
    return found


def tf1_hyperparameters(meta_path: Any, slots: dict[str, dict[str, str]] | None = None,
                        ) -> tuple[str | None, dict[str, Any], list[str]]:
    """Family and constant hyper-parameters of the training ops in a TF1 `.meta` file (parsed, never imported)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    notes: list[str] = []
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        meta.ParseFromString(meta_path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, OSError for unreadable files
        return None, {}, [f"{meta_path}: unreadable MetaGraphDef ({type(exc).__name__}); hyper-parameters unknown"]
    nodes = {n.name: n for n in meta.graph_def.node}
    families: dict[str, dict[str, Any]] = {}
    for node in meta.graph_def.node:
        spec = TF1_OPS.get(node.op)
        if spec is None:
            continue
        family, inputs = spec
        data_inputs = [i.split(":")[0] for i in node.input if not i.startswith("^")]
        roles = TF1_SLOT_INPUTS.get(node.op, ())
        if slots is not None and len(data_inputs) >= len(roles) > 1:
            slots.setdefault(data_inputs[0], {}).update({r: data_inputs[i] for i, r in enumerate(roles) if i})
        values: dict[str, Any] = {}
        if node.op.endswith("CenteredRMSProp"):
            values["centered"] = True
        elif family == "RMSprop":
            values["centered"] = False
        if "use_nesterov" in node.attr and family == "Momentum":
            values["nesterov"] = bool(node.attr["use_nesterov"].b)
        if family == "Adam":
            values["amsgrad"] = False  # TF1's AdamOptimizer has no AMSGrad variant
        for name, index in inputs.items():
            if index < len(data_inputs):
                values[name] = _constant(nodes, data_inputs[index])
        if family not in families:
            families[family] = values
        elif families[family] != values:
            notes.append(f"{meta_path}: {family} ops use differing hyper-parameters; the first is reported")
    if not families:
        return None, {}, notes
    if len(families) > 1:
        notes.append(f"{meta_path}: training ops of several optimizers ({', '.join(sorted(families))})")
    family = sorted(families)[0]
    return family, families[family], notes


def _constant(nodes: Mapping[str, Any], name: str, depth: int = 0) -> Any:
    """The value of a scalar Const feeding an op (through Identity/Cast), else a description of what feeds it."""
    node = nodes.get(name.split(":")[0])
    if node is None or depth > 8:
        return "unknown"
    if node.op in ("Identity", "Cast", "ReadVariableOp") and node.input:
        if node.op == "ReadVariableOp":
            return f"variable {node.input[0]}"
        return _constant(nodes, node.input[0], depth + 1)
    if node.op == "Const":
        import tensorflow as tf

        value = tf.make_ndarray(node.attr["value"].tensor)
        return value.item() if value.size == 1 else "non-scalar constant"
    if node.op in ("VariableV2", "VarHandleOp", "Variable"):
        return f"variable {node.name}"
    return f"computed by {node.op} {node.name}"


# ---------------------------------------------------------------------------------------------- rules
def target_slots(class_name: str, config: Mapping[str, Any]) -> list[str]:
    """The slots a Keras 3 optimizer of this class and config keeps per trainable variable."""
    if class_name == "Adam":
        return ["momentum", "velocity"] + (["velocity_hat"] if config.get("amsgrad") else [])
    if class_name == "SGD":
        return ["momentum"] if config.get("momentum", 0) else []
    if class_name == "RMSprop":
        return (["velocity"] + (["momentum"] if config.get("momentum", 0) > 0 else [])
                + (["average_gradient"] if config.get("centered") else []))
    if class_name == "Adagrad":
        return ["accumulator"]
    return []


def slot_rules(source: SourceOptimizer, class_name: str, config: Mapping[str, Any]) -> tuple[list[SlotRule], list[str]]:
    """The translation of every slot, and the problems that prevent one (empty when it can be done)."""
    family = source.family
    wanted = target_slots(class_name, config)
    have = source.slot_names
    if family is None:
        if not wanted:
            return [], []
        return [], [f"the source stores no optimizer slots, but {class_name} keeps {', '.join(wanted)}"]
    expected = FAMILY_TARGET.get(family)
    if expected is None:
        return [], [f"source optimizer {family} has no Keras 3 translation (supported: Adam, SGD/Momentum, "
                    "RMSprop, Adagrad)"]
    if expected != class_name:
        return [], [f"source optimizer {family} continues as Keras {expected}, but the factory compiled {class_name}"]
    rules: list[SlotRule] = []
    problems: list[str] = []
    tf1 = source.origin == "tf1"
    if class_name == "Adam":
        rules += [SlotRule("m", "momentum", "copy", "exact", "same update rule (epsilon-hat outside the sqrt)"),
                  SlotRule("v", "velocity", "copy", "exact", "")]
        if "velocity_hat" in wanted:
            rules.append(SlotRule("vhat", "velocity_hat", "copy", "exact", "AMSGrad maximum"))
    elif class_name == "SGD":
        if "momentum" in wanted:
            if tf1:
                rules.append(SlotRule("momentum", "momentum", "neg_lr", "rounding",
                                      "TF1 a = mu*a + g, var -= lr*a; Keras m = mu*m - lr*g, var += m: m = -lr*a "
                                      "with the target's learning rate"))
            else:
                rules.append(SlotRule("momentum", "momentum", "copy", "exact", "same update rule"))
    elif class_name == "RMSprop":
        legacy_no_momentum = source.origin == "keras2-legacy" and not _positive(source.hyper.get("momentum"))
        if legacy_no_momentum:
            note = "legacy Keras-2 RMSprop without momentum adds epsilon outside the sqrt; Keras 3 inside"
        else:
            note = "TF1 starts it at 1, Keras at 0: only the start differs" if tf1 else "same update rule"
        rules.append(SlotRule("rms", "velocity", "copy", "approximate" if legacy_no_momentum else "exact", note))
        if "momentum" in wanted:
            rules.append(SlotRule("momentum", "momentum", "copy", "exact", "increment includes lr on both sides"))
        elif "momentum" in have:
            source_momentum = source.hyper.get("momentum")
            if _positive(source_momentum):
                problems.append(f"the source RMSprop uses momentum {source_momentum:g}; the factory's RMSprop "
                                "(momentum=0) has no place for its momentum slot")
            elif source_momentum is None:
                rules.append(SlotRule("momentum", None, "drop", "approximate",
                                      "source momentum unknown; dropped because the factory's RMSprop has momentum=0"))
            else:
                rules.append(SlotRule("momentum", None, "drop", "lossless-drop",
                                      "momentum 0: the slot only holds the last increment"))
        if "average_gradient" in wanted:
            rules.append(SlotRule("mg", "average_gradient", "copy", "exact", "centered"))
        elif "mg" in have:
            problems.append("the source RMSprop is centered (slot mg) but the factory's RMSprop is not")
    elif class_name == "Adagrad":
        if tf1:
            rules.append(SlotRule("accumulator", "accumulator", "minus_eps", "rounding",
                                  "TF1 divides by sqrt(acc), Keras by sqrt(acc + epsilon): acc - epsilon keeps "
                                  "every later step equal"))
        else:
            rules.append(SlotRule("accumulator", "accumulator", "copy", "exact", ""))
    placed = {r.source for r in rules}
    for rule in rules:
        if rule.target is not None and rule.source not in have:
            problems.append(f"the source has no {rule.source!r} slots for {class_name} slot {rule.target!r}")
    for extra in sorted(have - placed):
        problems.append(f"source slot {extra!r} has no place in Keras {class_name}({_brief(config)})")
    return rules, problems


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _brief(config: Mapping[str, Any]) -> str:
    keys = [k for k in ("momentum", "centered", "amsgrad", "nesterov") if k in config]
    return ", ".join(f"{k}={config[k]}" for k in keys)


def translate(rule: SlotRule, value: np.ndarray, *, learning_rate: float, epsilon: float) -> np.ndarray:
    """The Keras 3 value of one slot (same dtype as the source)."""
    dtype = value.dtype
    if rule.transform == "copy":
        return value
    if rule.transform == "neg_lr":
        return np.negative(np.multiply(value, dtype.type(learning_rate), dtype=dtype), dtype=dtype)
    if rule.transform == "minus_eps":
        return np.subtract(value, dtype.type(epsilon), dtype=dtype)
    raise ValueError(f"no value for a dropped slot ({rule.source})")


# ---------------------------------------------------------------------------------------------- hyper-parameters
def compare_hyper(source: SourceOptimizer, class_name: str, config: Mapping[str, Any],
                  learning_rate: float) -> list[HyperCheck]:
    """Source hyper-parameters against the factory optimizer's (learning rate as of the resumed step)."""
    checks = []
    for name in TARGET_HYPER.get(class_name, ()):
        target = learning_rate if name == "learning_rate" else config.get(name)
        value = source.hyper.get(name)
        if name == "momentum" and value is None and source.family == "GradientDescent":
            value = 0.0
        if name == "epsilon" and class_name == "Adagrad" and source.origin == "tf1":
            continue  # TF1 Adagrad has no epsilon; the accumulator offset compensates (see slot_rules)
        if name == "initial_accumulator_value":
            continue  # only shapes the state at step 0, which the translated accumulator replaces
        if isinstance(value, str):  # e.g. "computed by ExponentialDecay ...": no constant to compare
            checks.append(HyperCheck(name, value, target, None))
            continue
        checks.append(HyperCheck(name, value, target, None if value is None else _same(value, target)))
    for name, default in (("decay", 0.0), ("weight_decay", None), ("clipnorm", None), ("clipvalue", None),
                          ("global_clipnorm", None), ("use_ema", False)):
        src = source.hyper.get(name)
        tgt = config.get(name, default) if name != "decay" else 0.0
        if (src not in (None, default) or tgt not in (None, default)) and not _same(src, tgt):
            checks.append(HyperCheck(name, src, tgt, False))
    return checks


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return bool(a) == bool(b) if isinstance(a, bool) or isinstance(b, bool) else a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return bool(np.float32(a) == np.float32(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)
    return False


# ---------------------------------------------------------------------------------------------- step
def adam_steps_from_power(beta1_power: float, beta1: float) -> int | None:
    """Applied Adam steps t from TF1's beta1_power, which holds beta1^(t+1) after t steps."""
    if not (0.0 < beta1 < 1.0) or not (0.0 < beta1_power <= beta1):
        return None
    exponent = math.log(beta1_power) / math.log(beta1)
    t = round(exponent) - 1
    if abs(exponent - round(exponent)) > 1e-3 * max(1.0, exponent):
        return None
    return t
