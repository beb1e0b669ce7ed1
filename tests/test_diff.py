"""`ckpt diff` and `ckpt_tools.diffing.diff` against real artifacts, with TensorFlow's reader as the truth."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ckpt_tools.bundle import BundleReader
from ckpt_tools.diffing import (
    CATEGORIES,
    DTYPE_CHANGED,
    IDENTICAL,
    NOT_COMPARED,
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_CHANGED,
    VALUES_CHANGED,
    compare_arrays,
    diff,
)
from ckpt_tools.errors import UsageError
from ckpt_tools.messages import natural_key
from ckpt_tools.model import Variable
from ckpt_tools.readers.registry import open_checkpoint
from ckpt_tools.renames import RenameRules, load_rules

from .conftest import FIXTURES, ROOT, child_env, expected_fixtures, fixture_params, fixture_path, run_cli, run_json

TRUTHS = expected_fixtures()


FIXTURE_PARAMS = fixture_params()
TF1_ADAM = FIXTURES / "tf1_adam"
TF_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# One TensorFlow run for the whole module (importing TF takes seconds):
# 1. writes two small TF2 checkpoints a/ and b/ under argv[1] that differ in every way a diff reports;
# 2. prints, by TensorFlow's own reader, which keys the checkpoints argv[2] and argv[3] share and which of those
#    hold different values.
TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
out = sys.argv[1]
def save(name, **values):
    tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()}).write(f"{out}/{name}/ckpt")
nan = float("nan")
same = np.arange(6, dtype=np.float32).reshape(2, 3)
save("a", same=same, shape=np.zeros((2, 3), np.float32), dtype=np.zeros(3, np.float32),
     values=np.array([1.0, 2.0, 3.0, 4.0], np.float32), nans=np.array([nan, 1.0, -0.0], np.float32),
     words=np.array([b"a", b"b", b"c"]), big=np.array([2**62 + 1], np.int64), gone=np.ones(2, np.float32))
save("b", same=same, shape=np.zeros((3, 2), np.float32), dtype=np.zeros(3, np.float64),
     values=np.array([1.0, 2.5, 3.0, 4.001], np.float32), nans=np.array([nan, 1.0, 0.0], np.float32),
     words=np.array([b"a", b"x", b"c"]), big=np.array([2**62], np.int64), new=np.ones(2, np.float32))

a, b = (tf.train.load_checkpoint(p) for p in sys.argv[2:4])
ka, kb = a.get_variable_to_shape_map(), b.get_variable_to_shape_map()
changed, max_abs = [], {}
for key in sorted(set(ka) & set(kb)):
    x, y = a.get_tensor(key), b.get_tensor(key)
    if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
        changed.append(key)
        max_abs[key] = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
print(json.dumps({"a": sorted(ka), "b": sorted(kb), "changed": changed, "max_abs": max_abs}))
"""


