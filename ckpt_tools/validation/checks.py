"""`validate`: can training resume from this artifact without losing state? Named checks, pass/fail/skip."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ckpt_tools.errors import CkptToolsError, UsageError
from ckpt_tools.messages import counted, flat, listed
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.storage import as_path
from ckpt_tools.validation.integrity import MAX_LISTED, check_files, check_state
from ckpt_tools.verdict import Status, resume_finding

if TYPE_CHECKING:
    from ckpt_tools.validation.run import ValidationRun

PathArg = str | os.PathLike[str]

CHECKS: tuple[str, ...] = ("files", "weights", "optimizer", "slots", "step", "finite", "state")
RESUMABLE: tuple[str, ...] = CHECKS
TRAINING_STATE: tuple[str, ...] = ("optimizer", "slots", "step")
JSON_SCHEMA = "ckpt-tools/validate/1"
FINITE_ROLES = ("weight", "optimizer", "step")
FLOAT_KINDS = {"float16", "bfloat16", "float32", "float64", "complex64", "complex128", "float8_e5m2", "float8_e4m3fn"}
CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class CheckResult:
    """One named check: `pass`, `fail` or `skip`, why, and whether the caller required it."""

    name: str
    status: Status
    reason: str
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason, "required": self.required}


@dataclass(frozen=True)
class ValidationReport:
    """Every check for one artifact. exit_code: 0 valid, 1 a required check failed, 2 unreadable."""

    path: str
    format: str | None
    checks: tuple[CheckResult, ...]
    required: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.required and c.status == "fail"]

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        return 0 if self.ok else 1

    @property
    def verdict(self) -> str:
        return "unreadable" if self.error is not None else ("valid" if self.ok else "invalid")

    @classmethod
    def unreadable(cls, path: str, error: str, required: tuple[str, ...]) -> ValidationReport:
        """The report for an artifact that cannot be opened at all: every check skipped, exit code 2."""
        checks = tuple(CheckResult(n, "skip", "artifact unreadable", n in required) for n in CHECKS)
        return cls(path, None, checks, required, error=error)

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def problems(self) -> list[str]:
        """One line per reason this artifact is not valid (`check: reason`, or the read error)."""
        if self.error is not None:
            return [self.error]
        return [f"{c.name}: {c.reason}" for c in self.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "error": self.error,
            "required": list(self.required),
            "checks": [c.to_json() for c in self.checks],
        }


def required_checks(require: str | Iterable[str] | None = None, allow_weights_only: bool = False) -> tuple[str, ...]:
    """The checks to enforce: a comma list or iterable of names (default: the full resumable set)."""
    if require is None:
        names = list(RESUMABLE)
    else:
        items = require.split(",") if isinstance(require, str) else list(require)
        names = [n.strip() for n in items if n.strip()]
        unknown = [n for n in names if n not in CHECKS]
        if unknown:
            detail = f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}"
            raise UsageError(f"require={require!r}: {detail}", argument="require", detail=detail)
        if not names:
            detail = "name at least one check"
            raise UsageError(f"require={require!r}: {detail}", argument="require", detail=detail)
    if allow_weights_only:
        names = [n for n in names if n not in TRAINING_STATE]
    return tuple(n for n in CHECKS if n in names)


@overload
def validate(
    path: PathArg, *, require: str | Iterable[str] | None = None, allow_weights_only: bool = False
) -> ValidationReport: ...


@overload
def validate(
    path: list[PathArg] | tuple[PathArg, ...],
    *,
    require: str | Iterable[str] | None = None,
    allow_weights_only: bool = False,
) -> ValidationRun: ...


def validate(
    path: PathArg | list[PathArg] | tuple[PathArg, ...],
    *,
    require: str | Iterable[str] | None = None,
    allow_weights_only: bool = False,
) -> ValidationReport | ValidationRun:
    """Run the checks on one artifact (a ValidationReport) or on each of a list of them (a ValidationRun).

    `require` names the checks to enforce (a comma list or an iterable; default: all of CHECKS);
    `allow_weights_only` drops the training-state checks (optimizer, slots, step) from it. Checks that are not
    required are reported as `skip`. An artifact that cannot be opened at all (missing, unrecognized, corrupt
    metadata) gives a report with `error` set and exit_code 2; problems found by the checks give exit_code 1.
    """
    required = required_checks(require, allow_weights_only)
    if isinstance(path, (list, tuple)):
        from ckpt_tools.validation.run import validate_paths

        return validate_paths(path, required)
    return validate_one(path, required)


def validate_one(path: PathArg, required: tuple[str, ...]) -> ValidationReport:
    """The report for one artifact, enforcing the checks named in `required` (see required_checks)."""
    from ckpt_tools.readers.registry import open_checkpoint

    shown = os.fspath(path)
    try:
        vmap = open_checkpoint(as_path(path))
    except (CkptToolsError, OSError) as exc:
        return ValidationReport.unreadable(shown, flat(exc) or type(exc).__name__, required)
    with vmap:
        return ValidationReport(shown, vmap.format, run_checks(vmap, required), required)


def run_checks(vmap: VariableMap, required: tuple[str, ...]) -> tuple[CheckResult, ...]:
    """Every check in CHECKS order: the required ones run, the others reported as skipped."""
    runners: dict[str, Callable[[VariableMap], tuple[Status, str]]] = {
        "files": check_files,
        "weights": check_weights,
        "optimizer": check_optimizer,
        "slots": check_slots,
        "step": check_step,
        "finite": check_finite,
        "state": check_state,
    }
    results = []
    for name in CHECKS:
        if name not in required:
            results.append(CheckResult(name, "skip", "not required", False))
            continue
        status, reason = runners[name](vmap)
        results.append(CheckResult(name, status, reason, True))
    return tuple(results)


def check_weights(vmap: VariableMap) -> tuple[Status, str]:
    return _training_check(vmap, "weights")


def check_optimizer(vmap: VariableMap) -> tuple[Status, str]:
    """Optimizer state as the reader's evidence decided it; "cannot confirm" fails with its reason."""
    return _training_check(vmap, "optimizer")


