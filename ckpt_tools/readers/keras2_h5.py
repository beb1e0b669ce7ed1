"""Legacy Keras-2 `.h5` reader (full model or weights-only): weights in layer order, optimizer slots tied by name."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from ckpt_tools.errors import CorruptCheckpointError, UnsafeInputError
from ckpt_tools.model import OptimizerInfo, Variable, VariableMap
from ckpt_tools.optimizers.catalogue import STEP_COUNTERS, Family
from ckpt_tools.optimizers.coverage import FLOAT_DTYPES, NON_TRAINABLE, summarize
from ckpt_tools.optimizers.lookup import keras2_slot, keras_family
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.readers.registry import Reader
from ckpt_tools.storage import as_path

FORMAT = "keras2-h5"
_SUFFIX = re.compile(r":\d+$")
_UNDERSCORE = re.compile("_")
# Keras 3's legacy .h5 names an optimizer variable `<weight path with "_">_<slot>`: only cuts leaving a slot name
# of at most this many characters are tried, so a name of long underscore runs costs linear, not quadratic, time.
MAX_SLOT_CHARS = 64


def _layout_reason(f: h5py.File) -> str | None:
    try:
        attrs = set(f.attrs.keys())
    except (OSError, UnicodeDecodeError, RuntimeError):
        attrs = set()
    if b"model_weights" in set(h5c.names(f)) or attrs & {"layer_names", "model_config"}:
        return None
    return "HDF5 without Keras 2 layout (no model_weights group or layer_names attribute)"


def sniff(path: Path) -> str | None:
    return h5c.sniff_hdf5(path, _layout_reason, corrupt_ok=path.suffix in (".h5", ".hdf5", ".keras"))


def _json_attr(obj: h5py.HLObject, name: str, warnings: list[str]) -> Any:
    """An attribute holding JSON, parsed within h5common's JSON limits; unreadable JSON is a warning (the weights
    are still readable), JSON that would expand past the value limit is refused."""
    text = h5c.attr_text(obj, name)
    if text is None:
        return None
    try:
        return h5c.parse_json(text, f"{obj.file.filename}: {name} attribute")
    except UnsafeInputError:
        raise
    except h5c.JsonError as exc:
        warnings.append(f"{name} attribute is not valid JSON ({exc.reason})")
        return None


def _strip(name: str) -> str:
    return _SUFFIX.sub("", name)


def _optimizer_name(training: Any) -> tuple[str | None, dict[str, Any], str | None]:
    """(class name, config, wrapper) from training_config's optimizer_config."""
    opt = training.get("optimizer_config") if isinstance(training, dict) else None
    if not isinstance(opt, dict) or not isinstance(opt.get("class_name"), str):
        return None, {}, None
    cls: str = opt["class_name"].split(">")[-1]
    cfg: dict[str, Any] = opt["config"] if isinstance(opt.get("config"), dict) else {}
    inner = cfg.get("inner_optimizer")
    if cls.startswith("LossScaleOptimizer") and isinstance(inner, dict) and isinstance(inner.get("class_name"), str):
        icfg: dict[str, Any] = inner["config"] if isinstance(inner.get("config"), dict) else {}
        return inner["class_name"].split(">")[-1], icfg, cls
    return cls, cfg, None


def _frozen_layers(model_config: Any) -> set[str]:
    cfg = model_config.get("config") if isinstance(model_config, dict) else None
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    out = set()
    for layer in layers if isinstance(layers, list) else []:
        lc = layer.get("config") if isinstance(layer, dict) else None
        if isinstance(lc, dict) and lc.get("trainable") is False and isinstance(lc.get("name"), str):
            out.add(lc["name"])
    return out


def _tie(
    path: str, shape: tuple[int, ...], weights: dict[str, tuple[int, ...]], flat: dict[str, str]
) -> tuple[str, str] | None:
    """(weight name, slot) for an optimizer variable path, trying the naming schemes Keras used over time."""
    found: list[tuple[str, str]] = []
    parts = path.split("/")
    for cut in range(1, len(parts)):
        tail = "/".join(parts[cut:])
        if tail in weights:  # tf_keras >= 2.11: [<Opt>/]<slot>/<weight>
            found.append((tail, parts[cut - 1]))
        head = "/".join(parts[cut - 1 : -1])
        if head in weights:  # Keras 2.2-2.10 and tf_keras legacy optimizers: [<Opt>/]<weight>/<slot>
            found.append((head, parts[-1]))
    if len(parts) >= 2:  # Keras 3 legacy .h5: <optimizer name>/<weight path with "_">_<slot>
        rest = "/".join(parts[1:])
        for cut in (m.start() for m in _UNDERSCORE.finditer(rest, max(0, len(rest) - MAX_SLOT_CHARS - 1))):
            if rest[:cut] in flat:
                found.append((flat[rest[:cut]], rest[cut + 1 :]))
    good = [t for t in found if weights[t[0]] == shape and t[1]]
    return max(good, key=lambda t: len(t[0])) if good else None


