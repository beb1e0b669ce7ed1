"""Regenerate the pictures of docs/plots.md from the bundled fixtures: `python docs/make_pictures.py`."""

from __future__ import annotations

import os
from pathlib import Path

from ckpt_tools.diffing import diff
from ckpt_tools.history import history
from ckpt_tools.plotting import plot_diff, plot_history

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
MAX_BYTES = 150 * 1024


def main() -> None:
    """Draw docs/img/history.png (fixtures/tf1_adam) and docs/img/diff.png (ident/tf1 vs ident_altered)."""
    IMG.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # relative paths, so that the pictures name the fixtures as a reader of the docs would
    fixtures = Path("fixtures")
    plot_history(history(fixtures / "tf1_adam"), IMG / "history.png")
    plot_diff(diff(fixtures / "ident" / "tf1", fixtures / "ident_altered" / "model.keras"), IMG / "diff.png")
    for picture in (IMG / "history.png", IMG / "diff.png"):
        size = picture.stat().st_size
        assert size < MAX_BYTES, f"{picture} is {size} bytes (keep docs pictures under 150 KB)"
        print(f"{picture.relative_to(ROOT)}: {size} bytes")


if __name__ == "__main__":
    main()
