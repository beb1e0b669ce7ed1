"""Glue between the native tensor-bundle reader and the readers that build variable maps from bundles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, MissingFileError
from ckpt_tools.model import COUNTER_DTYPES, Chunker, Variable, VariableMap
from ckpt_tools.readers.confine import FOLLOW_SYMLINKS, confine, is_inside
from ckpt_tools.storage import suffixed

if TYPE_CHECKING:
    import numpy as np

    from ckpt_tools.bundle.reader import BundleEntry, BundleReader

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def table_magic_at_end(path: Path) -> bool:
    """True when the file ends with the LevelDB-table magic number (bundle index or V1 checkpoint)."""
    from ckpt_tools.bundle import is_bundle_index

    return is_bundle_index(path)


def folder_guard(root: Path) -> Callable[[Path, str], Path]:
    """The bundle reader's guard for an artifact living in `root`: a file of it (the index, a data shard) that
    resolves through a symlink to a place outside `root` is refused before it is opened (readers.confine)."""

    def guard(path: Path, what: str) -> Path:
        return confine(root, path, what)

    return guard


class BundleLoader:
    """A bundle tensor's loader (`read(key)` when called), which can also read a one-element counter without
    numpy, so that listing a bundle never imports it."""

    __slots__ = ("key", "reader")

    def __init__(self, reader: BundleReader, key: str) -> None:
        self.reader = reader
        self.key = key

    def __call__(self) -> np.ndarray:
        return self.reader.read(self.key)

    def scalar(self) -> int | float | None:
        """The counter's value read without numpy, or None when its entry is not a one-element counter (a reader
        that declares a different dtype or shape than the bundle stores: then read like any other tensor)."""
        return self.reader.scalar(self.key) if self.reader.holds_scalar(self.key) else None


class Bundle:
    """A parsed bundle index plus the helpers readers need: loaders, file list, a description.

    `root` is the artifact's folder (default: the prefix's directory); no file of the bundle may resolve
    outside it unless following symlinks is on.
    """

    def __init__(self, prefix: Path, root: Path | None = None) -> None:
        from ckpt_tools.bundle import BundleReader

        self.prefix = prefix
        self.root = root if root is not None else prefix.parent
        self.reader = BundleReader(prefix, guard=folder_guard(self.root))
        self.entries = self.reader.entries

    def loader(self, key: str) -> Callable[[], np.ndarray]:
        """`read(key)` of the bundle, as a callable."""
        return BundleLoader(self.reader, key)

    def chunker(self, key: str) -> Chunker | None:
        """Block-by-block reads for `key` when the bundle can stream it (see BundleReader.iter_elements)."""
        if not self.reader.can_stream(key):
            return None
        return functools.partial(self.reader.iter_elements, key)

    def access(self) -> list[tuple[BundleEntry, Callable[[], np.ndarray], Chunker | None]]:
        """Each tensor's entry, `loader` and `chunker`, in index order, made in one pass."""
        from ckpt_tools.bundle.values import fixed_itemsize

        reader, stream = self.reader, self.reader.iter_elements
        streamable: dict[str, bool] = {}  # by dtype
        out: list[tuple[BundleEntry, Callable[[], np.ndarray], Chunker | None]] = []
        for key, entry in self.entries.items():
            fixed = streamable.get(entry.dtype)
            if fixed is None:
                fixed = streamable[entry.dtype] = fixed_itemsize(entry.dtype) is not None
            chunker = functools.partial(stream, key) if fixed and not entry.slices else None
            out.append((entry, BundleLoader(reader, key), chunker))
        return out

    def files(self) -> list[Path]:
        return [suffixed(self.prefix, ".index"), *self.reader.data_files]

    def close(self) -> None:
        self.reader.close()

    def describe(self) -> dict[str, Any]:
        header = self.reader.header
        return {"shards": header.num_shards, "endianness": header.endianness}


def open_bundle(prefix: Path, root: Path | None = None) -> Bundle:
    """Parse a bundle index (each call its own reader, with its own shard handles); `root` as for Bundle."""
    index = suffixed(prefix, ".index")
    if not index.is_file():
        raise CorruptCheckpointError(f"{prefix}: no .index file")
    return Bundle(prefix, root)


def sniff_bundle(prefix: Path) -> str | None:
    """None when `prefix.index` is a tensor-bundle table holding an object graph, "TF1" when it holds none,
    else why it is not a bundle. Reads the raw index table only (no entry parsing, no data files)."""
    from ckpt_tools.bundle import has_object_graph

    index = suffixed(prefix, ".index")
    if not FOLLOW_SYMLINKS.get() and not is_inside(prefix.parent, index):
        return None  # a link out of the folder is never opened to sniff it; open() refuses it in one line
    if not table_magic_at_end(index):
        return "the .index file is not a tensor bundle table"
    try:
        return None if has_object_graph(prefix) else "TF1"
    except (CkptToolsError, OSError, ValueError):
        return "the .index file is not a tensor bundle table"


def verify_bundle(vmap: VariableMap) -> str:
    """The `verify` hook of bundle readers: every entry's extent and CRC32C, or a full read of a V1 file."""
    from ckpt_tools.bundle import BundleReader

    _require_files(vmap)
    if vmap.prefix is None or vmap.bundle != "v2":
        return read_all(vmap) + " (this format stores no checksums)"
    root = vmap.root if vmap.root is not None else vmap.prefix.parent
    reader = BundleReader(vmap.prefix, guard=folder_guard(root))
    try:
        problems = reader.verify_all()
    finally:
        reader.close()
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CorruptCheckpointError(f"{len(problems)} problem(s): {'; '.join(problems[:3])}{more}")
    shards = len(reader.data_files)
    return f"{len(reader.entries)} entries in {shards} shard{'s' if shards != 1 else ''}: sizes and CRC32C verified"


def checkpoint_state_directory(vmap: VariableMap) -> Path | None:
    """The `state_directory` hook of checkpoint readers: the folder whose `checkpoint` file lists it."""
    if vmap.path.is_dir():
        return vmap.path
    return vmap.prefix.parent if vmap.prefix is not None else vmap.path.parent


def _require_files(vmap: VariableMap) -> None:
    missing = [f for f in vmap.files if not f.exists()]
    if missing:
        raise MissingFileError(f"{missing[0]}: file of the artifact is missing")


def read_all(vmap: VariableMap) -> str:
    """Read every tensor once (formats without checksums): proves each is readable."""
    _require_files(vmap)
    count = 0
    for var in vmap.values():
        var.read()
        count += 1
    return f"{count} tensors read"


def read_scalar(var: Variable) -> int | None:
    """The integer value of a step-like scalar, or None when it is not a readable integer scalar."""
    if var.size != 1 or var.dtype not in COUNTER_DTYPES:
        return None
    scalar = getattr(var.loader, "scalar", None)
    value = scalar() if scalar is not None else None  # a bundle's counter, without numpy; its read errors raise
    if value is None:
        import numpy as np

        value = np.asarray(var.read()).reshape(-1)[0]
    try:
        return int(value)
    except (ValueError, OverflowError):
        return None


def tf_dtype_name(dtype: Any) -> str:
    """numpy-style name of a tf.DType (as TF's own readers return them)."""
    name = str(getattr(dtype, "name", dtype))
    return {"half": "float16", "float": "float32", "double": "float64"}.get(name, name)
