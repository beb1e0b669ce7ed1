"""The common variable map: one frozen record per stored tensor, whatever format it came from."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

Role = Literal["weight", "optimizer", "step", "other"]
ROLES: tuple[str, ...] = ("weight", "optimizer", "step", "other")
Loader = Callable[[], "np.ndarray"]  # numpy is imported by the first read, not by listing
# Yields the tensor's elements in order as 1-D arrays of at most the given number of elements.
Chunker = Callable[[int], Iterator["np.ndarray"]]

# Bytes per element for the numpy-style dtype names ckpt-tools reports; strings have no fixed size.
DTYPE_SIZES: dict[str, int] = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
    "float8_e5m2": 1,
    "float8_e4m3fn": 1,
    "qint8": 1,
    "quint8": 1,
    "qint16": 2,
    "quint16": 2,
    "qint32": 4,
}


# Dtypes whose one-element tensors can hold a step, epoch or iteration count.
COUNTER_DTYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"}
)


def numpy_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a reported dtype name (bfloat16 and float8 come from ml_dtypes)."""
    import numpy as np

    if name == "string":
        return np.dtype(object)
    if name in ("bfloat16", "float8_e5m2", "float8_e4m3fn"):
        import ml_dtypes

        extended: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
        return extended
    quantized = {"qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16", "qint32": "int32"}
    return np.dtype(quantized.get(name, name))


@dataclass(frozen=True)
class Variable:
    """One stored tensor: where it is stored (`key`), what it is (`name`, `role`), and a lazy `read()`."""

    key: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role = "weight"
    slot_of: str | None = None
    slot: str | None = None
    loader: Loader | None = field(default=None, repr=False, compare=False)
    chunker: Chunker | None = field(default=None, repr=False, compare=False)
    # Other keys that store this same variable (a Keras 3 export's `_all_variables/N`); set on the primary key.
    aliases: tuple[str, ...] = ()
    # The primary key when this key is an alias of another variable (counted once, paired once).
    alias_of: str | None = None
    # Why only this format holds the variable (a save counter, TF1 beta powers, a learning-rate variable), or
    # None: a diff does not fail on a format-specific variable the other side has no counterpart for.
    format_specific: str | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int | None:
        """Bytes the tensor occupies in memory; None for strings."""
        itemsize = DTYPE_SIZES.get(self.dtype)
        return None if itemsize is None else itemsize * self.size

    def read(self) -> np.ndarray:
        """Read this one tensor from disk (nothing is cached)."""
        if self.loader is None:
            from ckpt_tools.errors import CkptToolsError

            raise CkptToolsError(f"{self.key}: this variable has no reader attached")
        return self.loader()

    @property
    def streamable(self) -> bool:
        """Whether `iter_chunks` reads block by block (otherwise it reads the whole tensor first)."""
        return self.chunker is not None

    def iter_chunks(self, elements: int) -> Iterator[np.ndarray]:
        """The elements in C order as 1-D blocks of at most `elements`; memory bounded by one block when the
        reader supports it (bundles, HDF5 files and stored `.keras` members; compressed HDF5 by one row of
        chunks), by the tensor otherwise. Checksums are verified by the end. A block may be a view of a buffer
        the reader reuses: it is valid until the next block is asked for (copy it to keep it)."""
        if self.chunker is not None:
            yield from self.chunker(elements)
            return
        flat = self.read().reshape(-1)
        for start in range(0, int(flat.size), elements):
            yield flat[start : start + elements]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "role": self.role,
        }
        if self.slot_of is not None:
            out["slot_of"] = self.slot_of
            out["slot"] = self.slot
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.alias_of is not None:
            out["alias_of"] = self.alias_of
        if self.format_specific is not None:
            out["format_specific"] = self.format_specific
        return out


@dataclass(frozen=True)
class FoundOptimizer:
    """One optimizer found in an artifact: where it is, what it is, its step and the weights it covers."""

    path: str
    name: str | None = None
    step: int | None = None
    slots: tuple[str, ...] = ()
    trainable: tuple[str, ...] = ()
    uncovered: tuple[str, ...] = ()

    @property
    def covered(self) -> int:
        return len(self.trainable) - len(self.uncovered)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "step": self.step,
            "slots": list(self.slots),
            "trainable": len(self.trainable),
            "covered": self.covered,
            "uncovered": list(self.uncovered),
        }


