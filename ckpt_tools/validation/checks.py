"""`validate`: can training resume from this artifact without losing state? Named checks, pass/fail/skip."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ckpt_tools.bundle.shards import observing
from ckpt_tools.errors import CkptToolsError, UsageError
from ckpt_tools.messages import bounded, counted, flat, listed
from ckpt_tools.model import Variable, VariableMap
from ckpt_tools.storage import as_path, scrub
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
STREAM_ELEMENTS = 1 << 21  # elements per block when the finite check reads a tensor itself (8 MiB of float32)


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
        return cls(path, None, checks, required, error=bounded(error))

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
    jobs: int = 1,
) -> ValidationRun: ...


def validate(
    path: PathArg | list[PathArg] | tuple[PathArg, ...],
    *,
    require: str | Iterable[str] | None = None,
    allow_weights_only: bool = False,
    jobs: int = 1,
) -> ValidationReport | ValidationRun:
    """Run the checks on one artifact (a ValidationReport) or on each of a list of them (a ValidationRun).

    `require` names the checks to enforce (a comma list or an iterable; default: all of CHECKS);
    `allow_weights_only` drops the training-state checks (optimizer, slots, step) from it. Checks that are not
    required are reported as `skip`. An artifact that cannot be opened at all (missing, unrecognized, corrupt
    metadata) gives a report with `error` set and exit_code 2; problems found by the checks give exit_code 1.
    With a list, `jobs` > 1 validates that many artifacts at a time in worker processes (0: one per CPU),
    the reports in the order given as with one job.
    """
    required = required_checks(require, allow_weights_only)
    if isinstance(path, (list, tuple)):
        from ckpt_tools.validation.run import validate_paths

        return validate_paths(path, required, jobs=jobs)
    return validate_one(path, required)


def validate_one(path: PathArg, required: tuple[str, ...]) -> ValidationReport:
    """The report for one artifact, enforcing the checks named in `required` (see required_checks)."""
    from ckpt_tools.readers.registry import open_checkpoint

    shown = scrub(os.fspath(path))  # a URL's credentials and signatures never reach a report
    try:
        vmap = open_checkpoint(as_path(path))
    except (CkptToolsError, OSError) as exc:
        return ValidationReport.unreadable(shown, flat(exc) or type(exc).__name__, required)
    with vmap:
        return ValidationReport(shown, vmap.format, run_checks(vmap, required), required)


def run_checks(vmap: VariableMap, required: tuple[str, ...]) -> tuple[CheckResult, ...]:
    """Every check in CHECKS order: the required ones run, the others reported as skipped. With both `files`
    and `finite` required, the finite check counts NaN/Inf on the blocks the file check reads (one pass)."""
    tally = FiniteTally(vmap) if "files" in required and "finite" in required else None
    runners: dict[str, Callable[[VariableMap], tuple[Status, str]]] = {
        "files": check_files if tally is None else functools.partial(_files_observed, tally=tally),
        "weights": check_weights,
        "optimizer": check_optimizer,
        "slots": check_slots,
        "step": check_step,
        "finite": check_finite if tally is None else functools.partial(check_finite, tally=tally),
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


def _files_observed(vmap: VariableMap, tally: FiniteTally) -> tuple[Status, str]:
    with observing(tally):
        return check_files(vmap)


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


# Float formats of one or two bytes, whose numpy ufuncs are slow (float16) or absent (ml_dtypes): (mask of the
# bits below the sign, the smallest masked value that is not finite). e4m3fn has no infinity, only NaN (0x7F).
_SMALL_FLOATS: dict[str, tuple[np.dtype[Any], int, int]] = {
    "float16": (np.dtype(np.uint16), 0x7FFF, 0x7C00),
    "bfloat16": (np.dtype(np.uint16), 0x7FFF, 0x7F80),
    "float8_e5m2": (np.dtype(np.uint8), 0x7F, 0x7C),
    "float8_e4m3fn": (np.dtype(np.uint8), 0x7F, 0x7F),
}


def all_finite(block: np.ndarray) -> bool:
    """Whether a 1-D float/complex block holds no NaN or Inf (bit tests for 1- and 2-byte floats)."""
    small = _SMALL_FLOATS.get(block.dtype.name)
    if small is not None and block.dtype.isnative:
        unit, mask, lowest = small
        return not block.size or int(np.bitwise_and(block.view(unit), unit.type(mask)).max()) < lowest
    return bool(np.isfinite(block).all())


def count_nonfinite(value: np.ndarray) -> tuple[int, int]:
    """(NaN count, Inf count) of a float/complex array, chunk by chunk."""
    flat = value.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        chunk = flat[start : start + CHUNK_ELEMENTS]
        if all_finite(chunk):
            continue
        if chunk.dtype.kind not in ("f", "c"):
            chunk = chunk.astype(np.float32)
        finite = np.isfinite(chunk)
        nans = int(np.count_nonzero(np.isnan(chunk)))
        nan += nans
        inf += int(np.count_nonzero(~finite)) - nans
    return nan, inf


class FiniteTally:
    """NaN/Inf counts of the finite check's candidates, taken from the blocks another pass reads (a
    shards.BlockObserver: the `files` check's verification hands over what it reads). `results` holds, per
    tensor key the pass finished, its (NaN, Inf) counts or why its bytes did not verify."""

    def __init__(self, vmap: VariableMap) -> None:
        self.keys = {v.key for v in _finite_candidates(vmap)}
        self.running: dict[str, list[int]] = {}
        self.results: dict[str, tuple[int, int] | str] = {}

    def wants(self, key: str) -> bool:
        return key in self.keys

    def block(self, key: str, values: np.ndarray) -> None:
        nan, inf = count_nonfinite(values)
        counts = self.running.setdefault(key, [0, 0])
        counts[0] += nan
        counts[1] += inf

    def done(self, key: str, problem: str | None) -> None:
        counts = self.running.pop(key, [0, 0])
        self.results[key] = problem if problem is not None else (counts[0], counts[1])


def _stream_count(var: Variable) -> tuple[int, int]:
    """(NaN, Inf) of one tensor read block by block (checksums verified by the end of the stream)."""
    nan = inf = 0
    for block in var.iter_chunks(STREAM_ELEMENTS):
        more_nan, more_inf = count_nonfinite(block)
        nan += more_nan
        inf += more_inf
    return nan, inf


def check_finite(vmap: VariableMap, tally: FiniteTally | None = None) -> tuple[Status, str]:
    """Count NaN/Inf in every float tensor of the weights and optimizer state: from `tally` where the file
    check already read a tensor, else by streaming it, one tensor and one block at a time."""
    checked = 0
    bad: list[str] = []
    unreadable: list[str] = []
    for var in _finite_candidates(vmap):
        found = tally.results.get(var.key) if tally is not None else None
        if found is None:
            try:
                found = _stream_count(var)
            except (CkptToolsError, OSError) as exc:
                found = flat(exc)
        if isinstance(found, str):
            unreadable.append(f"{var.key} ({' '.join(found.split())})")
            continue
        nan, inf = found
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
