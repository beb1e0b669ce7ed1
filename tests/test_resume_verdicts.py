"""Resume verdicts from evidence: present / absent / undecidable, optimizers found by structure, epochs, layouts.

The truth files of the resume fixtures (fixtures/gen_resume.py) come from how TF/Keras/tf_keras wrote them and
from resuming them with the framework; inspect and validate must agree with them and with each other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ckpt_tools.inspection import inspect
from ckpt_tools.validation.checks import validate
from ckpt_tools.verdict import TRAINING_CHECKS

from .conftest import CORPUS, FIXTURES, corpus_entries, expected_fixtures, fixture_params, fixture_path, run_json

RESUME = [t for t in expected_fixtures() if "validate" in t]
RESUME_PARAMS = [pytest.param(t, id=t["id"]) for t in RESUME]


def test_resume_fixtures_exist() -> None:
    ids = {t["id"] for t in RESUME}
    assert {
        "tf1_step_only",
        "tf1_step_only_nometa",
        "tf1_adam_slots_dropped",
        "tf1_two_optimizers",
        "saved_model_tf1_export",
        "tf2_gan_both",
        "tf2_gan_one",
        "tf2_custom_attr",
        "backup_keras3",
        "backup_tfkeras",
        "keras3_compiled_untrained",
    } <= ids


@pytest.mark.parametrize("truth", RESUME_PARAMS)
def test_presence_step_and_epoch_match_truth(truth: dict[str, Any]) -> None:
    report = run_json(["inspect", fixture_path(truth)])
    assert report["optimizer"]["present"] == truth["optimizer"]["present"], report["optimizer"]["reason"]
    assert report["step"] == truth["step"]
    assert report["epoch"] == truth["epoch"]
    if truth["optimizer"]["present"] is None:
        assert report["optimizer"]["reason"], "an undecidable verdict must say why"


@pytest.mark.parametrize("truth", RESUME_PARAMS)
def test_validate_verdict_matches_truth(truth: dict[str, Any]) -> None:
    report = validate(fixture_path(truth))
    failing = {c.name for c in report.checks if c.status == "fail"}
    assert failing == set(truth["validate"]["failing"]), report.problems()
    assert report.ok == (truth["validate"]["verdict"] == "valid")


@pytest.mark.parametrize("truth", [t for t in RESUME if t["format"] == "tf2-checkpoint"], ids=lambda t: t["id"])
def test_optimizers_found_by_structure(truth: dict[str, Any]) -> None:
    """Every stored optimizer object is found, whatever the checkpoint attribute is called."""
    report = run_json(["inspect", fixture_path(truth)])
    stored = sorted(o["attribute"] for o in truth["optimizers"] if o["attribute"] is not None)
    assert sorted(o["path"] for o in report["optimizer"]["optimizers"]) == stored
    for found in report["optimizer"]["optimizers"]:
        assert found["step"] == truth["step"]


def test_gan_with_one_optimizer_names_the_model_without_one() -> None:
    report = validate(FIXTURES / "tf2_gan_one")
    reason = report.check("slots").reason
    assert "'discriminator' (4 trainable weights) has no saved optimizer" in reason


def test_two_tf1_optimizers_are_both_reported() -> None:
    report = run_json(["inspect", FIXTURES / "tf1_two_optimizers"])
    assert [o["name"] for o in report["optimizer"]["optimizers"]] == ["Adam", "SGD(momentum)"]
    assert report["optimizer"]["evidence"] == "training ops"


def test_slots_dropped_by_the_saver_are_absent_with_the_graph_as_evidence() -> None:
    report = run_json(["inspect", FIXTURES / "tf1_adam_slots_dropped"])
    assert report["optimizer"]["present"] is False and report["optimizer"]["name"] == "Adam"
    assert "none of its slot variables is stored" in report["optimizer"]["reason"]


@pytest.mark.parametrize("name,epoch", [("backup_keras3", 2), ("backup_tfkeras", 2), ("tf2_epoch_var", 3)])
def test_epoch_is_the_initial_epoch_to_resume_with(name: str, epoch: int) -> None:
    truth = next(t for t in expected_fixtures() if t["id"] == name)
    resumed = truth.get("layout", {}).get("resumed", {}).get("initial_epoch", truth["epoch"])
    assert resumed == epoch  # what the framework itself resumed at, recorded by the generator
    report = run_json(["inspect", fixture_path(truth)])
    assert report["epoch"] == epoch
    text = run_json(["inspect", fixture_path(truth)])
    assert text["epoch_key"]


@pytest.mark.parametrize("truth", fixture_params())
def test_inspect_and_validate_give_one_verdict(truth: dict[str, Any]) -> None:
    """inspect's `resume` block and validate's training-state checks are the same finding."""
    _assert_agree(fixture_path(truth))


CORPUS_ENTRIES = [e for e in corpus_entries() if e["kind"] != "ckpt_v1"]


@pytest.mark.skipif(not CORPUS_ENTRIES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("entry", CORPUS_ENTRIES, ids=[e["path"] for e in CORPUS_ENTRIES])
def test_inspect_and_validate_agree_on_the_corpus(entry: dict[str, Any]) -> None:
    _assert_agree(CORPUS / entry["path"])


def _assert_agree(path: Path) -> None:
    report = run_json(["inspect", path])
    checks = {c.name: c for c in validate(path).checks}
    statuses = {name: checks[name].status for name in TRAINING_CHECKS}
    assert sorted(report["resume"]["failing"]) == sorted(n for n, s in statuses.items() if s == "fail")
    assert report["resume"]["reasons"] == {name: checks[name].reason for name in TRAINING_CHECKS}


def test_state_file_and_meta_paths_name_their_checkpoint() -> None:
    folder = FIXTURES / "tf1_adam"
    as_dir = run_json(["inspect", folder])
    assert run_json(["inspect", folder / "checkpoint"])["variables"] == as_dir["variables"]
    meta = run_json(["inspect", folder / "model.ckpt-3.meta"])
    assert meta["step"] == 3 and meta["format"] == "tf1-checkpoint"
    assert validate(folder / "checkpoint").ok


def test_a_bit_flip_in_an_older_retained_checkpoint_fails_validate(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", folder)
    data = folder / "model.ckpt-3.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[40] ^= 0xFF
    data.write_bytes(bytes(raw))
    report = validate(folder)
    assert report.check("files").status == "pass"  # the latest (ckpt-6) is intact
    state = report.check("state")
    assert state.status == "fail" and "model.ckpt-3" in state.reason and "CRC32C" in state.reason


def test_corpus_verdict_changes_are_the_documented_ones() -> None:
    """The shared corpus' `optimizer` flag predates the evidence rules; where they differ, it is for a reason."""
    if not corpus_entries():
        pytest.skip("../shared/corpus is absent")
    for entry in corpus_entries():
        if entry["kind"] == "ckpt_v1":
            continue
        info = inspect(CORPUS / entry["path"]).vmap.optimizer
        if info.present == entry["optimizer"]:
            continue
        if info.present is True:  # plain SGD proven by ApplyGradientDescent ops: nothing to store
            assert not info.slots_expected and info.evidence == "training ops", entry["path"]
        else:  # a step counter in an inference export: undecidable, where it used to count as present
            assert info.present is None and "inference export" in info.reason, entry["path"]


def test_json_fields_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "inspect.md").read_text()
    report = run_json(["inspect", FIXTURES / "tf2_gan_one"])
    for field in (
        "epoch",
        "epoch_key",
        "layout",
        "resume",
        "optimizer.optimizers",
        "optimizer.reason",
        "optimizer.evidence",
        "schema",
    ):
        assert f"`{field}`" in doc, field
    json.dumps(report)
