"""TF1 optimizer state: decided by the training ops of the graph beside the checkpoint, else by variable names."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckpt_tools.errors import CkptToolsError
from ckpt_tools.messages import flat, listed
from ckpt_tools.model import FoundOptimizer, OptimizerInfo, Role, Variable
from ckpt_tools.optimizers.catalogue import (
    ESTIMATOR_OPTIMIZER_PATTERN,
    ESTIMATOR_SLOT_PATTERN,
    TF1_NON_SLOT_PATTERN,
    TF1_STEP_PATTERN,
)
from ckpt_tools.optimizers.coverage import summarize
from ckpt_tools.optimizers.graph_evidence import GraphEvidence, OpUse, training_evidence, with_training_traits
from ckpt_tools.optimizers.lookup import family, keras2_slot, tf1_slot, tf1_suffixes
from ckpt_tools.readers.confine import confine
from ckpt_tools.storage import suffixed

Tie = tuple[Role, str | None, str | None]
STEP_NAMES = re.compile(TF1_STEP_PATTERN)
NON_SLOT = re.compile(TF1_NON_SLOT_PATTERN)
ESTIMATOR_OPTIMIZER = re.compile(ESTIMATOR_OPTIMIZER_PATTERN)
ESTIMATOR_SLOT = re.compile(ESTIMATOR_SLOT_PATTERN)
LISTED = 5


@dataclasses.dataclass(frozen=True)
class GraphSource:
    """The graph that may prove what trains the weights: a `.meta` beside the checkpoint, a SavedModel's
    graphs (inference exports, whose lack of training ops proves nothing), or none, with why."""

    evidence: GraphEvidence | None
    inference: bool = False
    problem: str | None = None


def meta_graph_source(prefix: Path, *, traits: bool = False) -> GraphSource:
    """The training graph saved beside a Saver checkpoint (`PREFIX.meta`), parsed natively; with `traits`, also
    what convert's exactness needs (with_training_traits). The last graph parsed is kept for the next call on
    the same unchanged file (convert asks twice: once reading the checkpoint, once judging exactness)."""
    meta = suffixed(prefix, ".meta")
    if not meta.is_file():
        return GraphSource(None, problem=f"no {meta.name} graph beside the checkpoint")
    try:
        confine(prefix.parent, meta, ".meta graph")
        graph = _meta_graph(meta)
        evidence = training_evidence(graph, meta.name)
        return GraphSource(with_training_traits(evidence, graph) if traits else evidence)
    except (CkptToolsError, OSError) as exc:
        return GraphSource(None, problem=f"{meta.name} unreadable ({flat(exc)[:160]})")


_LAST_GRAPH: list[tuple[tuple[int, int, int, int], Any]] = []  # ((device, inode, size, mtime_ns), MetaGraph)


def _meta_graph(meta: Path) -> Any:
    """The parsed `.meta`, reused while the file is the same one, unchanged (one graph kept, never more)."""
    from ckpt_tools.bundle.graph import read_meta_graph

    stat = meta.stat()
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if _LAST_GRAPH and _LAST_GRAPH[0][0] == identity:
        return _LAST_GRAPH[0][1]
    graph = read_meta_graph(meta)
    _LAST_GRAPH[:] = [(identity, graph)]
    return graph


def classify(names: list[str]) -> dict[str, Tie]:
    """Role, slot_of and canonical slot of each TF1 variable, from its name alone."""
    known = set(names)
    suffixes = tf1_suffixes()
    out: dict[str, Tie] = {}
    weight: Tie = ("weight", None, None)
    for name in names:
        head, _, suffix = name.rpartition("/")
        spec = None
        if suffix in suffixes and head in known:
            centered = suffix.startswith("RMSProp") and f"{head}/RMSProp_2" in known
            spec = tf1_slot(suffix, centered=centered)
        if "global_step" in name and STEP_NAMES.search(name):
            out[name] = ("step", None, None)
        elif spec is not None:
            out[name] = ("optimizer", head, spec[1])
        elif _optimizer_like(name):
            out[name] = ("optimizer", *_estimator_tie(name, known))
        else:
            out[name] = weight
    return out


def _optimizer_like(name: str) -> bool:
    """A beta power or an Estimator optimizer's variable (each pattern tried only on names that can match it)."""
    return ("_power" in name and NON_SLOT.search(name) is not None) or (
        name.startswith("training/") and ESTIMATOR_OPTIMIZER.match(name) is not None
    )


