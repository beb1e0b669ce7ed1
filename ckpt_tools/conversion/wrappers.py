"""Optimizer wrappers in a conversion: weight averages (use_ema) translated, loss scaling named or refused."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ckpt_tools.conversion import slots as sl
from ckpt_tools.messages import listed
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.catalogue import EMA, LOSS_SCALE
from ckpt_tools.optimizers.lookup import is_loss_scale

AVERAGE = EMA.slots[0].name
EMA_NAME = re.compile(r"(^|/)ExponentialMovingAverage(_\d+)?(/|$)")  # tf.train.ExponentialMovingAverage's shadows
EMA_SCOPE = re.compile(r"ExponentialMovingAverage(_\d+)?")  # its name scope in the graph (`<scope>/decay`)
LISTED = 3


def uses_ema(config: Mapping[str, Any]) -> bool:
    """The optimizer config averages the weights (`use_ema` true)."""
    return config.get(EMA.keras3_flag or "") is True


def ema_rules(source: sl.SourceOptimizer, config: Mapping[str, Any]) -> tuple[list[sl.SlotRule], list[str]]:
    """The rule for the weight averages, and the problems that prevent carrying them on."""
    have = AVERAGE in source.slot_names
    if not uses_ema(config):
        if not have:
            return [], []
        note = (
            "the factory's optimizer keeps no weight averages (use_ema=False): the source's are dropped, and fit no "
            "longer overwrites the weights with them"
        )
        return [sl.SlotRule(AVERAGE, None, "drop", "approximate", note)], []
    spec = EMA.translations.get(source.origin)  # tf_keras 2.11+ only: legacy optimizers do not average
    if not have or spec is None or spec.how == "refuse":
        return [], [EMA.caveats["not_in_source"]]
    return [sl.SlotRule(AVERAGE, AVERAGE, "copy", spec.exactness, spec.note)], []


def ema_hyper(source: sl.SourceOptimizer, config: Mapping[str, Any]) -> list[sl.HyperCheck]:
    """The averaging options, source vs factory, when both average (use_ema itself is compared beside clipping)."""
    if not (uses_ema(config) and source.hyper.get("use_ema") is True):
        return []
    checks = []
    for name, default in EMA.hyper.items():
        if name == EMA.keras3_flag:
            continue
        value, target = source.hyper.get(name, default), config.get(name, default)
        checks.append(sl.HyperCheck(name, value, target, sl.same_value(value, target)))
    return checks


def ema_reasons(vmap: VariableMap, source: sl.SourceOptimizer, rules: Iterable[sl.SlotRule]) -> list[str]:
    """Why the averages do not continue as the source's: TF1 shadows are never translated, tf_keras averages are
    only when the source has taken a step, and averages nothing translates are lost."""
    rules = list(rules)
    translated = any(r.source == AVERAGE and r.target is not None for r in rules)
    planned = any(r.source == AVERAGE for r in rules)  # a dropped average is named by its rule
    shadows = [v.name for v in vmap.values() if EMA_NAME.search(v.name)]
    out = []
    if shadows:
        settings = "; ".join(tf1_ema_settings(vmap))
        shown = f"{listed(shadows, LISTED)}{'; ' + settings if settings else ''}"
        out.append(f"weight averages (EMA: {shown}): {EMA.translations['tf1'].note}")
    averages = [v.name for v in vmap.values() if v.slot == AVERAGE]
    if not planned and (averages or source.hyper.get("use_ema") is True):
        out.append(
            f"weight averages (EMA: {listed(averages, LISTED) or 'use_ema'}) are not translated: Keras 3 would "
            "start its own averages afresh (or keep none)"
        )
    if translated and (vmap.step or 0) == 0:
        out.append(f"weight averages: {EMA.caveats['first_step']}")
    return out


def tf1_ema_settings(vmap: VariableMap) -> list[str]:
    """What the `.meta` graph beside a TF1 checkpoint says of each ExponentialMovingAverage: its decay constant,
    and whether num_updates makes it min(decay, (1+n)/(10+n)). Empty without a readable graph."""
    if vmap.format != "tf1-checkpoint" or vmap.prefix is None:
        return []
    from ckpt_tools.bundle.graph import read_meta_graph, scalar_constant
    from ckpt_tools.errors import CkptToolsError
    from ckpt_tools.readers.confine import confine
    from ckpt_tools.storage import suffixed

    prefix = Path(vmap.prefix)
    meta = suffixed(prefix, ".meta")
    try:
        confine(prefix.parent, meta, ".meta graph")
        graph = read_meta_graph(meta)
    except (CkptToolsError, OSError):
        return []
    out = []
    for name in sorted(graph.nodes):
        scope, _, leaf = name.rpartition("/")
        if leaf != "decay" or not EMA_SCOPE.fullmatch(scope.rpartition("/")[2]):
            continue
        decay = scalar_constant(graph, name)
        shown = "not a constant" if decay is None else f"{decay:g}"
        if f"{scope}/Minimum" in graph.nodes:
            out.append(f"{scope} decay min({shown}, (1+n)/(10+n)) with num_updates n, which Keras 3 cannot follow")
        else:
            out.append(f"{scope} decay {shown}")
    return out


def loss_scale_reasons(vmap: VariableMap) -> list[str]:
    """A source trained under a loss-scale wrapper whose scale and counter the file does not keep."""
    recorded = vmap.optimizer.recorded_config
    if vmap.format == "keras2-h5" and isinstance(recorded, Mapping) and is_loss_scale(recorded.get("class_name")):
        return [f"loss scaling ({str(recorded.get('class_name'))[:40]}): {LOSS_SCALE.caveats['keras2']}"]
    names = [v.name for v in vmap.values() if v.role == "optimizer"]
    stored = [name for name in names if name.rsplit("/", 1)[-1] in LOSS_SCALE.scalars]
    if stored:
        return [f"loss scaling (state {listed(stored, 2)}): {LOSS_SCALE.caveats['checkpoint']}"]
    return []


def loss_scale_target_problem(class_name: str) -> list[str]:
    """The factory compiled a loss-scale wrapper: refused by name (no supported source stores its state)."""
    return [LOSS_SCALE.caveats["target"]] if is_loss_scale(class_name) else []
