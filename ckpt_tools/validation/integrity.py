"""`validate`'s `files` and `state` checks: every file present and intact, every retained checkpoint too."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ckpt_tools.errors import CkptToolsError
from ckpt_tools.messages import counted, flat, listed
from ckpt_tools.model import VariableMap
from ckpt_tools.readers.paths import CheckpointState
from ckpt_tools.readers.registry import reader_of
from ckpt_tools.storage import is_remote
from ckpt_tools.verdict import Status

MAX_LISTED = 5
_SHARD = re.compile(r"\.data-(\d{5,9})-of-(\d{5,9})")
_STEP = re.compile(r"-(\d+)$")  # the step TensorFlow appends to a checkpoint's name (`model.ckpt-6`, `ckpt-2`)


# Within one validation run (`remembering`), what each checkpoint's integrity check found, by resolved prefix:
# None when intact, else the problem. A folder of N retained checkpoints is then verified N times, not N^2.
_VERIFIED: ContextVar[dict[Path, str | None] | None] = ContextVar("ckpt_verified", default=None)


@contextmanager
def remembering(memo: dict[Path, str | None] | None = None) -> Iterator[None]:
    """Integrity checks inside the `with` block remember their findings (in `memo`, or a fresh dict)."""
    token = _VERIFIED.set({} if memo is None else memo)
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def _remember(vmap: VariableMap, problem: str | None) -> None:
    """Note the finding for a checkpoint opened by its own prefix (what the state check would open again)."""
    memo = _VERIFIED.get()
    if memo is None or vmap.prefix is None:
        return
    try:
        if vmap.path.resolve() == vmap.prefix.resolve():
            memo[vmap.prefix.resolve()] = problem
    except (OSError, RuntimeError):
        pass


def check_files(vmap: VariableMap) -> tuple[Status, str]:
    """Every file present with consistent sizes; checksums verified where the format stores them."""
    try:
        detail = verify_files(vmap)
    except (CkptToolsError, OSError) as exc:
        problem = flat(exc) or type(exc).__name__
        _remember(vmap, problem)
        return "fail", problem
    _remember(vmap, None)
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


class _Listings:
    """The regular files of each folder, listed once: a state file may retain thousands of checkpoints, and
    globbing the folder for each of them would be quadratic."""

    def __init__(self) -> None:
        self._files: dict[Path, frozenset[str]] = {}

    def files(self, directory: Path) -> frozenset[str]:
        if directory not in self._files:
            try:
                if is_remote(directory):  # one listing request; the sizes and kinds come with it
                    self._files[directory] = frozenset(p.name for p in directory.iterdir() if p.is_file())
                else:
                    with os.scandir(directory) as entries:
                        self._files[directory] = frozenset(e.name for e in entries if _is_file(e))
            except OSError:
                self._files[directory] = frozenset()
        return self._files[directory]


def _is_file(entry: os.DirEntry[str]) -> bool:
    """Whether the entry is (or links to) a regular file; an entry that cannot be told (a symlink loop) is not,
    and does not hide the folder's other files."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _checkpoint_exists(prefix: Path, listings: _Listings | None = None) -> str | None:
    """None when the checkpoint at `prefix` is present, else what is missing."""
    files = (listings or _Listings()).files(prefix.parent)
    if prefix.name + ".index" not in files:
        if prefix.name in files:
            return None  # V1 single-file checkpoint
        return f"{prefix.name} (no .index)"
    head = prefix.name + ".data-"
    shards = [_SHARD.fullmatch(name[len(prefix.name) :]) for name in files if name.startswith(head)]
    return _shards_complete(prefix, {(int(m.group(1)), int(m.group(2))) for m in shards if m})


def _shards_complete(prefix: Path, found: set[tuple[int, int]]) -> str | None:
    """None when the shards `found` ((index, count) pairs) make one complete set, else what is missing."""
    if not found:
        return f"{prefix.name} (no data file)"
    total = max(n for _, n in found)
    present = 0
    while present < total and (present, total) in found:  # linear in the files found, not in `total`
        present += 1
    if present < total:
        return f"{prefix.name} (shard {present} of {total} missing)"
    return None


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
    listings = _Listings()
    missing = [m for m in (_checkpoint_exists(p, listings) for p in prefixes) if m is not None]
    problems = state_order_problems(state)
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        how_many = counted(len(missing), "checkpoint")
        problems.append(f"state file lists {how_many} that {verb} not exist: {listed(missing, MAX_LISTED)}")
    if problems:
        return "fail", "; ".join(problems)
    skipped = None if checked is None else checked.resolve()
    damaged = _damaged((p, key) for p, key in ((p, p.resolve()) for p in prefixes) if key != skipped)
    if damaged:
        return "fail", f"retained {counted(len(damaged), 'checkpoint')} damaged: {listed(damaged, 2)}"
    latest = f"; latest {Path(state.latest).name}" if state.latest else ""
    return "pass", f"state file lists {counted(len(prefixes), 'checkpoint')}, all present and intact{latest}"


def state_order_problems(state: CheckpointState) -> list[str]:
    """What makes a state file one TensorFlow never writes: `all_model_checkpoint_paths` lists checkpoints
    oldest first (ascending steps, when the names carry steps) and ends with `model_checkpoint_path`, the
    latest. A file that breaks this makes `tf.train.latest_checkpoint`, CheckpointManager's retention and this
    tool's history disagree about which checkpoint is newest. Each problem starts with `state order:`."""
    problems = []
    steps = [(entry, _step_digits(entry)) for entry in state.all]
    numbered = [(entry, step) for entry, step in steps if step is not None]
    for (before, a), (after, b) in itertools.pairwise(numbered):
        if (len(a), a) >= (len(b), b):
            problems.append(
                f"state order: all_model_checkpoint_paths is not in ascending step order "
                f"({_short(before)} before {_short(after)})"
            )
            break
    if state.latest is not None and state.all and state.all[-1] != state.latest:
        where = "is not the last" if state.latest in state.all else "is not one"
        problems.append(
            f"state order: the latest checkpoint {_short(state.latest)} (model_checkpoint_path) {where} of "
            "all_model_checkpoint_paths"
        )
    return problems


def _step_digits(entry: str) -> str | None:
    """The step in a checkpoint name's `-N` suffix as a digit string without leading zeros (compared by length,
    then text: a 5000-digit step is never turned into an int)."""
    match = _STEP.search(entry)
    return None if match is None else (match.group(1).lstrip("0") or "0")


def _short(entry: str) -> str:
    name = Path(entry).name if "\x00" not in entry else entry
    return repr(name if len(name) <= 80 else name[:60] + "..." + name[-12:])


def _damaged(prefixes: Iterable[tuple[Path, Path]]) -> list[str]:
    """`name (problem)` for each retained checkpoint (prefix, resolved) whose bytes fail its reader's own check
    (what this run found already is not checked again)."""
    memo = _VERIFIED.get()
    out = []
    for prefix, key in prefixes:
        if memo is not None and key in memo:
            problem = memo[key]
        else:
            problem = _verify_prefix(prefix)
            if memo is not None:
                memo[key] = problem
        if problem is not None:
            out.append(f"{prefix.name} ({problem[:200]})")
    return out


def _verify_prefix(prefix: Path) -> str | None:
    from ckpt_tools.readers.registry import open_checkpoint

    try:
        with open_checkpoint(prefix) as vmap:
            reader_of(vmap).verify(vmap)
    except (CkptToolsError, OSError) as exc:
        return flat(exc)
    return None
