"""Keras 3 `.weights.h5` reader: layer variables, the iteration counter, optimizer slots tied to their weights."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from ckpt_tools.errors import CorruptCheckpointError
from ckpt_tools.model import OptimizerInfo, Variable, VariableMap
from ckpt_tools.optimizers.catalogue import FORMAT_SPECIFIC, KERAS3_TRAILING, KERAS3_UNKNOWN_LAYOUTS
from ckpt_tools.optimizers.coverage import FLOAT_DTYPES, NON_TRAINABLE, summarize
from ckpt_tools.optimizers.lookup import (
    factored_slots,
    family_of_group,
    keras3_layout_family,
    snake_case,
    wrapper_groups,
)
from ckpt_tools.readers import h5common as h5c
from ckpt_tools.readers.registry import Reader
from ckpt_tools.storage import as_path

FORMAT = "keras-weights-h5"

Group = tuple[str, ...]


def natural_key(key: str) -> list[Any]:
    """Sort key that orders `vars/2` before `vars/10`."""
    return [(0, int(p), "") if p.isdecimal() else (1, 0, p) for p in key.split("/")]


def keras3_layout_reason(f: h5py.File) -> str | None:
    """None when the open HDF5 file looks like a Keras 3 weights file, else why not."""
    top = set(h5c.names(f))
    try:
        attrs = set(f.attrs.keys())
    except (OSError, UnicodeDecodeError, RuntimeError):
        attrs = set()
    if b"model_weights" in top or attrs & {"layer_names", "model_config"}:
        return "HDF5 with the Keras 2 layout"
    if b"vars" in top or b"layers" in top:
        return None
    return "HDF5 without Keras 3 layout (no top-level vars/layers group)"


def sniff(path: Path) -> str | None:
    return h5c.sniff_hdf5(path, keras3_layout_reason, corrupt_ok=path.name.endswith(".weights.h5"))


def open(path: Path) -> VariableMap:
    path = as_path(path)
    window = h5c.ByteWindow.whole(path)
    result = read_keras3(h5c.path_opener(path), str(path), h5c.size_cap(window.length), None, window)
    return result.to_map(path, FORMAT, metadata=result.metadata, files=(path,))


@dataclass
class Keras3Result:
    variables: dict[str, Variable]
    optimizer: OptimizerInfo
    step: int | None
    step_key: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_map(self, path: Path, fmt: str, **fields: Any) -> VariableMap:
        """The VariableMap of this weights file (`fields`: metadata, files, root)."""
        return VariableMap(path, fmt, self.variables, self.optimizer, self.step, self.step_key, **fields)


@dataclass
class _Weight:
    info: h5c.DatasetInfo
    name: str
    eligible: bool  # float and not in a layer the config marks non-trainable


@dataclass
class _Fit:
    ties: dict[int, tuple[int, str]]  # slot position -> (weight index, slot name)
    extras: dict[int, str]  # trailing optimizer variables that are not per-weight slots
    ordered: bool
    groups: tuple[Group, ...]


LayerIndex = dict[int, dict[Any, dict[str, Any]]]


def _config_layer(
    config: dict[str, Any] | None, chain: list[str], index: LayerIndex | None = None
) -> tuple[dict[str, Any] | None, bool]:
    """The config entry of the nested layer named by `chain`, and whether every level is trainable. `index`
    caches each layers list by name (the first layer of a name wins), so many weights cost one pass per list."""
    node: Any = config
    trainable = True
    index = {} if index is None else index
    for name in chain:
        layers = _cfg(node).get("layers")
        if not isinstance(layers, list):
            return None, trainable
        if id(layers) not in index:
            by_name: dict[Any, dict[str, Any]] = {}
            for lay in layers:
                if isinstance(lay, dict):
                    by_name.setdefault(_cfg(lay).get("name"), lay)
            index[id(layers)] = by_name
        node = index[id(layers)].get(name)
        if node is None:
            return None, trainable
        trainable = trainable and _cfg(node).get("trainable", True) is not False
    return node, trainable


def _cfg(node: Any) -> dict[str, Any]:
    cfg = node.get("config") if isinstance(node, dict) else None
    return cfg if isinstance(cfg, dict) else {}


CONVS = {f"{k}{d}D{t}" for k in ("Conv", "DepthwiseConv") for d in (1, 2, 3) for t in ("", "Transpose")}
LAYER_OF_SNAKE = {snake_case(c): c for c in (*CONVS, "Dense", "Embedding", "BatchNormalization", "LayerNormalization")}


def _var_names(layer: dict[str, Any] | None, group: str, infos: list[h5c.DatasetInfo]) -> list[str] | None:
    """Variable names of well-known layers (class from config, else from the Keras group name), checked
    against the stored shapes; None when anything is unusual (quantized, LoRA, unexpected counts)."""
    found = _layer_class(layer, group)
    if found is None or _unusual(found[1], infos):
        return None
    cls, cfg = found
    shapes = [i.shape for i in infos]
    if cls == "Dense" or cls in CONVS:
        return _kernel_names(cls, cfg, shapes)
    if cls == "Embedding":
        return ["embeddings"] if len(shapes) == 1 and len(shapes[0]) == 2 else None
    if cls in ("BatchNormalization", "LayerNormalization"):
        return _normalization_names(cls, cfg, shapes, layer is not None)
    return None


def _layer_class(layer: dict[str, Any] | None, group: str) -> tuple[Any, dict[str, Any]] | None:
    """A layer's class and config: from config.json, else from its group name (container children only)."""
    if layer is not None:
        return layer.get("class_name"), _cfg(layer)
    cls = LAYER_OF_SNAKE.get(re.sub(r"_\d+$", "", group.rsplit("/", 1)[-1]))
    if "/layers/" not in f"/{group}":  # only container children are named after their class
        return None
    return cls, {}


