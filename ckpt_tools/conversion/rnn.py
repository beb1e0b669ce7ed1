"""Layer translations: TF1 LSTMCell/BasicLSTMCell/GRUCell weights (and their slots) in Keras 3 LSTM/GRU layout.

TF1 cells multiply `concat([inputs, h])` by one fused kernel; Keras 3 keeps an input `kernel` and a
`recurrent_kernel`. Gate orders: TF1 LSTM (i, j, f, o), Keras LSTM (i, f, c, o) with c = j; TF1 GRU
`gates` (r, u) plus `candidate`, Keras GRU (z, r, h) with z = u. TF1 adds `forget_bias` (a Python float, in
the graph, never in the checkpoint) to the f gate at run time, Keras 3 adds nothing: it is folded into the
bias, read from the `.meta` graph or refused. The folding changes no gradient, so slots take the same
split and permutation, unfolded. Convert sees the source through `cell_view`: the checkpoint's variables
with each recognized cell replaced by its Keras 3-layout tensors (read lazily, translated on read).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.conversion.rnn_graph import CellGraph, cell_graph
from ckpt_tools.errors import ConversionError
from ckpt_tools.model import Variable, VariableMap

LSTM_SCOPE = re.compile(r"^(?P<scope>(?:.*/)?(?:basic_)?lstm_cell(?:_\d+)?)/kernel$")
GRU_SCOPE = re.compile(r"^(?P<scope>(?:.*/)?gru_cell(?:_\d+)?)/gates/kernel$")
PEEPHOLES = ("w_f_diag", "w_i_diag", "w_o_diag")
OPAQUE = re.compile(r"(^|/)(cudnn[^/]*|opaque_kernel|opaque_params)(/|$)", re.IGNORECASE)
LSTM_ORDER = (0, 2, 1, 3)  # Keras block k (i, f, c, o) takes TF1 block LSTM_ORDER[k] of (i, j, f, o)
GRU_ORDER = (1, 0)  # Keras z, r take TF1 gates block u (1), r (0)
KERAS_CELLS = {"lstm": "LSTMCell", "gru": "GRUCell"}
WANTED_CONFIG: dict[str, dict[str, Any]] = {
    "lstm": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True},
    "gru": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "reset_after": False},
}

Array = np.ndarray
Piece = Callable[[Sequence[Array], bool], Array]  # (source tensors, is a weight: fold forget_bias) -> value


@dataclass(frozen=True)
class Translated(Variable):
    """A model variable (or slot) in Keras 3 layout, computed from the checkpoint keys `origins`."""

    origins: tuple[str, ...] = ()
    cell: str = ""  # the TF1 cell scope it belongs to
    kind: str = ""  # "lstm" or "gru"
    notes: tuple[str, ...] = ()  # the cell's approximations


@dataclass(frozen=True)
class Cell:
    """One recognized TF1 cell: its scope, kind, sizes and (LSTM) the forget bias the graph adds."""

    scope: str
    kind: str
    inputs: int
    units: int
    forget_bias: float | None = None
    renamed: str = ""  # the scope its Keras 3-layout variables take (the Keras cell's name in place of TF1's)
    notes: tuple[str, ...] = ()  # why Keras 3 may not continue the same run (approximations)

    def targets(self) -> dict[str, tuple[tuple[str, ...], Piece]]:
        """Keras 3 weight name -> (TF1 weight names it is built from, how)."""
        n, u = self.inputs, self.units
        if self.kind == "lstm":
            fold = float(self.forget_bias or 0.0)
            return {
                "kernel": (("kernel",), lambda a, _w: _blocks(a[0][:n], 4, LSTM_ORDER)),
                "recurrent_kernel": (("kernel",), lambda a, _w: _blocks(a[0][n:], 4, LSTM_ORDER)),
                "bias": (("bias",), lambda a, w: _fold(_blocks(a[0], 4, LSTM_ORDER), u, fold if w else 0.0)),
            }
        return {
            "kernel": (("gates/kernel", "candidate/kernel"), lambda a, _w: _gru(a[0][:n], a[1][:n])),
            "recurrent_kernel": (("gates/kernel", "candidate/kernel"), lambda a, _w: _gru(a[0][n:], a[1][n:])),
            "bias": (("gates/bias", "candidate/bias"), lambda a, _w: _gru(a[0], a[1])),
        }


def _blocks(value: Array, count: int, order: Sequence[int]) -> Array:
    """The last axis cut into `count` equal blocks, put in `order`."""
    parts = np.split(value, count, axis=-1)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=-1))


def _fold(bias: Array, units: int, forget_bias: float) -> Array:
    """Keras' bias with TF1's run-time forget bias added to the f block (the second)."""
    if forget_bias:
        bias = bias.copy()
        bias[units : 2 * units] += np.asarray(forget_bias, dtype=bias.dtype)
    return bias


def _gru(gates: Array, candidate: Array) -> Array:
    """Keras' (z, r, h) blocks from TF1's gates (r, u) and candidate."""
    return np.ascontiguousarray(np.concatenate([_blocks(gates, 2, GRU_ORDER), candidate], axis=-1))


# ---------------------------------------------------------------------------------------------- the view
def cell_view(vmap: VariableMap) -> VariableMap:
    """`vmap` with every recognized TF1 cell in Keras 3 layout; refuses the cells convert cannot translate."""
    if vmap.format != "tf1-checkpoint":
        return vmap
    _refuse_by_name(vmap)
    cells = _cells(vmap)
    if not cells:
        return vmap
    graph = _graph(vmap)
    cells = _renamed([_with_forget_bias(vmap, cell, graph) for cell in cells], vmap)
    variables = dict(vmap.variables)
    for cell in cells:
        _translate(vmap, cell, variables)
    return replace(vmap, variables=variables)


def _refuse_by_name(vmap: VariableMap) -> None:
    for key in vmap:
        last = key.rpartition("/")[2]
        if last in PEEPHOLES and vmap[key].role == "weight":
            raise ConversionError(f"{key}: an LSTM cell with peepholes (use_peepholes=True); Keras 3 LSTM has none")
        if key.endswith("/projection/kernel") and vmap[key].role == "weight":
            raise ConversionError(f"{key}: an LSTM cell with a projection (num_proj); Keras 3 LSTM has none")
        if OPAQUE.search(key):
            raise ConversionError(f"{key}: cuDNN opaque RNN parameters; convert translates only TF1 rnn_cell weights")


def _cells(vmap: VariableMap) -> list[Cell]:
    """The LSTM and GRU cells whose weights have the TF1 shapes (others are left to name matching)."""
    out = []
    for key, var in vmap.variables.items():
        if var.role != "weight":
            continue
        lstm, gru = LSTM_SCOPE.match(key), GRU_SCOPE.match(key)
        if lstm and len(var.shape) == 2 and var.shape[1] % 4 == 0:
            scope, units = lstm["scope"], var.shape[1] // 4
            bias = vmap.get(f"{scope}/bias")
            keras_layout = f"{scope}/recurrent_kernel" in vmap  # a tf_keras LSTM layer: nothing to translate
            if bias is not None and tuple(bias.shape) == (4 * units,) and var.shape[0] > units and not keras_layout:
                out.append(Cell(scope, "lstm", var.shape[0] - units, units))
        elif gru and len(var.shape) == 2 and var.shape[1] % 2 == 0:
            scope, units = gru["scope"], var.shape[1] // 2
            shapes = {
                f"{scope}/gates/bias": (2 * units,),
                f"{scope}/candidate/kernel": (var.shape[0], units),
                f"{scope}/candidate/bias": (units,),
            }
            if var.shape[0] > units and all(k in vmap and tuple(vmap[k].shape) == s for k, s in shapes.items()):
                out.append(Cell(scope, "gru", var.shape[0] - units, units))
    return out


def _renamed(cells: list[Cell], vmap: VariableMap) -> list[Cell]:
    """Each cell's scope with the Keras cell name last (`rnn/basic_lstm_cell` -> `rnn/lstm_cell`), so names
    match a Keras 3 layer's `lstm/lstm_cell/kernel`; kept as it is where that would collide."""
    wanted = {c.scope: f"{c.scope.rpartition('/')[0]}/{c.kind}_cell".lstrip("/") for c in cells}
    taken = list(wanted.values())
    out = []
    for cell in cells:
        name = wanted[cell.scope]
        clash = taken.count(name) > 1 or (name != cell.scope and any(k.startswith(f"{name}/") for k in vmap))
        out.append(replace(cell, renamed=cell.scope if clash else name))
    return out