def open(path: Path) -> VariableMap:
    path = as_path(path)
    label = str(path)
    window = h5c.ByteWindow.whole(path)
    src = h5c.FileSource(h5c.path_opener(path), label, h5c.size_cap(window.length), window)
    warnings: list[str] = []
    found = _read_file(src, warnings)
    infos = found.infos
    weights, others = _weight_names(found)
    by_name = {n: infos[k].shape for k, n in weights.items()}
    variables: dict[str, Variable] = {}
    for key, name in weights.items():
        variables[key] = src.variable(infos[key], name, "weight")
    for key in others:
        variables[key] = src.variable(infos[key], key, "other")
    cls, cfg, wrapper = _optimizer_name(found.training)
    fam = keras_family(cls, cfg if cls else None)
    pool = _add_named_slots(src, variables, found, by_name, fam)
    frozen = _frozen_layers(found.model_config)
    candidates = [
        n
        for k, n in weights.items()
        if infos[k].dtype in FLOAT_DTYPES
        and not NON_TRAINABLE.search(n)
        and k[len(found.prefix) :].split("/")[0] not in frozen
    ]
    tied_now = {v.slot_of for v in variables.values() if v.slot_of}
    positional = _positional(pool, [n for n in candidates if n not in tied_now], by_name, fam)
    for info in pool:
        relname = _strip(info.key[len("optimizer_weights/") :])
        tie = positional.get(info.key)
        name = f"optimizer/{tie[0]}/{tie[1]}" if tie else f"optimizer/{relname}"
        variables[info.key] = src.variable(info, name, "optimizer", *(tie or (None, None)))
    present = bool(found.opt_keys)
    info_opt = _optimizer_info(variables, cls, cfg, present, candidates)
    step = _step(found.raw_step, cfg, found.meta)
    info_opt = _describe_configs(found, info_opt)
    meta = found.meta
    if wrapper:
        meta["optimizer_wrapper"] = wrapper
    meta["trainable_source"] = (
        "weights with optimizer slots, plus float weights that are not batch-norm "
        "statistics (heuristic)" + (", minus layers marked trainable=false" if frozen else "")
    )
    if positional:
        meta["slot_mapping"] = "positional (old Keras saved slots without weight names)"
    _add_warnings(meta, warnings, found.missing, present)
    step_key = found.step_info.key if found.step_info else None
    return VariableMap(path, FORMAT, variables, info_opt, step, step_key, metadata=meta, files=(path,))


@dataclass
class _File:
    """What one pass over the open file finds: datasets, the JSON attributes, weights in declared order, the step."""

    infos: dict[str, h5c.DatasetInfo]
    prefix: str  # "model_weights/" for a full model, "" for save_weights
    model_config: Any
    training: Any
    training_present: bool
    meta: dict[str, Any]
    ordered: list[tuple[str, str]]  # (dataset key, canonical name) as layer_names/weight_names declare them
    missing: list[str]  # layers named in layer_names that have no group
    opt_keys: list[str]  # optimizer datasets, in weight_names order
    step_info: h5c.DatasetInfo | None
    raw_step: int | None


