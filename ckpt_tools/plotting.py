"""Pictures of a diff (relative change per variable) and of a history (norms by step), as PNG or SVG."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tools.diffing import IDENTICAL, DiffEntry, DiffResult
from ckpt_tools.errors import CkptToolsError, MissingDependencyError, UsageError
from ckpt_tools.history import HistoryResult, NormAccumulator, layer_of, numeric, stream_norms
from ckpt_tools.messages import os_reason

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}
INSTALL_HINT = "pip install 'ckpt-tools[plot]'"
WEIGHT_COLOUR = "tab:blue"
SLOT_COLOURS = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
NONFINITE_COLOUR = "red"
DPI = 100


def plot_format(out: str | os.PathLike[str]) -> str:
    """The picture format an output path asks for by its suffix (`png`, `svg`); UsageError for any other."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        detail = f"must end in .png or .svg (got {Path(out).name!r})"
        raise UsageError(f"plot file {os.fspath(out)!r}: {detail}", argument="plot", detail=detail)
    return FORMATS[suffix]


def check_destination(out: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a plot path whose format is unknown or whose directory does not exist."""
    plot_format(out)
    parent = Path(os.path.abspath(out)).parent
    if not parent.is_dir():
        detail = f"directory {str(parent)!r} does not exist"
        raise UsageError(f"plot file {os.fspath(out)!r}: {detail}", argument="plot", detail=detail)
    require_matplotlib()


def require_matplotlib() -> None:
    """Raise MissingDependencyError, naming the extra to install, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"plotting needs matplotlib: {INSTALL_HINT}") from exc


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure drawn by the Agg canvas (no pyplot, no global backend switch) and its axes, one per row, all
    sharing the first one's x axis."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    first = fig.add_subplot(rows, 1, 1)
    return fig, [first] + [fig.add_subplot(rows, 1, row + 1, sharex=first) for row in range(1, rows)]


