"""`ckpt convert`: real TF1 / Keras-2 training artifacts converted, then resumed one step on both sides."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json

pytestmark = [needs_tf, pytest.mark.tensorflow]

MODELS = Path(__file__).resolve().parent / "convert_models.py"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fixture_models.py"
LR = 0.05
TOL = 1e-5
RNG = np.random.default_rng(1234)
BATCHES = [(RNG.normal(size=(6, 4)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32)) for _ in range(4)]
NEXT = (RNG.normal(size=(6, 4)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32))
WEIGHTS = ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias")


def factory(name: str) -> str:
    return f"{MODELS}:{name}"


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- TF1 side
def tf1_optimizer(kind: str) -> Any:
    import tensorflow as tf

    train = tf.compat.v1.train
    return {
        "adam": lambda: train.AdamOptimizer(LR, beta1=0.9, beta2=0.999, epsilon=1e-8),
        "adam_named": lambda: train.AdamOptimizer(LR, epsilon=1e-8, name="GenOpt"),  # slots dense/kernel/GenOpt
        "momentum": lambda: train.MomentumOptimizer(LR, momentum=0.9),
        "nesterov": lambda: train.MomentumOptimizer(LR, momentum=0.9, use_nesterov=True),
        "sgd": lambda: train.GradientDescentOptimizer(LR),
        "rmsprop": lambda: train.RMSPropOptimizer(LR, decay=0.9, momentum=0.5, epsilon=1e-10),
        "rmsprop_plain": lambda: train.RMSPropOptimizer(LR, decay=0.9, momentum=0.0, epsilon=1e-10),
        "rmsprop_centered": lambda: train.RMSPropOptimizer(LR, decay=0.9, momentum=0.5, epsilon=1e-10, centered=True),
        "adagrad": lambda: train.AdagradOptimizer(LR, initial_accumulator_value=0.1),
    }[kind]()


class TF1Run:
    """A tf.compat.v1 graph MLP 4->8->3 trained with one optimizer and a global step."""

    def __init__(self, kind: str) -> None:
        import tensorflow as tf

        tf1 = tf.compat.v1
        try:  # what tf.compat.v1.layers.dense is when the legacy Keras is active (Keras 3 removes it)
            from tf_keras.api._v1.keras.__internal__.legacy.layers import dense
        except ImportError:  # pragma: no cover
            pytest.skip("tf_keras is needed for the tf.compat.v1 layers")
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(7)
            self.x = tf1.placeholder(tf.float32, [None, 4])
            self.y = tf1.placeholder(tf.int32, [None])
            hidden = dense(self.x, 8, activation=tf.nn.relu, name="dense")
            logits = dense(hidden, 3, name="dense_1")
            loss = tf1.losses.sparse_softmax_cross_entropy(self.y, logits)  # mean over the batch
            step = tf1.train.get_or_create_global_step()
            self.train = tf1_optimizer(kind).minimize(loss, global_step=step)
            self.saver = tf1.train.Saver(max_to_keep=10)
            self.init = tf1.global_variables_initializer()
            self.weights = {v.op.name: v for v in tf1.trainable_variables()}

    def train_and_save(self, directory: Path, steps: int = 3) -> Path:
        import tensorflow as tf

        with tf.compat.v1.Session(graph=self.graph) as sess:
            sess.run(self.init)
            for i in range(steps):
                sess.run(self.train, {self.x: BATCHES[i][0], self.y: BATCHES[i][1]})
                self.saver.save(sess, str(directory / "model.ckpt"), global_step=i + 1)
        return directory

    def resume_one_step(self, prefix: str) -> dict[str, np.ndarray]:
        import tensorflow as tf

        with tf.compat.v1.Session(graph=self.graph) as sess:
            self.saver.restore(sess, prefix)
            sess.run(self.train, {self.x: NEXT[0], self.y: NEXT[1]})
            return {name: sess.run(v) for name, v in self.weights.items()}


@pytest.fixture(scope="module")
def tf1_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """kind -> (checkpoint dir with steps 1..3, the weights after TF1 takes step 4 from the latest)."""
    out = {}
    for kind in (
        "adam",
        "adam_named",
        "momentum",
        "nesterov",
        "sgd",
        "rmsprop",
        "rmsprop_plain",
        "rmsprop_centered",
        "adagrad",
    ):
        directory = tmp_path_factory.mktemp(f"tf1_{kind}")
        run = TF1Run(kind)
        run.train_and_save(directory)
        out[kind] = (directory, run.resume_one_step(str(directory / "model.ckpt-3")))
    return out


# ---------------------------------------------------------------------------------------------- Keras 3 side
def keras_step(model: Any) -> dict[str, np.ndarray]:
    """One optimizer step in Keras 3 on the NEXT batch (mean softmax cross-entropy), weights by TF1 name."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(NEXT[1], model(NEXT[0], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return {"/".join(v.path.split("/")[-2:]): keras.ops.convert_to_numpy(v) for v in model.weights}


