"""The history of a checkpoint directory: per-layer weight norms, update norms and NaN/Inf counts by step."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.elementwise import aligned_blocks, finite_or_none
from ckpt_tools.errors import CorruptCheckpointError, FormatNotRecognizedError, MissingFileError, UsageError
from ckpt_tools.model import Variable, VariableMap, numpy_dtype
from ckpt_tools.readers.paths import artifact_root, read_state, state_prefixes
from ckpt_tools.storage import as_path, suffixed

JSON_SCHEMA = "ckpt-tools/history/1"

# Elements read per variable (and per side, for an update) at a time: 8 MiB of float64 after widening.
STREAM_ELEMENTS = 1 << 20


def layer_of(name: str) -> str:
    """The layer of a canonical weight name: the name minus its last component (`enc/kernel` -> `enc`); a
    one-component name is its own layer."""
    head, _, _ = name.rpartition("/")
    return head or name


def numeric(var: Variable) -> bool:
    """Whether the variable holds numbers a norm can be taken of (not strings)."""
    return var.dtype != "string" and numpy_dtype(var.dtype).kind in ("b", "i", "u", "f", "c", "V")


def _wide(block: np.ndarray) -> np.ndarray:
    """A block as float64 (complex128 for complex dtypes), the precision every sum is accumulated in."""
    return block.astype(np.complex128 if block.dtype.kind == "c" else np.float64, copy=False)


def _sum_squares(values: np.ndarray) -> float:
    return float(np.vdot(values, values).real)


@dataclass
class NormAccumulator:
    """Running sums over the finite elements of one tensor, and of its difference from another tensor.

    `squares` sums |x|^2 over finite x; `update_squares` sums |x-y|^2 over positions where both are finite;
    `nan` / `inf` count the current tensor's, `other_nonfinite` the other tensor's NaN and Inf elements.
    """

    size: int = 0
    squares: float = 0.0
    update_squares: float = 0.0
    nan: int = 0
    inf: int = 0
    other_nonfinite: int = 0

    def add(self, current: np.ndarray, other: np.ndarray | None = None) -> None:
        """Fold in one block of the tensor (and the same positions of the other one)."""
        wide = _wide(current)
        self.size += int(wide.size)
        nan = np.isnan(wide)
        finite = np.isfinite(wide)
        self.nan += int(np.count_nonzero(nan))
        self.inf += int(wide.size - np.count_nonzero(finite) - np.count_nonzero(nan))
        self.squares += _sum_squares(wide[finite])
        if other is not None:
            wide_other = _wide(other)
            other_finite = np.isfinite(wide_other)
            self.other_nonfinite += int(wide_other.size - np.count_nonzero(other_finite))
            finite &= other_finite
            self.update_squares += _sum_squares(wide[finite] - wide_other[finite])

    @property
    def norm(self) -> float:
        return math.sqrt(self.squares)

    @property
    def update_norm(self) -> float:
        return math.sqrt(self.update_squares)


def stream_norms(current: Variable, other: Variable | None = None) -> NormAccumulator:
    """Norms of `current` (and of `current - other`, same shape) read block by block: memory stays bounded by a
    few blocks whatever the tensor's size."""
    acc = NormAccumulator()
    if other is None:
        for block in current.iter_chunks(STREAM_ELEMENTS):
            acc.add(block)
        return acc
    blocks = aligned_blocks(current.iter_chunks(STREAM_ELEMENTS), other.iter_chunks(STREAM_ELEMENTS))
    for block, other_block in blocks:
        acc.add(block, other_block)
    return acc


@dataclass(frozen=True)
class LayerStats:
    """One layer in one checkpoint: its weights' L2 norm (over finite elements), the L2 norm of the update
    since the previous retained checkpoint (None for the first one, or when the layer's weights changed
    names or shapes), and how many weight elements are NaN or Inf."""

    layer: str
    weights: int
    size: int
    weight_norm: float | None
    update_norm: float | None
    nan: int = 0
    inf: int = 0

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "weights": self.weights,
            "size": self.size,
            "weight_norm": finite_or_none(self.weight_norm),
            "update_norm": finite_or_none(self.update_norm),
            "nan": self.nan,
            "inf": self.inf,
        }


@dataclass(frozen=True)
class CheckpointHistory:
    """One retained checkpoint: where it is, its step (None when it records none) and its layers."""

    path: str
    format: str
    step: int | None
    layers: tuple[LayerStats, ...]

    @property
    def nan(self) -> int:
        return sum(layer.nan for layer in self.layers)

    @property
    def inf(self) -> int:
        return sum(layer.inf for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "step": self.step,
            "nan": self.nan,
            "inf": self.inf,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True)