def _read_file(src: h5c.FileSource, warnings: list[str]) -> _File:
    """Scan the file once: datasets, configs, the declared weight order, the optimizer's datasets and the step."""
    label, limit = src.label, src.limit
    with h5c.translate_errors(label), src.opener() as f:
        groups: list[str] = []
        infos = {i.key: i for i in h5c.scan(f, label, limit, groups)}
        full = h5c.subgroup(f, "model_weights", label) is not None
        prefix = "model_weights/" if full else ""
        wgroup = h5c.subgroup(f, "model_weights", label) if full else f
        model_config = _json_attr(f, "model_config", warnings)
        training = _json_attr(f, "training_config", warnings)
        training_present = h5c.attr_text(f, "training_config") is not None
        meta: dict[str, Any] = {"layout": "full-model" if full else "weights-only"}
        for key in ("keras_version", "backend"):
            meta[key] = h5c.attr_text(f, key) or (h5c.attr_text(wgroup, key) if wgroup is not None else None)
        ordered, missing = _declared_weights(wgroup, prefix, infos, set(groups), label)
        opt_keys = _optimizer_keys(f, infos, label)
        counters = [
            k
            for k in opt_keys
            if _strip(k).rsplit("/", 1)[-1] in STEP_COUNTERS and infos[k].shape in ((), (1,)) and k.count("/") <= 3
        ]
        step_info = infos[min(counters, key=lambda k: k.count("/"))] if counters else None
        raw_step = h5c.read_scalar_int(f, step_info, label, limit) if step_info else None
    return _File(
        infos, prefix, model_config, training, training_present, meta, ordered, missing, opt_keys, step_info, raw_step
    )


