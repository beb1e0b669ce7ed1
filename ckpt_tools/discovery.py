"""Finding every checkpoint and model artifact under directories: one read-only row each, in natural order."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tools.errors import CkptToolsError, FormatNotRecognizedError, UsageError
from ckpt_tools.messages import bounded, escaped_name, flat, os_reason
from ckpt_tools.model import VariableMap
from ckpt_tools.parallel import early_pool, ordered_batches, resolve_jobs
from ckpt_tools.readers.paths import is_state_file, read_state, resolve_state_entry
from ckpt_tools.storage import as_path, is_url, not_found, scrub
from ckpt_tools.tree import natural_key as name_key

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

JSON_SCHEMA = "ckpt-tools/ls/1"
# What reading a checkpoint imports: each --jobs worker imports it while this process walks the folders
READING = ("ckpt_tools.readers.registry", "ckpt_tools.readers.tf2", "ckpt_tools.bundle.reader", "ckpt_tools.verdict")
MAX_ENTRIES = 100_000
STATE_FILE = "checkpoint"
INDEX = ".index"
META = ".meta"
FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
BUNDLE_FORMATS = frozenset({"tf1-checkpoint", "tf2-checkpoint"})
# Directories that are one artifact as a whole, internals included: a SavedModel, a Keras 3 BackupAndRestore
# folder, an unzipped `.keras` archive (a tf_keras BackupAndRestore folder is recognized by its `chief/`).
SEALED_MARKERS: tuple[tuple[str, ...], ...] = (
    ("saved_model.pb",),
    ("saved_model.pbtxt",),
    ("latest.weights.h5", "training_metadata.json"),
    ("model.weights.h5", "config.json"),
)
TF_KERAS_BACKUP = "chief"


def _show(text: str) -> str:
    """`text` fit for a terminal and a report: control characters escaped, URL credentials and queries gone."""
    return escaped_name(scrub(text))


def natural_key(path: str) -> tuple[tuple[tuple[int, int, str], ...], ...]:
    """Sort key comparing paths component by component, digit runs as numbers (`ckpt-2` before `ckpt-10`)."""
    return tuple(name_key(part.casefold()) for part in path.split(os.sep))


@dataclass(frozen=True)
class Artifact:
    """One listed artifact: where it is (`path`, as the root was given), what it is, and whether it resumes.

    `optimizer` is `present`, `absent` or `unknown` (the reader's evidence could not decide); `prefix` is the
    tensor bundle (or V1 file) the variables come from, when the format has one.
    """

    path: str
    root: str
    format: str
    tensors: int
    parameters: int
    step: int | None
    epoch: int | None
    optimizer: str
    resumable: bool
    prefix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "root": self.root,
            "format": self.format,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "step": self.step,
            "epoch": self.epoch,
            "optimizer": self.optimizer,
            "resumable": self.resumable,
            "prefix": self.prefix,
        }


@dataclass(frozen=True)
class ListingError:
    """A candidate artifact (or a directory) that could not be read, and why, on one line."""

    path: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}


@dataclass(frozen=True)
class Progress:
    """How far a listing has got: directory entries seen, candidates read (listed or failed), the one read now."""

    entries: int
    artifacts: int
    path: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class LsResult:
    """Every artifact found under `roots` and every candidate that could not be read, both in natural order.

    `exit_code` is 0 when every candidate was read (also when none was found), 1 when any could not be.
    `empty_roots` are the roots under which nothing at all was found.
    """

    roots: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    errors: tuple[ListingError, ...]
    entries: int = 0
    symlinks_skipped: int = 0
    empty_roots: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    @property
    def summary(self) -> dict[str, Any]:
        formats: dict[str, int] = {}
        for artifact in self.artifacts:
            formats[artifact.format] = formats.get(artifact.format, 0) + 1
        return {
            "artifacts": len(self.artifacts),
            "resumable": sum(1 for a in self.artifacts if a.resumable),
            "errors": len(self.errors),
            "formats": dict(sorted(formats.items())),
            "entries_scanned": self.entries,
            "symlinks_skipped": self.symlinks_skipped,
            "empty_roots": list(self.empty_roots),
            "truncated": self.truncated,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "roots": list(self.roots),
            "artifacts": [a.to_json() for a in self.artifacts],
            "errors": [e.to_json() for e in self.errors],
            "summary": self.summary,
            "exit_code": self.exit_code,
        }


class _Truncated(Exception):
    """The directory-entry budget ran out."""


def resolved(path: Path) -> Path:
    """`path.resolve()`, with a symlink loop raised as OSError (ELOOP) like the other filesystem errors: Python
    3.11's Path.resolve raises RuntimeError for it."""
    try:
        return path.resolve()
    except RuntimeError as exc:
        raise OSError(errno.ELOOP, "symlink loop", str(path)) from exc


def _optimizer_word(vmap: VariableMap) -> str:
    present = vmap.optimizer.present
    return "unknown" if present is None else "present" if present else "absent"


def _shown(root: str, path: Path | None) -> str | None:
    """`path` spelled under the root as the user gave it when it lies inside the root, else as it is."""
    if path is None:
        return None
    try:
        inside = resolved(path).relative_to(resolved(as_path(root)))
    except (ValueError, OSError):
        return _show(str(path))
    return _show(os.path.join(root, str(inside)) if str(inside) != "." else root)


def _row(root: str, shown: str, vmap: VariableMap) -> Artifact:
    from ckpt_tools.verdict import resume_verdict

    return Artifact(
        path=_show(shown),
        root=_show(root),
        format=vmap.format,
        tensors=len(vmap),
        parameters=vmap.parameters,
        step=vmap.step,
        epoch=vmap.epoch,
        optimizer=_optimizer_word(vmap),
        resumable=resume_verdict(vmap).resumable,
        prefix=_shown(root, vmap.prefix),
    )


def _state_latest(directory: Path) -> Path | None:
    """The checkpoint the directory's state file names as latest, resolved; None when it names none."""
    try:
        state = read_state(directory)
        if state is None or state.latest is None:
            return None
        return resolve_state_entry(directory, state.latest)
    except (CkptToolsError, OSError):
        return None


def _file_candidates(files: set[str]) -> list[tuple[str, bool]]:
    """(name to open, a guess) per file that may be an artifact: `.keras` / `.h5` / `.hdf5` files, bundle
    prefixes (`X` of each `X.index`), and, as guesses, V1 single files (`X` with an `X.meta` and no `X.index`)."""
    out: list[tuple[str, bool]] = []
    for name in sorted(files):
        if name.lower().endswith(FILE_SUFFIXES):
            out.append((name, False))
        elif name.endswith(INDEX) and len(name) > len(INDEX):
            out.append((name[: -len(INDEX)], False))
        elif name + META in files and name + INDEX not in files and not name.endswith(META):
            out.append((name, True))
    return out


def _is_sealed(directory: Path, files: set[str], dirs: set[str]) -> bool:
    """Whether the directory is an artifact as a whole, to be read as one and never descended into."""
    if any(all(name in files for name in marker) for marker in SEALED_MARKERS):
        return True
    return TF_KERAS_BACKUP in dirs and is_state_file(directory / TF_KERAS_BACKUP / STATE_FILE)


@dataclass(frozen=True)
class _Candidate:
    """A path to read, as the walk found it: under `root`, shown as `shown`, its resolved `key`."""

    root: str
    shown: str
    key: Path
    guess: bool


@dataclass(frozen=True)
class _Outcome:
    """What reading a candidate gave: its row, or the error text (None for a guess no reader accepts), and the
    resolved bundle prefix it was read from (counted as read either way). Computed in this process, or in a
    worker process with `jobs`."""

    row: Artifact | None
    error: str | None = None
    prefix: Path | None = None


def _read_candidate(candidate: _Candidate, follow_symlinks: bool = False) -> _Outcome:
    """Open one candidate for its metadata: its row, or why it cannot be read."""
    from ckpt_tools.readers.confine import FOLLOW_SYMLINKS
    from ckpt_tools.readers.registry import open_checkpoint

    FOLLOW_SYMLINKS.set(follow_symlinks or FOLLOW_SYMLINKS.get())
    prefix = None
    try:
        with open_checkpoint(candidate.shown) as vmap:
            prefix = resolved(vmap.prefix) if vmap.prefix is not None else None
            return _Outcome(_row(candidate.root, candidate.shown, vmap), prefix=prefix)
    except FormatNotRecognizedError as exc:
        return _Outcome(None, None if candidate.guess else flat(exc) or type(exc).__name__, prefix)
    except (CkptToolsError, OSError) as exc:
        return _Outcome(None, flat(exc) or type(exc).__name__, prefix)


class _Walker:
    """The mutable state of one listing: what was read (never twice), what was listed, the entry budget.

    With `deferred`, the walk only records what it would read (`events`: candidates, and the resolved paths a
    state file marks as read) so that the reads can run in parallel; `replay` then applies their outcomes in
    walk order, with exactly the decisions a sequential walk makes."""

    def __init__(self, max_entries: int, progress: ProgressCallback | None, deferred: bool = False) -> None:
        self.max_entries = max_entries
        self.progress = progress
        self.deferred = deferred
        self.events: list[_Candidate | Path] = []
        self.rows: list[Artifact] = []
        self.errors: list[ListingError] = []
        self.seen: set[Path] = set()  # artifacts (paths, bundle prefixes) already read, resolved
        self.visited: set[Path] = set()  # directories already listed, resolved
        self.entries = 0
        self.symlinks = 0
        self.duplicates = 0  # candidates skipped because an earlier row or root already read them

    @property
    def outcomes(self) -> int:
        """Candidates dealt with so far: listed, failed, or skipped as already read."""
        return len(self.rows) + len(self.errors) + self.duplicates

    def fail(self, path: str, exc: BaseException | str) -> None:
        """Record an error; a message that starts by naming the path says it once, in `path`."""
        text = exc if isinstance(exc, str) else flat(exc) or type(exc).__name__
        for spelling in (path, str(Path(path))):
            if text.startswith(spelling + ": "):
                text = text[len(spelling) + 2 :]
                break
        self.errors.append(ListingError(_show(path), bounded(_show(text))))

    def walk(self, root: str) -> None:
        """List `root` and everything below it, depth first, without recursion. Only the root is resolved: a
        subdirectory found by the walk is no symlink, so it resolves to its name inside its resolved parent (one
        resolve per directory made deep trees quadratic: each costs one lstat per level)."""
        stack: list[tuple[str, Path | None]] = [(root, None)]
        while stack:
            stack.extend(reversed(self.directory(root, *stack.pop())))

    def scan(self, shown: str) -> tuple[set[str], set[str], set[str]] | None:
        """The files, real subdirectories and symlinks of a directory; symlinks are counted, never followed."""
        files: set[str] = set()
        dirs: set[str] = set()
        links: set[str] = set()
        try:
            if is_url(shown):
                return self.scan_remote(shown)
            with os.scandir(shown) as it:
                for entry in it:
                    self.entries += 1
                    if self.entries > self.max_entries:
                        raise _Truncated(shown)
                    if entry.is_symlink():
                        self.symlinks += 1
                        links.add(entry.name)
                    elif entry.is_dir(follow_symlinks=False):
                        dirs.add(entry.name)
                    else:  # regular files, and FIFOs / sockets / devices: an artifact's name makes them an error
                        files.add(entry.name)
        except OSError as exc:
            self.fail(shown, f"cannot list this directory: {os_reason(exc)}")
            return None
        return files, dirs, links

    def scan_remote(self, shown: str) -> tuple[set[str], set[str], set[str]]:
        """scan() for a folder behind a URL: one listing (an object store has no symlinks)."""
        files: set[str] = set()
        dirs: set[str] = set()
        for entry in as_path(shown).iterdir():
            self.entries += 1
            if self.entries > self.max_entries:
                raise _Truncated(shown)
            (dirs if entry.is_dir() else files).add(entry.name)
        return files, dirs, set()

    def directory(self, root: str, shown: str, real: Path | None = None) -> list[tuple[str, Path | None]]:
        """Read the artifacts of one directory (`real`: its resolved path when known); return the
        subdirectories to descend into, each with its resolved path when that is known without resolving."""
        here = real if real is not None else as_path(shown).resolve()
        if here in self.visited:
            return []
        self.visited.add(here)
        listing = self.scan(shown)
        if listing is None:
            return []
        files, dirs, links = listing
        if _is_sealed(as_path(shown), files, dirs):
            self.read(root, shown, here)
            return []
        if STATE_FILE in files and is_state_file(as_path(shown) / STATE_FILE):
            latest = _state_latest(as_path(shown))
            if latest is not None:
                self.mark(latest)  # the directory's row stands for its latest checkpoint
            self.read(root, shown, here)
        local = not is_url(shown)
        for name, guess in _file_candidates(files):
            path = os.path.join(shown, name)
            # a name that is no symlink resolves to itself inside the resolved directory: no realpath per file
            plain = local and name not in links and name not in (".", "..")
            try:
                key = here / name if plain else as_path(path).resolve()
            except (RuntimeError, OSError) as exc:  # a symlink loop: Path.resolve raises RuntimeError on 3.11
                self.fail(path, f"cannot resolve this path: {flat(exc) or type(exc).__name__}")
                continue
            self.read(root, path, key, guess=guess)
        return [(os.path.join(shown, name), here / name if local else None) for name in sorted(dirs, key=natural_key)]

    def mark(self, key: Path) -> None:
        """Count `key` as read (a directory's row stands for the checkpoint its state file names latest)."""
        if self.deferred:
            self.events.append(key)
        else:
            self.seen.add(key)

    def read(self, root: str, shown: str, key: Path, *, guess: bool = False) -> None:
        """One row for the artifact at `shown`, or one error; a guess that no reader accepts is no artifact."""
        candidate = _Candidate(root, shown, key, guess)
        if self.deferred:
            self.events.append(candidate)
            return
        if key in self.seen:
            self.duplicates += 1
            return
        if self.progress is not None:
            self.progress(Progress(self.entries, len(self.rows) + len(self.errors), _show(shown)))
        self.apply(candidate, _read_candidate(candidate))

    def apply(self, candidate: _Candidate, outcome: _Outcome) -> None:
        """Record what reading a candidate gave (the candidate is not a duplicate)."""
        self.seen.add(candidate.key)
        if outcome.prefix is not None:
            self.seen.add(outcome.prefix)
        if outcome.row is not None:
            self.rows.append(outcome.row)
        elif outcome.error is not None:
            self.fail(candidate.shown, outcome.error)

    def replay(self, events: list[_Candidate | Path], outcomes: dict[int, _Outcome]) -> None:
        """Apply deferred events in walk order (`outcomes` by event index; a candidate without one was known to
        be a duplicate before reading)."""
        for index, event in enumerate(events):
            if isinstance(event, Path):
                self.seen.add(event)
            elif event.key in self.seen:
                self.duplicates += 1
            else:
                self.apply(event, outcomes[index] if index in outcomes else _read_candidate(event))


def _worth_reading(events: list[_Candidate | Path]) -> list[int]:
    """Indexes of the deferred candidates that are not certain duplicates (of a marked path or of an earlier
    candidate); a duplicate of an earlier row's bundle prefix shows only once it is read, and is dropped then."""
    known: set[Path] = set()
    out = []
    for index, event in enumerate(events):
        key = event if isinstance(event, Path) else event.key
        if isinstance(event, _Candidate) and key not in known:
            out.append(index)
        known.add(key)
    return out


def _read_all(events: list[_Candidate | Path], jobs: int, pool: ProcessPoolExecutor | None) -> dict[int, _Outcome]:
    """The outcome of every deferred candidate worth reading, read `jobs` at a time in worker processes."""
    from ckpt_tools.readers.confine import FOLLOW_SYMLINKS

    indexes = _worth_reading(events)
    candidates = [events[i] for i in indexes]
    read = functools.partial(_read_batch, follow_symlinks=FOLLOW_SYMLINKS.get())
    outcomes = ordered_batches(read, candidates, jobs, preload=[__name__], pool=pool)
    return dict(zip(indexes, outcomes, strict=True))


def _read_batch(candidates: list[_Candidate], follow_symlinks: bool) -> list[_Outcome]:
    return [_read_candidate(c, follow_symlinks) for c in candidates]


def _check_roots(roots: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    """The roots as given (trailing separators dropped); a usage error unless each is a directory."""
    names = tuple(os.fspath(r) for r in roots)
    if not names:
        raise UsageError("name at least one directory to list")
    out = []
    for name in names:
        if is_url(name):
            out.append(_check_remote_root(name))
            continue
        if not os.path.exists(name):
            raise UsageError(f"{name}: no such directory")
        if not os.path.isdir(name):
            raise UsageError(f"{name}: not a directory (list the directory that holds it)")
        out.append(name.rstrip(os.sep) or os.sep)
    return tuple(out)


def _check_remote_root(name: str) -> str:
    path = as_path(name)
    if not path.exists():
        raise UsageError(not_found(path))
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory (list the folder that holds it)")
    return name.rstrip("/")


def list_artifacts(
    roots: Iterable[str | os.PathLike[str]],
    *,
    progress: ProgressCallback | None = None,
    max_entries: int = MAX_ENTRIES,
    jobs: int = 1,
) -> LsResult:
    """Every checkpoint and model artifact under `roots`, each read once for its metadata (never its tensor
    values): one Artifact per artifact, one ListingError per candidate that could not be read. Symlinks are
    never followed; at most `max_entries` directory entries are looked at (then the listing stops with an
    error). `progress` is called before each artifact is read. `jobs` > 1 reads that many candidates at a time
    in worker processes (0: one per CPU), with the same result as one job. Raises UsageError unless every root
    is a directory."""
    names = _check_roots(roots)
    if max_entries < 1:
        raise UsageError(
            f"max_entries={max_entries}: must be at least 1", argument="max_entries", detail="must be at least 1"
        )
    jobs = resolve_jobs(jobs)
    walker = _Walker(max_entries, progress, deferred=jobs > 1)
    with early_pool(jobs, READING) as pool:
        segments, truncated = _walk_roots(walker, names, max_entries)
        empty = _empty_roots(walker, segments, jobs, pool)
    return LsResult(
        roots=tuple(_show(r) for r in names),
        # total orders: paths that differ only in case tie under natural_key, and the walk records errors in
        # another order with --jobs (listing errors as it walks, read errors after)
        artifacts=tuple(sorted(walker.rows, key=lambda a: (natural_key(a.path), a.path))),
        errors=tuple(sorted(walker.errors, key=lambda e: (natural_key(e.path), e.path, e.error))),
        entries=walker.entries,
        symlinks_skipped=walker.symlinks,
        empty_roots=tuple(empty),
        truncated=truncated,
    )


# One root's part of a walk: the root, whether an earlier root's walk had listed it already, the outcomes the
# walk itself recorded under it (listing errors; every read, unless deferred) and its slice of deferred events.
_Segment = tuple[str, bool, int, int, int]


def _walk_roots(walker: _Walker, names: tuple[str, ...], max_entries: int) -> tuple[list[_Segment], bool]:
    """Walk each root in turn until the entry budget runs out; what each root's walk recorded."""
    segments: list[_Segment] = []
    for root in names:
        covered = as_path(root).resolve() in walker.visited
        before, first = walker.outcomes, len(walker.events)
        truncated = False
        try:
            walker.walk(root)
        except _Truncated as exc:
            limit = f"stopped after {max_entries:,} directory entries (the limit): the listing is incomplete"
            walker.fail(str(exc), f"{limit}; list a narrower directory")
            truncated = True
        segments.append((root, covered, walker.outcomes - before, first, len(walker.events)))
        if truncated:
            return segments, True
    return segments, False


def _empty_roots(walker: _Walker, segments: list[_Segment], jobs: int, pool: ProcessPoolExecutor | None) -> list[str]:
    """Read what a deferred walk recorded (in parallel), root by root; the roots under which nothing was found."""
    outcomes = _read_all(walker.events, jobs, pool) if walker.deferred else {}
    empty = []
    for root, covered, recorded, first, last in segments:
        before = walker.outcomes
        if walker.deferred:
            walker.replay(walker.events[first:last], {i - first: o for i, o in outcomes.items() if first <= i < last})
        if not covered and recorded == 0 and walker.outcomes == before:
            empty.append(_show(root))
    return empty
