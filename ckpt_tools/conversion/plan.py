"""Conversion planning: match source tensors to the model's variables, plan slot translations, find the step."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ckpt_tools.conversion import exactness, rnn, wrappers
from ckpt_tools.conversion import slots as sl
from ckpt_tools.conversion.config_reasons import factory_layers
from ckpt_tools.conversion.sources import add_recorded_hyper
from ckpt_tools.errors import ConversionError
from ckpt_tools.messages import listed, printable
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.translation import adam_steps_from_power
from ckpt_tools.renames import RenameRules
from ckpt_tools.verdict import resume_verdict

MAX_LISTED = 8
IGNORED_TARGET = re.compile(r"(^|/)seed_generator(_\d+)?(/|$)")


def listed_names(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """Up to `limit` names for a message, escaped where undecodable, then `and N more`."""
    return listed(items, limit, printable)


def prefix_of(vmap: VariableMap) -> str:
    """The checkpoint prefix (or file) a source map was read from, as messages name it."""
    return str(vmap.prefix or vmap.path)


@dataclass
class Pair:
    """One model variable and the source tensor (and slots) that fill it."""

    source: str
    source_name: str
    target: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool
    slots: dict[str, str] = field(default_factory=dict)  # Keras slot -> source key
    output: str | None = None  # the name ckpt-tools reads the target variable back under
    slot_paths: dict[str, str] = field(default_factory=dict, repr=False)  # Keras slot -> optimizer variable path
    slot_outputs: dict[str, str] = field(default_factory=dict)  # Keras slot -> name in the output
    translated_from: list[str] | None = None  # the source keys a layer translation computes it from (rnn.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_name": self.source_name,
            "target": self.target,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "trainable": self.trainable,
            "slots": dict(self.slots),
            "output": self.output,
            "slot_outputs": dict(self.slot_outputs),
            "translated_from": self.translated_from,
        }


@dataclass
class Plan:
    """Source -> model matching, slot translations and everything that stands in the way."""

    pairs: list[Pair]
    unmatched: list[str]
    unused: list[str]
    mismatches: list[str]
    ignored: list[str]
    source_opt: sl.SourceOptimizer
    target_class: str
    target_config: dict[str, Any]
    rules: list[sl.SlotRule]
    state_problems: list[str]
    hyper: list[sl.HyperCheck]
    source_step: str | None = None  # name of the source's step variable
    slot_names: dict[str, str] = field(default_factory=dict)  # source slot key -> its name
    strict: bool = False  # every source weight must be used (Keras-2 layers load all their weights or none)
    source_resume: dict[str, Any] = field(default_factory=dict)  # the shared verdict on the source
    step_output: str | None = None  # name of the output's iteration counter
    approximations: list[str] = field(default_factory=list)  # why the continued run would differ (exactness.py)

    @property
    def weight_problems(self) -> list[str]:
        out = list(self.mismatches)
        if self.unmatched:
            out.append(
                f"{len(self.unmatched)} model variable(s) have no match in the source: {listed_names(self.unmatched)}"
            )
        if self.strict and self.unused and not self.unmatched:
            out.append(
                f"{len(self.unused)} source weight(s) have no place in the model: {listed_names(self.unused)} "
                '(a rule with "to": null drops a variable on purpose)'
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "mapping": [p.to_json() for p in self.pairs],
            "unmatched": {"model": self.unmatched, "source": self.unused, "ignored_model": self.ignored},
            "mismatches": self.mismatches,
            "optimizer": {
                "source": self.source_opt.family,
                "source_origin": self.source_opt.origin,
                "target": self.target_class,
                "slots": [r.to_json() for r in self.rules],
                "problems": self.state_problems,
                "hyperparameters": [h.to_json() for h in self.hyper],
                "hyperparameters_from": self.source_opt.hyper_origin,
            },
            "source_resume": self.source_resume,
        }


# ---------------------------------------------------------------------------------------------- planning
def describe_source(vmap: VariableMap) -> sl.SourceOptimizer:
    """The source optimizer as the reader found it: slots per weight, family, hyper-parameters and origin."""
    source = sl.source_optimizer(vmap)
    add_recorded_hyper(vmap, source)
    if vmap.optimizer.config_problem is not None:
        source.problems.append(vmap.optimizer.config_problem)
    return source


def make_plan(vmap: VariableMap, keras_model: Any, rename: RenameRules) -> Plan:
    """Match the source's weights to the model's variables and plan the slot translations."""
    source_opt = describe_source(vmap)
    sources = _source_names(vmap, source_opt, rename)
    targets, ignored = _target_names(keras_model, rename)
    matches, ambiguous = match_names(list(sources), list(targets))
    optimizer = keras_model.optimizer
    accumulation = int(getattr(optimizer, "gradient_accumulation_steps", None) or 1)
    if accumulation > 1:
        raise ConversionError(
            f"the factory's optimizer accumulates gradients (gradient_accumulation_steps={accumulation}); convert "
            "does not translate that state: compile the factory without it"
        )
    class_name = type(optimizer).__name__
    config = optimizer.get_config()
    rules, state_problems = _slot_plan(source_opt, class_name, config)
    verdict = resume_verdict(vmap)
    found = verdict.finding("optimizer")
    if found.status == "fail":  # the same finding inspect and validate report, first among the problems
        state_problems.insert(0, f"source {found.reason}")
    pairs, mismatches, missing_slots = _pairs(vmap, matches, sources, targets, source_opt, rules)
    mismatches = [*ambiguous, *mismatches, *rnn.model_problems(vmap, keras_model, pairs)]
    if missing_slots and not state_problems:
        state_problems.append(f"no optimizer slots for {listed_names(sorted(set(missing_slots)))}")
    matched = {p.source for p in pairs}
    unused = sorted(vmap[k].name for k in sources.values() if k not in matched)
    unmatched = sorted(targets[t].path for t in targets if t not in matches)
    learning_rate = current_learning_rate(optimizer, vmap.step or 0)
    hyper = sl.compare_hyper(source_opt, class_name, config, learning_rate) + wrappers.ema_hyper(source_opt, config)
    slot_names = {k: vmap[k].name for pair in pairs for k in pair.slots.values() if k in vmap}
    source_step = vmap[vmap.step_key].name if vmap.step_key is not None and vmap.step_key in vmap else None
    facts = exactness.Factory(
        str(getattr(getattr(keras_model, "dtype_policy", None), "name", "float32")),
        config.get("learning_rate"),
        tuple((key, p.trainable) for p in pairs for key in rnn.origins(vmap, p.source)),
        tuple(unused),
        factory_layers(keras_model),
    )
    found_approximations = exactness.approximations(
        vmap, source_opt, rules, hyper, exactness.graph_evidence(vmap), facts
    ) + rnn.approximations(vmap, source_opt.hyper)
    return Plan(
        pairs,
        unmatched,
        unused,
        mismatches,
        ignored,
        source_opt,
        class_name,
        config,
        rules,
        state_problems,
        hyper,
        source_step,
        slot_names,
        strict=source_opt.origin.startswith("keras2"),
        source_resume=verdict.to_json(),
        approximations=found_approximations,
    )


def _source_names(vmap: VariableMap, source_opt: sl.SourceOptimizer, rename: RenameRules) -> dict[str, str]:
    """Canonical name -> key of every source tensor that can fill a model variable (no slots, steps, powers)."""
    slot_keys = {k for per in source_opt.slots.values() for k in per.values()}
    skip = slot_keys | {vmap.step_key, source_opt.beta1_power_key}
    skip |= {k for k in vmap if k.rpartition("/")[2] in ("beta1_power", "beta2_power")}
    candidates = [
        v
        for v in vmap.values()
        if v.key not in skip
        and v.role not in ("step", "other")
        and v.dtype != "string"
        and (source_opt.origin == "tf1" or v.role == "weight")
    ]
    return {name: var.key for name, var in rename.canonical(candidates, "a").items()}


def _target_names(keras_model: Any, rename: RenameRules) -> tuple[dict[str, Any], list[str]]:
    """Canonical name -> model variable, and the variables left at the factory's values (dropped or ignored)."""
    targets: dict[str, Any] = {}
    ignored = []
    for variable in keras_model.weights:
        canonical = rename.apply(variable.path, "b")
        if canonical is None or IGNORED_TARGET.search(variable.path):
            ignored.append(variable.path)
        elif canonical in targets:
            raise ConversionError(
                f"{variable.path}: two model variables map to {canonical!r}; check the rename rules (rules=) "
                "and the model's layer names"
            )
        else:
            targets[canonical] = variable
    return targets, ignored


