"""`ckpt scan`: is an artifact safe to load? Findings from its bytes alone; nothing in it is imported or run."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ckpt_tools.errors import UsageError
from ckpt_tools.messages import natural_key as name_key
from ckpt_tools.scanning.artifacts import kind_of, scan_artifact
from ckpt_tools.scanning.findings import JSON_SCHEMA, ArtifactScan, Finding, ScanReport, Skipped
from ckpt_tools.scanning.policy import Policy, load_policy
from ckpt_tools.scanning.rules import PICKLE_SUFFIXES, RULES, Rule, Severity
from ckpt_tools.storage import as_path, is_url, lexists, walk

MAX_ARTIFACTS = 100_000
FINDINGS_PER_ARTIFACT = 10_000
SEALED = frozenset(
    {"saved-model", "keras-directory", "saved-model+keras-directory"}
)  # directories scanned as one artifact, never descended
WALKED_KINDS = frozenset({"meta-graph", "keras-archive", "hdf5", "keras-config", "polyglot"})


def natural_key(path: str) -> tuple[tuple[tuple[int, int, str], ...], ...]:
    """Paths compared component by component, digit runs as numbers (`ckpt-2` before `ckpt-10`)."""
    return tuple(name_key(part.casefold()) for part in path.split(os.sep))


def scan(paths: Iterable[str | Path], *, fail_on: Severity = Severity.HIGH, policy: Policy | None = None) -> ScanReport:
    """Scan files, directories (recursively) and glob patterns; see docs/scan.md for every rule."""
    policy = policy or Policy()
    results: list[ArtifactScan] = []
    skipped: list[Skipped] = []
    for given in paths:
        for path in _expand(str(given)):
            for shown, real, kind in _artifacts(path, skipped):
                if len(results) >= MAX_ARTIFACTS:
                    raise UsageError(f"more than {MAX_ARTIFACTS} artifacts in one scan; scan fewer paths")
                if kind is None:
                    results.append(ArtifactScan(shown, "unknown", error=_unknown(real)))
                else:
                    results.append(policy.apply(scan_artifact(real, kind, shown, FINDINGS_PER_ARTIFACT)))
    return ScanReport(tuple(results), fail_on, tuple(skipped), policy.source)


def _expand(given: str) -> list[Path]:
    """A path as given, or the matches of a glob pattern that is not itself a path."""
    if is_url(given):
        return [as_path(given)]
    if os.path.lexists(given) or not glob.has_magic(given):
        return [Path(given)]
    matches = sorted(glob.glob(given, recursive=True), key=natural_key)
    if not matches:
        raise UsageError(f"{given}: no path matches this pattern")
    return [Path(m) for m in matches]


def _unknown(path: Path) -> str:
    if not lexists(path):
        return f"{path}: no such file or directory"
    if path.is_dir():
        return f"{path}: no artifact ckpt scan knows under this directory"
    return f"{path}: not an artifact ckpt scan knows (SavedModel, .meta, checkpoint directory, .keras, HDF5)"


def _artifacts(path: Path, skipped: list[Skipped]) -> Iterator[tuple[str, Path, str | None]]:
    """(shown path, path, kind) of the artifact at `path`, or of every artifact under a plain directory. A path
    given explicitly is taken as the user names it (a symbolic link to an artifact is scanned); links found
    while walking a directory are never followed."""
    kind = kind_of(path)
    if kind is not None or not path.is_dir():
        yield str(path), path, kind
        return
    found = 0
    for item in _walk(path, skipped):
        found += 1
        yield item
    if not found:  # a gate that scanned nothing must not pass: perhaps a format ckpt scan does not know
        yield str(path), path, None


def _walk(root: Path, skipped: list[Skipped]) -> Iterator[tuple[str, Path, str | None]]:
    for here, dirs, files in walk(root):
        dirs.sort(key=natural_key)
        kind = kind_of(here) if here != root else None
        if kind in SEALED:
            dirs.clear()
            yield str(here), here, kind
            continue
        metas_done = kind == "checkpoint-directory" or (here == root and kind_of(root) == "checkpoint-directory")
        if kind == "checkpoint-directory":
            yield str(here), here, kind
        yield from _files(here, sorted(files, key=natural_key), metas_done, skipped)
        keep = [d for d in dirs if not (here / d).is_symlink()]
        skipped.extend(Skipped(str(here / d), "a symbolic link (not followed)") for d in dirs if d not in keep)
        dirs[:] = keep


def _files(
    here: Path, names: list[str], metas_done: bool, skipped: list[Skipped]
) -> Iterator[tuple[str, Path, str | None]]:
    for name in names:
        path = here / name
        if path.is_symlink():
            skipped.append(Skipped(str(path), "a symbolic link (not followed)"))
            continue
        kind = kind_of(path)
        if kind in WALKED_KINDS and not (metas_done and kind == "meta-graph"):
            yield str(path), path, kind
        elif name.lower().endswith(PICKLE_SUFFIXES):
            skipped.append(Skipped(str(path), "a pickle-capable file: not read by ckpt scan (loading it runs code)"))


def rules() -> tuple[Rule, ...]:
    """Every rule, by id."""
    return tuple(RULES[r] for r in sorted(RULES))


__all__ = [
    "JSON_SCHEMA",
    "ArtifactScan",
    "Finding",
    "Policy",
    "ScanReport",
    "Severity",
    "load_policy",
    "rules",
    "scan",
]
