"""What a TF1 training graph shows its run did that the converted Keras 3 run would not (approximations)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ckpt_tools.messages import listed
from ckpt_tools.model import VariableMap
from ckpt_tools.optimizers.catalogue import SPARSE_ROWS_ONLY
from ckpt_tools.optimizers.gradients import CLIP_OPTIONS
from ckpt_tools.optimizers.graph_evidence import GraphEvidence, OpUse
from ckpt_tools.optimizers.translation import adam_steps_from_power

LISTED = 3


def graph_reasons(
    evidence: GraphEvidence, vmap: VariableMap, trained: Iterable[tuple[str, bool]], unused: Iterable[str]
) -> list[str]:
    """`trained`: (source key, whether the factory trains it) per matched variable; `unused`: source names
    the conversion leaves behind."""
    uses = evidence.uses
    out = _sparse(evidence, vmap)
    out += _gradients(uses, vmap)
    out += _per_variable_hyper(uses)
    out += _coverage(evidence, vmap, list(trained))
    out += _left_behind(evidence, vmap, set(unused))
    if evidence.batch_norms:
        out.append(
            f"batch normalization trained by {listed(evidence.batch_norms, LISTED)} (fused, training mode): TF "
            "updates the moving variance with the n/(n-1)-corrected batch variance, Keras 3 with the uncorrected one"
        )
    if evidence.stale:
        out.append(
            f"batch-norm statistics {listed(evidence.stale, LISTED)} are never updated by the source's training "
            "step (its UPDATE_OPS are not run), Keras 3 updates them in every training call"
        )
    if evidence.hidden:
        out.append(
            f"training ops inside graph functions ({listed(evidence.hidden, LISTED)}, e.g. a tf.cond) are not "
            "analysed: whether Keras 3 reproduces them is unknown"
        )
    return out


def _sparse(evidence: GraphEvidence, vmap: VariableMap) -> list[str]:
    out = []
    sparse = [u for u in evidence.uses if u.sparse]
    for op in dict.fromkeys(u.op for u in sparse):
        users = [u for u in sparse if u.op == op]
        names = listed([u.variable for u in users], LISTED)
        if users[0].family.name in SPARSE_ROWS_ONLY:
            out.append(
                f"sparse updates ({op} on {names}): TF1 updates only the rows in each batch (the others' state "
                "does not decay), Keras 3 applies the update to every row"
            )
        else:
            out.append(f"sparse updates ({op} on {names}): {_REPEATED}")
    slot_keys = {k for u in evidence.uses for k in u.slots.values()}
    slot_keys |= {v.key for v in vmap.values() if v.role == "optimizer" and v.slot_of is not None}
    rows = [(var, op) for var, op in evidence.scatters if var in slot_keys]
    if rows:
        names = listed(list(dict.fromkeys(var for var, _ in rows)), LISTED)
        ops = ", ".join(dict.fromkeys(op for _, op in rows))
        out.append(f"row-wise (sparse) optimizer updates ({ops} into {names}): {_REPEATED}")
    return out


_REPEATED = (
    "TF1 sums the gradient rows of repeated ids first, Keras 3 applies them one by one (squares of parts instead "
    "of the square of their sum); the same only when no batch repeats an id"
)


def _gradients(uses: tuple[OpUse, ...], vmap: VariableMap) -> list[str]:
    out = []
    parts: dict[str, set[str]] = {}
    for use in uses:
        parts.setdefault(use.variable, set()).add(use.graph_variable)
    partitioned = {name for name, graph_variables in parts.items() if len(graph_variables) > 1}
    for use in uses:
        path = use.gradient
        if path.kind in ("transformed", "unknown"):
            out.append(
                f"the gradient of {use.variable} reaches {use.op} {path.describe()}; Keras 3 applies the "
                "optimizer's own update to the raw gradient"
            )
        elif path.kind == "clipnorm" and vmap.get(use.variable) is not None:
            rank = len(vmap[use.variable].shape)
            if use.variable in partitioned:
                out.append(
                    f"the gradient of {use.variable} is clipped by its norm one partition at a time, Keras 3's "
                    "clipnorm takes the norm of the whole tensor"
                )
            elif path.axes != tuple(range(rank)):
                out.append(
                    f"the gradient of {use.variable} is clipped by its norm over axes {list(path.axes or ())}, "
                    "Keras 3's clipnorm takes the norm of the whole tensor"
                )
        if use.hyper.get("nesterov") is True and use.family.name == "Adam":
            out.append(f"{use.op} on {use.variable} uses Nesterov momentum, which Keras 3 Adam does not")
    counts: dict[tuple[str, str], int] = {}
    for use in uses:  # a partitioned variable has one op per partition: counted per graph variable
        counts[(use.variable, use.graph_variable)] = counts.get((use.variable, use.graph_variable), 0) + 1
    twice = list(dict.fromkeys(name for (name, _), n in counts.items() if n > 1))
    if twice:  # the graph cannot show which of them a session runs: approximate unless only one does
        # minimize()/apply_gradients() name each update `SCOPE/update_VAR/OP`: the scope names the train op
        ops = list(dict.fromkeys(u.node.partition("/update_")[0] for u in uses if u.variable in twice))
        out.append(
            f"{listed(twice, LISTED)} {'is' if len(twice) == 1 else 'are'} updated by more than one training op "
            f"in the graph ({listed(ops, LISTED)}): one Keras 3 optimizer applies one update per step; approximate "
            "unless only one of them runs"
        )
    return out


def _per_variable_hyper(uses: tuple[OpUse, ...]) -> list[str]:
    """Hyper-parameters (clips included) that differ between the training ops of one graph."""
    out = []
    for name in dict.fromkeys(n for u in uses for n in u.hyper):
        values = dict.fromkeys(repr(u.hyper.get(name)) for u in uses)
        if len(values) > 1:
            shown = [f"{v} on {listed([u.variable for u in uses if repr(u.hyper.get(name)) == v], 2)}" for v in values]
            what = "gradient clip" if name in CLIP_OPTIONS else "hyper-parameter"
            out.append(
                f"{what} {name} differs between training ops ({'; '.join(shown)}): one Keras 3 optimizer uses one "
                "value for every variable"
            )
    return out


def _coverage(evidence: GraphEvidence, vmap: VariableMap, trained: list[tuple[str, bool]]) -> list[str]:
    """Variables one side trains and the other does not (TF1's `var_list`, the factory's `trainable`), and
    trained weights the source's step also writes by other ops (a constraint, a hand-written update)."""
    if not evidence.uses:
        return []
    by_op = {u.variable for u in evidence.uses}
    # Sparse TF1 updates are row-wise writes: SGD scatters into the weight; Adam scatters into its slots and
    # assigns the weight (differences named by _sparse). A hand-written row-wise update would pass here too.
    sparse = {vmap[k].slot_of for k, _ in evidence.scatters if k in vmap and vmap[k].slot_of is not None}
    rows = {key for key, _ in evidence.scatters}
    updated = by_op | rows | {key for key in evidence.written if key in vmap and vmap[key].name in sparse}
    only_keras = [key for key, trainable in trained if trainable and key not in updated]
    only_tf1 = [key for key, trainable in trained if not trainable and key in by_op]
    keras_trained = {key for key, trainable in trained if trainable and key in updated}
    extra = {key: op for key, op in evidence.assigned if key in keras_trained and key in by_op}
    out = []
    if only_keras:
        out.append(f"Keras 3 would train {listed(only_keras, LISTED)}, which no training op of the source updated")
    if only_tf1:
        out.append(f"the source trained {listed(only_tf1, LISTED)}, which the factory's model does not train")
    if extra:
        shown = listed([f"{key} by {op}" for key, op in extra.items()], LISTED)
        out.append(
            f"the source's training step also writes trained weights outside the optimizer ({shown}: a "
            "constraint or a hand-written update); Keras 3 applies its optimizer's update and the factory's "
            "constraints, which cannot be checked against the graph"
        )
    return out


