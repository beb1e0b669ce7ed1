"""Native (TensorFlow-free) reader for TensorFlow tensor bundles: `PREFIX.index` plus `PREFIX.data-*` shards."""

from __future__ import annotations

from pathlib import Path

from ckpt_tools.bundle.reader import OBJECT_GRAPH_KEY, BundleEntry, BundleHeader, BundleReader, BundleVersion
from ckpt_tools.bundle.table import has_table_magic, read_table
from ckpt_tools.storage import as_path, suffixed

__all__ = [
    "OBJECT_GRAPH_KEY",
    "BundleEntry",
    "BundleHeader",
    "BundleReader",
    "BundleVersion",
    "has_object_graph",
    "is_bundle_index",
]


def is_bundle_index(path: Path | str) -> bool:
    """Cheap check: `path` is a file ending in the table magic number (a bundle `.index`, or a V1 checkpoint)."""
    return has_table_magic(as_path(path))


def has_object_graph(prefix: Path | str) -> bool:
    """Whether the bundle at `prefix` stores a TF2 object graph (reads the index table only, not the data)."""
    key = OBJECT_GRAPH_KEY.encode()
    return any(raw_key == key for raw_key, _ in read_table(suffixed(as_path(prefix), ".index")))