def restore_tf2(out: Path, factory_name: str) -> Any:
    import tensorflow as tf

    from ckpt_tools.conversion.factory import load_factory

    model = load_factory(factory(factory_name))()
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(tf.train.latest_checkpoint(str(out)))
    return model


def max_deviation(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(WEIGHTS) <= set(a) and set(WEIGHTS) <= set(b)
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in WEIGHTS)


TF1_CASES = [
    ("adam", "adam", "tf2"),
    ("adam", "adam", "keras"),
    ("adam_named", "adam", "tf2"),
    ("momentum", "momentum", "tf2"),
    ("momentum", "momentum", "keras"),
    ("nesterov", "nesterov", "tf2"),
    ("sgd", "sgd", "tf2"),
    ("rmsprop", "rmsprop", "tf2"),
    ("rmsprop_plain", "rmsprop_plain", "tf2"),  # TF1's momentum slot is dropped: it only holds the last step
    ("rmsprop_centered", "rmsprop_centered", "keras"),
    ("adagrad", "adagrad", "tf2"),
]


@pytest.mark.parametrize(("kind", "factory_name", "to"), TF1_CASES, ids=[f"{k}-{t}" for k, _, t in TF1_CASES])
def test_tf1_resume_equivalence(tf1_checkpoints: Any, tmp_path: Path, kind: str, factory_name: str, to: str) -> None:
    import keras

    from ckpt_tools.validation.checks import validate

    source, tf1_after = tf1_checkpoints[kind]
    before = tree_hash(source)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    report = run_json(["convert", source, "--model", factory(factory_name), "--out", out, "--to", to])
    assert report["written"] and report["resumable"], report
    [result] = report["checkpoints"]
    assert result["step"] == 3 and result["verification"]["step_ok"]
    assert result["verification"]["weights_identical"] == 4
    assert result["verification"]["slots_equal"] == 4 * len([r for r in report["optimizer"]["slots"] if r["target"]])
    assert validate(out).ok, validate(out).problems()
    model = restore_tf2(out, factory_name) if to == "tf2" else keras.models.load_model(out)
    assert int(model.optimizer.iterations.numpy()) == 3
    keras_after = keras_step(model)
    assert max_deviation(tf1_after, keras_after) < TOL
    assert tree_hash(source) == before


def test_momentum_translation_is_needed(tf1_checkpoints: Any, tmp_path: Path) -> None:
    """Copying TF1's momentum accumulator unchanged (no -lr scaling) visibly breaks the resumed step."""
    source, tf1_after = tf1_checkpoints["momentum"]
    out = tmp_path / "out"
    run_cli(["convert", source, "--model", factory("momentum"), "--out", out])
    model = restore_tf2(out, "momentum")
    model.optimizer.build(model.trainable_variables)  # restoring is deferred until the slots exist
    for slot in model.optimizer.momentums:
        slot.assign(slot.numpy() / -LR)  # back to TF1's raw accumulator
    assert max_deviation(tf1_after, keras_step(model)) > 100 * TOL


def test_adam_step_drives_bias_correction(tf1_checkpoints: Any, tmp_path: Path) -> None:
    """An iteration count off by one changes the resumed Adam step far beyond the tolerance."""
    source, tf1_after = tf1_checkpoints["adam"]
    out = tmp_path / "out"
    run_cli(["convert", source, "--model", factory("adam"), "--out", out])
    model = restore_tf2(out, "adam")
    model.optimizer.iterations.assign(2)
    assert max_deviation(tf1_after, keras_step(model)) > 100 * TOL


