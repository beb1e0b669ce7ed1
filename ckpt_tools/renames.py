"""Rename rules that turn each side's variable names into the canonical names used to pair them."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ckpt_tools.errors import MissingDependencyError, MissingFileError, UsageError
from ckpt_tools.messages import os_reason
from ckpt_tools.model import Variable

Side = Literal["a", "b"]
RuleSide = Literal["a", "b", "both"]
SIDES: tuple[str, ...] = ("a", "b", "both")
MAX_RULES_BYTES = 1 << 20
MAX_RULES = 10_000  # YAML aliases can make a small file name millions of rules

_RULE_KEYS = {"from", "to", "side"}
_FILE_KEYS = {"rules", "side", "strip_prefix"}


@dataclass(frozen=True)
class Rule:
    """One regex substitution (`to` is a `re.sub` template; None drops the variables it matches)."""

    pattern: re.Pattern[str]
    to: str | None
    side: RuleSide = "both"

    def applies_to(self, side: Side) -> bool:
        return self.side == "both" or self.side == side

    def to_json(self) -> dict[str, Any]:
        return {"from": self.pattern.pattern, "to": self.to, "side": self.side}


@dataclass(frozen=True)
class RenameRules:
    """Prefix stripping, then rules applied in order, each to the previous rule's output.

    `apply(name, side)` returns the canonical name, or None when a rule with `"to": null` matched (the
    variable takes no part in the comparison).
    """

    rules: tuple[Rule, ...] = ()
    strip_prefixes: tuple[tuple[str, RuleSide], ...] = ()
    source: str | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return bool(self.rules or self.strip_prefixes)

    def apply(self, name: str, side: Side) -> str | None:
        prefixes = sorted((p for p, s in self.strip_prefixes if s in ("both", side)), key=len, reverse=True)
        for prefix in prefixes:
            if prefix and name.startswith(prefix):
                name = name[len(prefix) :]
                break
        for rule in self.rules:
            if not rule.applies_to(side):
                continue
            if rule.to is None:
                if rule.pattern.search(name):
                    return None
                continue
            try:
                name = rule.pattern.sub(rule.to, name)
            except (re.error, IndexError) as exc:
                where = self.source or "rename rules"
                raise UsageError(f"{where}: replacement {rule.to!r} is invalid for {name!r}: {exc}") from exc
        return name

    def with_strip_prefixes(self, prefixes: Iterable[str], side: RuleSide = "both") -> RenameRules:
        extra = tuple((p, side) for p in prefixes if p)
        return replace(self, strip_prefixes=self.strip_prefixes + extra)

    def canonical(self, variables: Iterable[Variable], side: Side) -> dict[str, Variable]:
        """Canonical name -> variable for one side; dropped variables are left out.

        Two variables that the rules map to one name are an error. Two variables the reader itself gave the
        same name (a reader quirk, not the user's rules) are kept apart by appending their keys.
        """
        out: dict[str, Variable] = {}
        origin: dict[str, str] = {}
        for var in variables:
            canonical = self.apply(var.name, side)
            if canonical is None:
                continue
            if canonical in out:
                other = out[canonical]
                if other.name != var.name:
                    raise UsageError(
                        f"{self.source or 'rename rules'}: side {side} variables {origin[canonical]!r} and "
                        f"{var.name!r} both map to {canonical!r}"
                    )
                canonical = f"{canonical} [{var.key}]"
            out[canonical] = var
            origin[canonical] = var.name
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "strip_prefix": [{"prefix": p, "side": s} for p, s in self.strip_prefixes],
            "rules": [r.to_json() for r in self.rules],
        }

    @classmethod
    def from_data(cls, data: Any, source: str = "rename rules") -> RenameRules:
        """Build rules from parsed JSON/YAML: a mapping with `rules` (and optional `side`, `strip_prefix`),
        or a bare list of rules."""
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, Mapping):
            raise UsageError(f"{source}: expected an object with a 'rules' list, got {type(data).__name__}")
        unknown = set(data) - _FILE_KEYS
        if unknown:
            raise UsageError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        default_side = _side(data.get("side", "both"), source)
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise UsageError(f"{source}: 'rules' must be a list")
        if len(raw_rules) > MAX_RULES:
            raise UsageError(f"{source}: more than {MAX_RULES} rules")
        rules = tuple(_rule(item, i, default_side, source) for i, item in enumerate(raw_rules))
        raw_prefixes = data.get("strip_prefix", [])
        if isinstance(raw_prefixes, str):
            raw_prefixes = [raw_prefixes]
        if not isinstance(raw_prefixes, list) or not all(isinstance(p, str) for p in raw_prefixes):
            raise UsageError(f"{source}: 'strip_prefix' must be a string or a list of strings")
        return cls(rules=rules, strip_prefixes=tuple((p, default_side) for p in raw_prefixes if p), source=source)


def _side(value: Any, source: str) -> RuleSide:
    if value not in SIDES:
        raise UsageError(f"{source}: side must be one of a, b, both (got {value!r})")
    side: RuleSide = value
    return side


def _rule(item: Any, index: int, default_side: RuleSide, source: str) -> Rule:
    where = f"{source}: rule {index + 1}"
    if not isinstance(item, Mapping):
        raise UsageError(f"{where}: expected an object with 'from' and 'to'")
    unknown = set(item) - _RULE_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if "from" not in item or "to" not in item:
        raise UsageError(f"{where}: needs both 'from' and 'to' ('to': null drops matching variables)")
    pattern, to = item["from"], item["to"]
    if not isinstance(pattern, str) or not (to is None or isinstance(to, str)):
        raise UsageError(f"{where}: 'from' must be a string and 'to' a string or null")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{where}: bad regular expression {pattern!r}: {exc}") from exc
    return Rule(compiled, to, _side(item.get("side", default_side), where))


def load_rules(path: Path | str) -> RenameRules:
    """Read a rules file: YAML when it ends in .yaml/.yml (needs PyYAML), JSON otherwise."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise MissingFileError(f"{path}: rename rules file does not exist") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read rename rules: {os_reason(exc)}") from exc
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise UsageError(f"{path}: rename rules must be a regular file")
    size = info.st_size
    if size > MAX_RULES_BYTES:
        raise UsageError(f"{path}: rename rules file is larger than 1 MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read rename rules: {exc}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise MissingDependencyError(f"{path}: YAML rules need PyYAML (pip install pyyaml); or use JSON") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
        except (RecursionError, ValueError, OverflowError) as exc:  # nesting, integers past Python's limit
            raise UsageError(f"{path}: unreadable YAML ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    else:
        try:
            data = json.loads(text)
        except RecursionError as exc:
            raise UsageError(f"{path}: invalid JSON: nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, and integers past Python's int-string limit
            raise UsageError(f"{path}: invalid JSON: {str(exc).splitlines()[0]}") from exc
    return RenameRules.from_data(data, source=str(path))


def build_rules(map_file: Path | str | None = None, strip_prefix: Sequence[str] = ()) -> RenameRules:
    """Rules from an optional rules file (`map_file`, JSON or YAML) plus prefixes to strip on both sides."""
    rules = load_rules(map_file) if map_file is not None else RenameRules()
    return rules.with_strip_prefixes(strip_prefix)
