"""One model in seven formats: canonical names, aliases and `ckpt diff` pairing against what Keras/TF recorded.

The truth (`fixtures/expected/ident_*.json`) was written by fixtures/gen_identity.py from the live Keras 3 and
TF1 objects (each stored key tied to its weight's `.path` or slot by value), not by ckpt-tools.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from ckpt_tools.diffing import diff
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.renames import RenameRules

from .conftest import CORPUS, EXPECTED, FIXTURES, run_cli, run_json

TRUTH = {p.stem[len("ident_") :]: json.loads(p.read_text()) for p in sorted(EXPECTED.glob("ident_*.json"))}
FORMS = sorted(k for k in TRUTH if not k.startswith("altered_"))
ALTERED = sorted(k[len("altered_") :] for k in TRUTH if k.startswith("altered_"))
WITH_OPTIMIZER = [f for f in FORMS if TRUTH[f]["optimizer"]["present"]]
CHANGED = TRUTH["altered_tf1"]["altered"]["weight"]


def path_of(form: str, altered: bool = False) -> Path:
    return FIXTURES / TRUTH[("altered_" if altered else "") + form]["path"]


def test_the_twins_are_all_there() -> None:
    assert len(FORMS) == 7 and len(ALTERED) == 5
    assert len(WITH_OPTIMIZER) == 6 and "export" not in WITH_OPTIMIZER


@pytest.mark.parametrize("form", sorted(TRUTH))
def test_canonical_names_match_what_keras_recorded(form: str) -> None:
    truth = TRUTH[form]
    with open_checkpoint(FIXTURES / truth["path"]) as vmap:
        assert vmap.parameters == truth["parameters"] == 99
        for key, canon in truth["canonical"].items():
            if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
                assert key not in vmap
                continue
            var = vmap[key]
            if isinstance(canon, str) and canon != "step":
                assert (var.name, var.role, var.alias_of) == (canon, "weight", None), key
            elif canon == "step":
                assert vmap.step_key == key and vmap.step == 3
            elif "slot" in canon:
                assert (var.slot_of, var.slot) == (canon["weight"], canon["slot"]), key
                assert var.name == f"optimizer/{canon['weight']}/{canon['slot']}"
            elif "alias_of" in canon:
                assert var.alias_of is not None and vmap[var.alias_of].name == canon["alias_of"], key
                assert key in vmap[var.alias_of].aliases
            else:
                assert var.format_specific, key


@pytest.mark.parametrize("form", FORMS)
def test_inspect_json_counts_each_variable_once(form: str) -> None:
    truth = TRUTH[form]
    report = run_json(["inspect", FIXTURES / truth["path"]])
    assert report["schema"] == "ckpt-tools/inspect/3"
    assert report["summary"]["parameters"] == truth["parameters"]
    weights = sorted(v["name"] for v in report["variables"] if v["role"] == "weight" and "alias_of" not in v)
    assert weights == sorted(truth["values_sha"])
    assert len(report["variables"]) == len(truth["tensors"])  # every stored key is still listed


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(FORMS, 2)), ids="-".join)
def test_weights_only_diff_is_identical_for_every_pair(a: str, b: str) -> None:
    report = run_json(["diff", path_of(a), path_of(b), "--weights-only"], expect=0)
    assert report["summary"]["identical"] == 8
    assert {e["name"] for e in report["variables"]} == set(TRUTH[a]["values_sha"])
    assert all(e["paired_by"] == "name" for e in report["variables"])


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(WITH_OPTIMIZER, 2)), ids="-".join)
def test_full_diff_is_identical_for_every_pair_with_optimizer_state(a: str, b: str) -> None:
    report = run_json(["diff", path_of(a), path_of(b)], expect=0)
    counts = report["summary"]
    assert counts["identical"] == 8 + 12 + 1 + (
        1 if {a, b} <= {"keras", "weights_h5", "tf2_ckpt", "saved_model"} else 0
    )
    assert not any(counts[c] for c in ("only_in_a", "only_in_b", "values_changed", "shape_changed", "dtype_changed"))
    step = next(e for e in report["variables"] if e["name"] == "step")
    assert step["paired_by"] == "role" and step["category"] == "identical"
    assert step["a"]["key"] == TRUTH[a]["step_key"] and step["b"]["key"] == TRUTH[b]["step_key"]


def test_optimizer_state_on_one_side_only_is_a_difference() -> None:
    report = run_json(["diff", path_of("export"), path_of("keras")], expect=1)
    assert report["summary"]["only_in_b"] == 12 + 1  # the slots and the step: lost state, not format detail


@pytest.mark.parametrize(("altered", "form"), list(itertools.product(ALTERED, FORMS)), ids="-".join)
def test_one_changed_element_is_found_by_layer_name(altered: str, form: str) -> None:
    args = ["diff", path_of(altered, altered=True), path_of(form)]
    if form == "export":
        args.append("--weights-only")
    report = run_json(args, expect=1)
    changed = [e for e in report["variables"] if e["category"] == "values_changed"]
    assert [e["name"] for e in changed] == [CHANGED]
    assert changed[0]["values"]["differing"] == 1
    assert changed[0]["values"]["max_abs_diff"] == pytest.approx(TRUTH["altered_tf1"]["altered"]["delta"], rel=0.1)
    table = run_cli(args[:3], expect=1).stdout
    assert f"\n{CHANGED} " in table and "values changed" in table


def test_format_specific_variables_are_listed_not_failed() -> None:
    report = run_json(["diff", path_of("tf1"), path_of("tf2_ckpt")], expect=0)
    specific = {(e["a"] or e["b"])["key"] for e in report["variables"] if e["category"] == "format_specific"}
    truth_specific = {
        key
        for form in ("tf1", "tf2_ckpt")
        for key, canon in TRUTH[form]["canonical"].items()
        if isinstance(canon, dict) and "format_specific" in canon and key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    assert specific == truth_specific
    text = run_cli(["diff", path_of("tf1"), path_of("tf2_ckpt"), "--all"]).stdout
    assert "format-specific (A)" in text and "format-specific (B)" in text


def test_a_different_step_fails() -> None:
    with open_checkpoint(FIXTURES / "tf1_adam" / "model.ckpt-3") as a, open_checkpoint(FIXTURES / "tf1_adam") as b:
        assert diff(a, b, exclude=["*"]).entries == ()  # globs leave the step out too
        result = diff(a, b, exclude=["dense*", "optimizer/*", "beta*"])
        assert [(e.name, e.category) for e in result.entries] == [("step", "values_changed")]
        assert result.exit_code == 1


def test_exclude_leaves_the_changed_weight_out() -> None:
    args = ["diff", path_of("tf1", altered=True), path_of("keras")]
    report = run_json([*args, "--exclude", "dec/kernel"], expect=0)
    assert report["a"]["excluded"] == 1 and report["b"]["excluded"] == 1
    assert report["options"]["exclude"] == ["dec/kernel"]
    run_json([*args, "--exclude", "model_weights/*", "--exclude", "zzz"], expect=1)  # globs match keys too


def test_export_aliases_are_one_variable() -> None:
    report = run_json(["diff", path_of("export"), path_of("saved_model"), "--weights-only"])
    assert report["a"]["aliases"] == 8 and report["a"]["variables"] == 8


def renamed_layers() -> RenameRules:
    """TF1 scopes named unlike the Keras layers (as a TF1 graph built with its own names would be)."""
    rules = [{"from": f"^{old}/", "to": f"{new}/", "side": "a"} for old, new in (("enc", "l1"), ("dec", "l3"))]
    rules += [{"from": "^optimizer/enc/", "to": "optimizer/l1/", "side": "a"}]
    return RenameRules.from_data({"rules": rules})


def test_layers_without_matching_names_pair_by_structure() -> None:
    with open_checkpoint(path_of("tf1")) as a, open_checkpoint(path_of("keras")) as b:
        result = diff(a, b, rules=renamed_layers())
        assert result.identical, result.summary_line()
        by = {e.name: e.paired_by for e in result.entries if e.a is not None and e.b is not None}
        assert by["l1/kernel"] == by["l3/bias"] == "structure"
        assert by["norm/gamma"] == "name"
        assert {e.b.name for e in result.entries if e.paired_by == "structure" and e.b} >= {"enc/kernel", "dec/bias"}
    with open_checkpoint(path_of("tf1", altered=True)) as a, open_checkpoint(path_of("keras")) as b:
        result = diff(a, b, rules=renamed_layers())
        changed = [e for e in result.entries if e.category == "values_changed"]
        assert [(e.name, e.b.name if e.b else None, e.paired_by) for e in changed] == [
            ("l3/kernel", CHANGED, "structure")
        ]


def test_structure_never_guesses_between_alike_layers() -> None:
    """Two whole leftover layers of one structure on each side are left unpaired rather than paired by order."""
    rules = RenameRules.from_data(
        {
            "rules": [
                {"from": "^norm/gamma$", "to": "l1/w", "side": "a"},
                {"from": "^norm/beta$", "to": "l2/w", "side": "a"},
                {"from": "^norm/gamma$", "to": "m1/w", "side": "b"},
                {"from": "^norm/beta$", "to": "m2/w", "side": "b"},
            ]
        }
    )
    with open_checkpoint(path_of("keras")) as a, open_checkpoint(path_of("tf1")) as b:
        result = diff(a, b, rules=rules, weights_only=True)
        assert {e.name for e in result.by_category("only_in_a")} == {"l1/w", "l2/w"}
        assert {e.name for e in result.by_category("only_in_b")} == {"m1/w", "m2/w"}
        assert not [e for e in result.entries if e.paired_by == "structure"]
        # one of them alone has a unique structure again (gamma and beta are both [8] float32): it pairs
        alone = RenameRules.from_data(
            {"rules": [r.to_json() for r in rules.rules if r.to_json()["to"] in ("l1/w", "m1/w")]}
        )
        single = diff(a, b, rules=alone, weights_only=True)
        assert [
            (e.name, e.b.name if e.b else None, e.paired_by) for e in single.entries if e.paired_by == "structure"
        ] == [("l1/w", "norm/gamma", "structure")]
        assert single.identical


# ------------------------------------------------------------------------------------------ shared corpus twins
H5_TWINS = [
    ("hls4ml_at_2df064e/example-models/keras/svhn_grayscale_mlp.h5", "svhn_grayscale_mlp_weights.h5"),
    ("hls4ml_at_3834a8e/example-prjs/fashion/FashionMNIST.h5", "FashionMNIST_weights.h5"),
    ("hls4ml_at_3834a8e/example-prjs/conv1d_1layer/conv1d_1layer.h5", "conv1d_1layer_weights.h5"),
    ("hls4ml_at_3834a8e/example-prjs/prelu/prelu.h5", "prelu_weights.h5"),
]
BUNDLE_TWINS = [
    ("tensorflow-onnx/tests/models/regression/checkpoint/model", "../saved_model"),
    ("tfx/tfx/components/testdata/trainer/current/Format-Serving/model.ckpt-1000", "export/chicago-taxi/1646034756"),
]
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")


def h5_datasets(path: Path, under: str = "") -> dict[str, Any]:
    """Every dataset below `under`, by path relative to it, as h5py reads it."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        root = f[under] if under else f
        root.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@needs_corpus
