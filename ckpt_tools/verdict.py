"""The one answer to "can training resume from this?": weights, optimizer state, slots and step, with reasons.

inspect's summary, validate's training-state checks and convert's plan all call `resume_verdict`, so the three
commands cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ckpt_tools.messages import counted, listed
from ckpt_tools.model import VariableMap

Status = Literal["pass", "fail", "skip"]
TRAINING_CHECKS: tuple[str, ...] = ("weights", "optimizer", "slots", "step")
MAX_LISTED = 5


@dataclass(frozen=True)
class Finding:
    """One training-state check: pass or fail, and why."""

    name: str
    status: Status
    reason: str


@dataclass(frozen=True)
class ResumeVerdict:
    """The training-state findings of one artifact; `resumable` when all pass."""

    findings: tuple[Finding, ...]

    @property
    def resumable(self) -> bool:
        return all(f.status == "pass" for f in self.findings)

    def finding(self, name: str) -> Finding:
        return next(f for f in self.findings if f.name == name)

    @property
    def problems(self) -> list[str]:
        return [f"{f.name}: {f.reason}" for f in self.findings if f.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "resumable": self.resumable,
            "failing": [f.name for f in self.findings if f.status == "fail"],
            "reasons": {f.name: f.reason for f in self.findings},
        }


def resume_verdict(vmap: VariableMap) -> ResumeVerdict:
    """Weights, optimizer state (decided by the reader's evidence), slot coverage and step of `vmap`."""
    return ResumeVerdict(tuple(resume_finding(vmap, name) for name in TRAINING_CHECKS))


def resume_finding(vmap: VariableMap, name: str) -> Finding:
    """One of the TRAINING_CHECKS findings alone (validate runs each check separately)."""
    finders = {"weights": _weights, "optimizer": _optimizer, "slots": _slots, "step": _step}
    return finders[name](vmap)


def _weights(vmap: VariableMap) -> Finding:
    weights = vmap.with_role("weight")
    if not weights:
        if not len(vmap):
            return Finding("weights", "fail", "no model weights (the artifact stores no tensors)")
        return Finding("weights", "fail", f"no model weights ({counted(len(vmap), 'tensor')}, none of them weights)")
    return Finding(
        "weights", "pass", f"{counted(len(weights), 'weight tensor')}, {counted(vmap.parameters, 'parameter')}"
    )


def _optimizer(vmap: VariableMap) -> Finding:
    info = vmap.optimizer
    if info.present is None:
        return Finding("optimizer", "fail", f"cannot confirm optimizer state: {info.reason}")
    if not info.present:
        return Finding("optimizer", "fail", f"no optimizer state: {info.reason or 'none stored'}")
    count = len(vmap.with_role("optimizer"))
    what = info.name or "unknown optimizer"
    if not info.slots_expected:
        return Finding("optimizer", "pass", f"{what} keeps no slot variables ({info.reason})")
    slots = f"slots {', '.join(info.slots)}" if info.slots else "no slot variables"
    return Finding("optimizer", "pass", f"{what}: {counted(count, 'tensor')}, {slots} ({info.reason})")


def _slots(vmap: VariableMap) -> Finding:
    info = vmap.optimizer
    if info.present is not True:
        return Finding("slots", "fail", "no confirmed optimizer state, so no slots")
    if not info.slots_expected:
        return Finding("slots", "pass", f"{info.name or 'the optimizer'} keeps no slot variables")
    if info.complete:
        return Finding("slots", "pass", f"all {info.trainable} trainable weights have slots {', '.join(info.slots)}")
    if vmap.step == 0 and not any(v.slot_of for v in vmap.values()):
        return Finding(
            "slots",
            "pass",
            "the optimizer was never applied (iteration 0) and stores no slots yet: "
            "a resumed run builds the same initial state",
        )
    if not info.trainable:
        return Finding("slots", "fail", "no trainable weights found to carry slots")
    missing = list(info.uncovered)
    owned = {w for o in info.optimizers for w in o.trainable}
    orphans: dict[str, int] = {}
    by_name = vmap.by_name()
    for weight in missing:
        if owned and weight not in owned:
            # the top-level object the weight hangs under (its key's first step: `discriminator/...`)
            model = (by_name[weight].key if weight in by_name else weight).split("/")[0]
            orphans[model] = orphans.get(model, 0) + 1
    models = "; ".join(
        f"{model!r} ({counted(n, 'trainable weight')}) has no saved optimizer" for model, n in orphans.items()
    )
    return Finding(
        "slots",
        "fail",
        (models + "; " if models else "") + f"{len(missing)} of {info.trainable} "
        f"trainable weights lack slots: {listed(missing, MAX_LISTED)}",
    )


def _step(vmap: VariableMap) -> Finding:
    if vmap.step is not None:
        return Finding("step", "pass", f"step {vmap.step}" + (f" ({vmap.step_key})" if vmap.step_key else ""))
    if vmap.step_key is not None:
        return Finding("step", "pass", f"step counter {vmap.step_key} (value unreadable as an integer)")
    steps = vmap.with_role("step")
    if steps:
        return Finding("step", "pass", f"step counter {steps[0].key}")
    return Finding("step", "fail", "no step/iteration counter")
