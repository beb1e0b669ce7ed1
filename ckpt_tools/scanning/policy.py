"""A team's scan policy (TOML): ops, modules and rules it trusts; matching findings are kept but suppressed."""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport (setup.cfg)
    import tomli as tomllib

from ckpt_tools.errors import UsageError
from ckpt_tools.messages import os_reason
from ckpt_tools.scanning.findings import ArtifactScan, Finding
from ckpt_tools.scanning.rules import RULES

MAX_POLICY_BYTES = 1 << 20
MAX_ENTRIES = 10_000
_KEYS = ("ops", "modules", "rules", "paths")


@dataclass(frozen=True)
class Policy:
    """What a team allows. `ops`: graph op names; `modules`: Keras module / package globs; `rules`: rule ids
    never to fail on; `paths`: artifact path globs exempt from every rule."""

    source: str = ""
    ops: frozenset[str] = frozenset()
    modules: tuple[str, ...] = ()
    rules: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()

    def reason(self, artifact: str, finding: Finding) -> str:
        """Why the policy allows this finding ('' when it does not)."""
        if finding.rule in self.rules:
            return f"allow.rules {finding.rule!r}"
        for pattern in self.paths:
            if fnmatch.fnmatchcase(artifact, pattern):
                return f"allow.paths {pattern!r}"
        if finding.rule.startswith("graph.") and finding.subject in self.ops:
            return f"allow.ops {finding.subject!r}"
        if finding.rule.startswith("keras.") and finding.subject:
            for pattern in self.modules:
                if fnmatch.fnmatchcase(finding.subject, pattern):
                    return f"allow.modules {pattern!r}"
        return ""

    def apply(self, scan: ArtifactScan) -> ArtifactScan:
        findings = tuple(replace(f, suppressed=self.reason(scan.path, f)) for f in scan.findings)
        return replace(scan, findings=findings)


def load_policy(path: Path) -> Policy:
    """Parse a policy file; any problem is a UsageError naming the file (exit 2)."""
    try:
        if not path.is_file():
            raise UsageError(f"{path}: no such policy file (a regular file is needed)", argument="policy")
        data = path.open("rb").read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise UsageError(f"{path}: policy file larger than 1 MiB", argument="policy")
        document = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{path}: not a valid TOML policy ({str(exc).splitlines()[0]})", argument="policy") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the policy ({os_reason(exc)})", argument="policy") from None
    return _policy(document, str(path))


def _policy(document: dict[str, object], source: str) -> Policy:
    unknown = sorted(set(document) - {"allow"})
    allow = document.get("allow", {})
    if unknown or not isinstance(allow, dict):
        raise UsageError(f"{source}: a policy has one table, [allow] (found {unknown or 'allow = ...'})")
    values: dict[str, tuple[str, ...]] = {}
    for key, value in allow.items():
        if key not in _KEYS:
            raise UsageError(f"{source}: unknown key allow.{key} (known: {', '.join(_KEYS)})")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > MAX_ENTRIES:
            raise UsageError(f"{source}: allow.{key} must be a list of at most {MAX_ENTRIES} strings")
        values[key] = tuple(value)
    bad = sorted(set(values.get("rules", ())) - set(RULES))
    if bad:
        raise UsageError(f"{source}: allow.rules names unknown rules {bad} (see docs/scan.md)")
    return Policy(
        source,
        frozenset(values.get("ops", ())),
        values.get("modules", ()),
        frozenset(values.get("rules", ())),
        values.get("paths", ()),
    )