@pytest.mark.parametrize(("model", "weights"), H5_TWINS, ids=lambda p: Path(p).stem)
def test_corpus_h5_twins_pair_and_compare_equal(model: str, weights: str) -> None:
    import numpy as np

    model_path = CORPUS / model
    weights_path = model_path.parent / weights
    # the twin claim, from h5py alone: every dataset of the weights file equals the model file's model_weights/
    stored, within = h5_datasets(weights_path), h5_datasets(model_path, "model_weights")
    assert stored and stored.keys() == within.keys()
    assert all(np.array_equal(stored[k], within[k]) for k in stored)
    report = run_json(["diff", model_path, weights_path, "--weights-only"], expect=0)
    assert report["summary"]["identical"] == len(stored) == report["b"]["variables"]


@needs_corpus
def test_corpus_h5_twin_with_one_changed_element_is_caught(tmp_path: Path) -> None:
    import shutil

    import h5py

    model, weights = H5_TWINS[1]
    copy = tmp_path / weights
    shutil.copyfile((CORPUS / model).parent / weights, copy)
    target = "q_conv2d_batchnorm/q_conv2d_batchnorm/kernel:0"
    with h5py.File(copy, "r+") as f:
        value = f[target][()]
        value[0, 0, 0, 0] += 1.0
        f[target][...] = value
    report = run_json(["diff", CORPUS / model, copy, "--weights-only"], expect=1)
    changed = [e for e in report["variables"] if e["category"] == "values_changed"]
    assert [e["name"] for e in changed] == ["q_conv2d_batchnorm/kernel"]
    assert changed[0]["values"]["differing"] == 1