def _left_behind(evidence: GraphEvidence, vmap: VariableMap, unused: set[str]) -> list[str]:
    """Source variables the training step writes that the conversion does not carry (EMA under any name)."""
    counted = _powers_at_the_step(evidence, vmap)
    names = [
        vmap[key].name for key in evidence.written if key in vmap and vmap[key].name in unused and key not in counted
    ]
    if not names:
        return []
    return [
        f"state the source's training step updates is not carried over ({listed(names, LISTED)}): the "
        "Keras 3 run has no counterpart for it"
    ]


def _powers_at_the_step(evidence: GraphEvidence, vmap: VariableMap) -> set[str]:
    """Beta powers of TF1 Adam ops (a second AdamOptimizer's beta1_power_1) whose stored value is beta^(t+1) at
    the run's step t, with that op's own beta: Keras 3's iteration counter reproduces them."""
    implied: dict[str, int | None] = {}
    for use in evidence.uses:
        if use.family.name != "Adam" or not use.op.endswith("ApplyAdam"):
            continue
        for key, name in zip(use.extra_inputs[:2], ("beta_1", "beta_2"), strict=False):
            beta = use.hyper.get(name)
            if key in vmap and isinstance(beta, float) and vmap[key].size == 1:
                power = float(np.asarray(vmap[key].read(), dtype=np.float64).reshape(-1)[0])
                implied[key] = adam_steps_from_power(power, beta)
    steps = {t for t in implied.values() if t is not None}
    step = vmap.step if vmap.step is not None else (steps.pop() if len(steps) == 1 else None)
    return {key for key, t in implied.items() if step is not None and t == step}
