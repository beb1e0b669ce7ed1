"""ckpt-tools: inspect, diff, validate and convert TensorFlow/Keras training checkpoints.

The library API (see docs/api.md). Importing the package is cheap: every name below except `open` is loaded
from its module on first use, and nothing on the read paths imports TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "CkptToolsError",
    "ConversionError",
    "ConvertReport",
    "CorruptCheckpointError",
    "DiffResult",
    "FormatNotRecognizedError",
    "InspectResult",
    "MissingDependencyError",
    "MissingFileError",
    "OptimizerInfo",
    "OutputExistsError",
    "Reader",
    "UnsafeInputError",
    "UsageError",
    "ValidationReport",
    "ValidationRun",
    "Variable",
    "VariableMap",
    "__version__",
    "convert",
    "diff",
    "formats",
    "inspect",
    "open",
    "open_checkpoint",
    "register_reader",
    "validate",
]

if TYPE_CHECKING:
    from ckpt_tools.conversion.run import ConvertReport, convert
    from ckpt_tools.diffing import DiffResult, diff
    from ckpt_tools.errors import (
        ChecksumError,
        CkptToolsError,
        ConversionError,
        CorruptCheckpointError,
        FormatNotRecognizedError,
        MissingDependencyError,
        MissingFileError,
        OutputExistsError,
        UnsafeInputError,
        UsageError,
    )
    from ckpt_tools.inspection import InspectResult, inspect
    from ckpt_tools.model import OptimizerInfo, Variable, VariableMap
    from ckpt_tools.readers.registry import Reader, formats, open_checkpoint, register_reader
    from ckpt_tools.validation.checks import ValidationReport, validate
    from ckpt_tools.validation.run import ValidationRun

_ERRORS = (
    "ChecksumError",
    "CkptToolsError",
    "ConversionError",
    "CorruptCheckpointError",
    "FormatNotRecognizedError",
    "MissingDependencyError",
    "MissingFileError",
    "OutputExistsError",
    "UnsafeInputError",
    "UsageError",
)

_LAZY: dict[str, str] = {
    "open_checkpoint": "ckpt_tools.readers.registry",
    "register_reader": "ckpt_tools.readers.registry",
    "formats": "ckpt_tools.readers.registry",
    "Reader": "ckpt_tools.readers.registry",
    "OptimizerInfo": "ckpt_tools.model",
    "Variable": "ckpt_tools.model",
    "VariableMap": "ckpt_tools.model",
    "inspect": "ckpt_tools.inspection",
    "InspectResult": "ckpt_tools.inspection",
    "diff": "ckpt_tools.diffing",
    "DiffResult": "ckpt_tools.diffing",
    "validate": "ckpt_tools.validation.checks",
    "ValidationReport": "ckpt_tools.validation.checks",
    "ValidationRun": "ckpt_tools.validation.run",
    "convert": "ckpt_tools.conversion.run",
    "ConvertReport": "ckpt_tools.conversion.run",
    **dict.fromkeys(_ERRORS, "ckpt_tools.errors"),
}


def open(path: str | os.PathLike[str], *, format: str | None = None) -> VariableMap:
    """Read the metadata of any supported artifact into a VariableMap; tensors stay on disk until read().

    `format` skips detection (a name from formats()). The map is a context manager: leaving the `with` block
    (or calling `close()`) releases the file handles kept for lazy reads.
    """
    from ckpt_tools.readers.registry import open_checkpoint

    return open_checkpoint(os.fspath(path), format)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckpt_tools' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
