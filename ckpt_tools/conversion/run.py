"""`convert`: TF1/TF2 checkpoints, Keras-2 .h5 files, tf_keras SavedModels into resumable TF2 checkpoints or .keras."""

from __future__ import annotations

import errno
import gc
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.conversion import archive
from ckpt_tools.conversion import slots as sl
from ckpt_tools.conversion.atomic import AtomicOutput, check_output
from ckpt_tools.conversion.exactness import WEIGHTS_ONLY
from ckpt_tools.conversion.factory import check_factory_spec, weights_through_disk
from ckpt_tools.conversion.plan import (
    APPROXIMATE,
    IGNORED_TARGET,
    MAX_LISTED,
    Pair,
    Plan,
    current_learning_rate,
    describe_source,
    listed_names,
    make_plan,
    match_names,
    plan_warnings,
    prefix_of,
    step_of,
)
from ckpt_tools.conversion.rebuild import REBUILT, RebuildSpec, rebuild_spec
from ckpt_tools.conversion.rebuild import build as rebuild_model
from ckpt_tools.conversion.rnn import cell_view
from ckpt_tools.conversion.sources import SOURCE_FORMATS, check_format, epoch_note, prepared
from ckpt_tools.conversion.verify import CheckpointResult, Expected, Fingerprints, verify_keras, verify_tf2
from ckpt_tools.errors import ConversionError, UsageError
from ckpt_tools.messages import os_reason, printable
from ckpt_tools.model import VariableMap, numpy_dtype
from ckpt_tools.readers.membership import Members, members
from ckpt_tools.readers.paths import state_prefixes
from ckpt_tools.readers.registry import detect, open_checkpoint
from ckpt_tools.renames import RenameRules, build_rules
from ckpt_tools.storage import as_path, is_url, scrub

MAX_STEP = 2**63 - 1
_FULL_DISK = ("No space left on device", "File too large", "Disk quota exceeded")

__all__ = [
    "IGNORED_TARGET",
    "MAX_LISTED",
    "SCHEMA",
    "SOURCE_FORMATS",
    "TARGETS",
    "CheckpointResult",
    "ConvertReport",
    "Expected",
    "Pair",
    "Plan",
    "convert",
    "current_learning_rate",
    "describe_source",
    "load_state",
    "make_plan",
    "match_names",
    "printable",
    "target_slot_variables",
    "verify_keras",
    "verify_tf2",
]

SCHEMA = "ckpt-tools/convert/1"
TARGETS = ("tf2", "keras")


@dataclass
class ConvertReport:
    """What `ckpt convert` did or would do; owns the exit code (0 done / plan clean, 2 plan blocked)."""

    source: str
    source_format: str
    out: str
    to: str
    model: str
    plan: Plan
    dry_run: bool = False
    written: bool = False
    weights_only: bool = False
    checkpoints: list[CheckpointResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    approximations: list[str] = field(default_factory=list)  # why the continued run would not be the source's

    @property
    def resumable(self) -> bool:
        return not self.weights_only and not self.problems

    @property
    def exactness(self) -> str:
        """`exact` when Keras 3 continuing from OUT is the source's run up to float32 rounding, else `approximate`."""
        return "approximate" if self.approximations else "exact"

    @property
    def exit_code(self) -> int:
        return 2 if self.problems else 0

    def diff_rules(self) -> dict[str, Any]:
        """Rename rules for `ckpt diff SOURCE OUT --map FILE`: the output's names back to the source's where they
        differ (only when `--map` renamed weights: canonical names pair the rest, the step pairs by role)."""
        names: list[tuple[str | None, str | None]] = []
        for pair in self.plan.pairs:
            names.append((pair.output, pair.source_name))
            names += [(pair.slot_outputs.get(slot), self.plan.slot_names.get(key)) for slot, key in pair.slots.items()]
        rules = [
            {"from": f"^{re.escape(out)}$", "to": src, "side": "b"}
            for out, src in names
            if out is not None and src is not None and out != src
        ]
        return {"rules": rules}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "source": self.source,
            "source_format": self.source_format,
            "out": self.out,
            "to": self.to,
            "model": self.model,
            "dry_run": self.dry_run,
            "written": self.written,
            "resumable": self.resumable,
            "exactness": self.exactness,
            "approximations": self.approximations,
            "weights_only": self.weights_only,
            **self.plan.to_json(),
            "diff_rules": self.diff_rules(),
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "warnings": self.warnings,
            "problems": self.problems,
            "exit_code": self.exit_code,
        }


