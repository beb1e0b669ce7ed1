"""Resume verdicts for every shared-corpus artifact, to compare two versions of ckpt-tools (run on demand)."""

# Usage: python benchmarks/corpus_verdicts.py [--corpus ../shared/corpus] [--out NOW.json] [--compare OLD.json]
# Run it once with an older checkout on PYTHONPATH to write OLD.json, then with this one to list what changed.

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import ckpt_tools
from ckpt_tools.errors import CkptToolsError


def verdicts(corpus: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in json.loads((corpus / "ground_truth.json").read_text()):
        path = corpus / entry["path"]
        try:
            report = ckpt_tools.validate(path)
            present = ckpt_tools.inspect(path).vmap.optimizer.present
        except CkptToolsError as exc:
            out[entry["path"]] = {"error": str(exc)[:120]}
            continue
        checks = {c.name: c.status for c in report.checks}
        out[entry["path"]] = {
            "valid": report.ok,
            "present": present,
            **{k: checks[k] for k in ("optimizer", "slots", "step")},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    now = verdicts(args.corpus)
    if args.out:
        args.out.write_text(json.dumps(now, indent=1))
    if args.compare:
        old = json.loads(args.compare.read_text())
        changed = [k for k in now if old.get(k) != now[k]]
        for key in changed:
            print(f"{key}\n   was {old.get(key)}\n   now {now[key]}")
        print(
            f"{len(changed)} of {len(now)} changed; valid {sum(bool(v.get('valid')) for v in old.values())} -> "
            f"{sum(bool(v.get('valid')) for v in now.values())}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