def _slot_plan(
    source_opt: sl.SourceOptimizer, class_name: str, config: dict[str, Any]
) -> tuple[list[sl.SlotRule], list[str]]:
    """The slot translations for the factory's optimizer (the weight averages' included), and every problem with
    the optimizer state."""
    if class_name not in sl.SUPPORTED_TARGETS:
        refused = wrappers.loss_scale_target_problem(class_name)
        return [], source_opt.problems + (
            refused or [f"the factory's optimizer {class_name} is not supported ({', '.join(sl.SUPPORTED_TARGETS)})"]
        )
    rules, state_problems = sl.slot_rules(source_opt, class_name, config)
    averages, problems = wrappers.ema_rules(source_opt, config)
    return rules + averages, source_opt.problems + state_problems + problems


def _pairs(
    vmap: VariableMap,
    matches: dict[str, str],
    sources: dict[str, str],
    targets: dict[str, Any],
    source_opt: sl.SourceOptimizer,
    rules: list[sl.SlotRule],
) -> tuple[list[Pair], list[str], list[str]]:
    """One pair per match, with its slots; the shape/dtype mismatches and the weights missing a slot."""
    pairs: list[Pair] = []
    mismatches: list[str] = []
    missing_slots: list[str] = []
    for target_name, source_name in matches.items():
        variable, var = targets[target_name], vmap[sources[source_name]]
        pair = Pair(var.key, var.name, variable.path, tuple(var.shape), var.dtype, bool(variable.trainable))
        pair.translated_from = rnn.translated_from(vmap, var.key)
        if tuple(variable.shape) != pair.shape or str(variable.dtype) != var.dtype:
            mismatches.append(
                f"{var.name} {list(var.shape)} {var.dtype} does not fit {variable.path} "
                f"{list(variable.shape)} {variable.dtype}"
            )
        if pair.trainable:
            per = source_opt.slots.get(var.key) or source_opt.slots.get(var.name) or {}
            for rule in rules:
                if rule.target is not None:
                    if rule.source in per:
                        pair.slots[rule.target] = per[rule.source]
                    else:
                        missing_slots.append(var.name)
        pairs.append(pair)
    return pairs, mismatches, missing_slots


