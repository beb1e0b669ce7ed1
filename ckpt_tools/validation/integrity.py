"""`validate`'s `files` and `state` checks: every file present and intact, every retained checkpoint too."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ckpt_tools.errors import CkptToolsError
from ckpt_tools.messages import counted, flat, listed
from ckpt_tools.model import VariableMap
from ckpt_tools.readers.registry import reader_of
from ckpt_tools.verdict import Status

MAX_LISTED = 5
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
        return verify_state(directory, checked=vmap.prefix)
    except (CkptToolsError, OSError) as exc:
        return "fail", flat(exc)


# --- files ---------------------------------------------------------------------------------------------------


def verify_files(vmap: VariableMap) -> str:
    """Raise CkptToolsError naming the first problem; return what was verified (the reader's own hook)."""
    return reader_of(vmap).verify(vmap)


# --- state -----------------------------------------------------------------------------------------------------


def state_directory(vmap: VariableMap) -> Path | None:
    """The folder whose `checkpoint` state file describes this artifact, if its format keeps one."""
    return reader_of(vmap).state_directory(vmap)


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


def verify_state(directory: Path, checked: Path | None = None) -> tuple[Status, str]:
    """Every checkpoint the state file retains exists and passes its reader's integrity check (`checked`, the
    one the `files` check already verified, is not read twice)."""
    from ckpt_tools.readers.paths import STATE_FILE, read_state, state_prefixes

    state = read_state(directory)
    if state is None:
        return "skip", "no checkpoint state file"
    prefixes = state_prefixes(directory, state)
    if not prefixes:
        return "fail", f"{directory / STATE_FILE}: names no checkpoint"
    missing = [m for m in (_checkpoint_exists(p) for p in prefixes) if m is not None]
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        how_many = counted(len(missing), "checkpoint")
        return "fail", f"state file lists {how_many} that {verb} not exist: {listed(missing, MAX_LISTED)}"
    damaged = _damaged(p for p in prefixes if checked is None or p.resolve() != checked.resolve())
    if damaged:
        return "fail", f"retained {counted(len(damaged), 'checkpoint')} damaged: {listed(damaged, 2)}"
    latest = f"; latest {Path(state.latest).name}" if state.latest else ""
    return "pass", f"state file lists {counted(len(prefixes), 'checkpoint')}, all present and intact{latest}"


def _damaged(prefixes: Iterable[Path]) -> list[str]:
    """`name (problem)` for each retained checkpoint whose bytes fail its reader's own check."""
    from ckpt_tools.readers.registry import open_checkpoint

    out = []
    for prefix in prefixes:
        try:
            with open_checkpoint(prefix) as vmap:
                reader_of(vmap).verify(vmap)
        except (CkptToolsError, OSError) as exc:
            out.append(f"{prefix.name} ({flat(exc)[:200]})")
    return out