def check_slots(vmap: VariableMap) -> tuple[Status, str]:
    return _training_check(vmap, "slots")


def check_step(vmap: VariableMap) -> tuple[Status, str]:
    return _training_check(vmap, "step")


def _training_check(vmap: VariableMap, name: str) -> tuple[Status, str]:
    """The shared verdict (ckpt_tools.verdict), the same one inspect and convert report."""
    found = resume_finding(vmap, name)
    return found.status, found.reason


def count_nonfinite(value: np.ndarray) -> tuple[int, int]:
    """(NaN count, Inf count) of a float/complex array, chunk by chunk."""
    flat = value.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        chunk = flat[start : start + CHUNK_ELEMENTS]
        if chunk.dtype.kind not in ("f", "c"):
            chunk = chunk.astype(np.float32)
        finite = np.isfinite(chunk)
        if bool(finite.all()):
            continue
        nans = int(np.count_nonzero(np.isnan(chunk)))
        nan += nans
        inf += int(np.count_nonzero(~finite)) - nans
    return nan, inf


def check_finite(vmap: VariableMap) -> tuple[Status, str]:
    """Read every float tensor of the weights and optimizer state, one at a time, counting NaN/Inf."""
    checked = 0
    bad: list[str] = []
    unreadable: list[str] = []
    for var in _finite_candidates(vmap):
        try:
            value = var.read()
        except (CkptToolsError, OSError) as exc:
            unreadable.append(f"{var.key} ({flat(exc)})")
            continue
        nan, inf = count_nonfinite(value)
        del value
        checked += 1
        if nan or inf:
            parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
            bad.append(f"{var.name} ({', '.join(p for p in parts if p)})")
    if bad:
        return "fail", f"non-finite values in {counted(len(bad), 'tensor')}: {listed(bad, MAX_LISTED)}"
    if unreadable:
        return "fail", f"cannot read {counted(len(unreadable), 'tensor')} to check them: {listed(unreadable, 2)}"
    return "pass", f"{counted(checked, 'float tensor')} checked, all finite"


def _finite_candidates(vmap: VariableMap) -> list[Variable]:
    return [v for v in vmap.values() if v.role in FINITE_ROLES and v.dtype in FLOAT_KINDS]
