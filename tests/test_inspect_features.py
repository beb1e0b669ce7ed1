"""`inspect --values/--tree`, summary facts, `--filter` semantics and `--help`, against what h5py/TF/zipfile read."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ckpt_tools.errors import UsageError
from ckpt_tools.inspection import inspect
from ckpt_tools.tree import natural_key
from ckpt_tools.values import to_json

from .conftest import EXPECTED, FIXTURES, ROOT, run_cli, run_json

IDENT = json.loads((EXPECTED / "ident_weights_h5.json").read_text())


def h5_value(path: Path, key: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f[key][()])


def test_values_json_equal_what_h5py_reads() -> None:
    path = FIXTURES / "ident" / "model.weights.h5"
    report = run_json(["inspect", path, "--values", "dec/*"])
    rows = {row["name"]: row for row in report["variables"]}
    assert sorted(rows) == ["dec/bias", "dec/kernel"]
    for row in rows.values():
        assert IDENT["canonical"][row["key"]] == row["name"]
        np.testing.assert_array_equal(np.asarray(row["values"], np.float32), h5_value(path, row["key"]))


def test_values_text_is_numpy_printing() -> None:
    path = FIXTURES / "ident" / "model.weights.h5"
    out = run_cli(["inspect", path, "--values", "dec/kernel", "--precision", "3"]).stdout
    expected = np.array2string(h5_value(path, "layers/dense_1/vars/0"), precision=3, separator=", ", threshold=1000)
    assert out.startswith("dec/kernel [8, 3] float32 (key layers/dense_1/vars/0)\n")
    assert expected in out
    summarized = run_cli(["inspect", path, "--values", "dec/kernel", "--threshold", "5"]).stdout
    assert "..." in summarized
    assert "..." not in run_cli(["inspect", path, "--values", "dec/kernel", "--threshold", "5", "--all"]).stdout


def test_values_of_a_tf1_slot_by_its_stored_key() -> None:
    tf = pytest.importorskip("tensorflow")
    report = run_json(["inspect", FIXTURES / "tf1_adam", "--values", "dense/kernel/Adam_1"])
    [row] = report["variables"]
    assert row["name"] == "optimizer/dense/kernel/velocity"
    reader = tf.train.load_checkpoint(str(FIXTURES / "tf1_adam" / "model.ckpt-6"))
    np.testing.assert_array_equal(np.asarray(row["values"], np.float32), reader.get_tensor("dense/kernel/Adam_1"))


def test_values_refuses_a_tensor_over_the_limit() -> None:
    with pytest.raises(UsageError, match="over the 64-byte limit"):
        inspect(FIXTURES / "tf1_adam", values="dense/kernel", max_value_bytes=64)


def test_values_json_is_strict_for_non_finite_numbers() -> None:
    value = np.array([[1.5, np.nan], [np.inf, -np.inf]], np.float32)
    assert to_json(value) == [[1.5, "nan"], ["inf", "-inf"]]
    assert to_json(np.array([1 + 2j], np.complex64)) == [[1.0, 2.0]]


@pytest.mark.parametrize("form", ["keras", "weights_h5", "tf2_ckpt", "saved_model", "tf1", "keras2_h5", "export"])
def test_tree_has_every_layer_with_its_parameters_and_slots(form: str) -> None:
    truth = json.loads((EXPECTED / f"ident_{form}.json").read_text())
    report = run_json(["inspect", FIXTURES / truth["path"], "--tree"])
    tree = report["tree"]
    assert tree["parameters"] == truth["parameters"]
    shapes = {k: s for k, s, _ in truth["tensors"]}
    expected: dict[str, int] = {}
    for key, canon in truth["canonical"].items():
        if isinstance(canon, str) and canon != "step":
            expected[canon.split("/")[0]] = expected.get(canon.split("/")[0], 0) + int(np.prod(shapes[key]))
    assert {layer["name"]: layer["parameters"] for layer in tree["layers"]} == expected
    slots = {w["name"]: sorted(s["slot"] for s in w["slots"]) for layer in tree["layers"] for w in layer["weights"]}
    truth_slots = {k: sorted(v) for k, v in truth["slots_sha"].items()}
    assert {k: v for k, v in slots.items() if v} == truth_slots
    assert [layer["name"] for layer in tree["layers"]] == ["dec", "enc", "norm"]  # natural order
    text = run_cli(["inspect", FIXTURES / truth["path"], "--tree"]).stdout
    assert text.index("resumable:") < text.index("enc/  (40 parameters)")  # the summary comes first


def test_keras_archive_facts_equal_its_own_json_files() -> None:
    path = FIXTURES / "ident" / "model.keras"
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        config = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]["config"]
    report = run_json(["inspect", path])
    assert report["writer"]["keras_version"] == metadata["keras_version"]
    assert report["writer"]["date_saved"] == metadata["date_saved"]
    hyper = report["optimizer"]["hyperparameters"]
    assert hyper["learning_rate"] == config["learning_rate"] and hyper["epsilon"] == config["epsilon"]
    text = run_cli(["inspect", path]).stdout
    assert "learning_rate=0.01," in text and "0.009999999776482582" not in text  # no float32 noise
    assert f"keras version {metadata['keras_version']}" in text


def test_saved_model_signatures_equal_what_tensorflow_reports() -> None:
    report = run_json(["inspect", FIXTURES / "ident" / "saved_model"])
    assert report["tags"] == ["serve"]
    [sig] = report["signatures"]
    assert sig["name"] == "serving_default" and sig["method"] == "tensorflow/serving/predict"
    assert sig["inputs"] == [{"key": "inputs", "dtype": "float32", "shape": [-1, 4]}]
    assert sig["outputs"] == [{"key": "output_0", "dtype": "float32", "shape": [-1, 3]}]
    assert (
        "signature:  serving_default(inputs float32 [?, 4]) -> output_0 float32 [?, 3]"
        in run_cli(["inspect", FIXTURES / "ident" / "saved_model"]).stdout
    )
    tf = pytest.importorskip("tensorflow")
    loaded = tf.saved_model.load(str(FIXTURES / "ident" / "saved_model"))
    spec = loaded.signatures["serving_default"]
    [(name, tensor_spec)] = spec.structured_input_signature[1].items()
    assert name == "inputs" and tensor_spec.shape.as_list() == [None, 4] and tensor_spec.dtype.name == "float32"
    [(out_name, out_spec)] = spec.structured_outputs.items()
    assert out_name == "output_0" and out_spec.shape.as_list() == [None, 3]


def test_filter_matches_canonical_names_and_exact_keys() -> None:
    report = run_json(["inspect", FIXTURES / "tf1_adam", "--filter", "dense/*"])
    assert [v["name"] for v in report["variables"]] == ["dense/bias", "dense/kernel"]  # not the slots
    report = run_json(["inspect", FIXTURES / "tf1_adam", "--filter", "dense/kernel/Adam"])
    assert [v["key"] for v in report["variables"]] == ["dense/kernel/Adam"]
    empty = run_cli(["inspect", FIXTURES / "tf1_adam", "--filter", "nomatch"], expect=0)
    assert "no variable matches 'nomatch'" in empty.stderr


def test_natural_order() -> None:
    names = ["v10", "v2", "v1", "a/b10", "a/b9"]
    assert sorted(names, key=natural_key) == ["a/b9", "a/b10", "v1", "v2", "v10"]


COMMANDS = ["inspect", "diff", "validate", "convert", "ls", "scan"]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_purpose_exit_codes_and_examples(name: str) -> None:
    out = run_cli([name, "--help"]).stdout
    assert "Exit codes:" in out and "Examples:" in out
    assert ("TensorFlow" in out) and len(examples(out)) >= 2
    top = run_cli(["--help"]).stdout
    line = next(line for line in top.splitlines() if line.strip().startswith(name + " "))
    assert not line.rstrip().endswith("..."), line  # not truncated


def examples(help_text: str) -> list[str]:
    block = help_text.split("Examples:", 1)[1]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("ckpt ")]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_tools.cli import main

    out = run_cli([name, "--help"]).stdout
    for link in ("fixtures", "examples"):
        (tmp_path / link).symlink_to(ROOT / link)
    monkeypatch.chdir(tmp_path)
    for example in examples(out):
        if (" convert " in f" {example} " and not _has("tensorflow")) or (
            "--plot" in example and not _has("matplotlib")
        ):
            continue
        args = re.findall(r"'[^']*'|\S+", example)[1:]
        result = CliRunner().invoke(main, [a.strip("'") for a in args], catch_exceptions=False)
        assert result.exit_code in (0, 1), f"{example}: exit {result.exit_code}\n{result.output}"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("form", ["keras", "weights_h5", "tf2_ckpt", "saved_model", "export", "tf1", "keras2_h5"])
def test_values_of_every_weight_in_every_format_match_the_live_model(form: str) -> None:
    """The sha256 of each weight's float32 bytes, as the generator took it from the trained Keras model."""
    import hashlib

    truth = json.loads((EXPECTED / f"ident_{form}.json").read_text())
    report = run_json(["inspect", FIXTURES / truth["path"], "--values", "*"])
    got = {}
    for row in report["variables"]:
        if row["role"] == "weight" and "alias_of" not in row:
            value = np.ascontiguousarray(np.asarray(row["values"], np.float32).reshape(row["shape"]))
            got[row["name"]] = hashlib.sha256(value.tobytes()).hexdigest()
    assert got == truth["values_sha"]


def test_values_budget_is_checked_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    import ckpt_tools.values as values

    with pytest.raises(UsageError, match="matching tensors hold"):
        inspect(FIXTURES / "tf1_adam", values="*", max_value_bytes=200)
    monkeypatch.setattr(values, "MAX_LISTED_ELEMENTS", 10)
    with pytest.raises(UsageError, match="printed in full"):
        inspect(FIXTURES / "tf1_adam", values="dense/kernel", full_values=True)
    assert inspect(FIXTURES / "tf1_adam", values="dense/kernel").values  # summarized text: allowed


def test_option_combinations_that_would_be_ignored_are_refused(tmp_path: Path) -> None:
    path = FIXTURES / "tf1_adam"
    for args in (["--values", "*", "--filter", "d*"], ["--values", "*", "--stats"], ["--tree", "--filter", "d*"]):
        result = run_cli(["inspect", path, *args], expect=2)
        assert result.stderr.count("\n") == 1 and not result.stdout
    missing = tmp_path / "no" / "such" / "dir" / "x.png"
    result = run_cli(["diff", path, path, "--plot", missing], expect=2)
    assert not result.stdout and "does not exist" in result.stderr  # refused before comparing