def _save(fig: Figure, out: Path, fmt: str) -> None:
    """Write the picture atomically: into a temporary file beside `out`, then renamed over it."""
    from matplotlib import rc_context

    directory = out.parent
    if not directory.is_dir():
        raise UsageError(f"plot file {os.fspath(out)!r}: directory {os.fspath(directory)!r} does not exist")
    if out.is_dir():
        raise UsageError(f"plot file {os.fspath(out)!r} is a directory")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CkptToolsError(f"cannot write {os.fspath(out)!r}: {os_reason(exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as fh, rc_context({"svg.hashsalt": "ckpt-tools"}):
            # No date and no tool version in the file: the same input draws the same bytes.
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(fh, format=fmt, dpi=DPI, metadata=metadata)
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@dataclass(frozen=True)
class Bar:
    """One variable of a diff picture: a weight (`slot` None) or one of its optimizer slots.

    `change` is ||a-b|| / ||b|| over the positions where both sides are finite (None when ||b|| is 0 but the
    values differ); `nonfinite` counts NaN/Inf elements on either side.
    """

    name: str
    layer: str
    weight: str
    slot: str | None
    change: float | None
    nonfinite: int
    identical: bool = False


def _other_meaning(entry: DiffEntry) -> bool:
    """A slot pair of two optimizer dialects (translated, or noted as untranslatable): raw values that do not
    mean the same thing, so no raw relative change is drawn for it."""
    slot = entry.b is not None and entry.b.slot_of is not None
    return slot and (entry.translation is not None or entry.note is not None)


def _bar(entry: DiffEntry) -> Bar | None:
    """The bar for one diff entry, or None when the entry is no pair of same-shape numeric weights or slots."""
    a, b = entry.a, entry.b
    if a is None or b is None or tuple(a.shape) != tuple(b.shape) or not (numeric(a) and numeric(b)):
        return None
    if _other_meaning(entry):
        return None
    if b.slot_of is not None and b.slot is not None:
        weight, slot = b.slot_of, b.slot
    elif a.role == "weight" and b.role == "weight":
        weight, slot = entry.name, None
    else:
        return None
    acc = stream_norms(b, a)
    nonfinite = acc.nan + acc.inf + acc.other_nonfinite
    return Bar(entry.name, layer_of(weight), weight, slot, _relative(acc), nonfinite, entry.category == IDENTICAL)


def _relative(acc: NormAccumulator) -> float | None:
    """||a-b|| / ||b||; 0 for two all-zero tensors, None (undefined) when only B is all zeros."""
    if acc.norm > 0:
        return acc.update_norm / acc.norm
    return 0.0 if acc.update_norm == 0 else None


def diff_bars(result: DiffResult) -> list[Bar]:
    """The bars of a diff picture, read tensor pair by tensor pair: grouped by layer, each weight followed by
    its slots (slot name order)."""
    bars = [bar for bar in map(_bar, result.entries) if bar is not None]
    layers = list(dict.fromkeys(bar.layer for bar in bars))
    weights = list(dict.fromkeys(bar.weight for bar in bars))

    def order(bar: Bar) -> tuple[int, int, int, str]:
        return (layers.index(bar.layer), weights.index(bar.weight), bar.slot is not None, bar.slot or "")

    return sorted(bars, key=order)


def _positions(bars: Sequence[Bar]) -> list[float]:
    """x positions: consecutive within a layer, one empty slot between layers."""
    positions: list[float] = []
    x = 0.0
    for index, bar in enumerate(bars):
        if index and bar.layer != bars[index - 1].layer:
            x += 1
        positions.append(x)
        x += 1
    return positions


def _colours(bars: Sequence[Bar]) -> dict[str | None, str]:
    slots = sorted({bar.slot for bar in bars if bar.slot is not None})
    colours: dict[str | None, str] = {None: WEIGHT_COLOUR}
    for index, slot in enumerate(slots):
        colours[slot] = SLOT_COLOURS[index % len(SLOT_COLOURS)]
    return colours


def _shade_layers(ax: Axes, bars: Sequence[Bar], positions: Sequence[float]) -> None:
    """A light band behind every other layer and the layer's name above its bars."""
    starts = [i for i, bar in enumerate(bars) if i == 0 or bar.layer != bars[i - 1].layer]
    for number, start in enumerate(starts):
        end = starts[number + 1] - 1 if number + 1 < len(starts) else len(bars) - 1
        left, right = positions[start] - 0.5, positions[end] + 0.5
        if number % 2 == 0:
            ax.axvspan(left, right, color="0.93", zorder=0)
        ax.text(
            (left + right) / 2,
            1.01,
            bars[start].layer,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _value_scale(ax: Axes, values: Sequence[float]) -> None:
    """Linear when the non-zero changes span less than three decades, else symmetric-log (zeros stay drawable)."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= 1e3:
        ax.set_yscale("symlog", linthresh=min(positive))


def _draw_bars(ax: Axes, bars: Sequence[Bar]) -> None:
    positions = _positions(bars)
    colours = _colours(bars)
    heights = [bar.change if bar.change is not None else 0.0 for bar in bars]
    ax.bar(positions, heights, width=0.8, color=[colours[bar.slot] for bar in bars], zorder=2)
    _value_scale(ax, heights)
    ax.set_ylim(bottom=0, top=None if any(heights) else 1.0)
    _shade_layers(ax, bars, positions)
    ax.set_xticks(positions, [bar.weight if bar.slot is None else bar.slot for bar in bars], rotation=90, fontsize=7)
    ax.set_xlim(positions[0] - 0.75, positions[-1] + 0.75)
    top = ax.get_xaxis_transform()
    bad = [(x, h) for x, h, bar in zip(positions, heights, bars, strict=True) if bar.nonfinite]
    if bad:
        ax.scatter(
            [x for x, _ in bad], [h for _, h in bad], marker="x", s=60, color=NONFINITE_COLOUR, zorder=3, clip_on=False
        )
    same = [x for x, bar in zip(positions, bars, strict=True) if bar.identical]
    if same:
        ax.scatter(same, [0.0] * len(same), marker="$=$", s=40, color="0.35", zorder=3, clip_on=False)
    undefined = [x for x, bar in zip(positions, bars, strict=True) if bar.change is None]
    if undefined:
        ax.scatter(undefined, [0.97] * len(undefined), marker="v", color="0.3", transform=top, zorder=3)
    _diff_legend(ax, colours, (bool(same), bool(bad), bool(undefined)))


def _diff_legend(ax: Axes, colours: dict[str | None, str], marks: tuple[bool, bool, bool]) -> None:
    """Colours of weights and slots, and the marks drawn (identical, NaN/Inf present, undefined change)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Patch | Line2D] = [Patch(color=colours[None], label="weight")]
    handles += [Patch(color=colour, label=f"slot: {slot}") for slot, colour in colours.items() if slot is not None]
    identical, nonfinite, undefined = marks
    if identical:
        handles.append(Line2D([], [], ls="", marker="$=$", color="0.35", label="identical"))
    if nonfinite:
        handles.append(Line2D([], [], ls="", marker="x", color=NONFINITE_COLOUR, label="NaN/Inf present"))
    if undefined:
        handles.append(Line2D([], [], ls="", marker="v", color="0.3", label="||B|| = 0, values differ"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_diff(result: DiffResult, out: str | os.PathLike[str]) -> None:
    """Draw the per-layer relative change ||A-B|| / ||B|| of every paired numeric weight and slot of a diff.

    One bar per weight, grouped by layer, its optimizer slots beside it in their own colours; variables with
    NaN/Inf on either side are marked (their change is taken over the finite positions). Tensors are re-read
    pair by pair, block by block. The format follows the suffix (`.png`, `.svg`); the file is replaced
    atomically. Raises UsageError for another suffix, MissingDependencyError without matplotlib.
    """
    out = Path(out)
    fmt = plot_format(out)
    require_matplotlib()
    bars = diff_bars(result)
    fig, (ax,) = _figure(max(6.0, min(2.0 + 0.3 * len(bars), 60.0)), 5.0)
    if bars:
        _draw_bars(ax, bars)
    else:
        ax.text(0.5, 0.5, "no paired numeric weights to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylabel("||A - B|| / ||B||")
    ax.set_title(f"A: {result.a.path}   B: {result.b.path}", fontsize=9, loc="left", pad=16)
    skipped = sum(1 for entry in result.entries if _other_meaning(entry))
    if skipped:
        pairs = "slot pair" if skipped == 1 else "slot pairs"
        fig.text(0.01, 0.005, f"not drawn: {skipped} {pairs} of two optimizer dialects", fontsize=7)
    _save(fig, out, fmt)


def _steps(result: HistoryResult) -> tuple[list[float], str]:
    """x values: the steps when every checkpoint records one and they increase, else state-file positions."""
    steps = result.steps
    known = [s for s in steps if s is not None]
    if len(known) == len(steps) and all(b > a for a, b in itertools.pairwise(known)):
        return [float(s) for s in known], "step"
    return [float(i) for i in range(len(steps))], "checkpoint (state-file order)"


def _history_lines(axes: Sequence[Axes], result: HistoryResult, xs: Sequence[float]) -> None:
    """One line per layer on each panel; red crosses where the layer's weights hold NaN or Inf."""
    for layer in result.layers:
        stats = [next((s for s in row.layers if s.layer == layer), None) for row in result.checkpoints]
        for ax, field in zip(axes, ("weight_norm", "update_norm"), strict=True):
            points = [(x, getattr(s, field)) for x, s in zip(xs, stats, strict=True) if s is not None]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", ms=4, label=layer)
        bad = [
            (x, s.weight_norm)
            for x, s in zip(xs, stats, strict=True)
            if s is not None and s.nonfinite and s.weight_norm is not None
        ]
        if bad:
            axes[0].scatter(
                [x for x, _ in bad], [y for _, y in bad], marker="x", s=70, color=NONFINITE_COLOUR, zorder=3
            )


def _mark_nonfinite(axes: Sequence[Axes], result: HistoryResult, xs: Sequence[float]) -> bool:
    """A dashed red line on both panels at every checkpoint whose weights hold NaN or Inf."""
    marked = False
    for x, row in zip(xs, result.checkpoints, strict=True):
        if row.nan or row.inf:
            marked = True
            for ax in axes:
                ax.axvline(x, color=NONFINITE_COLOUR, ls="--", lw=1, zorder=1)
            axes[0].annotate(
                f"NaN {row.nan} / Inf {row.inf}",
                (x, 1.0),
                xycoords=axes[0].get_xaxis_transform(),
                fontsize=7,
                color=NONFINITE_COLOUR,
                ha="center",
                va="bottom",
            )
    return marked


def plot_history(result: HistoryResult, out: str | os.PathLike[str]) -> None:
    """Draw each layer's weight norm (top panel) and update norm since the previous checkpoint (bottom panel)
    by step; checkpoints whose weights hold NaN/Inf are marked. The format follows the suffix (`.png`,
    `.svg`); the file is replaced atomically. Raises UsageError for another suffix, MissingDependencyError
    without matplotlib."""
    out = Path(out)
    fmt = plot_format(out)
    require_matplotlib()
    from matplotlib.lines import Line2D

    xs, xlabel = _steps(result)
    fig, axes = _figure(8.0, 6.5, rows=2)
    _history_lines(axes, result, xs)
    nonfinite = _mark_nonfinite(axes, result, xs)
    axes[0].set_ylabel("||weights||")
    axes[0].set_title(f"{result.directory}: {len(result.checkpoints)} checkpoints", fontsize=9, loc="left", pad=14)
    axes[1].set_ylabel("||update since previous||")
    axes[1].set_xlabel(xlabel)
    if len(result.checkpoints) < 2:
        axes[1].text(0.5, 0.5, "one checkpoint: no update", ha="center", va="center", transform=axes[1].transAxes)
    handles, labels = axes[0].get_legend_handles_labels()
    if nonfinite:
        handles.append(Line2D([], [], ls="--", marker="x", color=NONFINITE_COLOUR))
        labels.append("NaN/Inf in weights")
    if handles:
        axes[0].legend(
            handles,
            labels,
            fontsize=7,
            ncol=1 + len(labels) // 24,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if len(xs) <= 12:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
    _save(fig, out, fmt)