def tf_run(script: str, *args: Any) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=TF_ENV, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tf_made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(folder holding the a/ b/ pair, TF's truth about tf1_adam model.ckpt-3 vs model.ckpt-6)."""
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("tf_made")
    truth = json.loads(tf_run(TF_SCRIPT, out, TF1_ADAM / "model.ckpt-3", TF1_ADAM / "model.ckpt-6"))
    return out, truth


@pytest.fixture()
def pair(tf_made: tuple[Path, dict[str, Any]]) -> tuple[Path, Path]:
    return tf_made[0] / "a", tf_made[0] / "b"


def categories(result: Any) -> dict[str, str]:
    return {e.name: e.category for e in result.entries}


# ------------------------------------------------------------------------------------------------ self and twins


@pytest.mark.parametrize("truth", FIXTURE_PARAMS)
def test_artifact_against_itself_is_identical(truth: dict) -> None:
    path = fixture_path(truth)
    result = diff(path, path)
    assert result.exit_code == 0 and result.identical
    with open_checkpoint(path) as vmap:
        assert len(result.entries) == len(vmap.primaries())  # aliases are one variable
    assert {e.category for e in result.entries} <= {IDENTICAL}
    run_cli(["diff", path, path], expect=0)


def _key(entry: Any) -> str:
    var = entry.a or entry.b
    assert var is not None
    return str(var.key)


def test_tf1_checkpoints_of_one_run_report_exactly_what_changed(tf_made: tuple[Path, dict[str, Any]]) -> None:
    a, b = TF1_ADAM / "model.ckpt-3", TF1_ADAM / "model.ckpt-6"
    truth = tf_made[1]
    result = diff(a, b)
    assert result.exit_code == 1
    assert not result.by_category(ONLY_IN_A) and not result.by_category(ONLY_IN_B)
    assert sorted(_key(e) for e in result.by_category(VALUES_CHANGED)) == truth["changed"]
    assert sorted(_key(e) for e in result.by_category(IDENTICAL)) == sorted(set(truth["a"]) - set(truth["changed"]))
    assert truth["changed"], "training for 3 more steps must change something"
    for entry in result.by_category(VALUES_CHANGED):
        assert entry.values is not None and entry.values.differing > 0
        assert entry.values.max_abs_diff == pytest.approx(truth["max_abs"][_key(entry)], rel=1e-12)


def test_keras_archive_and_weights_twin_are_identical() -> None:
    folder = FIXTURES / "keras3_adam"
    result = diff(folder / "model.keras", folder / "model.weights.h5")
    assert (result.a.format, result.b.format) == ("keras-archive", "keras-weights-h5")
    assert result.exit_code == 0, result.summary_line()
    weights = [e for e in result.entries if e.a is not None and e.a.role == "weight"]
    assert weights and all(e.category == IDENTICAL for e in weights)
    assert all(e.values is not None and e.values.differing == 0 for e in weights)
    out = run_json(["diff", folder / "model.keras", folder / "model.weights.h5"], expect=0)
    assert out["identical"] is True and out["summary"]["identical"] == len(result.entries)


# ------------------------------------------------------------------------------------------------ categories


def test_every_category_on_a_real_pair(pair: tuple[Path, Path]) -> None:
    result = diff(*pair)
    got = categories(result)
    assert got["same"] == IDENTICAL
    assert got["shape"] == SHAPE_CHANGED
    assert got["dtype"] == DTYPE_CHANGED
    assert got["gone"] == ONLY_IN_A and got["new"] == ONLY_IN_B
    assert got["nans"] == IDENTICAL  # NaN at the same place, and -0.0 == 0.0
    assert got["values"] == got["words"] == got["big"] == VALUES_CHANGED
    by_name = {e.name: e for e in result.entries}
    values = by_name["values"].values
    assert values is not None and values.differing == 2 and values.size == 4
    assert values.max_abs_diff == pytest.approx(0.5) and values.max_rel_diff == pytest.approx(0.2)
    words = by_name["words"].values
    assert words is not None and words.differing == 1 and words.max_abs_diff is None
    big = by_name["big"].values
    assert big is not None and big.max_abs_diff == 1.0  # exact, although 2**62 + 1 is not a float64
    assert result.exit_code == 1


def test_tolerances(pair: tuple[Path, Path]) -> None:
    assert categories(diff(*pair, atol=0.6))["values"] == IDENTICAL
    assert categories(diff(*pair, atol=0.4))["values"] == VALUES_CHANGED
    assert categories(diff(*pair, rtol=0.25))["values"] == IDENTICAL  # 0.5 <= 0.25 * 2.5
    assert categories(diff(*pair, rtol=0.1))["values"] == VALUES_CHANGED
    assert categories(diff(*pair, atol=0.6))["big"] == VALUES_CHANGED  # |diff| = 1
    assert categories(diff(*pair, atol=1.0))["big"] == IDENTICAL
    with pytest.raises(UsageError):
        diff(*pair, rtol=-1)


def test_absolute_tolerance_on_tf1_checkpoints() -> None:
    a, b = TF1_ADAM / "model.ckpt-3", TF1_ADAM / "model.ckpt-6"
    assert diff(a, b, atol=1e6).exit_code == 0
    exact = {e.name: e.values.max_abs_diff for e in diff(a, b).by_category(VALUES_CHANGED) if e.values}
    sizes = sorted(v for v in exact.values() if v is not None)
    threshold = sizes[len(sizes) // 2]
    loose = {e.name for e in diff(a, b, atol=threshold).by_category(VALUES_CHANGED)}
    assert loose == {name for name, biggest in exact.items() if biggest is not None and biggest > threshold}
    assert 0 < len(loose) < len(exact)


def test_names_only_reads_no_values(tmp_path: Path) -> None:
    copy = tmp_path / "tf1_adam"
    shutil.copytree(TF1_ADAM, copy)
    prefix = copy / "model.ckpt-6"
    entry = BundleReader(prefix).entries["dense/kernel"]
    data = Path(f"{prefix}.data-00000-of-00001")
    with data.open("r+b") as fh:
        fh.seek(entry.offset)
        fh.write(np.full(4, np.nan, np.float32).tobytes())
    result = diff(TF1_ADAM / "model.ckpt-6", prefix, names_only=True)
    assert result.exit_code == 0 and {e.category for e in result.entries} == {NOT_COMPARED}
    assert "values not compared" in result.summary_line()
    failed = run_cli(["diff", TF1_ADAM / "model.ckpt-6", prefix], expect=2)
    assert "CRC32C" in failed.stderr and failed.stderr.count("\n") == 1


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole-tensors"])
def test_diff_holds_one_pair_of_tensors_at_a_time(streaming: bool) -> None:
    """Whole tensors: at most one pair alive. Streamed (bundles): no whole tensor read at all, and at most
    one block per side alive."""
    alive: set[int] = set()
    peak = [0]
    blocks = [0]

    def track(array: np.ndarray) -> np.ndarray:
        token = id(array)
        alive.add(token)
        weakref.finalize(array, alive.discard, token)
        peak[0] = max(peak[0], len(alive))
        return array

    def tracked(var: Variable) -> Variable:
        loader, chunker = var.loader, var.chunker
        assert loader is not None and chunker is not None

        def load() -> np.ndarray:
            return track(loader())

        def chunks(elements: int):  # type: ignore[no-untyped-def]
            for block in chunker(elements):
                blocks[0] += 1
                yield track(block)

        return dataclasses.replace(var, loader=load, chunker=chunks if streaming else None)

    maps = [open_checkpoint(TF1_ADAM / name) for name in ("model.ckpt-3", "model.ckpt-6")]
    maps = [dataclasses.replace(m, variables={k: tracked(v) for k, v in m.variables.items()}) for m in maps]
    result = diff(maps[0], maps[1])
    assert len(result.entries) == 15 and peak[0] == 2 and not alive
    assert (blocks[0] >= 30) if streaming else (blocks[0] == 0)


def test_streamed_and_whole_comparisons_agree() -> None:
    a, b = (open_checkpoint(TF1_ADAM / name) for name in ("model.ckpt-3", "model.ckpt-6"))
    streamed = diff(a, b).to_json()
    whole = [
        dataclasses.replace(m, variables={k: dataclasses.replace(v, chunker=None) for k, v in m.items()})
        for m in (a, b)
    ]
    assert diff(whole[0], whole[1]).to_json() == streamed


def test_streamed_diff_reports_checksum_errors(tmp_path: Path) -> None:
    src = TF1_ADAM
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    data = dst / "model.ckpt-6.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    result = run_cli(["diff", dst / "model.ckpt-6", src / "model.ckpt-6"], expect=2)
    assert "CRC32C" in result.stderr and result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------------ rename rules


def write_rules(tmp_path: Path, data: Any, name: str = "rules.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return path


def test_map_rules_pair_renamed_variables(tmp_path: Path) -> None:
    ckpt = TF1_ADAM / "model.ckpt-6"
    one_side = write_rules(tmp_path, {"rules": [{"from": "^dense_1/", "to": "head/", "side": "a"}]})
    # the renamed layer still pairs: by structure (same leaves, shapes and dtypes), and the report says so
    out = run_json(["diff", ckpt, ckpt, "--map", one_side], expect=0)
    by_structure = {v["name"]: v["b"]["name"] for v in out["variables"] if v["paired_by"] == "structure"}
    assert by_structure == {"head/bias": "dense_1/bias", "head/kernel": "dense_1/kernel"}
    assert out["summary"][IDENTICAL] == 15
    leaf = write_rules(tmp_path, {"rules": [{"from": "^dense_1/kernel$", "to": "head/w", "side": "a"}]}, "leaf.json")
    out = run_json(["diff", ckpt, ckpt, "--map", leaf], expect=1)
    only_a = [v["a"]["key"] for v in out["variables"] if v["category"] == ONLY_IN_A]
    only_b = [v["b"]["key"] for v in out["variables"] if v["category"] == ONLY_IN_B]
    assert only_a == only_b == ["dense_1/kernel"]  # half a layer renamed: no structure to pair it by
    both = write_rules(tmp_path, {"side": "both", "rules": [{"from": "^dense_1/", "to": "head/"}]}, "both.json")
    assert run_json(["diff", ckpt, ckpt, "--map", both], expect=0)["summary"][IDENTICAL] == 15


def test_strip_prefix_and_drop_rules(tmp_path: Path) -> None:
    ckpt = TF1_ADAM / "model.ckpt-6"
    stripped = run_json(["diff", ckpt, ckpt, "--strip-prefix", "dense_1/"], expect=0)
    names = {v["name"] for v in stripped["variables"]}
    assert stripped["summary"][IDENTICAL] == 15 and {"kernel", "optimizer/dense_1/kernel/momentum"} <= names
    merged = run_cli(["diff", ckpt, ckpt, "--strip-prefix", "dense_1/", "--strip-prefix", "dense/"], expect=2)
    assert "both map to 'bias'" in merged.stderr
    rules = RenameRules.from_data({"side": "a", "strip_prefix": "dense_1/"})
    result = diff(ckpt, ckpt, rules=rules)
    assert result.identical and {(e.name, e.paired_by) for e in result.entries} >= {("bias", "structure")}
    drop = write_rules(tmp_path, [{"from": r"^optimizer/", "to": None}])
    out = run_json(["diff", ckpt, ckpt, "--map", drop], expect=0)
    assert len(out["variables"]) == 15 - 8
    assert not any(v["a"]["key"].endswith(("/Adam", "/Adam_1")) for v in out["variables"])


def test_rule_semantics() -> None:
    rules = RenameRules.from_data(
        {
            "strip_prefix": ["model/", "model/layer/"],
            "rules": [
                {"from": r"layer_(\d+)", "to": r"dense_\1"},
                {"from": r"^dense_(\d+)/kernel$", "to": r"\g<0>:0", "side": "b"},
                {"from": "^skip", "to": None},
            ],
        }
    )
    assert rules.apply("model/layer/layer_2/kernel", "a") == "dense_2/kernel"  # longest prefix first
    assert rules.apply("model/layer_2/kernel", "b") == "dense_2/kernel:0"  # rules chain in order
    assert rules.apply("skip/me", "a") is None
    assert rules.apply("other", "b") == "other"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rules": [{"from": "(", "to": "x"}]}, "bad regular expression"),
        ({"rules": [{"from": "a"}]}, "needs both"),
        ({"rules": [{"from": "a", "to": "b", "side": "c"}]}, "side must be"),
        ({"rules": [], "extra": 1}, "unknown key"),
        ("just text", "expected an object"),
    ],
)
def test_bad_rules_are_usage_errors(tmp_path: Path, data: Any, message: str) -> None:
    path = write_rules(tmp_path, data)
    with pytest.raises(UsageError, match=message):
        load_rules(path)
    ckpt = TF1_ADAM / "model.ckpt-6"
    result = run_cli(["diff", ckpt, ckpt, "--map", path], expect=2)
    assert message in result.stderr


def test_rules_that_merge_two_variables_are_refused(tmp_path: Path) -> None:
    ckpt = TF1_ADAM / "model.ckpt-6"
    rules = write_rules(tmp_path, {"rules": [{"from": "^dense_1/", "to": "dense/"}]})
    result = run_cli(["diff", ckpt, ckpt, "--map", rules], expect=2)
    assert "both map to" in result.stderr


def test_yaml_rules(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = write_rules(tmp_path, "side: b\nrules:\n  - from: '^dense_1/'\n    to: 'head/'\n", "rules.yaml")
    rules = load_rules(path)
    assert rules.apply("dense_1/kernel", "b") == "head/kernel"
    assert rules.apply("dense_1/kernel", "a") == "dense_1/kernel"


def test_invalid_json_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="invalid JSON"):
        load_rules(path)


# ------------------------------------------------------------------------------------------------ CLI output


def test_json_schema(pair: tuple[Path, Path]) -> None:
    out = run_cli(["diff", *pair, "--json"], expect=1).stdout
    obj = json.loads(out)  # strict JSON: no NaN/Infinity literals
    assert set(obj) == {"schema", "a", "b", "options", "identical", "exit_code", "summary", "variables"}
    assert obj["schema"] == "ckpt-tools/diff/2" and obj["exit_code"] == 1 and obj["identical"] is False
    assert set(obj["a"]) == {"path", "format", "variables", "aliases", "excluded"}
    assert obj["a"]["format"] == "tf2-checkpoint"
    entry = obj["variables"][0]
    assert set(entry) == {"name", "category", "paired_by", "a", "b", "values", "translation", "note"}
    assert obj["options"]["rtol"] == 0.0 and obj["options"]["names_only"] is False
    assert list(obj["summary"]) == list(CATEGORIES)
    assert sum(obj["summary"].values()) == len(obj["variables"])
    names = [v["name"] for v in obj["variables"]]
    assert names == sorted(names, key=natural_key)
    for var in obj["variables"]:
        assert set(var) == {"name", "category", "paired_by", "a", "b", "values", "translation", "note"}
        if var["values"] is not None:
            assert set(var["values"]) == {"size", "differing", "max_abs_diff", "max_rel_diff", "nonfinite_mismatches"}
        for side in ("a", "b"):
            if var[side] is not None:
                assert {"key", "name", "shape", "dtype", "role"} <= set(var[side])
    assert all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in obj["options"].values() if isinstance(v, float)
    )


def test_table_and_summary_line(pair: tuple[Path, Path]) -> None:
    out = run_cli(["diff", *pair], expect=1).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("DIFFERENT: 1 only in A, 1 only in B, 1 shape changed, 1 dtype changed, 3 values changed")
    assert "shape changed" in out and "[2, 3] float32" in out and "[3, 2] float32" in out
    assert "same" not in out.split("\n\n")[1]  # identical rows are hidden unless --all
    assert "same" in run_cli(["diff", *pair, "--all"], expect=1).stdout
    assert "comparing" not in out  # no progress bar when stderr is not a terminal


def test_names_only_cli(pair: tuple[Path, Path]) -> None:
    obj = run_json(["diff", *pair, "--names-only"], expect=1)
    assert obj["summary"][NOT_COMPARED] == 5 and obj["summary"][VALUES_CHANGED] == 0
    assert all(v["values"] is None for v in obj["variables"])


def test_missing_input_is_exit_2(tmp_path: Path) -> None:
    result = run_cli(["diff", TF1_ADAM, tmp_path / "absent"], expect=2)
    assert result.stderr.startswith("ckpt: error: ") and "absent" in result.stderr


def test_cross_format_tf1_against_tf2_pairs_without_rules() -> None:
    """A TF1 checkpoint against a tf_keras TF2 one: canonical names pair weights, slots and the step by meaning."""
    tf2 = FIXTURES / "tf2_tfkeras_adam"
    out = run_json(["diff", TF1_ADAM, tf2, "--names-only"], expect=0)
    weights = ["dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel"]
    slots = [f"optimizer/{w}/{s}" for w in weights for s in ("momentum", "velocity")]
    matched = [v["name"] for v in out["variables"] if v["category"] == NOT_COMPARED]
    assert matched == sorted([*weights, *slots, "step"])
    specific = sorted((v["a"] or v["b"])["key"] for v in out["variables"] if v["category"] == "format_specific")
    assert specific == [
        "beta1_power",
        "beta2_power",
        "optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    pairs = {v["name"]: (v["a"]["key"], v["b"]["key"]) for v in out["variables"] if v["a"] and v["b"]}
    assert pairs["optimizer/dense_1/kernel/velocity"] == (
        "dense_1/kernel/Adam_1",
        "optimizer/_variables/6/.ATTRIBUTES/VARIABLE_VALUE",
    )
    assert pairs["step"] == ("global_step", "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    # two different training runs: every paired value differs
    assert run_cli(["diff", TF1_ADAM, tf2], expect=1).stdout.count("values changed") >= 12


def test_diff_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from ckpt_tools.diffing import diff\n"
        f"r = diff({str(TF1_ADAM / 'model.ckpt-3')!r}, {str(TF1_ADAM / 'model.ckpt-6')!r})\n"
        "assert r.exit_code == 1\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------------ elementwise rules


def test_compare_arrays_edge_cases() -> None:
    nan, inf = float("nan"), float("inf")
    same = compare_arrays(np.array([nan, inf, -inf, 0.0]), np.array([nan, inf, -inf, -0.0]))
    assert same.differing == 0 and same.nonfinite_mismatches == 0
    mixed = compare_arrays(np.array([nan, 1.0, inf]), np.array([1.0, nan, 1.0]))
    assert mixed.differing == 3 and mixed.nonfinite_mismatches == 3 and mixed.max_abs_diff == 0.0
    assert compare_arrays(np.array([1.0, nan]), np.array([1.5, nan]), atol=1).differing == 0
    assert compare_arrays(np.array([0.0]), np.array([1e-9]), rtol=0.5).differing == 1  # rtol is relative to |b|
    ints = compare_arrays(np.array([-(2**63)], np.int64), np.array([2**63 - 1], np.int64))
    assert ints.max_abs_diff == float(2**64 - 1)
    bools = compare_arrays(np.array([True, False]), np.array([True, True]))
    assert bools.differing == 1
    import ml_dtypes

    bf = np.array([1.0, nan], dtype=ml_dtypes.bfloat16)
    assert compare_arrays(bf, bf.copy()).differing == 0
    strings = compare_arrays(np.array([b"x", b"y"], dtype=object), np.array([b"x", b"z"], dtype=object))
    assert strings.differing == 1 and strings.max_abs_diff is None


floats = hnp.arrays(np.float32, st.integers(0, 40), elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=150, deadline=None)
@given(floats, st.data())
def test_compare_arrays_matches_numpy(x: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(np.float32, x.shape, elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
    rtol = data.draw(st.sampled_from([0.0, 1e-3, 0.5]))
    atol = data.draw(st.sampled_from([0.0, 1e-3, 10.0]))
    assert compare_arrays(x, x.copy()).differing == 0
    expected = ~np.isclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    stats = compare_arrays(x, y, rtol=rtol, atol=atol)
    assert stats.differing == int(expected.sum())
    finite = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore"):
        diffs = np.abs(x.astype(np.float64) - y.astype(np.float64))[finite]
    assert stats.max_abs_diff == (float(diffs.max()) if diffs.size else 0.0)


def _numpy_truth(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[int, float, float, int]:
    """(differing, max |a-b|, max |a-b|/|b|, non-finite mismatches) computed by numpy in float64 / complex128."""
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    a, b = x.astype(wide), y.astype(wide)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        differs = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        finite = np.isfinite(a) & np.isfinite(b)
        diff = np.abs(a - b)
        ref = np.abs(b)
    rel = diff[finite & (ref != 0)] / ref[finite & (ref != 0)]
    return (
        int(differs.sum()),
        float(diff[finite].max(initial=0.0)),
        float(rel.max(initial=0.0)),
        int((differs & ~finite).sum()),
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "complex64", "float64"])
@pytest.mark.parametrize("changed", [1, 37, 1000, 300_000])
@pytest.mark.parametrize("tolerance", [(0.0, 0.0), (1e-3, 1e-6)])
def test_compare_arrays_few_and_many_changes_match_numpy(dtype: str, changed: int, tolerance: tuple) -> None:
    """Several blocks of values, a few or most of them changed, some NaN / Inf / zero on either side: the counts
    and maxima numpy computes in float64 (the paths for few changes, all-finite blocks and non-finite values)."""
    import ml_dtypes

    rng = np.random.default_rng(changed)
    numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    n = 300_000
    base = rng.standard_normal(n) * 10
    if dtype == "complex64":
        base = base + 1j * rng.standard_normal(n)
    x = base.astype(numpy_dtype)
    y = x.copy()
    where = rng.choice(n, size=changed, replace=False)
    y[where] = (base[where] * 1.001 + 0.5).astype(numpy_dtype)
    if changed >= 37:  # non-finite values and zeros on either side, some equal, some not
        x[where[:3]] = np.array([np.nan, np.inf, 0.0]).astype(numpy_dtype)
        y[where[3:6]] = np.array([np.nan, -np.inf, 0.0]).astype(numpy_dtype)
        x[where[6]] = y[where[6]] = np.array(np.nan).astype(numpy_dtype)
    rtol, atol = tolerance
    stats = compare_arrays(x, y, rtol=rtol, atol=atol)
    differing, max_abs, max_rel, nonfinite = _numpy_truth(x, y, rtol, atol)
    assert stats.differing == differing
    assert stats.nonfinite_mismatches == nonfinite
    assert stats.max_abs_diff == max_abs
    assert stats.max_rel_diff == max_rel


def test_yaml_rules_without_pyyaml_say_what_to_install(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("yaml") is not None:
        pytest.skip("PyYAML is installed")
    path = write_rules(tmp_path, "rules: []\n", "rules.yml")
    ckpt = TF1_ADAM / "model.ckpt-6"
    result = run_cli(["diff", ckpt, ckpt, "--map", path], expect=2)
    assert "PyYAML" in result.stderr and str(path) in result.stderr