@dataclass(frozen=True)
class OptimizerInfo:
    """What a reader found about optimizer state, and from which evidence.

    `present` is True when optimizer state is stored (or provably not needed: plain SGD), False when the
    evidence shows it is not, None when the evidence cannot decide; `reason` says which evidence decided.
    """

    present: bool | None
    name: str | None = None
    slots: tuple[str, ...] = ()
    trainable: int = 0
    covered: int = 0
    uncovered: tuple[str, ...] = ()
    slots_expected: bool = True
    # The optimizer as the artifact records it ({"class_name", "config"}: Keras training/compile config), and
    # why a recorded config could not be used when the artifact has one that does not parse.
    recorded_config: Mapping[str, Any] | None = field(default=None, compare=False)
    config_problem: str | None = None
    reason: str = ""
    evidence: str = "names"
    optimizers: tuple[FoundOptimizer, ...] = ()
    hyper: Mapping[str, Any] = field(default_factory=dict, compare=False)
    hyper_origin: str | None = None
    # Whose update rules the stored slots follow: "tf1", "keras2", "keras2-legacy", "keras3" ("" unknown).
    dialect: str = ""

    @property
    def coverage(self) -> float | None:
        """Fraction of trainable weights with every slot present; None when unknowable or not applicable."""
        if self.present is not True or not self.trainable:
            return None
        if not self.slots_expected:
            return 1.0
        return self.covered / self.trainable

    @property
    def complete(self) -> bool:
        if self.present is not True:
            return False
        return not self.slots_expected or (self.trainable > 0 and not self.uncovered)

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "reason": self.reason,
            "evidence": self.evidence,
            "name": self.name,
            "slots": list(self.slots),
            "trainable_weights": self.trainable,
            "covered_weights": self.covered,
            "coverage": self.coverage,
            "complete": self.complete,
            "uncovered": list(self.uncovered),
            "optimizers": [o.to_json() for o in self.optimizers],
            "hyperparameters": dict(self.hyper),
            "hyperparameters_from": self.hyper_origin,
        }


BundleKind = Literal["v1", "v2"]


@dataclass(frozen=True, eq=False)
class VariableMap(Mapping[str, Variable]):
    """Every stored tensor of one artifact, keyed by `key`, with the format and optimizer/step findings.

    Typed fields hold what operations rely on: `prefix` (the tensor-bundle prefix, or the V1 file, the
    variables come from), `bundle` (its kind), `root` (a SavedModel or unzipped-archive directory), `epoch`
    (completed epochs: the `initial_epoch` to resume with, where the artifact stores it), `layout` (a known
    directory layout around the format, such as BackupAndRestore). `metadata`
    is descriptive only (shown by inspect). Use it as a context manager, or call `close()`, to release the
    file handles readers keep open for lazy reads.
    """

    path: Path
    format: str
    variables: Mapping[str, Variable]
    optimizer: OptimizerInfo
    step: int | None = None
    step_key: str | None = None
    epoch: int | None = None
    epoch_key: str | None = None
    layout: str | None = None
    prefix: Path | None = None
    bundle: BundleKind | None = None
    root: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    closer: Callable[[], None] | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Variable:
        return self.variables[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)

    def __enter__(self) -> VariableMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release open file handles; reading a tensor afterwards reopens what it needs."""
        if self.closer is not None:
            self.closer()

    def by_name(self) -> dict[str, Variable]:
        """Canonical name -> variable (aliases left out: they share their primary's name)."""
        return {v.name: v for v in self.variables.values() if v.alias_of is None}

    def with_role(self, role: str) -> list[Variable]:
        return [v for v in self.variables.values() if v.role == role]

    def primaries(self) -> list[Variable]:
        """Every variable once: the aliases of another key left out."""
        return [v for v in self.variables.values() if v.alias_of is None]

    @property
    def parameters(self) -> int:
        """Elements of the model weights, each variable counted once (aliases are not counted again)."""
        return sum(v.size for v in self.primaries() if v.role == "weight")

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes or 0 for v in self.primaries())