def match_names(sources: Sequence[str], targets: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Pair target names with source names by their longest common suffix of `/` components.

    A pair needs the last two components to agree (or the whole of a one-component name); each target takes
    its best-scoring source, and a source claimed twice goes to the higher score. Ties are reported.
    """
    parts = {n: _components(n) for n in [*sources, *targets]}
    by_last: dict[str, list[str]] = {}  # only names that end alike can match
    for source in sources:
        if parts[source]:
            by_last.setdefault(parts[source][-1], []).append(source)
    best: dict[str, tuple[int, str]] = {}
    ambiguous: list[str] = []
    for target in targets:
        pool = by_last.get(parts[target][-1], []) if parts[target] else []
        scored = [(_suffix_score(parts[s], parts[target]), s) for s in pool]
        scored = [(score, s) for score, s in scored if score > 0]
        if not scored:
            continue
        top = max(score for score, _ in scored)
        winners = [s for score, s in scored if score == top]
        exact = [s for s in winners if parts[s] == parts[target]]
        if len(winners) > 1 and len(exact) != 1:
            ambiguous.append(f"{target} matches {', '.join(sorted(winners))} equally well")
            continue
        best[target] = (top, exact[0] if exact else winners[0])
    claimed: dict[str, list[tuple[int, str]]] = {}
    for target, (score, source) in best.items():
        claimed.setdefault(source, []).append((score, target))
    matches: dict[str, str] = {}
    for source, claims in claimed.items():
        top = max(score for score, _ in claims)
        winners = [t for score, t in claims if score == top]
        if len(winners) > 1:
            ambiguous.append(f"{source} matches {', '.join(sorted(winners))} equally well")
            continue
        matches[winners[0]] = source
    return matches, ambiguous


def _components(name: str) -> list[str]:
    return [p for p in re.sub(r":\d+$", "", name).split("/") if p]


def _suffix_score(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n if n >= min(2, len(a), len(b)) else 0


def current_learning_rate(optimizer: Any, step: int) -> float:
    """The learning rate the optimizer will use for its next update once its iteration count is `step`."""
    import keras

    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def plan_warnings(plan: Plan) -> list[str]:
    out = [f"source optimizer: {n}" for n in plan.source_opt.notes]
    if plan.ignored:
        out.append(f"model variables left at the factory's values: {listed_names(plan.ignored)}")
    if plan.unused:
        out.append(f"source variables not used: {listed_names(plan.unused)}")
    return out


APPROXIMATE = "approximate"  # the mark of a step note that also makes the conversion approximate


def step_of(vmap: VariableMap, plan: Plan) -> tuple[int, str, list[str]]:
    """The step that becomes the optimizer's iteration count, where it came from, and notes on it (those ending
    in `(approximate)` say the continued run will differ)."""
    notes: list[str] = []
    derived = None
    key = plan.source_opt.beta1_power_key
    if plan.source_opt.family == "Adam" and key is not None and key in vmap:
        beta1 = plan.source_opt.hyper.get("beta_1")
        if not isinstance(beta1, float):
            beta1 = float(plan.target_config.get("beta_1", 0.9))
        derived = adam_steps_from_power(float(np.asarray(vmap[key].read()).reshape(-1)[0]), beta1)
    if vmap.step is not None:
        if derived is not None and derived != vmap.step:
            notes.append(
                f"{prefix_of(vmap)}: {vmap.step_key}={vmap.step} but beta1_power implies {derived} Adam "
                f"steps; the iteration count follows the step, so the bias correction differs ({APPROXIMATE})"
            )
        return int(vmap.step), str(vmap.step_key), notes
    if derived is not None:
        return derived, "beta1_power", notes
    match = re.search(r"-(\d+)$", prefix_of(vmap))
    if match:
        notes.append(f"{prefix_of(vmap)}: no step variable; using the number in the checkpoint name")
        return int(match.group(1)), "checkpoint name", notes
    notes.append(f"{prefix_of(vmap)}: no step recorded; the converted optimizer starts at iteration 0")
    return 0, "none", notes
