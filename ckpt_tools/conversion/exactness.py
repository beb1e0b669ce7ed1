"""Whether a converted run is the source's run continued: every difference the artifact proves, named."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from ckpt_tools.conversion import slots as sl
from ckpt_tools.conversion.batchnorm import batch_norm_kernels
from ckpt_tools.conversion.config_reasons import LayerConfig, config_reasons, layer_reasons
from ckpt_tools.conversion.graph_reasons import graph_reasons
from ckpt_tools.conversion.sources import recorded_configs
from ckpt_tools.conversion.wrappers import ema_reasons, loss_scale_reasons
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.facts import short_number
from ckpt_tools.messages import listed
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.graph_evidence import GraphEvidence

LISTED = 3
BATCH_NORM_VARIANCE = re.compile(r"(^|/)moving_variance(:\d+)?$")
HALF_DTYPES = ("float16", "bfloat16")
WEIGHTS_ONLY = "weights only: no optimizer state is carried over, so training restarts its optimizer"


def graph_evidence(vmap: VariableMap) -> GraphEvidence | None:
    """The training graph beside a TF1 checkpoint (`PREFIX.meta`), when there is a readable one."""
    if vmap.format != "tf1-checkpoint" or vmap.prefix is None:
        return None
    from ckpt_tools.readers.tf1_state import meta_graph_source

    return meta_graph_source(Path(vmap.prefix), traits=True).evidence


@dataclass(frozen=True)
class Factory:
    """What the factory's model and optimizer do that matters for exactness."""

    policy: str = "float32"  # the model's dtype policy (`mixed_bfloat16` computes in bfloat16)
    learning_rate: Any = None  # the optimizer config's learning_rate: a number, or a serialized schedule
    trained: tuple[tuple[str, bool], ...] = ()  # (source key, trainable in the model) per matched variable
    unused: tuple[str, ...] = ()  # source names nothing in the model takes
    layers: tuple[LayerConfig, ...] = ()  # the target model's layers (name, class, config)


def approximations(
    vmap: VariableMap,
    source: sl.SourceOptimizer,
    rules: Iterable[sl.SlotRule],
    hyper: Iterable[sl.HyperCheck],
    evidence: GraphEvidence | None,
    factory: Factory = Factory(),
) -> list[str]:
    """Why the run Keras 3 continues from the output would not be the source's run (empty: it would be)."""
    rules, hyper = list(rules), list(hyper)
    same_schedule = _same_schedule(vmap.optimizer.recorded_config, factory.learning_rate)
    out = _hyper_reasons([h for h in hyper if not (same_schedule and h.name in ("learning_rate", "decay"))], rules)
    out += [f"slot {r.source} -> {r.target or '(dropped)'}: {r.note}" for r in rules if r.exactness == "approximate"]
    if evidence is not None:
        out += graph_reasons(evidence, vmap, factory.trained, factory.unused)
    out += ema_reasons(vmap, source, rules) + loss_scale_reasons(vmap)
    recorded = vmap.format == "keras2-h5" or recorded_configs(vmap) is not None
    model_config = _model_config(vmap) if recorded else None  # read once: the .h5 is opened and parsed for it
    out += config_reasons(vmap, source, model_config, factory.trained) + layer_reasons(model_config, factory.layers)
    out += _name_reasons(vmap, evidence, recorded, model_config)
    out += _factory_reasons(factory, hyper, same_schedule)
    return list(dict.fromkeys(out))


def _factory_reasons(factory: Factory, hyper: list[sl.HyperCheck], same_schedule: bool) -> list[str]:
    out = []
    if any(half in factory.policy for half in ("float16", "bfloat16")):
        out.append(f"the factory's model computes in reduced precision (dtype policy {factory.policy})")
    rate = next((h for h in hyper if h.name == "learning_rate"), None)
    if isinstance(factory.learning_rate, Mapping) and not same_schedule and rate is not None and rate.match:
        kind = factory.learning_rate.get("class_name", "a schedule")
        out.append(
            f"the factory's learning rate is a schedule ({kind}) and the source's a constant: they agree at the "
            "resumed step only"
        )
    return out


def _same_schedule(recorded: Any, target: Any) -> bool:
    """Both sides' learning rates are the same serialized schedule (class and settings, names aside)."""
    config = recorded.get("config") if isinstance(recorded, Mapping) else None
    source = config.get("learning_rate") if isinstance(config, Mapping) else None
    if isinstance(config, Mapping) and isinstance(target, Mapping) and _is_number(source):
        return _legacy_decay_as(source, config.get("decay"), target)
    if not (isinstance(source, Mapping) and isinstance(target, Mapping)):
        return False

    def settings(schedule: Mapping[str, Any]) -> tuple[Any, Any]:
        inner = schedule.get("config")
        kept = {k: v for k, v in inner.items() if k != "name"} if isinstance(inner, Mapping) else inner
        return schedule.get("class_name"), kept

    return settings(source) == settings(target)


