"""Real third-party artifacts from ../shared/corpus: inspected without error, keys/shapes/dtypes as TF saw them."""

from __future__ import annotations

import pytest

from ckpt_tools.inspection import inspect

from .conftest import CORPUS, corpus_entries, run_cli

ENTRIES = corpus_entries()
pytestmark = pytest.mark.skipif(not ENTRIES, reason="../shared/corpus is absent")
FORMAT_OF_KIND = {
    "savedmodel": {"saved-model"},
    "ckpt_v2": {"tf1-checkpoint", "tf2-checkpoint"},
    "ckpt_v1": {"tf1-checkpoint"},
    "h5": {"keras2-h5", "keras-weights-h5"},
}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_corpus_artifact_matches_ground_truth(entry: dict) -> None:
    if entry["kind"] == "ckpt_v1":
        pytest.importorskip("tensorflow", reason="V1-format checkpoints are read through TensorFlow")
    result = inspect(CORPUS / entry["path"])
    assert result.vmap.format in FORMAT_OF_KIND[entry["kind"]]
    got = sorted([v.key, list(v.shape), v.dtype] for v in result.variables)
    assert got == sorted([k, list(s), d] for k, s, d in entry["tensors"])
    info = result.vmap.optimizer
    if info.present != entry["optimizer"]:  # see test_resume_verdicts.test_corpus_verdict_changes_are_...
        stateless_sgd = info.present is True and not info.slots_expected and info.evidence == "training ops"
        undecidable_export = info.present is None and "inference export" in info.reason
        assert stateless_sgd or undecidable_export, info


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_corpus_artifact_cli_exit_zero(entry: dict) -> None:
    if entry["kind"] == "ckpt_v1":
        pytest.importorskip("tensorflow")
    run_cli(["inspect", CORPUS / entry["path"], "--json"])