@needs_corpus
@pytest.mark.parametrize(("a", "b"), BUNDLE_TWINS, ids=lambda p: Path(p).name)
def test_corpus_checkpoint_and_its_saved_model_pair(a: str, b: str) -> None:
    """A TF1 checkpoint and the SavedModel exported from it: every SavedModel weight pairs and is equal.

    The values come from TensorFlow's own reader when it is installed (the twin claim), else from the tool."""
    path_a = CORPUS / a
    path_b = (path_a.parent / b).resolve() if b.startswith("..") else path_a.parent / b
    report = run_json(["diff", path_a, path_b, "--weights-only"], expect=0)
    pairs = [(e["a"]["key"], e["b"]["key"]) for e in report["variables"] if e["a"] and e["b"]]
    assert pairs and report["summary"]["identical"] == len(pairs) == report["b"]["variables"] - report["b"]["excluded"]
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    prefix_a = tf.train.latest_checkpoint(str(path_a)) if path_a.is_dir() else str(path_a)
    reader_a = tf.train.load_checkpoint(prefix_a)
    reader_b = tf.train.load_checkpoint(str(path_b / "variables" / "variables"))
    for key_a, key_b in pairs:
        assert np.array_equal(reader_a.get_tensor(key_a), reader_b.get_tensor(key_b)), (key_a, key_b)