def _legacy_decay_as(rate: float, decay: Any, target: Mapping[str, Any]) -> bool:
    """A legacy tf_keras optimizer's `decay` (rate / (1 + decay * iterations)) is Keras 3's
    InverseTimeDecay(rate, decay_steps, decay_rate=decay * decay_steps), without a staircase over several steps."""
    inner = target.get("config")
    if not (_is_number(decay) and decay > 0 and target.get("class_name") == "InverseTimeDecay"):
        return False
    if not isinstance(inner, Mapping):
        return False
    steps, slope = inner.get("decay_steps"), inner.get("decay_rate")
    if not (_is_number(steps) and _is_number(slope) and steps > 0) or (inner.get("staircase") and steps != 1):
        return False  # a staircase over one step is no staircase
    return sl.same_value(inner.get("initial_learning_rate"), rate) and sl.same_value(slope / steps, decay)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hyper_reasons(hyper: list[sl.HyperCheck], rules: list[sl.SlotRule]) -> list[str]:
    out = []
    scaled_by_rate = any(r.transform == "neg_lr" for r in rules)
    for check in hyper:
        if check.match is False:
            out.append(
                f"{check.name}: source {_value(check.source)}, factory {_value(check.target)} (the run continues "
                "with the factory's value)"
            )
        elif check.match is None and isinstance(check.source, str):
            out.append(f"{check.name} {check.source}: the factory's value cannot be checked against it")
            if scaled_by_rate and check.name == "learning_rate":
                out.append(
                    "a changing learning rate with Momentum: TF1 accumulates raw gradients and scales the "
                    "accumulator by the current rate, Keras 3 accumulates gradients already scaled, so the two "
                    "runs part as soon as the rate changes"
                )
    unrecorded = [c.name for c in hyper if c.match is None and c.source is None]
    if unrecorded:
        out.append(
            f"hyper-parameters not recorded by the source ({', '.join(unrecorded)}): the factory's values cannot "
            "be checked against the run's"
        )
    return out


def _value(value: Any) -> str:
    if value is None:
        return "none"
    return short_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _name_reasons(vmap: VariableMap, evidence: GraphEvidence | None, recorded: bool, model_config: Any) -> list[str]:
    """What the stored names and dtypes show: batch-norm statistics, half-precision weights; `recorded`: the
    source records its architecture, `model_config` as read from it."""
    out = []
    variances = [v.name for v in vmap.values() if BATCH_NORM_VARIANCE.search(v.name) and v.role != "optimizer"]
    if variances and recorded:
        out += _keras2_batch_norms(model_config)
    elif variances and evidence is None:
        out.append(
            f"batch normalization ({listed(variances, LISTED)}): without the training graph it is unknown whether "
            "the fused kernel (n/(n-1)-corrected variance, unlike Keras 3) updated the moving variance"
        )
    half = [v.name for v in vmap.values() if v.dtype in HALF_DTYPES and v.role in ("weight", "optimizer")]
    if half:
        out.append(
            f"half-precision variables ({listed(half, LISTED)}): the update is computed and rounded differently "
            "from the source framework's"
        )
    return out


def _keras2_batch_norms(model_config: Any) -> list[str]:
    """The BatchNormalization layers of a Keras-2 file that tf_keras trained (or may have) with the fused kernel."""
    kernels = batch_norm_kernels(model_config)
    fused = [name for name, kernel in kernels.items() if kernel == "fused"]
    unknown = [name for name, kernel in kernels.items() if kernel == "unknown"]
    if not kernels:
        unknown = ["(layers not described by model_config)"]
    out = []
    if fused:
        out.append(
            f"batch normalization {listed(fused, LISTED)} (fused kernel: 4-D/5-D input, channel axis last): tf_keras "
            "updates the moving variance with the n/(n-1)-corrected batch variance, Keras 3 with the uncorrected one"
        )
    if unknown:
        out.append(
            f"batch normalization {listed(unknown, LISTED)}: model_config does not show whether tf_keras used the "
            "fused kernel (n/(n-1)-corrected moving variance, unlike Keras 3)"
        )
    return out


def _model_config(vmap: VariableMap) -> Any:
    """The model_config of a Keras-2 .h5 or tf_keras SavedModel (parsed as data, within the readers' JSON limits)."""
    from ckpt_tools.readers import h5common as h5c

    recorded = recorded_configs(vmap) if vmap.format != "keras2-h5" else None
    if recorded is not None:
        return recorded[0]

    try:
        with h5c.open_h5(Path(vmap.path), str(vmap.path)) as f:
            text = h5c.attr_text(f, "model_config")
            return h5c.parse_json(text, f"{vmap.path}: model_config attribute") if text is not None else None
    except (CkptToolsError, OSError, ValueError):
        return None