def _declared_weights(
    wgroup: h5py.Group | None, prefix: str, infos: dict[str, h5c.DatasetInfo], groups: set[str], label: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """(dataset key, canonical name) in the order layer_names and weight_names give, and the layers with no group.
    Each layer name is looked up once, in the set of groups the walk found (no HDF5 call for a missing one)."""
    ordered: list[tuple[str, str]] = []
    missing: list[str] = []
    declared = (h5c.attr_strings(wgroup, "layer_names") or []) if wgroup is not None else []
    for layer in dict.fromkeys(declared):
        present = bool(layer) and "/" not in layer and f"{prefix}{layer}" in groups
        group = h5c.subgroup(wgroup, layer, label) if present and wgroup is not None else None
        if group is None:
            missing.append(f"{prefix}{layer}")
        for wname in (h5c.attr_strings(group, "weight_names") or []) if group is not None else []:
            key = f"{prefix}{layer}/{wname}"
            if key not in infos:
                raise CorruptCheckpointError(f"{label}: weight {key} is named in weight_names but not stored")
            ordered.append((key, _strip(wname)))
    return ordered, missing


def _optimizer_keys(f: h5py.File, infos: dict[str, h5c.DatasetInfo], label: str) -> list[str]:
    """The optimizer's datasets: those optimizer_weights' weight_names lists first, in its order, then the rest."""
    ogroup = h5c.subgroup(f, "optimizer_weights", label)
    opt_names = (h5c.attr_strings(ogroup, "weight_names") if ogroup is not None else None) or []
    opt_keys = [k for k in infos if k.startswith("optimizer_weights/")]
    order = {f"optimizer_weights/{n}": i for i, n in enumerate(opt_names)}
    opt_keys.sort(key=lambda k: (order.get(k, len(order)), k))
    return opt_keys


def _weight_names(found: _File) -> tuple[dict[str, str], list[str]]:
    """Weights (key -> canonical name): declared order first, then anything else stored under the weights root;
    and the datasets outside it."""
    prefix = found.prefix
    names_seen: dict[str, int] = {}
    for _, name in found.ordered:
        names_seen[name] = names_seen.get(name, 0) + 1
    weights: dict[str, str] = {}
    for key, name in found.ordered:
        weights[key] = name if names_seen[name] == 1 else key[len(prefix) :]
    others = []
    for key in found.infos:
        if key in weights or key.startswith("optimizer_weights/"):
            continue
        if not key.startswith(prefix):
            others.append(key)
            continue
        rel = key[len(prefix) :].split("/")
        name = _strip("/".join(rel[1:] if len(rel) > 2 and rel[0] == rel[1] else rel))
        weights[key] = name if name not in names_seen else key[len(prefix) :]
    return weights, others


def _add_named_slots(
    src: h5c.FileSource,
    variables: dict[str, Variable],
    found: _File,
    by_name: dict[str, tuple[int, ...]],
    fam: Family | None,
) -> list[h5c.DatasetInfo]:
    """Add the step and every optimizer variable whose name ties it to a weight (or that is a scalar);
    returns the rest, for positional tying."""
    flat = {n.replace("/", "_"): n for n in by_name}
    pool: list[h5c.DatasetInfo] = []
    for key in found.opt_keys:
        info, relname = found.infos[key], _strip(key[len("optimizer_weights/") :])
        tie = _tie(relname, info.shape, by_name, flat) if info is not found.step_info else None
        if tie is not None:
            tie = (tie[0], keras2_slot(fam, tie[1]) or tie[1])
        if info is found.step_info:
            variables[key] = src.variable(info, "optimizer/iteration", "step")
        elif tie is not None:
            variables[key] = src.variable(info, f"optimizer/{tie[0]}/{tie[1]}", "optimizer", *tie)
        elif info.shape in ((), (1,)):
            variables[key] = src.variable(info, f"optimizer/{relname}", "optimizer")
        else:
            pool.append(info)
    return pool


def _optimizer_info(
    variables: dict[str, Variable], cls: str | None, cfg: dict[str, Any], present: bool, trainable: list[str]
) -> OptimizerInfo:
    """The optimizer summary: its display name, whether slots are expected, and the Keras 2 dialect."""
    slots_expected = None
    if cls == "SGD" and not any(v.slot_of for v in variables.values()):
        slots_expected = False if not cfg.get("momentum") else None
    display = cls
    if cls == "SGD" and (cfg.get("momentum") or (not cfg and any(v.slot_of for v in variables.values()))):
        display = "SGD(momentum)"
    elif cls == "Adam" and cfg.get("amsgrad"):
        display = "Adam(amsgrad)"
    info_opt = summarize(
        variables.values(), name=display, state_present=present, slots_expected=slots_expected, trainable=trainable
    )
    legacy = not (isinstance(cfg, dict) and cfg.get("is_legacy_optimizer") is False)
    return dataclasses.replace(info_opt, dialect="keras2-legacy" if legacy else "keras2")


def _step(raw_step: int | None, cfg: dict[str, Any], meta: dict[str, Any]) -> int | None:
    """The optimizer step from the iteration counter, corrected for gradient accumulation (noted in `meta`)."""
    step = raw_step
    gas = cfg.get("gradient_accumulation_steps") if isinstance(cfg, dict) else None
    if step is not None and isinstance(gas, int) and gas > 1:
        step //= gas
        meta["step_note"] = f"iteration counter {raw_step} divided by gradient_accumulation_steps={gas}"
    return step


def _describe_configs(found: _File, info_opt: OptimizerInfo) -> OptimizerInfo:
    """Record what model_config and training_config say (in the metadata and the optimizer summary)."""
    meta, model_config, training = found.meta, found.model_config, found.training
    if isinstance(model_config, dict):
        meta["model_class"] = model_config.get("class_name")
        mc = model_config.get("config")
        meta["model_name"] = mc.get("name") if isinstance(mc, dict) else None
    if isinstance(training, dict):
        meta["optimizer_config"] = training.get("optimizer_config")
        recorded = training.get("optimizer_config")
        if isinstance(recorded, dict):
            info_opt = dataclasses.replace(info_opt, recorded_config=recorded)
    elif found.training_present:
        problem = "the training_config attribute is not a readable JSON object, so the optimizer is unknown"
        info_opt = dataclasses.replace(info_opt, config_problem=problem)
    return info_opt


def _add_warnings(meta: dict[str, Any], warnings: list[str], missing: list[str], present: bool) -> None:
    """The closing metadata: warnings (layers with no group among them) and a note when no optimizer is stored."""
    if missing:
        warnings.append(f"{len(missing)} layers named in layer_names have no group: {missing[:5]}")
    if warnings:
        meta["warnings"] = warnings
    if not present:
        meta["optimizer_note"] = "no optimizer_weights stored (weights-only, uncompiled or include_optimizer=False)"


def _positional(
    pool: list[h5c.DatasetInfo], trainable: list[str], shapes: dict[str, tuple[int, ...]], fam: Family | None
) -> dict[str, tuple[str, str]]:
    """Tie unnamed slots saved in blocks (all first slots, then all second slots, ...) by shape; {} if no fit."""
    n = len(trainable)
    if not pool or not n or len(pool) % n:
        return {}
    names = fam.keras2_positional if fam is not None else ()
    out: dict[str, tuple[str, str]] = {}
    for b in range(len(pool) // n):
        block = pool[b * n : (b + 1) * n]
        if all(i.shape == shapes[w] for i, w in zip(block, trainable, strict=True)):
            slot = names[b] if b < len(names) else f"slot{b}"
            out.update({i.key: (w, slot) for i, w in zip(block, trainable, strict=True)})
        elif not all(i.shape == (1,) for i in block):  # Keras 2.2 Adam's vhat placeholders are shape (1,)
            return {}
    return out


def verify(vmap: VariableMap) -> str:
    return h5c.verify_file(vmap.path)


READER = Reader(FORMAT, sniff, open, verify, group="hdf5")