def _unusual(cfg: dict[str, Any], infos: list[h5c.DatasetInfo]) -> bool:
    """Quantized, LoRA or renorm layers, or non-float variables: their variables are not named here."""
    dtype = cfg.get("dtype")
    if cfg.get("quantization_config") or cfg.get("lora_rank") or cfg.get("renorm"):
        return True
    if isinstance(dtype, dict) and str(dtype.get("class_name", "")).startswith("Quantized"):
        return True
    return any(i.dtype not in FLOAT_DTYPES for i in infos)


def _kernel_names(cls: Any, cfg: dict[str, Any], shapes: list[tuple[int, ...]]) -> list[str] | None:
    """`kernel` (and `bias`) of a Dense or convolution layer whose stored shapes agree."""
    bias = ["bias"] if cfg.get("use_bias", len(shapes) == 2) else []
    names = ["kernel", *bias]
    if len(shapes) != len(names) or len(shapes[0]) < 2:
        return None
    k = shapes[0]
    out = k[-2] if str(cls).endswith("Transpose") else k[-2] * k[-1] if "Depthwise" in str(cls) else k[-1]
    if bias and shapes[1] != (out,):
        return None
    return names


def _normalization_names(
    cls: Any, cfg: dict[str, Any], shapes: list[tuple[int, ...]], from_config: bool
) -> list[str] | None:
    """`gamma`/`beta` (and the moving statistics) of a normalization layer whose stored shapes agree."""
    names = (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
    if cls == "BatchNormalization":
        names += ["moving_mean", "moving_variance"]
    if len(shapes) == len(names) and len(set(shapes)) == 1 and (from_config or len(names) >= 2):
        return names
    return None


def _optimizer_class(
    config: dict[str, Any] | None, group_name: str | None
) -> tuple[str | None, dict[str, Any] | None, str]:
    """(class name, optimizer config, where the name came from)."""
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    opt = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if isinstance(opt, dict) and isinstance(opt.get("class_name"), str):
        cls, cfg = opt["class_name"], _cfg(opt)
        inner = cfg.get("inner_optimizer")
        if cls == "LossScaleOptimizer" and isinstance(inner, dict) and isinstance(inner.get("class_name"), str):
            cls, cfg = inner["class_name"], _cfg(inner)
        return cls, cfg, "config.json compile_config"
    if isinstance(opt, str):
        fam = family_of_group(snake_case(opt))
        return (fam.keras3 if fam else opt), None, "config.json compile_config"
    fam = family_of_group(group_name) if group_name else None
    if fam is not None:
        return fam.keras3, None, f"optimizer group name {group_name!r}"
    return None, None, "guessed from slots per weight"


def _candidates(cls: str | None, cfg: dict[str, Any] | None) -> list[tuple[tuple[Group, ...], tuple[str, ...]]]:
    """Possible slot layouts for an optimizer class (from the catalogue); exactly one when its config is known."""
    fam = keras3_layout_family(cls, cfg)
    if fam is None:
        return []
    trailing = KERAS3_TRAILING.get(fam.name, ())
    return [(p + o, trailing) for p in _prefixes(cfg) for o in fam.groups_for(cfg)]


def _prefixes(cfg: dict[str, Any] | None) -> list[tuple[Group, ...]]:
    """Slot groups that EMA and gradient accumulation create before the optimizer's own."""
    return wrapper_groups(cfg)


def _match(shapes: list[tuple[int, ...]], weights: list[_Weight]) -> tuple[list[int] | None, bool]:
    """Weights for per-variable slot shapes: in model order if possible, else first unused weight of each shape."""
    pool = [i for i, w in enumerate(weights) if w.eligible]
    picked: list[int] = []
    pos = 0
    for shape in shapes:
        while pos < len(pool) and weights[pool[pos]].info.shape != shape:
            pos += 1
        if pos == len(pool):
            break
        picked.append(pool[pos])
        pos += 1
    if len(picked) == len(shapes):
        return picked, True
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in reversed(pool):
        by_shape.setdefault(weights[i].info.shape, []).append(i)
    picked = []
    for shape in shapes:
        if not by_shape.get(shape):
            return None, False
        picked.append(by_shape[shape].pop())
    return picked, False


def _fit(
    groups: tuple[Group, ...], trailing: tuple[str, ...], slots: list[h5c.DatasetInfo], weights: list[_Weight]
) -> _Fit | None:
    per = sum(len(g) for g in groups)
    count = len(slots) - len(trailing)
    if count < 0 or any(slots[count + k].shape != () for k in range(len(trailing))):
        return None
    extras = {count + k: name for k, name in enumerate(trailing)}
    if per == 0 or count == 0:
        return _Fit({}, extras, True, groups) if count == 0 else None
    if count % per:
        return None
    n = count // per
    per_var: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    offset = 0
    for group in groups:
        for i in range(n):
            per_var[i].extend((offset + i * len(group) + j, name) for j, name in enumerate(group))
        offset += n * len(group)
    shapes = []
    for entries in per_var:
        factored = factored_slots()
        plain = {slots[p].shape for p, name in entries if name not in factored}
        if len(plain) != 1:
            return None
        shape = plain.pop()
        if any(slots[p].shape != factored[name].shape_for(shape) for p, name in entries if name in factored):
            return None
        shapes.append(shape)
    picked, ordered = _match(shapes, weights)
    if picked is None:
        return None
    ties = {p: (picked[i], name) for i, entries in enumerate(per_var) for p, name in entries}
    return _Fit(ties, extras, ordered, groups)


def _choose(
    cls: str | None, cfg: dict[str, Any] | None, slots: list[h5c.DatasetInfo], weights: list[_Weight]
) -> _Fit | None:
    candidates = _candidates(cls, cfg)
    fits = [f for f in (_fit(g, t, slots, weights) for g, t in candidates) if f is not None]
    if not fits and slots:
        fits = [f for f in (_fit(g, t, slots, weights) for g, t in KERAS3_UNKNOWN_LAYOUTS) if f is not None]
    ordered = [f for f in fits if f.ordered]
    best = ordered or fits
    return best[0] if best else None


def read_keras3(
    opener: h5c.Opener,
    label: str,
    limit: int,
    config: dict[str, Any] | None,
    window: h5c.ByteWindow | None = None,
) -> Keras3Result:
    """Build the variable list of a Keras 3 weights file (opened by `opener`, its bytes in `window` when known:
    contiguous tensors are then read from it directly); `config` is config.json if known."""
    src = h5c.FileSource(opener, label, limit, window)
    found = _scan_file(src, config)
    weights, step_info = found.weights, found.step_info
    variables: dict[str, Variable] = {}
    for w in weights:
        variables[w.info.key] = src.variable(w.info, w.name, "weight")
    cls, cfg, source = _optimizer_class(config, found.opt_group_name)
    metadata: dict[str, Any] = {"layout": "keras3"}
    if found.main != "optimizer":
        metadata["optimizer_wrapper"] = "LossScaleOptimizer"
    lr_info, slots = _split_main_vars(found)
    fit = _choose(cls, cfg, slots, weights) if found.opt_infos else None
    if step_info is not None:
        variables[step_info.key] = src.variable(step_info, "optimizer/iteration", "step")
    if lr_info is not None:
        lr = src.variable(lr_info, "optimizer/learning_rate", "optimizer")
        variables[lr_info.key] = dataclasses.replace(lr, format_specific=FORMAT_SPECIFIC["learning_rate"])
    unmapped = _add_slots(src, variables, slots, fit, weights)
    _add_other_optimizer_variables(src, variables, found)
    tied = [weights[w].name for w, _ in sorted(fit.ties.values())] if fit and fit.ties else []
    trainable = (
        list(dict.fromkeys(tied))
        if tied
        else [w.name for w in weights if w.eligible and not NON_TRAINABLE.search(w.name)]
    )
    info_opt = _optimizer_info(variables, cls, cfg, fit, bool(found.opt_infos), trainable)
    step = _step(found.raw_step, cfg, fit, metadata)
    if found.opt_infos:
        metadata.update(
            {
                "optimizer_name_source": source,
                "optimizer_group_name": found.opt_group_name,
                "slot_mapping": "config" if cfg is not None else "inferred",
                "slot_layout": [list(g) for g in fit.groups] if fit else None,
                "slot_order": "model order" if fit is None or fit.ordered else "matched by shape",
                "unmapped_optimizer_variables": unmapped,
            }
        )
    metadata["trainable_source"] = "weights with optimizer slots" if tied else "float weights (heuristic)"
    if not found.opt_infos:
        metadata["optimizer_note"] = "no optimizer variables stored (uncompiled model or weights-only save)"
    return Keras3Result(variables, info_opt, step, step_info.key if step_info else None, metadata)


@dataclass
class _Scan:
    """What one pass over the open file finds: datasets, the optimizer's variables and the stored step."""

    infos: list[h5c.DatasetInfo]
    opt_infos: list[h5c.DatasetInfo]
    main: str  # the group of the optimizer that owns the slots (inner optimizer of a LossScaleOptimizer)
    main_vars: list[h5c.DatasetInfo]  # `<main>/vars/<n>` in index order
    opt_group_name: str | None
    weights: list[_Weight]
    step_info: h5c.DatasetInfo | None
    raw_step: int | None


def _scan_file(src: h5c.FileSource, config: dict[str, Any] | None) -> _Scan:
    """Scan the file once: every dataset, the model weights, the optimizer's variables and the step's value."""
    label, limit = src.label, src.limit
    names_cache: dict[str, str | None] = {}
    groups: list[str] = []
    with h5c.translate_errors(label), src.opener() as f:
        infos = h5c.scan(f, label, limit, groups)
        _refuse_variable_groups(groups, label)

        def group_name(path: str) -> str | None:
            if path not in names_cache:
                g = h5c.subgroup(f, f"{path}/vars" if path else "vars", label)
                names_cache[path] = h5c.attr_text(g, "name") if g is not None else None
            return names_cache[path]

        opt_infos = [i for i in infos if i.key.startswith("optimizer/")]
        main = (
            "optimizer/inner_optimizer"
            if any(i.key.startswith("optimizer/inner_optimizer/vars/") for i in opt_infos)
            else "optimizer"
        )
        main_vars = _main_variables(opt_infos, main)
        opt_group_name = group_name(main) if opt_infos else None
        weights = _weights([i for i in infos if not i.key.startswith("optimizer/")], config, group_name)
        step_info = (
            main_vars[0]
            if main_vars and main_vars[0].shape == () and main_vars[0].dtype.startswith(("int", "uint"))
            else None
        )
        raw_step = h5c.read_scalar_int(f, step_info, label, limit) if step_info else None
    return _Scan(infos, opt_infos, main, main_vars, opt_group_name, weights, step_info, raw_step)


def _refuse_variable_groups(groups: list[str], label: str) -> None:
    """Keras writes numbered variables as datasets; a group there means damage."""
    for group in groups:
        if group.split("/")[-2:-1] == ["vars"] and group.rsplit("/", 1)[-1].isdecimal():
            raise CorruptCheckpointError(f"{label}: {group} is a group where Keras stores a variable dataset")


def _main_variables(opt_infos: list[h5c.DatasetInfo], main: str) -> list[h5c.DatasetInfo]:
    """The datasets `<main>/vars/<n>`, ordered by n."""
    numbered = sorted(
        (
            (int(i.key.rsplit("/", 1)[1]), i)
            for i in opt_infos
            if i.key.rsplit("/", 1)[0] == f"{main}/vars" and i.key.rsplit("/", 1)[1].isdecimal()
        ),
        key=lambda t: t[0],
    )
    return [i for _, i in numbered]


def _split_main_vars(found: _Scan) -> tuple[h5c.DatasetInfo | None, list[h5c.DatasetInfo]]:
    """The learning-rate variable (a scalar after the step), and the slot variables after them."""
    rest = list(found.main_vars)
    lr_info = None
    if found.step_info is not None:
        rest = rest[1:]
        if rest and rest[0].shape == ():
            lr_info, rest = rest[0], rest[1:]
    return lr_info, rest


def _add_slots(
    src: h5c.FileSource,
    variables: dict[str, Variable],
    slots: list[h5c.DatasetInfo],
    fit: _Fit | None,
    weights: list[_Weight],
) -> list[str]:
    """Add the slot variables, tied to their weights where the layout fits; returns the keys left unmapped."""
    used = {v.name for v in variables.values()}
    unmapped = []
    for pos, info in enumerate(slots):
        if fit and pos in fit.ties:
            widx, slot = fit.ties[pos]
            name = f"optimizer/{weights[widx].name}/{slot}"
            var = src.variable(info, name, "optimizer", weights[widx].name, slot)
            if name in used:
                var = src.variable(info, f"{name}_{pos}", "optimizer", weights[widx].name, slot)
        else:
            extra = fit.extras.get(pos) if fit else None
            if extra is None:
                unmapped.append(info.key)
            var = src.variable(info, f"optimizer/{extra}" if extra else info.key, "optimizer")
        used.add(var.name)
        variables[info.key] = var
    return unmapped


_LOSS_SCALE_VARS = ("iteration", "learning_rate", "step_counter", "dynamic_scale")


def _add_other_optimizer_variables(src: h5c.FileSource, variables: dict[str, Variable], found: _Scan) -> None:
    """Add the optimizer variables not placed yet (a LossScaleOptimizer's own ones are named after their role)."""
    outer = _LOSS_SCALE_VARS
    for info in sorted(found.opt_infos, key=lambda i: natural_key(i.key)):
        if info.key not in variables:
            idx = info.key.rsplit("/", 1)[1]
            name = info.key
            if found.main != "optimizer" and info.key.startswith("optimizer/vars/") and idx.isdecimal():
                name = f"optimizer/loss_scale/{outer[int(idx)] if int(idx) < 4 else idx}"
            variables[info.key] = src.variable(info, name, "optimizer")


def _optimizer_info(
    variables: dict[str, Variable],
    cls: str | None,
    cfg: dict[str, Any] | None,
    fit: _Fit | None,
    present: bool,
    trainable: list[str],
) -> OptimizerInfo:
    """The optimizer summary: its display name, and whether slots are expected for the layout found."""
    slots_expected = None if fit is None else bool(fit.groups) and not (cls == "SGD" and not fit.ties and not cfg)
    display = cls
    if cls == "SGD" and fit is not None and ("momentum",) in fit.groups and (fit.ties or cfg):
        display = "SGD(momentum)"
    elif cls == "Adam" and fit is not None and ("velocity_hat",) in fit.groups:
        display = "Adam(amsgrad)"
    info_opt = summarize(
        variables.values(),
        name=display,
        state_present=present,
        slots_expected=slots_expected,
        trainable=trainable,
    )
    return dataclasses.replace(info_opt, dialect="keras3")


def _step(raw_step: int | None, cfg: dict[str, Any] | None, fit: _Fit | None, metadata: dict[str, Any]) -> int | None:
    """The optimizer step from the iteration counter, corrected for gradient accumulation (noted in metadata)."""
    step = raw_step
    gas = (cfg or {}).get("gradient_accumulation_steps")
    if step is not None and isinstance(gas, int) and gas > 1:
        step //= gas
        metadata["step_note"] = f"iteration counter {raw_step} divided by gradient_accumulation_steps={gas}"
    elif fit is not None and ("gradient_accumulator",) in fit.groups and cfg is None:
        step = None  # the counter counts micro-batches and the accumulation factor is not stored
        metadata["step_note"] = (
            f"gradient accumulation is on: the counter ({raw_step}) counts micro-batches and "
            "gradient_accumulation_steps is not stored, so the optimizer step is unknown"
        )
    return step


def _weights(infos: list[h5c.DatasetInfo], config: dict[str, Any] | None, group_name: Any) -> list[_Weight]:
    """Model variables in creation order with canonical names `<layer names>/<var name or index>`."""
    out = []
    per_group: dict[str, list[h5c.DatasetInfo]] = {}
    names_of: dict[str, list[str] | None] = {}
    layer_index: LayerIndex = {}
    for info in sorted(infos, key=lambda i: natural_key(i.key)):
        per_group.setdefault(info.key.rsplit("/", 1)[0], []).append(info)
    for info in sorted(infos, key=lambda i: i.address):
        parts = info.key.split("/")
        if len(parts) >= 2 and parts[-2] == "vars":
            gparts, index = parts[:-2], parts[-1]
            chain = [n for j in range(1, len(gparts) + 1) if (n := group_name("/".join(gparts[:j])))]
            layer, trainable = _config_layer(config, chain, layer_index) if config and gparts else (None, True)
            gkey = info.key.rsplit("/", 1)[0]
            if gkey not in names_of:
                group = per_group[gkey]
                indices_ok = [i.key.rsplit("/", 1)[1] for i in group] == [str(n) for n in range(len(group))]
                names_of[gkey] = _var_names(layer, "/".join(gparts), group) if gparts and indices_ok else None
            var_names = names_of[gkey]
            var = var_names[int(index)] if var_names and index.isdecimal() and int(index) < len(var_names) else index
            if not gparts:
                chain = [group_name("") or "model"]
            name = "/".join([*chain, var]) if chain else "/".join([*gparts, var])
        else:
            name, trainable = info.key, True
        out.append(_Weight(info, name, trainable and info.dtype in FLOAT_DTYPES))
    seen: dict[str, int] = {}
    for w in out:
        seen[w.name] = seen.get(w.name, 0) + 1
    for w in out:
        if seen[w.name] > 1:
            w.name = w.info.key.replace("/vars/", "/")
    return out


def verify(vmap: VariableMap) -> str:
    return h5c.verify_file(vmap.path)


READER = Reader(FORMAT, sniff, open, verify, group="hdf5")
