"""`validate`'s `files` and `state` checks: every file present and intact, every state-file entry present."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from .errors import CkptToolsError, CorruptCheckpointError, MissingFileError, UnsafeInputError
from .messages import counted, flat, listed
from .model import VariableMap

Status = Literal["pass", "fail", "skip"]
MAX_LISTED = 5
BUNDLE_FORMATS = ("tf1-checkpoint", "tf2-checkpoint", "saved-model")
HDF5_FORMATS = ("keras-weights-h5", "keras2-h5")
READ_BLOCK = 1 << 20
_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


def check_files(vmap: VariableMap) -> tuple[Status, str]:
    """Every file present with consistent sizes; checksums verified where the format stores them."""
    try:
        detail = verify_files(vmap)
    except (CkptToolsError, OSError) as exc:
        return "fail", flat(exc) or type(exc).__name__
    return "pass", detail


def check_state(vmap: VariableMap) -> tuple[Status, str]:
    """The `checkpoint` state file beside a bundle lists only checkpoints that exist."""
    directory = state_directory(vmap)
    if directory is None:
        return "skip", f"{vmap.format} artifacts have no checkpoint state file"
    try:
        return verify_state(directory)
    except (CkptToolsError, OSError) as exc:
        return "fail", flat(exc)


# --- files ---------------------------------------------------------------------------------------------------


def verify_files(vmap: VariableMap) -> str:
    """Raise CkptToolsError naming the first problem; return what was verified."""
    missing = [f for f in vmap.files if not f.exists()]
    if missing:
        raise MissingFileError(f"{missing[0]}: file of the artifact is missing")
    prefix = _bundle_prefix_of(vmap)
    if prefix is not None:
        return _verify_bundle(prefix)
    if vmap.format in HDF5_FORMATS:
        return _verify_hdf5(Path(vmap.path))
    if vmap.format == "keras-archive":
        members = _verify_zip(Path(vmap.path))
        return f"{members} zip members pass their CRC; " + _read_all(vmap)
    if vmap.format == "saved-model" and not len(vmap):
        return "saved_model.pb present; no variables to verify"
    return _read_all(vmap) + " (this format stores no checksums)"


def _bundle_prefix_of(vmap: VariableMap) -> Path | None:
    if vmap.format not in BUNDLE_FORMATS or vmap.metadata.get("bundle") == "v1":
        return None
    if vmap.format == "saved-model":
        prefix = Path(vmap.path) / "variables" / "variables"
        return prefix if Path(str(prefix) + ".index").is_file() else None
    raw = vmap.metadata.get("prefix")
    if raw is None:
        return None
    return Path(raw)


def _verify_bundle(prefix: Path) -> str:
    from .bundle import BundleReader

    reader = BundleReader(prefix)
    problems = reader.verify_all()
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CorruptCheckpointError(f"{len(problems)} problem(s): {'; '.join(problems[:3])}{more}")
    shards = len(reader.data_files)
    return f"{len(reader.entries)} entries in {shards} shard{'s' if shards != 1 else ''}: sizes and CRC32C verified"


def _verify_hdf5(path: Path) -> str:
    import h5py

    datasets = 0

    def visit(name: str, obj: Any) -> None:
        nonlocal datasets
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.external or obj.is_virtual:
            raise UnsafeInputError(f"{path}: dataset {name!r} stores its data in other files")
        _read_dataset(obj)
        datasets += 1

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CorruptCheckpointError(f"{path}: HDF5 read failed after {datasets} datasets: {exc}") from exc
    return f"{datasets} HDF5 datasets read in full"


def _read_dataset(dataset: Any) -> None:
    """Read a dataset completely, in blocks along its first axis so memory stays bounded."""
    if dataset.shape is None or dataset.size == 0:
        return
    if not dataset.shape or dataset.dtype.itemsize * dataset.size <= 64 * READ_BLOCK:
        dataset[()]
        return
    rows = dataset.shape[0]
    per_row = max(1, dataset.dtype.itemsize * (dataset.size // max(rows, 1)))
    step = max(1, (64 * READ_BLOCK) // per_row)
    for start in range(0, rows, step):
        dataset[start : start + step]


def _verify_zip(path: Path) -> int:
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                with archive.open(info) as member:
                    while member.read(READ_BLOCK):
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptCheckpointError(f"{path}: zip archive check failed: {exc}") from exc
    return len(infos)


def _read_all(vmap: VariableMap) -> str:
    count = 0
    for var in vmap.values():
        var.read()
        count += 1
    return f"{count} tensors read"


# --- state -----------------------------------------------------------------------------------------------------


def state_directory(vmap: VariableMap) -> Path | None:
    """The folder whose `checkpoint` state file describes this artifact (bundle checkpoints only)."""
    if vmap.format not in ("tf1-checkpoint", "tf2-checkpoint"):
        return None
    path = Path(vmap.path)
    if path.is_dir():
        return path
    raw = vmap.metadata.get("prefix")
    return Path(raw).parent if raw else path.parent


def _checkpoint_exists(prefix: Path) -> str | None:
    """None when the checkpoint at `prefix` is present, else what is missing."""
    index = Path(str(prefix) + ".index")
    if not index.is_file():
        if prefix.is_file():
            return None  # V1 single-file checkpoint
        return f"{prefix.name} (no .index)"
    shards = [_SHARD.search(p.name) for p in prefix.parent.glob(glob_escape(prefix.name) + ".data-*-of-*")]
    found = {(int(m.group(1)), int(m.group(2))) for m in shards if m}
    if not found:
        return f"{prefix.name} (no data file)"
    total = max(n for _, n in found)
    absent = [i for i in range(total) if (i, total) not in found]
    if absent:
        return f"{prefix.name} (shard {absent[0]} of {total} missing)"
    return None


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def verify_state(directory: Path) -> tuple[Status, str]:
    from .paths import STATE_FILE, read_state, state_prefixes

    state = read_state(directory)
    if state is None:
        return "skip", "no checkpoint state file"
    prefixes = state_prefixes(directory)
    if not prefixes:
        return "fail", f"{directory / STATE_FILE}: names no checkpoint"
    missing = [m for m in (_checkpoint_exists(p) for p in prefixes) if m is not None]
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        how_many = counted(len(missing), "checkpoint")
        return "fail", f"state file lists {how_many} that {verb} not exist: {listed(missing, MAX_LISTED)}"
    latest = f"; latest {Path(state.latest).name}" if state.latest else ""
    return "pass", f"state file lists {counted(len(prefixes), 'checkpoint')}, all present{latest}"