# ---------------------------------------------------------------------------------------------- Keras-2 .h5
def keras2_model(optimizer: str, legacy: bool) -> Any:
    import tf_keras

    module = tf_keras.optimizers.legacy if legacy else tf_keras.optimizers
    make = {
        "adam": lambda: module.Adam(LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        "momentum": lambda: module.SGD(LR, momentum=0.9),
        "rmsprop": lambda: module.RMSprop(LR, rho=0.9, momentum=0.0, epsilon=1e-7),
        "rmsprop_momentum": lambda: module.RMSprop(LR, rho=0.9, momentum=0.5, epsilon=1e-7),
    }[optimizer]
    model = tf_keras.Sequential(
        [
            tf_keras.Input((4,)),
            tf_keras.layers.Dense(8, activation="relu", name="dense"),
            tf_keras.layers.Dense(3, name="dense_1"),
        ]
    )
    model.compile(optimizer=make(), loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def tf_keras_step(model: Any) -> dict[str, np.ndarray]:
    import tensorflow as tf
    import tf_keras

    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(NEXT[1], model(NEXT[0], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return {"/".join(v.name.split(":")[0].split("/")[-2:]): v.numpy() for v in model.weights}


def make_keras2_h5(path: Path, optimizer: str, legacy: bool) -> dict[str, np.ndarray]:
    """Train 3 steps in tf_keras, save the legacy .h5, and return the weights after one more tf_keras step."""
    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(3)
    model = keras2_model(optimizer, legacy)
    for x, y in BATCHES[:3]:
        model.train_on_batch(x, y)
    model.save(path)
    reloaded = tf_keras.models.load_model(path)
    return tf_keras_step(reloaded)


KERAS2_CASES = [
    ("adam", False, "adam_keras2", "keras"),
    ("adam", True, "adam_keras2", "tf2"),
    ("momentum", False, "momentum", "keras"),
    ("momentum", True, "momentum", "tf2"),
    ("rmsprop", False, "rmsprop_keras2", "tf2"),
    ("rmsprop_momentum", True, "rmsprop_momentum_keras2", "keras"),
]


@pytest.mark.parametrize(
    ("optimizer", "legacy", "factory_name", "to"),
    KERAS2_CASES,
    ids=[f"{o}-{'legacy' if legacy else 'new'}-{t}" for o, legacy, _, t in KERAS2_CASES],
)
def test_keras2_resume_equivalence(tmp_path: Path, optimizer: str, legacy: bool, factory_name: str, to: str) -> None:
    import keras

    from ckpt_tools.validation.checks import validate

    source = tmp_path / "model.h5"
    keras2_after = make_keras2_h5(source, optimizer, legacy)
    before = tree_hash(source)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    report = run_json(["convert", source, "--model", factory(factory_name), "--out", out, "--to", to])
    assert report["resumable"] and report["checkpoints"][0]["step"] == 3, report
    assert not [w for w in report["warnings"] if "hyper-parameter" in w], report["warnings"]
    assert validate(out).ok, validate(out).problems()
    model = keras.models.load_model(out) if to == "keras" else restore_tf2(out, factory_name)
    assert max_deviation(keras2_after, keras_step(model)) < TOL
    assert tree_hash(source) == before


def test_keras2_legacy_rmsprop_is_flagged_approximate(tmp_path: Path) -> None:
    """Legacy tf_keras RMSprop without momentum adds epsilon outside the sqrt: reported, and the effect is small."""
    source = tmp_path / "model.h5"
    keras2_after = make_keras2_h5(source, "rmsprop", legacy=True)
    out = tmp_path / "out"
    refused = run_cli(["convert", source, "--model", factory("rmsprop_keras2"), "--out", out], 2)
    assert "approximate" in refused.stderr and "--allow-approximate" in refused.stderr and not out.exists()
    args = ["convert", source, "--model", factory("rmsprop_keras2"), "--out", out, "--allow-approximate"]
    report = run_json(args)
    [rule] = [r for r in report["optimizer"]["slots"] if r["source"] == "velocity"]
    assert rule["exactness"] == "approximate" and report["exactness"] == "approximate"
    assert report["approximations"] == [f"slot velocity -> velocity: {rule['note']}"]
    deviation = max_deviation(keras2_after, keras_step(restore_tf2(out, "rmsprop_keras2")))
    assert deviation < 1e-3  # documented in docs/convert.md


# ---------------------------------------------------------------------------------------------- checks on outputs
def test_outputs_validate_and_diff_identical(tf1_checkpoints: Any, tmp_path: Path) -> None:
    from ckpt_tools.diffing import diff
    from ckpt_tools.validation.checks import validate

    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / "out"
    report = run_json(["convert", source, "--model", factory("adam"), "--out", out])
    keras_out = tmp_path / "out.keras"
    run_cli(["convert", source, "--model", factory("adam"), "--out", keras_out, "--to", "keras"])
    for path in (out, keras_out):
        result = validate(path)
        assert result.ok, result.problems()
        assert run_cli(["validate", path], expect=0).exit_code == 0
    assert report["diff_rules"] == {"rules": []}  # canonical names pair source and output without rules
    for path in (out, keras_out):
        result = run_json(["diff", source / "model.ckpt-3", path], expect=0)
        entries = {(e["a"] or e["b"])["key"]: e for e in result["variables"]}
        slots = [f"{w}/Adam" for w in WEIGHTS] + [f"{w}/Adam_1" for w in WEIGHTS]
        for key in [*WEIGHTS, *slots, "global_step"]:
            assert entries[key]["category"] == "identical", entries[key]
        assert {k for k, e in entries.items() if e["category"] == "format_specific"} >= {"beta1_power", "beta2_power"}
    assert diff(source, keras_out).identical  # the library call agrees


def test_unmatched_names_fail_and_write_nothing(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, tf1_after = tf1_checkpoints["adam"]
    before = tree_hash(source)
    out = tmp_path / "out"
    result = run_cli(["convert", source, "--model", factory("renamed"), "--out", out], expect=2)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "mlp/hidden/kernel" in message and "mlp/logits/bias" in message and "--map" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {"from": "^dense/", "to": "hidden/", "side": "a"},
                    {"from": "^dense_1/", "to": "logits/", "side": "a"},
                ]
            }
        )
    )
    report = run_json(["convert", source, "--model", factory("renamed"), "--out", out, "--map", rules])
    assert report["resumable"]
    assert max_deviation(tf1_after, _renamed(keras_step(restore_tf2(out, "renamed")))) < TOL
    assert tree_hash(source) == before


def _renamed(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k.replace("hidden/", "dense/").replace("logits/", "dense_1/"): v for k, v in weights.items()}


def test_existing_out_needs_force(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, _ = tf1_checkpoints["momentum"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    result = run_cli(["convert", source, "--model", factory("momentum"), "--out", out], expect=2)
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "old"
    run_cli(["convert", source, "--model", factory("momentum"), "--out", out, "--force"])
    assert not (out / "keep.txt").exists() and (out / "checkpoint").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers
    result = run_cli(["convert", source, "--model", factory("momentum"), "--out", source, "--force"], expect=2)
    assert "source" in result.stderr


def test_all_keeps_every_step(tf1_checkpoints: Any, tmp_path: Path) -> None:
    import tensorflow as tf

    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / "out"
    report = run_json(["convert", source, "--model", factory("adam"), "--out", out, "--all"])
    assert [c["step"] for c in report["checkpoints"]] == [1, 2, 3]
    state = tf.train.get_checkpoint_state(str(out))
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert Path(state.model_checkpoint_path).name == "ckpt-3"
    reader = tf.train.load_checkpoint(str(out / "ckpt-1"))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 1
    model = restore_tf2(out, "adam")  # a CheckpointManager adopts the converted checkpoints as its own
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(ckpt, str(out), max_to_keep=5)
    assert [Path(p).name for p in manager.checkpoints] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    assert int(model.optimizer.iterations.numpy()) == 3


def test_dry_run_writes_nothing(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / "out"
    text = run_cli(["convert", source, "--model", factory("adam"), "--out", out, "--dry-run"]).stdout
    assert "dense_1/kernel/Adam_1" in text and "mlp/dense_1/kernel" in text and "nothing written" in text
    report = run_json(["convert", source, "--model", factory("renamed"), "--out", out, "--dry-run"], expect=2)
    assert report["schema"] == "ckpt-tools/convert/1" and not report["written"]
    assert "mlp/hidden/kernel" in report["unmatched"]["model"]
    assert "dense/kernel" in report["unmatched"]["source"]
    assert not out.exists()


def test_hyperparameter_mismatch_is_reported(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, _ = tf1_checkpoints["adam"]
    args = ["convert", source, "--model", factory("adam_default"), "--out", tmp_path / "o", "--dry-run"]
    report = run_json(args, 2)  # approximate: refused unless allowed
    checks = {h["name"]: h for h in report["optimizer"]["hyperparameters"]}
    assert checks["learning_rate"]["match"] is False and checks["epsilon"]["match"] is False
    assert checks["beta_1"]["match"] is True
    assert abs(checks["learning_rate"]["source"] - LR) < 1e-7
    assert report["exactness"] == "approximate"
    assert [a.split(":")[0] for a in report["approximations"]] == ["learning_rate", "epsilon"]
    assert any("--allow-approximate" in p or "allow_approximate" in p for p in report["problems"])
    allowed = run_json([*args, "--allow-approximate"])
    assert allowed["approximations"] == report["approximations"] and not allowed["problems"]


def test_untranslatable_state_needs_allow_weights_only(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / "out"
    result = run_cli(["convert", source, "--model", factory("momentum"), "--out", out], expect=2)
    assert "Adam" in result.stderr and "--allow-weights-only" in result.stderr and not out.exists()
    report = run_json(["convert", source, "--model", factory("momentum"), "--out", out, "--allow-weights-only"])
    assert report["written"] and not report["resumable"] and report["weights_only"]
    assert report["checkpoints"][0]["verification"]["weights_identical"] == 4


@pytest.mark.parametrize("to", ["tf2", "keras"])
def test_weights_only_output_carries_no_optimizer_state(tf1_checkpoints: Any, tmp_path: Path, to: str) -> None:
    """A non-resumable conversion must not look resumable: no optimizer, no step, and validate fails it."""
    from ckpt_tools.validation.checks import validate

    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    args = ["convert", source, "--model", factory("momentum"), "--out", out, "--to", to, "--allow-weights-only"]
    assert run_json(args)["weights_only"]
    written = run_json(["inspect", out])
    assert written["optimizer"]["present"] is False and written["step"] is None
    assert not any(v["role"] in ("optimizer", "step") for v in written["variables"])
    report = validate(out)
    assert not report.ok and report.check("optimizer").status == "fail"
    assert report.check("weights").status == "pass"


@pytest.mark.parametrize(
    "fixture",
    ["tf1_step_only", "tf1_step_only_nometa", "tf1_adam_slots_dropped", "tf1_sgd_nometa", "tf1_adam", "tf1_sgd"],
)
def test_convert_plans_from_the_same_verdict_as_inspect_and_validate(fixture: str, tmp_path: Path) -> None:
    from ckpt_tools.validation.checks import validate

    source = FIXTURES / fixture
    inspected = run_json(["inspect", source])["resume"]
    plan = run_json(
        ["convert", source, "--model", f"{EXAMPLES}:tf1_adam", "--out", tmp_path / "o", "--dry-run"], expect=None
    )
    assert plan["source_resume"] == inspected
    checks = {c.name: c for c in validate(source).checks}
    assert inspected["reasons"]["optimizer"] == checks["optimizer"].reason
    problems = plan["optimizer"]["problems"]
    if checks["optimizer"].status == "fail":
        assert problems and problems[0] == f"source {checks['optimizer'].reason}"
        assert not plan["resumable"]


def test_factory_must_be_compiled(tf1_checkpoints: Any, tmp_path: Path) -> None:
    source, _ = tf1_checkpoints["sgd"]
    result = run_cli(["convert", source, "--model", factory("not_compiled"), "--out", tmp_path / "o"], expect=2)
    assert "not compiled" in result.stderr
    result = run_cli(["convert", source, "--model", f"{MODELS}:nope", "--out", tmp_path / "o"], expect=2)
    assert "nope" in result.stderr


# ---------------------------------------------------------------------------------------------- units
def test_match_names_by_suffix() -> None:
    from ckpt_tools.conversion.run import match_names

    matches, ambiguous = match_names(
        ["dense/kernel", "dense/bias", "dense_1/kernel", "global/bn/gamma"],
        ["mlp/dense/kernel", "mlp/dense/bias", "mlp/dense_1/kernel", "bn/gamma", "x/kernel"],
    )
    assert matches == {
        "mlp/dense/kernel": "dense/kernel",
        "mlp/dense/bias": "dense/bias",
        "mlp/dense_1/kernel": "dense_1/kernel",
        "bn/gamma": "global/bn/gamma",
    }
    assert ambiguous == []
    _, ambiguous = match_names(["a/dense/kernel", "b/dense/kernel"], ["dense/kernel"])
    assert ambiguous and "equally well" in ambiguous[0]


def test_slot_transforms() -> None:
    from ckpt_tools.conversion.slots import SlotRule, translate
    from ckpt_tools.optimizers.translation import adam_steps_from_power

    accum = np.array([1.0, -2.0, 0.25], dtype=np.float32)
    neg = translate(SlotRule("momentum", "momentum", "neg_lr", "rounding"), accum, learning_rate=0.05, epsilon=0)
    assert neg.dtype == np.float32 and np.array_equal(neg, -(np.float32(0.05) * accum))
    acc = translate(
        SlotRule("accumulator", "accumulator", "minus_eps", "rounding"), accum, learning_rate=0.1, epsilon=1e-7
    )
    assert np.array_equal(acc, accum - np.float32(1e-7))
    power = np.float32(1.0)
    for _ in range(11):
        power = np.float32(power * np.float32(0.9))
    assert adam_steps_from_power(float(power), 0.9) == 10
    assert adam_steps_from_power(0.5, 0.9) is None


def _spoil(model: Any, which: str) -> None:
    """Move one element of the first weight (or first Adam momentum slot) to the next float32 up."""
    import keras

    if which == "weight":
        variable = model.weights[0]
    else:
        variable = next(v for v in model.optimizer.variables if "momentum" in v.path)
    value = keras.ops.convert_to_numpy(variable).copy()
    value.flat[0] = np.nextafter(value.flat[0], np.float32(np.inf))
    variable.assign(value)


@pytest.mark.parametrize(("to", "which"), [("keras", "weight"), ("keras", "slot"), ("tf2", "weight"), ("tf2", "slot")])
def test_verification_refuses_an_output_holding_one_wrong_value(
    tf1_checkpoints: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to: str, which: str
) -> None:
    """One element one ulp off in what Keras / TensorFlow writes: the streamed read-back must catch it (through
    ckpt-tools' reader, and for .keras also through keras.models.load_model), and OUT is not written."""
    import keras
    import tensorflow as tf

    from ckpt_tools.conversion.run import convert
    from ckpt_tools.errors import ConversionError

    if to == "keras":
        save = keras.Model.save

        def spoiled_save(self: Any, *args: Any, **kwargs: Any) -> Any:
            _spoil(self, which)
            return save(self, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "save", spoiled_save)
    else:
        write = tf.train.Checkpoint.write

        def spoiled_write(self: Any, *args: Any, **kwargs: Any) -> Any:
            _spoil(self.model, which)
            return write(self, *args, **kwargs)

        monkeypatch.setattr(tf.train.Checkpoint, "write", spoiled_write)
    source, _ = tf1_checkpoints["adam"]
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    with pytest.raises(ConversionError, match="read-back verification failed") as failure:
        convert(source, model=factory("adam"), out=out, to=to)
    message = str(failure.value)
    if to == "keras":
        assert f"no output tensor holds the expected {which} values" in message, message
        assert "holds other values after keras.models.load_model" in message, message
    else:
        assert f"does not hold the expected {which} values" in message, message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_verification_refuses_a_corrupted_data_file(
    tf1_checkpoints: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte flipped in the written TF2 data file (after TensorFlow wrote it) fails the read-back."""
    import tensorflow as tf

    from ckpt_tools.conversion.run import convert
    from ckpt_tools.errors import CkptToolsError

    write = tf.train.Checkpoint.write

    def damaging_write(self: Any, prefix: str, *args: Any, **kwargs: Any) -> Any:
        written = write(self, prefix, *args, **kwargs)
        [data] = Path(prefix).parent.glob(Path(prefix).name + ".data-*")
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        data.write_bytes(bytes(raw))
        return written

    monkeypatch.setattr(tf.train.Checkpoint, "write", damaging_write)
    source, _ = tf1_checkpoints["adam"]
    with pytest.raises(CkptToolsError):
        convert(source, model=factory("adam"), out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from ckpt_tools.conversion.atomic import AtomicOutput
    from ckpt_tools.errors import OutputExistsError

    out = tmp_path / "out"
    with pytest.raises(RuntimeError), AtomicOutput(out, directory=True) as output:
        (output.path / "f").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with AtomicOutput(out, directory=True) as output:
        (output.path / "f").write_text("one")
        output.commit()
    with pytest.raises(OutputExistsError), AtomicOutput(out, directory=True):
        pass
    with AtomicOutput(out, directory=True, force=True) as output:
        (output.path / "g").write_text("two")
        output.commit()
    assert sorted(p.name for p in out.iterdir()) == ["g"] and os.listdir(tmp_path) == ["out"]


def test_keras2_extra_weight_is_refused_unless_dropped(tmp_path: Path) -> None:
    import h5py

    source = tmp_path / "model.h5"
    make_keras2_h5(source, "adam", legacy=False)
    with h5py.File(source, "r+") as handle:
        handle["model_weights/dense/dense"].create_dataset("extra:0", data=np.ones((2, 2), "f4"))
    out = tmp_path / "out.keras"
    result = run_cli(["convert", source, "--model", factory("adam_keras2"), "--out", out, "--to", "keras"], expect=2)
    assert "dense/extra" in result.stderr and "no place in the model" in result.stderr and not out.exists()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"from": "^dense/extra$", "to": None, "side": "a"}]))
    report = run_json(
        ["convert", source, "--model", factory("adam_keras2"), "--out", out, "--to", "keras", "--map", rules]
    )
    assert report["resumable"] and out.is_file()


# ---------------------------------------------------------------------------------------------- docs figures
DRIFT_BATCHES = [
    (RNG.normal(size=(6, 4)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32)) for _ in range(100)
]


def _continue(model: Any, losses: Any, name_of: Any) -> dict[str, np.ndarray]:
    import tensorflow as tf

    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    for x, y in DRIFT_BATCHES:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return {name_of(v): np.array(v) for v in model.weights}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "bound"),
    [("tf1-adam", 2e-5), ("tf1-momentum", 2e-6), ("tf1-adagrad", 2e-6), ("keras2-legacy-rmsprop", 1e-2)],
)
def test_drift_over_100_steps_matches_docs(tmp_path: Path, case: str, bound: float) -> None:
    """The 100-step figures of docs/convert.md: both frameworks continue 100 steps from the same state."""
    import keras
    import tensorflow as tf
    import tf_keras

    kind = case.split("-")[-1]
    out = tmp_path / "out"
    if case.startswith("tf1"):
        run = TF1Run(kind)
        run.train_and_save(tmp_path)
        with tf.compat.v1.Session(graph=run.graph) as sess:
            run.saver.restore(sess, str(tmp_path / "model.ckpt-3"))
            for x, y in DRIFT_BATCHES:
                sess.run(run.train, {run.x: x, run.y: y})
            reference = {name: sess.run(v) for name, v in run.weights.items()}
        factory_name = kind
        run_cli(["convert", tmp_path, "--model", factory(factory_name), "--out", out])
    else:
        source = tmp_path / "model.h5"
        make_keras2_h5(source, kind, legacy=True)
        reference = _continue(
            tf_keras.models.load_model(source),
            tf_keras.losses,
            lambda v: "/".join(v.name.split(":")[0].split("/")[-2:]),
        )
        factory_name = "rmsprop_keras2"
        run_cli(["convert", source, "--model", factory(factory_name), "--out", out, "--allow-approximate"])
    converted = _continue(restore_tf2(out, factory_name), keras.losses, lambda v: "/".join(v.path.split("/")[-2:]))
    drift = max_deviation(reference, converted)
    print(f"{case}: max |weight difference| after 100 steps = {drift:.3g}")
    assert drift < bound
    if case == "keras2-legacy-rmsprop":
        assert drift > 1e-5  # the epsilon placement is a real, visible difference