def _graph(vmap: VariableMap) -> CellGraph | None:
    """What the `.meta` graph beside the checkpoint says about its cells (None: no readable graph)."""
    if vmap.prefix is None:
        return None
    return cell_graph(Path(vmap.prefix))


def _with_forget_bias(vmap: VariableMap, cell: Cell, graph: CellGraph | None) -> Cell:
    """The cell with the forget bias its graph adds (LSTM); refused when the graph does not show one value."""
    if graph is not None:
        problem = graph.problem(cell.scope, cell.kind)
        if problem is not None:
            raise ConversionError(f"{cell.scope}: {problem}")
    if graph is not None and graph.sequence_length(cell.scope):
        cell = replace(cell, notes=(_SEQUENCE_LENGTH.format(cell.scope),))
    if cell.kind != "lstm":
        return cell
    values = graph.forget_biases(cell.scope) if graph is not None else []
    if len(values) == 1:
        return replace(cell, forget_bias=values[0])
    where = f"{Path(str(vmap.prefix)).name}.meta" if vmap.prefix is not None else "the graph"
    found = (
        f"{where} adds several constants to its forget gates ({', '.join(map(repr, values))})"
        if values
        else f"{'no ' + where + ' shows' if graph is None else where + ' does not show'} the constant added to its "
        "forget gate"
    )
    raise ConversionError(
        f"{cell.scope}: the LSTM's forget_bias is not stored in the checkpoint and {found}; convert does not "
        "guess it (the .meta graph tf.compat.v1.train.Saver writes beside the checkpoint carries it)"
    )


