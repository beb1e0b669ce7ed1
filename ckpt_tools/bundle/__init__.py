"""Native (TensorFlow-free) reader for TensorFlow tensor bundles: `PREFIX.index` plus `PREFIX.data-*` shards."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tools.storage import as_path, suffixed

if TYPE_CHECKING:
    from ckpt_tools.bundle.reader import OBJECT_GRAPH_KEY, BundleEntry, BundleHeader, BundleReader, BundleVersion

__all__ = [
    "OBJECT_GRAPH_KEY",
    "BundleEntry",
    "BundleHeader",
    "BundleReader",
    "BundleVersion",
    "has_object_graph",
    "is_bundle_index",
]

# Imported on first use: the package is also the home of `shards` (the block reads every format shares), and
# importing it must not cost the reader's protobufs.
_FROM_READER = frozenset({"OBJECT_GRAPH_KEY", "BundleEntry", "BundleHeader", "BundleReader", "BundleVersion"})


def __getattr__(name: str) -> Any:
    if name in _FROM_READER:
        return getattr(importlib.import_module("ckpt_tools.bundle.reader"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_bundle_index(path: Path | str) -> bool:
    """Cheap check: `path` is a file ending in the table magic number (a bundle `.index`, or a V1 checkpoint)."""
    from ckpt_tools.bundle.table import has_table_magic

    return has_table_magic(as_path(path))


def has_object_graph(prefix: Path | str) -> bool:
    """Whether the bundle at `prefix` stores a TF2 object graph (reads the index table only, not the data)."""
    from ckpt_tools.bundle.reader import OBJECT_GRAPH_KEY
    from ckpt_tools.bundle.table import read_table

    key = OBJECT_GRAPH_KEY.encode()
    return any(raw_key == key for raw_key, _ in read_table(suffixed(as_path(prefix), ".index")))
