"""Resolving what the user pointed at: checkpoint dirs, state files, prefixes, `.index` files."""

from __future__ import annotations

import os
import posixpath
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.messages import os_reason
from ckpt_tools.readers.confine import FOLLOW_SYMLINKS, confine, is_inside, real_path
from ckpt_tools.storage import as_path, is_remote, is_url, is_web, suffixed

STATE_FILE = "checkpoint"
# A state file of 8 MiB retains ~90 000 checkpoints with their timestamps (TensorFlow writes ~90 bytes per
# checkpoint); parsing is linear (string methods and one C-level unescape per quoted value, no backtracking).
MAX_STATE_BYTES = 8 << 20
MAX_STATE_ENTRIES = 1 << 18
_STATE_KEYS = ("model_checkpoint_path", "all_model_checkpoint_paths")
_IGNORED_KEYS = ("last_preserved_timestamp", "all_model_checkpoint_timestamps")
_UNESCAPED_QUOTE = re.compile(r'(?<!\\)"')


@dataclass(frozen=True)
class CheckpointState:
    """The parsed `checkpoint` state file of a checkpoint directory."""

    directory: Path
    latest: str | None
    all: tuple[str, ...]


def is_state_file(path: Path) -> bool:
    """A `checkpoint` text file (not a bundle prefix that happens to be called `checkpoint`).

    A `checkpoint` that is a symbolic link resolving outside its folder is never opened here: it counts as a
    state file, and read_state refuses it (unless following symlinks is on).
    """
    if path.name != STATE_FILE or not path.is_file():
        return False
    if not FOLLOW_SYMLINKS.get() and not is_inside(path.parent, path):
        return True
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
    confine(directory, state_path, "checkpoint state file")
    text = _state_text(state_path)
    latest: str | None = None
    every: list[str] = []
    for line in text.splitlines():
        parsed = _state_line(state_path, line)
        if parsed is None:
            continue
        key, value = parsed
        if key == "model_checkpoint_path":
            latest = value
        else:
            every.append(value)
            if len(every) > MAX_STATE_ENTRIES:
                raise CorruptCheckpointError(
                    f"{state_path}: checkpoint state file lists more than {MAX_STATE_ENTRIES} checkpoints"
                )
    return CheckpointState(directory, latest, tuple(every))


def _state_text(state_path: Path) -> str:
    """The state file's text: a regular file of at most MAX_STATE_BYTES of UTF-8."""
    try:
        with state_path.open("rb") as fh:
            mode = state_path.stat().st_mode if is_remote(state_path) else os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise CorruptCheckpointError(f"{state_path}: checkpoint state file is not a regular file")
            raw = fh.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise CorruptCheckpointError(f"{state_path}: cannot read: {os_reason(exc)}") from exc
    if len(raw) > MAX_STATE_BYTES:
        raise CorruptCheckpointError(f"{state_path}: checkpoint state file is larger than {MAX_STATE_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{state_path}: checkpoint state file is not UTF-8 text") from exc