_SEQUENCE_LENGTH = (
    "{} runs under dynamic_rnn with sequence_length: TF1 stops each sequence at its length (zero outputs, the "
    "state carried through), and whether the factory's model masks the same steps is not checked"
)


def _translate(vmap: VariableMap, cell: Cell, variables: dict[str, Variable]) -> None:
    """Replace the cell's TF1 weights and their slots in `variables` by the Keras 3-layout ones."""
    slots = _slots_by_weight(vmap)
    removed: set[str] = set()
    for name, (parts, piece) in cell.targets().items():
        sources = [f"{cell.scope}/{p}" for p in parts]
        first = vmap[sources[0]]
        removed.update(sources)
        key = f"{cell.renamed or cell.scope}/{name}"
        value = _lazy(vmap, sources, piece, True)
        shape = value_shape(cell, name)
        variables[key] = Translated(
            key, key, shape, first.dtype, "weight", loader=value, origins=tuple(sources), cell=cell.scope,
            kind=cell.kind, notes=cell.notes,
        )  # fmt: skip
        per = [slots.get(s, {}) for s in sources]
        for slot in sorted(set.intersection(*(set(p) for p in per))):
            keys = [p[slot].key for p in per]
            removed.update(keys)
            suffix = keys[0].removeprefix(sources[0] + "/")
            slot_key = f"{key}/{suffix}"
            variables[slot_key] = Translated(
                slot_key,
                slot_key,
                shape,
                vmap[keys[0]].dtype,
                "optimizer",
                slot_of=key,
                slot=slot,
                loader=_lazy(vmap, keys, piece, False),
                origins=tuple(keys),
                cell=cell.scope,
                kind=cell.kind,
            )
    for key in removed - {k for k, v in variables.items() if isinstance(v, Translated)}:
        variables.pop(key, None)


