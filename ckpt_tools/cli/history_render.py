"""The text form of `ckpt inspect DIR --history`: one table row per checkpoint and layer, then a summary line."""

from __future__ import annotations

from ckpt_tools.cli.render import table
from ckpt_tools.history import HistoryResult

HEADERS = ("step", "layer", "weight norm", "update norm", "nan", "inf")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _steps(steps: list[int | None]) -> str:
    text = ", ".join("-" if s is None else str(s) for s in steps)
    return f"step {text}" if len(steps) == 1 else f"steps {text}"


def _summary(result: HistoryResult) -> str:
    count = len(result.checkpoints)
    noun = "checkpoint" if count == 1 else "checkpoints"
    bad = [row.step for row in result.checkpoints if row.nan or row.inf]
    layers = f"{len(result.layers)} layer" + ("" if len(result.layers) == 1 else "s")
    nonfinite = f"NaN/Inf in the weights at {_steps(bad)}" if bad else "no NaN/Inf in the weights"
    return f"{result.directory}: {count} {noun} ({_steps(list(result.steps))}), {layers}; {nonfinite}"


def render_history_text(result: HistoryResult) -> str:
    """The history table (step, layer, weight norm, update norm, NaN and Inf counts) and a summary line; an
    update norm is `-` for the first checkpoint and where a layer's weights changed names or shapes."""
    rows = [
        [
            "-" if row.step is None else str(row.step),
            layer.layer,
            _num(layer.weight_norm),
            _num(layer.update_norm),
            str(layer.nan),
            str(layer.inf),
        ]
        for row in result.checkpoints
        for layer in row.layers
    ]
    return "\n".join([table(rows, HEADERS), "", _summary(result)])