def _state_line(state_path: Path, line: str) -> tuple[str, str] | None:
    """(key, value) of one `key: "value"` line; None for blank, comment and timestamp lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    key, colon, rest = text.partition(":")
    key = key.rstrip()
    if colon and key in _IGNORED_KEYS:
        return None
    value = rest.strip()
    if not colon or key not in _STATE_KEYS or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise CorruptCheckpointError(f"{state_path}: unreadable line in checkpoint state file: {line[:80]!r}")
    try:
        return key, unescape(value[1:-1])
    except ValueError as exc:
        raise CorruptCheckpointError(f"{state_path}: unreadable entry in checkpoint state file ({exc})") from exc


def unescape(body: str) -> str:
    """The text of a protobuf text-format string literal's body (C escapes: octal and `\\x` bytes, `\\n`...).

    Escapes stand for bytes (older writers escape every non-ASCII byte as octal), so the result is those bytes
    read as UTF-8. Raises ValueError for an unescaped quote, an unknown or truncated escape, or bytes that are
    not UTF-8 (TensorFlow cannot parse such a state file either).
    """
    if "\\" not in body:
        if '"' in body:
            raise ValueError("unescaped quote")
        return body
    compact = body.replace("\\\\", "")
    if _UNESCAPED_QUOTE.search(compact) or compact.endswith("\\"):
        raise ValueError("unescaped quote or dangling backslash")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown escape (`\q`) is only a DeprecationWarning otherwise
        try:
            decoded = body.encode("utf-8").decode("unicode_escape")
            return decoded.encode("latin-1").decode("utf-8")
        except (UnicodeError, Warning) as exc:
            raise ValueError(f"bad escape sequence or not UTF-8: {str(exc)[:80]}") from exc


def resolve_state_entry(directory: Path, entry: str) -> Path:
    """Where a state-file entry points (resolved), confined to `directory`.

    Relative entries are joined to the directory and must stay inside it (`..` never leaves it). Absolute
    entries (written by a job that ran elsewhere) are used only if they lie inside the directory; otherwise
    their base name is looked up in the directory, as a moved checkpoint folder needs. Either way the result
    must not resolve through a symlink to a place outside the directory (readers.confine: refused unless
    following symlinks is on).
    """
    if is_remote(directory):
        return _remote_entry(directory, entry)
    return _resolve_entry(directory, Path(real_path(directory)), entry)


def _remote_entry(directory: Path, entry: str) -> Path:
    """resolve_state_entry for a folder behind a URL (no symlinks there): the same rules on the URL's path.
    A relative entry may not climb out with `..`; an absolute one (a local path or a URL elsewhere, written by
    the job) is used when it lies inside the folder, else its base name is looked up in the folder."""
    state_path = directory / STATE_FILE
    if "\x00" in entry:
        raise UnsafeInputError(f"{state_path}: entry {entry!r} holds a NUL byte")
    if is_web(directory) and not is_url(entry):
        sent = unquote(entry)  # judged as the web client will send it: %2e%2e climbs like ..
        if "\\" in sent or "%" in sent:
            raise UnsafeInputError(f"{state_path}: entry {entry!r} holds an escaped or backslashed path")
        entry = sent
    if is_url(entry) or entry.startswith("/"):
        protocol, _, rest = entry.rpartition("://")
        normal = posixpath.normpath("/" + rest).lstrip("/")
        same_store = protocol.lower() == getattr(directory, "protocol", None) and normal  # else never opened
        candidate = as_path(f"{protocol}://{normal}") if same_store else None
        if candidate is not None and candidate != directory and is_inside(directory, candidate):
            return candidate
        return directory / posixpath.basename(normal)
    normal = posixpath.normpath(entry)
    if normal in (".", "..") or normal.startswith("../"):
        raise UnsafeInputError(f"{state_path}: entry {entry!r} points outside its directory")
    return directory / normal


def _resolve_entry(directory: Path, real_root: Path, entry: str) -> Path:
    """resolve_state_entry with the directory already resolved (`real_root`), for many entries at once."""
    state_path = directory / STATE_FILE
    if "\x00" in entry:
        raise UnsafeInputError(f"{state_path}: entry {entry!r} holds a NUL byte")
    root = Path(os.path.abspath(directory))
    raw = Path(entry)
    candidate = Path(os.path.normpath(raw if raw.is_absolute() else root / raw))
    if raw.is_absolute() and not (_below(root, candidate) or _below(real_root, candidate)):
        candidate = root / candidate.name
    if not (_below(root, candidate) or _below(real_root, candidate)):
        raise UnsafeInputError(f"{state_path}: entry {entry!r} points outside its directory")
    if _plain_below(root, candidate):  # no symlink below the folder: resolving is re-rooting
        return real_root / candidate.relative_to(root)
    confine(directory, candidate, "state-file entry")
    return Path(real_path(candidate))


def _below(root: Path, path: Path) -> bool:
    """`path` lies strictly inside `root` (both absolute and normalized; nothing is resolved)."""
    return root in path.parents


def _plain_below(root: Path, path: Path) -> bool:
    """`path` is under `root` through components none of which is a symlink (one lstat each, stopping at the
    first that does not exist): it then cannot resolve anywhere else, and full resolution is not needed."""
    if not _below(root, path):
        return False
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return True
        if stat.S_ISLNK(mode):
            return False
    return True


def state_prefixes(directory: Path, state: CheckpointState | None = None) -> list[Path]:
    """Every checkpoint the state file lists (oldest first), the latest included; `state` when the caller has
    already read it (the file is then not read again)."""
    state = state if state is not None else read_state(directory)
    if state is None:
        return []
    entries = list(state.all)
    if state.latest is not None and state.latest not in entries:
        entries.append(state.latest)
    if is_remote(directory):
        return [_remote_entry(directory, e) for e in entries]
    real_root = Path(real_path(directory))
    return [_resolve_entry(directory, real_root, e) for e in entries]


def artifact_root(path: Path) -> Path:
    """What a user's path stands for: a `checkpoint` state file stands for its directory, a `.meta` graph for
    the checkpoint saved beside it (`model.ckpt-6.meta` -> `model.ckpt-6`)."""
    if is_state_file(path):
        return path.parent
    if path.name.endswith(".meta") and path.is_file():
        prefix = path.with_name(path.name[: -len(".meta")])
        if suffixed(prefix, ".index").is_file() or prefix.is_file():
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
            if not suffixed(prefix, ".index").is_file() and not prefix.is_file():
                raise MissingFileError(f"{path / STATE_FILE}: latest checkpoint {state.latest!r} does not exist")
            return prefix
        indexes = sorted(p for p in path.iterdir() if p.name.endswith(".index") and p.is_file())
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        return None
    if suffixed(path, ".index").is_file():
        return path
    return None