def _estimator_tie(name: str, known: set[str]) -> tuple[str | None, str | None]:
    """Estimators keep each optimizer's slots under `training/<Optimizer>/<var>/<slot>`."""
    match = ESTIMATOR_SLOT.match(name)
    if match is None or match.group("var") not in known:
        return None, None
    slot = keras2_slot(family(match.group("opt")), match.group("slot")) or match.group("slot")
    return match.group("var"), f"{match.group('opt')}/{slot}"


def family_from_names(variables: Mapping[str, Variable]) -> str | None:
    """The optimizer(s) the slot names point at: `Adam`, or `Adagrad+Ftrl` for Estimator mixes."""
    found: list[str] = []
    specs: dict[str, Any] = {}  # by key suffix
    for var in variables.values():
        if var.slot_of is None:
            continue
        suffix = var.key.rpartition("/")[2]
        spec = specs[suffix] if suffix in specs else specs.setdefault(suffix, tf1_slot(suffix))
        label = spec[0].name if spec is not None else (var.slot or "").partition("/")[0]
        if label and label not in found:
            found.append(label)
    return "+".join(found) if found else None


def apply_graph(ties: dict[str, Tie], evidence: GraphEvidence) -> dict[str, Tie]:
    """Slot ties proven by training ops override the name-based ones (custom optimizer names included)."""
    out = dict(ties)
    for use in evidence.uses:
        for slot, key in use.slots.items():
            if key in out:
                out[key] = ("optimizer", use.variable, slot)
        for key in use.extra_inputs:
            if key in out and out[key][0] != "step":
                out[key] = ("optimizer", None, None)
    return out


def decide(variables: Mapping[str, Variable], source: GraphSource) -> OptimizerInfo:
    """The optimizer finding: training ops first, variable names when there is no graph to ask."""
    evidence = source.evidence
    if evidence is not None and evidence.uses:
        return _from_ops(variables, evidence)
    has_step = any(v.role == "step" for v in variables.values())
    slots = [v for v in variables.values() if v.slot_of is not None]
    if slots or any(v.role == "optimizer" for v in variables.values()):
        return _from_names(variables, source, slots)
    if evidence is not None and not source.inference:
        return summarize(
            [],
            reason=f"no training op in {evidence.source} and no slot variables: nothing in this "
            "graph trains the weights",
            evidence="training ops",
        )
    if has_step:
        why = (
            "an inference export: its graph has no training ops, so" if source.inference else f"{source.problem}, so"
        ) + (
            " a step counter alone cannot tell a stateless optimizer (plain "
            "SGD) from optimizer state that was not saved"
        )
        return summarize(
            variables.values(), state_present=True, slots_expected=False, infer_name=False, undecided=True, reason=why
        )
    return summarize([], reason="no slot variables and no step counter")


def _from_names(variables: Mapping[str, Variable], source: GraphSource, slots: list[Variable]) -> OptimizerInfo:
    """No training op to ask: the slot suffixes name the family, and every weight that has one of its slots
    must have all the slots that family always keeps. Optimizer state without any slot is absent (Adam's beta
    powers prove slots existed) or undecidable."""
    where = "no recognized training op in the graph" if source.evidence is not None else source.problem
    name = family_from_names(variables)
    if not slots:
        powers = [v.key for v in variables.values() if NON_SLOT.search(v.key)]
        if powers:
            return summarize(
                [], name="Adam", reason=f"{', '.join(powers)} stored (Adam's) but none of its slot variables ({where})"
            )
        reason = (
            f"optimizer variables but no slot variables, and {where}: a stateless optimizer cannot be told "
            "from one whose slots were not saved"
        )
        return summarize(
            variables.values(),
            state_present=True,
            slots_expected=False,
            infer_name=False,
            undecided=True,
            reason=reason,
        )
    info = summarize(variables.values(), name=name)
    uncovered = _missing_required(variables, slots)
    if uncovered:
        covered = max(0, info.trainable - len(uncovered))
        info = dataclasses.replace(
            info, uncovered=tuple(dict.fromkeys([*info.uncovered, *uncovered])), covered=min(info.covered, covered)
        )
    return dataclasses.replace(info, reason=f"slot variables stored, by name ({where})")


