"""Resolving what the user pointed at: checkpoint dirs, state files, prefixes, `.index` files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError, UnsafeInputError

STATE_FILE = "checkpoint"
_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')
MAX_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class CheckpointState:
    """The parsed `checkpoint` state file of a checkpoint directory."""

    directory: Path
    latest: str | None
    all: tuple[str, ...]


def is_state_file(path: Path) -> bool:
    """A `checkpoint` text file (not a bundle prefix that happens to be called `checkpoint`)."""
    if path.name != STATE_FILE or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"model_checkpoint_path") or head.strip() == b""


def read_state(directory: Path) -> CheckpointState | None:
    """Parse `directory/checkpoint`; None when there is no state file."""
    state_path = directory / STATE_FILE
    if not is_state_file(state_path):
        return None
    if state_path.stat().st_size > MAX_STATE_BYTES:
        raise CorruptCheckpointError(f"{state_path}: checkpoint state file is larger than 1 MiB")
    latest: str | None = None
    every: list[str] = []
    try:
        text = state_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{state_path}: checkpoint state file is not UTF-8 text") from exc
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(
            ("#", "last_preserved_timestamp", "all_model_checkpoint_timestamps")
        ):
            continue
        match = _STATE_LINE.match(line)
        if match is None:
            raise CorruptCheckpointError(f"{state_path}: unreadable line in checkpoint state file: {line[:80]!r}")
        value = bytes(match.group(2), "utf-8").decode("unicode_escape")
        if match.group(1) == "model_checkpoint_path":
            latest = value
        else:
            every.append(value)
    return CheckpointState(directory, latest, tuple(every))


def resolve_state_entry(directory: Path, entry: str) -> Path:
    """Where a state-file entry points, confined to `directory`.

    Relative entries are joined to the directory and must stay inside it. Absolute entries (written by a job
    that ran elsewhere) are used only if they lie inside the directory; otherwise their base name is looked
    up in the directory, as a moved checkpoint folder needs.
    """
    root = directory.resolve()
    raw = Path(entry)
    if raw.is_absolute():
        candidate = raw.resolve()
        if candidate.parent != root and root not in candidate.parents:
            candidate = (root / raw.name).resolve()
    else:
        candidate = (root / raw).resolve()
        if root not in candidate.parents:
            raise UnsafeInputError(f"{directory / STATE_FILE}: entry {entry!r} points outside its directory")
    return candidate


def state_prefixes(directory: Path, state: CheckpointState | None = None) -> list[Path]:
    """Every checkpoint the state file lists (oldest first), the latest included; `state` when the caller has
    already read it (the file is then not read again)."""
    state = state if state is not None else read_state(directory)
    if state is None:
        return []
    entries = list(state.all)
    if state.latest is not None and state.latest not in entries:
        entries.append(state.latest)
    return [resolve_state_entry(directory, e) for e in entries]


def artifact_root(path: Path) -> Path:
    """What a user's path stands for: a `checkpoint` state file stands for its directory, a `.meta` graph for
    the checkpoint saved beside it (`model.ckpt-6.meta` -> `model.ckpt-6`)."""
    if is_state_file(path):
        return path.parent
    if path.name.endswith(".meta") and path.is_file():
        prefix = path.with_name(path.name[: -len(".meta")])
        if Path(str(prefix) + ".index").is_file() or prefix.is_file():
            return prefix
    return path


def bundle_prefix(path: Path) -> Path | None:
    """The tensor-bundle prefix a path names, or None when it names none.

    Accepts a prefix, a `.index` file, a `.data-*` file, or a directory with a `checkpoint` state file or with
    exactly one `.index` file.
    """
    path = artifact_root(path)
    name = path.name
    if name.endswith(".index") and path.is_file():
        return path.with_name(name[: -len(".index")])
    if re.search(r"\.data-\d{5}-of-\d{5}$", name) and path.is_file():
        return path.with_name(re.sub(r"\.data-\d{5}-of-\d{5}$", "", name))
    if path.is_dir():
        state = read_state(path)
        if state is not None:
            if state.latest is None:
                raise CorruptCheckpointError(f"{path / STATE_FILE}: state file names no model_checkpoint_path")
            prefix = resolve_state_entry(path, state.latest)
            if not Path(str(prefix) + ".index").is_file() and not prefix.is_file():
                raise MissingFileError(f"{path / STATE_FILE}: latest checkpoint {state.latest!r} does not exist")
            return prefix
        indexes = sorted(p for p in path.iterdir() if p.name.endswith(".index") and p.is_file())
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        return None
    if Path(str(path) + ".index").is_file():
        return path
    return None