# ---------------------------------------------------------------------------------------------- entry point
def convert(
    source: str | os.PathLike[str],
    *,
    model: Any = None,
    out: str | os.PathLike[str],
    to: str = "tf2",
    rules: str | os.PathLike[str] | RenameRules | None = None,
    all_checkpoints: bool = False,
    dry_run: bool = False,
    force: bool = False,
    allow_weights_only: bool = False,
    allow_approximate: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ConvertReport:
    """Convert SOURCE into OUT for `model` (a compiled `keras.Model`, a `MODULE:FACTORY` string, or None to rebuild
    the model a .h5, SavedModel or .keras source records); `progress` gets one line per phase (docs/convert.md)."""
    say = progress or _silent
    _check_arguments(model, out, to)
    src, out_path = as_path(source), Path(out)
    rename = _rename_rules(rules)
    say(f"reading {src}")
    vmaps = _open_sources(src, all_checkpoints, to)
    spec = rebuild_spec(vmaps[-1], allow_weights_only=allow_weights_only) if model is None else None
    protect = [src, *(f for v in vmaps for f in v.files)]
    source_members = members(vmaps, extra=[src])
    if not dry_run:
        check_output(out_path, force=force, protect=protect, members=source_members)
    say("building the Keras 3 model" + (" from the source's model_config" if spec is not None else f" ({model})"))
    keras_model, label, notes = _model_for(model, spec)
    vmaps = archive.paired_all(vmaps, keras_model)
    say("planning the mapping and the optimizer translation")
    plan = make_plan(vmaps[-1], keras_model, rename)
    if spec is not None and spec.optimizer_class is None:
        plan.state_problems.append("the source records no optimizer (no training_config)")
    report = ConvertReport(str(src), vmaps[-1].format, os.fspath(out_path), to, label, plan, dry_run=dry_run)
    report.warnings += [*notes, *plan_warnings(plan)]
    blocking = plan.weight_problems + ([] if allow_weights_only else plan.state_problems)
    if not dry_run:
        _refuse_blocked(src, plan, allow_weights_only)
    report.weights_only = bool(plan.state_problems)
    _add_steps(src, vmaps, plan, report)
    report.approximations = [
        *([WEIGHTS_ONLY] if report.weights_only else []),
        *plan.approximations,
        *report.approximations,
    ]
    refusal = _approximate_refusal(src, report) if not (allow_approximate or report.weights_only) else None
    if refusal is not None:
        if not dry_run:
            raise ConversionError(refusal)
        blocking.append(refusal)
    if dry_run:
        report.problems = blocking
        if out_path.exists():
            report.warnings.append(f"{out_path}: exists; a real run needs force=True")
        return report
    target = _Target(keras_model, owned=model is None or isinstance(model, str), progress=say)
    del keras_model  # from here on only `target` holds the model (see _Target)
    _write_atomically(vmaps, plan, target, report, out_path, force=force, protect=protect, members=source_members)
    return report


def _silent(_line: str) -> None:
    """The default progress callback: says nothing."""


def _model_for(model: Any, spec: RebuildSpec | None) -> tuple[Any, str, list[str]]:
    """The target model, how the report names where it came from, and warnings from building it."""
    from ckpt_tools.conversion.factory import build_model, check_model, require_keras

    if spec is None:
        label = model if isinstance(model, str) else f"<{type(model).__name__} {getattr(model, 'name', '')}>"
        return build_model(model), label, []
    keras = require_keras(f"{spec.label}: rebuilding its Keras 3 model")
    built, warnings = rebuild_model(spec, keras)
    return check_model(built, REBUILT, keras), REBUILT, warnings


def _check_arguments(model: Any, out: str | os.PathLike[str], to: str) -> None:
    """Refuse a malformed factory spec, a remote OUT and a bad target before anything is read or imported."""
    if isinstance(model, str):
        check_factory_spec(model)
    if is_url(os.fspath(out)):
        detail = "convert writes to a local folder or file (object stores have no atomic rename); upload the result"
        raise UsageError(f"out={scrub(os.fspath(out))!r}: {detail}", argument="out", detail=detail)
    _check_target(to, Path(out))


def _check_target(to: str, out_path: Path) -> None:
    """Refuse an unknown target, and a Keras archive OUT without the .keras suffix."""
    if to not in TARGETS:
        detail = f"expected one of {', '.join(TARGETS)}, got {to!r}"
        raise UsageError(f"to={to!r}: {detail}", argument="to", detail=detail)
    if to == "keras" and out_path.suffix != ".keras":
        detail = f"the keras target writes a .keras file; name it with the .keras suffix (got {os.fspath(out_path)!r})"
        raise UsageError(f"out={os.fspath(out_path)!r}: {detail}", argument="out", detail=detail)


def _rename_rules(rules: str | os.PathLike[str] | RenameRules | None) -> RenameRules:
    """The rename rules as given, loaded from their file, or none."""
    if isinstance(rules, RenameRules):
        return rules
    return build_rules(os.fspath(rules)) if rules is not None else RenameRules()


def _refuse_blocked(src: Path, plan: Plan, allow_weights_only: bool) -> None:
    """Stop a real run whose weights do not match, or whose optimizer state cannot be translated (unless allowed)."""
    if plan.weight_problems:
        raise ConversionError(
            printable(
                f"{src}: {'; '.join(plan.weight_problems)}; source variables not used: "
                f"{listed_names(plan.unused) or 'none'}. Write rename rules and pass them as "
                "rules= (see docs/convert.md)"
            )
        )
    if plan.state_problems and not allow_weights_only:
        raise ConversionError(
            printable(
                f"{src}: optimizer state cannot be translated: "
                f"{'; '.join(plan.state_problems)}; fix the factory's optimizer, or pass "
                "allow_weights_only=True for a non-resumable output"
            )
        )


def _approximate_refusal(src: Path, report: ConvertReport) -> str | None:
    """The one line refusing an approximate conversion (None when it is exact)."""
    if not report.approximations:
        return None
    return printable(
        f"{src}: the conversion is approximate, the continued run would differ: {'; '.join(report.approximations)}; "
        "pass allow_approximate=True to write it anyway (docs/convert.md, Approximations)"
    )


def _closing(vmap: VariableMap, value: Any) -> Any:
    """`value`, after closing the file handles its computation opened on `vmap` (they reopen on demand)."""
    vmap.close()
    return value


def _add_steps(src: Path, vmaps: list[VariableMap], plan: Plan, report: ConvertReport) -> None:
    """One result per source checkpoint, each with its step; steps must differ to name the outputs."""
    steps = [_closing(v, step_of(v, plan)) for v in vmaps]
    for vmap, (step, origin, _) in zip(vmaps, steps, strict=True):
        if not 0 <= int(step) <= MAX_STEP:  # Keras' iteration counter is an int64; TensorFlow refuses the rest
            raise ConversionError(f"{prefix_of(vmap)}: step {step} (from {origin}) is outside 0..{MAX_STEP}")
    if len({s for s, _, _ in steps}) != len(steps):
        raise ConversionError(f"{src}: several retained checkpoints have the same step; cannot name them ckpt-<step>")
    for vmap, (step, origin, notes) in zip(vmaps, steps, strict=True):
        report.checkpoints.append(CheckpointResult(prefix_of(vmap), step, origin))
        report.warnings += notes
        report.approximations += [n for n in notes if n.endswith(f"({APPROXIMATE})")]
    report.warnings += [note for note in (epoch_note(v) for v in vmaps[-1:]) if note is not None]


def _write_atomically(
    vmaps: list[VariableMap],
    plan: Plan,
    target: _Target,
    report: ConvertReport,
    out_path: Path,
    *,
    force: bool,
    protect: list[Path],
    members: Members,
) -> None:
    """Write every checkpoint beside OUT, verify it, then move it into place; outputs are reported under OUT.
    A full disk or any error TensorFlow/Keras raise while writing is one line, and OUT is left as it was."""
    try:
        with AtomicOutput(
            out_path, directory=(report.to == "tf2"), force=force, protect=protect, members=members
        ) as output:
            _write_all(vmaps, plan, target, report, output.path, report.to)
            output.commit()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ConversionError(f"{out_path}: {os_reason(exc)} while writing; OUT was not replaced") from exc
        text = " ".join(str(exc).split())
        full = next((m for m in _FULL_DISK if m in text), None)
        if exc.errno is None and full is not None:  # h5py's errors carry the C errno only in their text
            raise ConversionError(f"{out_path}: {full} while writing; OUT was not replaced") from exc
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith(("tensorflow", "keras", "h5py", "tf_keras")):
            raise
        text = " ".join(str(exc).split())
        reason = "no space left on device" if "No space left" in text else f"{type(exc).__name__}: {text[:300]}"
        raise ConversionError(f"{out_path}: writing failed ({reason}); OUT was not replaced") from exc
    report.written = True
    for result in report.checkpoints:
        if result.output is not None:
            result.output = result.output.replace(os.fspath(output.path), os.fspath(out_path))


def _open_sources(src: Path, all_checkpoints: bool, to: str) -> list[VariableMap]:
    if all_checkpoints:
        if to != "tf2":
            detail = "writes one checkpoint per retained step: use it with the tf2 target"
            raise UsageError(f"all_checkpoints=True: {detail}", argument="all_checkpoints", detail=detail)
        if not src.is_dir():
            detail = f"needs a checkpoint directory with a `checkpoint` state file, not {src}"
            raise UsageError(f"all_checkpoints=True: {detail}", argument="all_checkpoints", detail=detail)
        prefixes = state_prefixes(src)
        if not prefixes:
            raise UsageError(f"{src}: no `checkpoint` state file lists retained checkpoints")
    else:
        prefixes = [src]
    vmaps = []
    for prefix in prefixes:
        vmap = _open_source(prefix)
        vmap.close()  # file handles reopen when values are read: a run of 10,000 checkpoints holds none open
        vmaps.append(vmap)
    return vmaps


def _open_source(path: Path) -> VariableMap:
    """Open one source; other formats are refused after sniffing, before any reader parses them."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise UsageError(f"{path}: not a regular file or directory")
    fmt = detect(path)
    check_format(path, fmt)
    return cell_view(prepared(open_checkpoint(path, fmt)))  # TF1 RNN cells in Keras 3 layout (rnn.py)


# ---------------------------------------------------------------------------------------------- execution
@dataclass
class _Target:
    """The model convert writes, and whether convert built it from a factory: then nothing else holds it, and
    it is released once the .keras file is written, before Keras loads that file back (one model in memory)."""

    model: Any
    owned: bool
    progress: Callable[[str], None] = _silent

    def release(self) -> None:
        if self.owned:
            self.model = None
            gc.collect()  # Keras layers, trackers and optimizers reference each other


def _write_all(
    vmaps: list[VariableMap], plan: Plan, target: _Target, report: ConvertReport, tmp: Path, to: str
) -> None:
    if to == "keras":
        (vmap,) = vmaps  # all_checkpoints is refused for this target
        target.progress(f"writing {report.out}")
        expected, order = _save_keras(vmap, plan, target, report.checkpoints[0], tmp, report.weights_only)
        vmap.close()
        target.release()
        target.progress(f"verifying {report.out} (read back, and loaded with keras.models.load_model)")
        verify_keras(tmp, order, plan, expected, report.checkpoints[0])
        return
    slot_vars = _prepare(target.model, plan)
    for vmap, result in zip(vmaps, report.checkpoints, strict=True):
        target.progress(f"writing and verifying ckpt-{result.step} (step {result.step} of {prefix_of(vmap)})")
        model, expected = _load_into(target.model, vmap, plan, slot_vars, result, report.weights_only)
        _save_tf2(model, expected, plan, result, tmp, report.weights_only)
        vmap.close()
    _write_state_file(report, tmp)


def _prepare(keras_model: Any, plan: Plan) -> dict[tuple[str, str], Any]:
    """Build the optimizer's slots and remember each pair's slot variable paths; the slot variables by key."""
    optimizer = keras_model.optimizer
    if not optimizer.built:
        optimizer.build(keras_model.trainable_variables)
    slot_vars = target_slot_variables(keras_model, plan)
    for pair in plan.pairs:
        pair.slot_paths = {slot: slot_vars[(pair.target, slot)].path for slot in pair.slots}
    return slot_vars


def _load_into(
    keras_model: Any,
    vmap: VariableMap,
    plan: Plan,
    slot_vars: dict[tuple[str, str], Any],
    result: CheckpointResult,
    weights_only: bool,
) -> tuple[Any, Expected]:
    """The model to write, holding one source checkpoint, and what each of its variables must hold."""
    expected = load_state(vmap, plan, keras_model, slot_vars, result.step, weights_only)
    result.weights_only = weights_only
    if weights_only:  # no optimizer state at all: every reader then reports it absent
        return weights_only_copy(keras_model, expected)
    return keras_model, expected


def _save_keras(
    vmap: VariableMap, plan: Plan, target: _Target, result: CheckpointResult, tmp: Path, weights_only: bool
) -> tuple[Expected, list[str]]:
    """Write the .keras file; what each variable must hold and the model's variable paths in Keras' order."""
    slot_vars = _prepare(target.model, plan)
    model, expected = _load_into(target.model, vmap, plan, slot_vars, result, weights_only)
    with weights_through_disk():
        model.save(os.fspath(tmp))
    result.output = os.fspath(tmp)
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None else [])]
    return expected, [v.path for v in variables]


def _save_tf2(
    model: Any, expected: Expected, plan: Plan, result: CheckpointResult, tmp: Path, weights_only: bool
) -> None:
    """Write one TF2 checkpoint `ckpt-<step>` and verify it."""
    import tensorflow as tf

    prefix = tmp / f"ckpt-{result.step}"
    tracked = {"model": model} if weights_only else {"model": model, "optimizer": model.optimizer}
    checkpoint = tf.train.Checkpoint(**tracked)
    # CheckpointManager tracks save_counter; storing it (= the step) lets managers restore with
    # assert_existing_objects_matched() and number their next save after this step.
    checkpoint.save_counter.assign(result.step)
    checkpoint.write(os.fspath(prefix))
    result.output = os.fspath(prefix)
    verify_tf2(prefix, checkpoint, plan, expected, result)


def _write_state_file(report: ConvertReport, tmp: Path) -> None:
    """The `checkpoint` state file naming every written step, then a check that it reads back as the last."""
    names = [f"ckpt-{r.step}" for r in report.checkpoints]
    # Timestamps as tf.train.CheckpointManager writes them, so a manager adopts (and rotates) these too.
    now = time.time()
    lines = [
        f'model_checkpoint_path: "{names[-1]}"',
        *(f'all_model_checkpoint_paths: "{n}"' for n in names),
        *(f"all_model_checkpoint_timestamps: {now - len(names) + i + 1:.6f}" for i in range(len(names))),
        f"last_preserved_timestamp: {now - len(names) - 1:.6f}",
    ]
    (tmp / "checkpoint").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open_checkpoint(tmp) as latest:
        want = None if report.weights_only else report.checkpoints[-1].step
        if latest.format != "tf2-checkpoint" or latest.step != want:
            raise ConversionError(f"{report.out}: the written directory does not read back as the latest step")


def weights_only_copy(keras_model: Any, expected: Expected) -> tuple[Any, Expected]:
    """The model rebuilt from its config without compiling it (so it carries no optimizer), holding the
    converted weights; `expected` re-keyed to its variable paths. Refused for models that cannot be rebuilt."""
    try:
        copy = type(keras_model).from_config(keras_model.get_config())
        if len(copy.weights) != len(keras_model.weights):
            raise ValueError("the rebuilt model has other variables")
        for mine, theirs in zip(keras_model.weights, copy.weights, strict=True):
            theirs.assign(mine.value)  # one variable at a time: no second copy of every weight
    except Exception as exc:  # Keras raises many types for models without a usable get_config/from_config
        raise ConversionError(
            f"a weights-only output needs a model that can be rebuilt from its config ({type(exc).__name__}); "
            "without it the output would carry an unused optimizer that looks resumable"
        ) from exc
    paths = {a.path: b.path for a, b in zip(keras_model.weights, copy.weights, strict=True)}
    return copy, {paths[k]: v for k, v in expected.items() if k in paths}


def target_slot_variables(keras_model: Any, plan: Plan) -> dict[tuple[str, str], Any]:
    """(model variable path, Keras slot) -> the optimizer variable holding it."""
    optimizer = keras_model.optimizer
    out: dict[tuple[str, str], Any] = {}
    for slot in sl.target_slots(plan.target_class, plan.target_config):
        attr = sl.target_slot_attribute(plan.target_class, plan.target_config, slot)
        values = getattr(optimizer, attr, None)
        if values is None:
            raise ConversionError(
                f"{plan.target_class}: this Keras version keeps no {attr} list; convert supports Keras 3.15"
            )
        for variable in keras_model.trainable_variables:
            out[(variable.path, slot)] = values[optimizer._get_variable_index(variable)]
    return out


def load_state(
    vmap: VariableMap,
    plan: Plan,
    keras_model: Any,
    slot_vars: dict[tuple[str, str], Any],
    step: int,
    weights_only: bool,
) -> Expected:
    """Assign one source checkpoint to the model and optimizer; returns what every variable must now hold."""
    variables = {v.path: v for v in keras_model.weights}
    optimizer = keras_model.optimizer
    with Fingerprints() as expected:  # each tensor is dropped once assigned and digested
        for pair in plan.pairs:
            value = _read(vmap, pair.source, pair.shape, pair.dtype)
            variables[pair.target].assign(value)
            expected.add(pair.target, "weight", value)
        learning_rate = current_learning_rate(optimizer, step)
        expected.add(optimizer.iterations.path, "step", np.asarray(step, dtype=np.int64))
        if not weights_only:
            _load_slots(vmap, plan, slot_vars, learning_rate, expected)
        return expected.expected()


def _load_slots(
    vmap: VariableMap,
    plan: Plan,
    slot_vars: dict[tuple[str, str], Any],
    learning_rate: float,
    expected: Fingerprints,
) -> None:
    """Assign every translated slot of one source checkpoint to the optimizer's slot variables."""
    epsilon = float(plan.target_config.get("epsilon") or 0.0)
    rules = {r.target: r for r in plan.rules if r.target is not None}
    for pair in plan.pairs:
        for slot, key in pair.slots.items():
            value = sl.translate(
                rules[slot], _read(vmap, key, pair.shape, pair.dtype), learning_rate=learning_rate, epsilon=epsilon
            )
            target = slot_vars[(pair.target, slot)]
            target.assign(value)
            expected.add(target.path, "slot", value)


def _read(vmap: VariableMap, key: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if key not in vmap:
        raise ConversionError(f"{prefix_of(vmap)}: {key} is missing from this checkpoint")
    var = vmap[key]
    if tuple(var.shape) != shape or var.dtype != dtype:
        raise ConversionError(
            f"{prefix_of(vmap)}: {key} is {list(var.shape)} {var.dtype}, expected {list(shape)} {dtype}"
        )
    value = np.asarray(var.read())
    if value.shape != shape or value.dtype != numpy_dtype(dtype):
        raise ConversionError(f"{prefix_of(vmap)}: {key} read as {value.shape} {value.dtype}, declared {shape} {dtype}")
    return value
