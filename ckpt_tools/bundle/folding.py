"""Scalar constant folding: the value of a graph tensor computed from Const scalars alone, in the op's dtype."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ckpt_tools.bundle.graph import GraphLike, cast_chain, cast_scalar, scalar_constant, traced

if TYPE_CHECKING:
    import numpy as np

Scalar = float | int | bool
MAX_NODES = 32  # arithmetic nodes folded for one tensor: hyper-parameter expressions are a handful
BINARY = ("Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow")
UNARY = ("Neg", "Reciprocal", "Sqrt", "Square")


@functools.cache
def _numpy() -> tuple[dict[str, Any], dict[str, type[np.floating[Any]]]]:
    """Each op's numpy ufunc, and the float types it computes in; numpy is imported by the first fold only."""
    import numpy as np

    ufuncs = {
        "Add": np.add,
        "AddV2": np.add,
        "Sub": np.subtract,
        "Mul": np.multiply,
        "RealDiv": np.divide,
        "Div": np.divide,
        "Maximum": np.maximum,
        "Minimum": np.minimum,
        "Pow": np.power,
        "Neg": np.negative,
        "Reciprocal": np.reciprocal,
        "Sqrt": np.sqrt,
        "Square": np.square,
    }
    floats: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
    return ufuncs, floats


def constant_value(graph: GraphLike, tensor_name: str) -> Scalar | None:
    """`scalar_constant`, or the value of float arithmetic (add, sub, mul, div, min, max, pow, neg, reciprocal,
    sqrt, square) over scalar constants, computed in the op's dtype as TensorFlow would; None when any input is
    not a constant (a variable, a placeholder, the step) or the expression is larger than MAX_NODES."""
    return _fold(graph, tensor_name, [MAX_NODES])


def _fold(graph: GraphLike, tensor_name: str, budget: list[int]) -> Scalar | None:
    value = scalar_constant(graph, tensor_name)
    if value is not None:
        return value
    node = traced(graph, tensor_name)
    if node is None or budget[0] <= 0 or len(node.control_inputs) or node.op not in {*BINARY, *UNARY}:
        return None
    budget[0] -= 1
    import numpy as np

    ufuncs, floats = _numpy()
    dtype = floats.get(str(node.attrs.get("T", "")))
    arity = 2 if node.op in BINARY else 1
    if dtype is None or len(node.input_refs) != arity:
        return None
    operands: list[np.floating[Any]] = []
    for ref in node.input_refs:
        value = _fold(graph, str(ref), budget)
        if value is None or isinstance(value, bool):
            return None
        operands.append(dtype(value))
    with np.errstate(all="ignore"):
        result = ufuncs[node.op](*operands)
    out: Scalar | None = float(result)
    for cast in reversed(cast_chain(graph, tensor_name)):  # innermost Cast first
        out = cast_scalar(out, cast) if out is not None else None
    return out
