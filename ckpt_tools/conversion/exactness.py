"""Whether a converted run is the source's run continued: every difference the artifact proves, named."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ckpt_tools.conversion import slots as sl
from ckpt_tools.conversion.batchnorm import batch_norm_kernels
from ckpt_tools.errors import CkptToolsError
from ckpt_tools.facts import short_number
from ckpt_tools.messages import listed
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.gradients import CLIP_OPTIONS
from ckpt_tools.optimizers.graph_evidence import GraphEvidence, OpUse

LISTED = 3
EMA_NAME = re.compile(r"(^|/)ExponentialMovingAverage(_\d+)?(/|$)")  # tf.train.ExponentialMovingAverage's names
EMA_SLOTS = ("average",)  # tf_keras optimizers' use_ema slot
BATCH_NORM_VARIANCE = re.compile(r"(^|/)moving_variance(:\d+)?$")
HALF_DTYPES = ("float16", "bfloat16")
WEIGHTS_ONLY = "weights only: no optimizer state is carried over, so training restarts its optimizer"


def graph_evidence(vmap: VariableMap) -> GraphEvidence | None:
    """The training graph beside a TF1 checkpoint (`PREFIX.meta`), when there is a readable one."""
    if vmap.format != "tf1-checkpoint" or vmap.prefix is None:
        return None
    from ckpt_tools.readers.tf1_state import meta_graph_source

    return meta_graph_source(Path(vmap.prefix)).evidence


def approximations(
    vmap: VariableMap,
    source: sl.SourceOptimizer,
    rules: Iterable[sl.SlotRule],
    hyper: Iterable[sl.HyperCheck],
    evidence: GraphEvidence | None,
) -> list[str]:
    """Why the run Keras 3 continues from the output would not be the source's run (empty: it would be)."""
    rules, hyper = list(rules), list(hyper)
    out = _hyper_reasons(hyper, rules)
    out += [f"slot {r.source} -> {r.target or '(dropped)'}: {r.note}" for r in rules if r.exactness == "approximate"]
    if evidence is not None:
        out += _graph_reasons(evidence, vmap)
    out += _name_reasons(vmap, source, evidence)
    return list(dict.fromkeys(out))


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


def _graph_reasons(evidence: GraphEvidence, vmap: VariableMap) -> list[str]:
    """What the TF1 training graph does that a Keras 3 optimizer does not."""
    out = []
    sparse = [u for u in evidence.uses if u.sparse]
    for op in dict.fromkeys(u.op for u in sparse):
        names = [u.variable for u in sparse if u.op == op]
        out.append(
            f"sparse updates ({op} on {listed(names, LISTED)}): TF1 updates only the rows in each batch, Keras 3 "
            "applies the update to every row"
        )
    slot_keys = {k for u in evidence.uses for k in u.slots.values()}
    rows = [(var, op) for var, op in evidence.scatters if var in slot_keys or _trains(vmap, var)]
    if rows:
        names = list(dict.fromkeys(var for var, _ in rows))
        ops = ", ".join(dict.fromkeys(op for _, op in rows))
        out.append(
            f"row-wise (sparse) optimizer updates ({ops} on {listed(names, LISTED)}): TF1 merges repeated ids and "
            "touches only the rows in each batch, Keras 3 does neither"
        )
    for use in evidence.uses:
        if use.gradient.kind in ("transformed", "unknown"):
            out.append(
                f"the gradient of {use.variable} reaches {use.op} {use.gradient.describe()}; Keras 3 applies the "
                "optimizer's own update to the raw gradient"
            )
    out += _per_variable_hyper(evidence.uses)
    if evidence.batch_norms:
        out.append(
            f"batch normalization trained by {listed(evidence.batch_norms, LISTED)} (fused, training mode): TF "
            "updates the moving variance with the n/(n-1)-corrected batch variance, Keras 3 with the uncorrected one"
        )
    return out


def _trains(vmap: VariableMap, key: str) -> bool:
    var = vmap.get(key)
    return var is not None and var.role in ("weight", "optimizer")


def _per_variable_hyper(uses: tuple[OpUse, ...]) -> list[str]:
    """Hyper-parameters (clips included) that differ between the training ops of one graph."""
    out = []
    names = dict.fromkeys(n for u in uses for n in u.hyper)
    for name in names:
        values = dict.fromkeys(_value(u.hyper.get(name)) for u in uses)
        if len(values) > 1:
            shown = [
                f"{v} on {listed([u.variable for u in uses if _value(u.hyper.get(name)) == v], 2)}" for v in values
            ]
            what = "gradient clip" if name in CLIP_OPTIONS else "hyper-parameter"
            out.append(
                f"{what} {name} differs between training ops ({'; '.join(shown)}): one Keras 3 optimizer uses one "
                "value for every variable"
            )
    return out


def _name_reasons(vmap: VariableMap, source: sl.SourceOptimizer, evidence: GraphEvidence | None) -> list[str]:
    """What the stored names and dtypes show: weight averages, batch-norm statistics, half-precision weights."""
    out = []
    averages = [v.name for v in vmap.values() if EMA_NAME.search(v.name) or v.slot in EMA_SLOTS]
    if averages or source.hyper.get("use_ema") is True:
        out.append(
            f"weight averages (EMA: {listed(averages, LISTED) or 'use_ema'}) are not translated: Keras 3 would "
            "start its own averages afresh (or keep none)"
        )
    variances = [v.name for v in vmap.values() if BATCH_NORM_VARIANCE.search(v.name) and v.role != "optimizer"]
    if variances and vmap.format == "keras2-h5":
        out += _keras2_batch_norms(vmap)
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


def _keras2_batch_norms(vmap: VariableMap) -> list[str]:
    """The BatchNormalization layers of a Keras-2 file that tf_keras trained (or may have) with the fused kernel."""
    kernels = batch_norm_kernels(_model_config(vmap))
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
    """The model_config attribute of a Keras-2 .h5 (parsed as data, within the readers' JSON limits)."""
    from ckpt_tools.readers import h5common as h5c

    try:
        with h5c.open_h5(Path(vmap.path), str(vmap.path)) as f:
            text = h5c.attr_text(f, "model_config")
            return h5c.parse_json(text, f"{vmap.path}: model_config attribute") if text is not None else None
    except (CkptToolsError, OSError, ValueError):
        return None