def value_shape(cell: Cell, name: str) -> tuple[int, ...]:
    """The Keras 3 shape of one of the cell's weights."""
    gates = 4 if cell.kind == "lstm" else 3
    rows = {"kernel": cell.inputs, "recurrent_kernel": cell.units}
    return (rows[name], gates * cell.units) if name in rows else (gates * cell.units,)


def _slots_by_weight(vmap: VariableMap) -> dict[str, dict[str, Variable]]:
    """Weight key -> canonical slot -> slot variable."""
    keys = {v.name: v.key for v in vmap.values()}
    out: dict[str, dict[str, Variable]] = {}
    for var in vmap.values():
        if var.role == "optimizer" and var.slot_of is not None and var.slot is not None:
            out.setdefault(keys.get(var.slot_of, var.slot_of), {})[var.slot] = var
    return out


def _lazy(vmap: VariableMap, keys: list[str], piece: Piece, weight: bool) -> Callable[[], Array]:
    def read() -> Array:
        return piece([np.asarray(vmap[k].read()) for k in keys], weight)

    return read


# ---------------------------------------------------------------------------------------------- planning
def origins(vmap: Mapping[str, Variable], key: str) -> tuple[str, ...]:
    """The checkpoint keys a (possibly translated) source variable is computed from."""
    var = vmap.get(key)
    return var.origins if isinstance(var, Translated) else (key,)


def translated_from(vmap: Mapping[str, Variable], key: str) -> list[str] | None:
    """The checkpoint keys a translated variable is computed from; None for a stored one."""
    var = vmap.get(key)
    return list(var.origins) if isinstance(var, Translated) else None


def model_problems(vmap: Mapping[str, Variable], keras_model: Any, pairs: Sequence[Any]) -> list[str]:
    """Translated cells whose Keras 3 layer would compute something else (another cell or settings)."""
    cells = _keras_cells(keras_model)
    out = []
    for pair in pairs:
        var = vmap.get(pair.source)
        if not isinstance(var, Translated) or var.role != "weight":
            continue
        found = cells.get(pair.target)
        want = KERAS_CELLS[var.kind]
        if found is None or type(found).__name__ != want:
            out.append(f"{var.cell} (a TF1 {var.kind.upper()} cell) goes to {pair.target}, which is not in an {want}")
            continue
        config = found.get_config()
        wrong = [f"{k}={config.get(k)!r}" for k, v in WANTED_CONFIG[var.kind].items() if config.get(k) != v]
        if wrong:
            wanted = ", ".join(f"{k}={v!r}" for k, v in WANTED_CONFIG[var.kind].items())
            out.append(f"{pair.target}: the factory's {want} has {', '.join(wrong)}; the TF1 cell computes {wanted}")
    return list(dict.fromkeys(out))


def _keras_cells(keras_model: Any) -> dict[str, Any]:
    """Variable path -> the Keras 3 recurrent cell owning it."""
    out: dict[str, Any] = {}
    for layer in keras_model._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ in KERAS_CELLS.values():
            out.update((v.path, layer) for v in layer.weights)
    return out


def approximations(vmap: Mapping[str, Variable], hyper: Mapping[str, Any]) -> list[str]:
    """Why a translated cell would train differently: a per-tensor gradient clip sees other tensors."""
    translated = sorted({v.cell for v in vmap.values() if isinstance(v, Translated)})
    out = list(dict.fromkeys(n for v in vmap.values() if isinstance(v, Translated) for n in v.notes))
    if translated and hyper.get("clipnorm") not in (None, 0, 0.0):
        out += [
            f"the source clips each gradient by its norm over the fused TF1 kernel of {', '.join(translated)}; "
            "Keras 3's clipnorm clips kernel and recurrent_kernel separately"
        ]
    return out