class HistoryResult:
    """Every retained checkpoint of a directory, oldest first (state-file order); `exit_code` is always 0."""

    directory: str
    checkpoints: tuple[CheckpointHistory, ...]

    @property
    def exit_code(self) -> int:
        return 0

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer of any checkpoint, in order of first appearance."""
        return tuple(dict.fromkeys(layer.layer for row in self.checkpoints for layer in row.layers))

    @property
    def steps(self) -> tuple[int | None, ...]:
        return tuple(row.step for row in self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "directory": self.directory,
            "exit_code": self.exit_code,
            "layers": list(self.layers),
            "checkpoints": [row.to_json() for row in self.checkpoints],
        }


def _weights_by_layer(vmap: VariableMap) -> dict[str, list[Variable]]:
    """The numeric model weights of a map (aliases left out), grouped by layer in canonical-name order."""
    layers: dict[str, list[Variable]] = {}
    weights = sorted((v for v in vmap.primaries() if v.role == "weight" and numeric(v)), key=lambda v: v.name)
    for var in weights:
        layers.setdefault(layer_of(var.name), []).append(var)
    return layers


def _signature(weights: Sequence[Variable]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((v.name, tuple(v.shape)) for v in weights)


def _layer_stats(layer: str, weights: list[Variable], previous: list[Variable] | None) -> LayerStats:
    """Stream every weight of one layer once, against the previous checkpoint's same weight when comparable."""
    comparable = previous is not None and _signature(previous) == _signature(weights)
    squares = update_squares = 0.0
    nan = inf = 0
    for index, var in enumerate(weights):
        acc = stream_norms(var, previous[index] if comparable and previous is not None else None)
        squares += acc.squares
        update_squares += acc.update_squares
        nan += acc.nan
        inf += acc.inf
    update = math.sqrt(update_squares) if comparable else None
    size = sum(v.size for v in weights)
    return LayerStats(layer, len(weights), size, math.sqrt(squares), update, nan, inf)


def _row(path: Path, vmap: VariableMap, previous: VariableMap | None) -> CheckpointHistory:
    current = _weights_by_layer(vmap)
    before = _weights_by_layer(previous) if previous is not None else {}
    layers = tuple(
        _layer_stats(layer, weights, before.get(layer) if previous is not None else None)
        for layer, weights in current.items()
    )
    return CheckpointHistory(str(path), vmap.format, vmap.step, layers)


def _as_given(directory: Path, prefix: Path) -> Path:
    """A resolved prefix under the directory as the user spelled it (`runs/a/model.ckpt-3`)."""
    try:
        return directory / prefix.relative_to(directory.resolve())
    except ValueError:
        return prefix


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The directory a user's path stands for and its retained checkpoints in state-file order (the directory
    itself, as one checkpoint, when it has no state file)."""
    given = as_path(path)
    if not given.exists():
        raise MissingFileError(f"{given}: no such file or directory")
    directory = artifact_root(given)
    if not directory.is_dir():
        raise UsageError(
            f"{given}: not a checkpoint directory (give the folder of a `checkpoint` state file, or that file)"
        )
    state = read_state(directory)
    if state is None:
        return directory, [directory]
    prefixes = state_prefixes(directory, state)
    if not prefixes:
        raise CorruptCheckpointError(f"{directory / 'checkpoint'}: the state file lists no checkpoints")
    for prefix in prefixes:
        if not suffixed(prefix, ".index").is_file() and not prefix.is_file():
            raise MissingFileError(f"{directory / 'checkpoint'}: listed checkpoint {prefix.name!r} does not exist")
    return directory, [_as_given(directory, prefix) for prefix in prefixes]


def _open(path: Path, directory: Path) -> VariableMap:
    from ckpt_tools.readers.registry import open_checkpoint

    try:
        return open_checkpoint(path)
    except FormatNotRecognizedError as exc:
        if path == directory:
            raise UsageError(
                f"{directory}: not a checkpoint directory (no `checkpoint` state file, no checkpoint)"
            ) from exc
        raise


def _rows(paths: Sequence[Path], directory: Path) -> Iterator[CheckpointHistory]:
    """One row per checkpoint; at most two maps open at a time (this one and the previous one)."""
    previous: VariableMap | None = None
    try:
        for path in paths:
            vmap = _open(path, directory)
            try:
                yield _row(path, vmap, previous)
            except BaseException:
                vmap.close()
                raise
            if previous is not None:
                previous.close()
            previous = vmap
    finally:
        if previous is not None:
            previous.close()


def history(path: str | os.PathLike[str]) -> HistoryResult:
    """Per-layer weight norms, update norms and NaN/Inf counts of every retained checkpoint of a directory.

    `path` is a checkpoint directory or its `checkpoint` state file; the checkpoints it lists are read in the
    state file's order (oldest first). A directory without a state file is read as one checkpoint. A layer is
    a canonical weight name minus its last component. Tensors are streamed block by block with float64 sums,
    so memory stays bounded whatever their size. Raises CkptToolsError (UsageError when `path` is not a
    checkpoint directory, MissingFileError when a listed checkpoint is gone).
    """
    directory, paths = checkpoint_paths(path)
    return HistoryResult(str(directory), tuple(_rows(paths, directory)))