# ------------------------------------------------------------------------------- the losslessness check of convert
CONVERSIONS = [
    ("ident/tf1", "ident_tf1", "tf2"),
    ("ident/tf1", "ident_tf1", "keras"),
    ("ident/model.h5", "ident_keras2", "tf2"),
    ("ident/model.h5", "ident_keras2", "keras"),
    ("tf1_momentum", "tf1_momentum", "tf2"),
    ("tf1_momentum", "tf1_momentum", "keras"),
    ("tf1_adagrad", "tf1_adagrad", "keras"),
    ("tf1_adagrad", "tf1_adagrad", "tf2"),
    ("tf1_rmsprop", "tf1_rmsprop", "keras"),
    ("tf1_rmsprop", "tf1_rmsprop", "tf2"),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    out: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("converted")
    for source, factory, to in CONVERSIONS:
        target = root / f"{factory}-{to}" / ("model.keras" if to == "keras" else "ckpt")
        target.parent.mkdir()
        model = f"{FIXTURES.parent / 'examples' / 'fixture_models.py'}:{factory}"
        run_cli(["convert", FIXTURES / source, "--model", model, "--out", target, "--to", to], expect=0)
        out[(source, to)] = target
    return out


@pytest.mark.parametrize(("source", "factory", "to"), CONVERSIONS, ids=lambda v: str(v).replace("/", "_"))
def test_diff_source_against_its_conversion_needs_no_rules(
    converted: dict[tuple[str, str], Path], source: str, factory: str, to: str
) -> None:
    report = run_json(["diff", FIXTURES / source, converted[(source, to)]], expect=0)
    counts = report["summary"]
    assert counts["identical"] > 0 and not counts["only_in_a"] and not counts["only_in_b"]
    step = next(e for e in report["variables"] if e["name"] == "step")
    assert step["category"] == "identical" and step["paired_by"] == "role"
    translated = [e for e in report["variables"] if e["translation"]]
    unchecked = [e for e in report["variables"] if e["category"] == "not_compared"]
    if source == "tf1_momentum":  # the catalogue's m = -lr * a, applied to the TF1 side before comparing
        assert len(translated) == 4 and all(e["translation"]["how"] == "neg_lr" for e in translated)
        assert all(e["category"] == "identical" for e in translated)
    elif source == "tf1_adagrad" and to == "tf2":  # a TF2 checkpoint records no epsilon: undecidable, said so
        assert len(unchecked) == 4 and all("records no epsilon" in e["note"] for e in unchecked)
    elif source == "tf1_adagrad":
        assert len(translated) == 4 and all(e["translation"]["how"] == "minus_eps" for e in translated)
    else:
        assert not translated and not unchecked
    if source == "tf1_rmsprop":  # its momentum slots run at momentum 0 (the .meta says so): not state Keras keeps
        idle = [e for e in report["variables"] if e["category"] == "format_specific" and e["a"] and e["a"]["slot_of"]]
        assert len(idle) == 4 and all(e["a"]["key"].endswith("/RMSProp_1") for e in idle)


def test_translated_momentum_is_minus_lr_times_the_tf1_accumulator(converted: dict[tuple[str, str], Path]) -> None:
    """What the converted file stores (h5py) against -lr * a computed here from what TensorFlow reads."""
    import zipfile

    import h5py

    tf = pytest.importorskip("tensorflow")
    import numpy as np

    truth = json.loads((EXPECTED / "tf1_momentum.json").read_text())
    reader = tf.train.load_checkpoint(str(FIXTURES / truth["path"]))
    lr = np.float32(truth["hyper"]["learning_rate"])
    out = converted[("tf1_momentum", "keras")]
    report = run_json(["diff", FIXTURES / "tf1_momentum", out])
    pairs = [(e["a"]["key"], e["b"]["key"]) for e in report["variables"] if e["translation"]]
    assert len(pairs) == 4
    with zipfile.ZipFile(out) as archive, archive.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
        for key_a, key_b in pairs:
            expected = -(reader.get_tensor(key_a) * lr)
            np.testing.assert_allclose(h5[key_b][()], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("to", ["tf2", "keras"])
def test_diff_catches_one_changed_element_after_convert(converted: dict[tuple[str, str], Path], to: str) -> None:
    out = converted[("ident/tf1", to)]
    report = run_json(["diff", path_of("tf1", altered=True), out], expect=1)
    changed = [e for e in report["variables"] if e["category"] in ("values_changed", "only_in_a", "only_in_b")]
    assert [(e["name"], e["values"]["differing"]) for e in changed] == [(CHANGED, 1)]


def rewritten_tf1(tmp_path: Path, change: dict[str, float], drop: tuple[str, ...] = (), meta: bool = True) -> Path:
    """fixtures/ident/tf1 re-saved by TensorFlow's own SaveV2 with some scalars changed or keys dropped."""
    tf = pytest.importorskip("tensorflow")
    import shutil

    source = FIXTURES / "ident" / "tf1" / "model.ckpt-3"
    reader = tf.train.load_checkpoint(str(source))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k not in drop)
    tensors = [
        tf.constant(change[k], reader.get_variable_to_dtype_map()[k]) if k in change else reader.get_tensor(k)
        for k in keys
    ]
    out = tmp_path / "ckpt"
    out.mkdir()
    tf.raw_ops.SaveV2(
        prefix=str(out / "model.ckpt-3"), tensor_names=keys, shape_and_slices=[""] * len(keys), tensors=tensors
    )
    if meta:
        shutil.copyfile(str(source) + ".meta", out / "model.ckpt-3.meta")
    return out / "model.ckpt-3"


@pytest.mark.parametrize("power", ["beta1_power", "beta2_power"])
def test_a_beta_power_skewed_against_the_step_is_a_difference(tmp_path: Path, power: str) -> None:
    skewed = rewritten_tf1(tmp_path, {power: 0.5})
    report = run_json(["diff", skewed, path_of("keras")], expect=1)
    [entry] = [e for e in report["variables"] if e["category"] == "values_changed"]
    assert entry["a"]["key"] == power and "the step is 3" in entry["note"]


def test_a_beta_power_without_training_ops_is_not_compared(tmp_path: Path) -> None:
    skewed = rewritten_tf1(tmp_path, {"beta1_power": 0.5}, meta=False)
    report = run_json(["diff", skewed, path_of("keras")], expect=0)
    undecided = [e for e in report["variables"] if e["category"] == "not_compared"]
    assert {e["a"]["key"] for e in undecided} == {"beta1_power", "beta2_power"}
    assert "NOT COMPARED" in run_cli(["diff", skewed, path_of("keras")]).stdout


def test_one_dropped_slot_leaves_its_sibling_compared(tmp_path: Path) -> None:
    dropped = rewritten_tf1(tmp_path, {}, drop=("dec/kernel/Adam_1",))
    report = run_json(["diff", dropped, path_of("tf1")], expect=1)
    assert [e["name"] for e in report["variables"] if e["category"] == "only_in_b"] == ["optimizer/dec/kernel/velocity"]
    sibling = next(e for e in report["variables"] if e["name"] == "optimizer/dec/kernel/momentum")
    assert sibling["category"] == "identical"