def _missing_required(variables: Mapping[str, Variable], slots: list[Variable]) -> list[str]:
    """Weights lacking a slot their family always keeps (Adam's velocity beside a stored momentum)."""
    have: dict[str, set[str]] = {}
    family_of: dict[str, Any] = {}
    specs: dict[str, Any] = {}  # by key suffix
    for var in slots:
        assert var.slot_of is not None
        prefix, _, slot = (var.slot or "").rpartition("/")  # Estimator slots keep their optimizer: Adam/momentum
        have.setdefault(var.slot_of, set()).add(slot)
        suffix = var.key.rpartition("/")[2]
        spec = specs[suffix] if suffix in specs else specs.setdefault(suffix, tf1_slot(suffix))
        fam = spec[0] if spec is not None else family(prefix) if prefix else None
        if fam is not None:
            family_of[var.slot_of] = fam
    out = []
    required: dict[int, set[str]] = {}  # by id(family)
    for weight, fam in family_of.items():
        if id(fam) not in required:
            required[id(fam)] = {s.name for s in fam.slots if s.when is None and (s.tf1 is not None or s.keras2)}
        if not required[id(fam)] <= have[weight]:
            out.append(weight)
    return out


def _from_ops(variables: Mapping[str, Variable], evidence: GraphEvidence) -> OptimizerInfo:
    """Coverage per updated variable: every slot its own op reads must be stored."""
    trainable = list(dict.fromkeys(u.variable for u in evidence.uses))
    missing: dict[str, list[str]] = {}
    needed = stored = 0
    for use in evidence.uses:
        state = _state_of(use)
        needed += len(state)
        absent = _absent(use, variables)
        stored += len(state) - len(absent)
        if absent:
            missing[use.variable] = absent
    families = evidence.families
    name = "+".join(families)
    found = tuple(_found(evidence, fam, variables) for fam in families)
    hyper = dict(evidence.uses[0].hyper) if len(families) == 1 else {}
    common = OptimizerInfo(
        None,
        name=name,
        evidence="training ops",
        optimizers=found,
        hyper=hyper,
        hyper_origin=f"{evidence.source} (training ops)",
        trainable=len(trainable),
    )
    slot_names = tuple(sorted({s for u in evidence.uses for s in u.slots}))
    ops = f"{listed(sorted({u.op for u in evidence.uses}), 3)} in {evidence.source}"
    if not needed:
        return dataclasses.replace(
            common,
            present=True,
            slots_expected=False,
            covered=len(trainable),
            reason=f"{ops}: {name} keeps no state beyond the step",
        )
    if not stored:
        return dataclasses.replace(
            common,
            present=False,
            slots=slot_names,
            uncovered=tuple(trainable),
            reason=f"the graph trains with {name} ({ops}) but none of its slot variables is stored",
        )
    uncovered = tuple(w for w in trainable if w in missing)
    return dataclasses.replace(
        common,
        present=True,
        slots=slot_names,
        covered=len(trainable) - len(uncovered),
        uncovered=uncovered,
        reason=f"{ops}; {stored} of {needed} slot variables stored",
    )


def _state_of(use: OpUse) -> dict[str, str]:
    """What one training op needs restored: its slots and its non-slot state (Adam's beta powers)."""
    return {**use.slots, **{key.rpartition("/")[2]: key for key in use.extra_inputs}}


def _absent(use: OpUse, variables: Mapping[str, Variable]) -> list[str]:
    return [name for name, key in _state_of(use).items() if key not in variables]


def _found(evidence: GraphEvidence, name: str, variables: Mapping[str, Variable]) -> FoundOptimizer:
    uses = [u for u in evidence.uses if u.name == name]
    weights = tuple(dict.fromkeys(u.variable for u in uses))
    uncovered = tuple(dict.fromkeys(u.variable for u in uses if _absent(u, variables)))
    slots = tuple(dict.fromkeys(s for u in uses for s in u.slots))
    return FoundOptimizer(f"training ops ({uses[0].op})", name, None, slots, weights, uncovered)
