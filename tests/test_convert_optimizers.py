"""`ckpt convert` for Adamax, Nadam, Adadelta, Ftrl, AdamW and AMSGrad: the source framework and Keras 3 continue
1 and 20 steps from the same state; exact translations agree, approximate and refused ones say why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json
from tests.resume import tape_steps
from tests.test_convert import BATCHES, WEIGHTS, factory, max_deviation, restore_tf2

pytestmark = [needs_tf, pytest.mark.tensorflow, pytest.mark.slow]  # tox -e slow: the CI gate stays < 30 min

LR = 0.05
STEPS = 20
TOL_1, TOL_20 = 1e-5, 1e-4
RNG = np.random.default_rng(4321)
CONTINUE = [(RNG.normal(size=(6, 4)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32)) for _ in range(STEPS)]
FTRL = {"l1_regularization_strength": 0.001, "l2_regularization_strength": 0.01}
Weights = dict[str, np.ndarray]


def _continue(model: Any, losses: Any, name_of: Callable[[Any], str]) -> tuple[Weights, Weights]:
    """The weights after 1 and after STEPS more optimizer steps on CONTINUE (eager, one tape per step)."""
    after = tape_steps(model, losses, CONTINUE, lambda m: {name_of(v): np.array(v.numpy()) for v in m.weights})
    return after[0], after[-1]


def _tf_name(variable: Any) -> str:
    return "/".join(variable.name.split(":")[0].split("/")[-2:])


def _keras3_name(variable: Any) -> str:
    return "/".join(variable.path.split("/")[-2:])


def keras3_continues(out: Path, factory_name: str, to: str) -> tuple[Weights, Weights]:
    import keras

    model = keras.models.load_model(out) if to == "keras" else restore_tf2(out, factory_name)
    assert int(model.optimizer.iterations.numpy()) == 3
    return _continue(model, keras.losses, _keras3_name)


# ---------------------------------------------------------------------------------------------- tf_keras .h5
def tf_keras_optimizer(kind: str, legacy: bool) -> Any:
    import tf_keras

    module = tf_keras.optimizers.legacy if legacy else tf_keras.optimizers
    return {
        "adamax": lambda: module.Adamax(LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        "nadam": lambda: module.Nadam(LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        "adadelta": lambda: module.Adadelta(1.0, rho=0.95, epsilon=1e-7),
        "ftrl": lambda: module.Ftrl(LR, learning_rate_power=-0.5, **FTRL),
        "ftrl_shrinkage": lambda: module.Ftrl(LR, l2_shrinkage_regularization_strength=0.001, **FTRL),
        "ftrl_beta": lambda: module.Ftrl(LR, beta=0.1, **FTRL),
        "adamw": lambda: module.AdamW(LR, weight_decay=0.01, epsilon=1e-7),
        "amsgrad": lambda: module.Adam(LR, epsilon=1e-7, amsgrad=True),
        "sgd_decay": lambda: module.SGD(LR, momentum=0.9, decay=0.01),  # legacy only: lr / (1 + decay * step)
    }[kind]()


def keras2_source(path: Path, kind: str, legacy: bool) -> tuple[Weights, Weights]:
    """Train 3 steps in tf_keras, save the legacy .h5, then continue the same in-memory run (the run a resume
    must reproduce): its weights after 1 and STEPS more steps."""
    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(3)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((4,)),
            tf_keras.layers.Dense(8, activation="relu", name="dense"),
            tf_keras.layers.Dense(3, name="dense_1"),
        ]
    )
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=tf_keras_optimizer(kind, legacy), loss=loss)
    for x, y in BATCHES[:3]:
        model.train_on_batch(x, y)
    model.save(path)
    return _continue(model, tf_keras.losses, _tf_name)


KERAS2_EXACT = [
    ("adamax", False, "adamax", "keras"),
    ("adamax", True, "adamax", "tf2"),
    ("adadelta", False, "adadelta", "tf2"),
    ("adadelta", True, "adadelta", "keras"),
    ("ftrl", False, "ftrl", "keras"),
    ("ftrl", True, "ftrl", "tf2"),
    ("ftrl_shrinkage", False, "ftrl_shrinkage", "tf2"),
    ("ftrl_shrinkage", True, "ftrl_shrinkage", "tf2"),
    ("ftrl_beta", True, "ftrl_beta", "tf2"),
    ("adamw", False, "adamw", "keras"),
    ("amsgrad", False, "adam_amsgrad", "tf2"),
    ("amsgrad", True, "adam_amsgrad", "keras"),
]


@pytest.mark.parametrize(
    ("kind", "legacy", "factory_name", "to"),
    KERAS2_EXACT,
    ids=[f"{k}-{'legacy' if legacy else 'new'}-{t}" for k, legacy, _, t in KERAS2_EXACT],
)
def test_keras2_exact_continuation(tmp_path: Path, kind: str, legacy: bool, factory_name: str, to: str) -> None:
    source = tmp_path / "model.h5"
    after_1, after_20 = keras2_source(source, kind, legacy)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    decays = kind == "adamw"  # which variables the source excluded from weight decay is not recorded
    args = ["convert", source, "--model", factory(factory_name), "--out", out, "--to", to]
    report = run_json([*args, "--allow-approximate"] if decays else args)
    assert report["written"] and report["resumable"], report
    unrecorded = [a for a in report["approximations"] if "exclude_from_weight_decay" in a]
    assert report["approximations"] == unrecorded and len(unrecorded) == int(decays), report["approximations"]
    assert report["checkpoints"][0]["step"] == 3
    slots = [r for r in report["optimizer"]["slots"] if r["target"]]
    assert slots and all(r["exactness"] == "exact" for r in slots)
    assert report["checkpoints"][0]["verification"]["slots_equal"] == len(WEIGHTS) * len(slots)
    assert all(h["match"] for h in report["optimizer"]["hyperparameters"]), report["optimizer"]["hyperparameters"]
    mine_1, mine_20 = keras3_continues(out, factory_name, to)
    deviation_1, deviation_20 = max_deviation(after_1, mine_1), max_deviation(after_20, mine_20)
    print(f"keras2 {kind} legacy={legacy}: after 1 step {deviation_1:.2g}, after {STEPS} {deviation_20:.2g}")
    assert deviation_1 < TOL_1 and deviation_20 < TOL_20


def test_keras2_legacy_decay_continues_as_the_equivalent_schedule(tmp_path: Path) -> None:
    """Legacy SGD(decay=0.01) is Keras 3's InverseTimeDecay(lr, 1, 0.01): the same run (it was reported as a
    differing learning_rate and decay); any other schedule stays approximate, naming the decay."""
    source = tmp_path / "model.h5"
    after_1, after_20 = keras2_source(source, "sgd_decay", legacy=True)
    out = tmp_path / "out"
    report = run_json(["convert", source, "--model", factory("momentum_inverse_time"), "--out", out])
    assert report["exactness"] == "exact" and report["approximations"] == [], report["approximations"]
    mine_1, mine_20 = keras3_continues(out, "momentum_inverse_time", "tf2")
    assert max_deviation(after_1, mine_1) < TOL_1 and max_deviation(after_20, mine_20) < TOL_20
    for other in ("momentum_inverse_time_staircase", "momentum_exponential"):
        args = ["convert", source, "--model", factory(other), "--out", tmp_path / other, "--dry-run"]
        shown = run_json(args, 2)["approximations"]
        assert any(a.startswith("decay: source 0.01, factory 0") for a in shown), (other, shown)


def test_keras2_nadam_is_approximate(tmp_path: Path) -> None:
    """tf_keras Nadam does not store u_product: Keras 3 restarts it at 1 and parts visibly from the source run."""
    source = tmp_path / "model.h5"
    after_1, after_20 = keras2_source(source, "nadam", legacy=False)
    out = tmp_path / "out"
    refused = run_cli(["convert", source, "--model", factory("nadam"), "--out", out], 2)
    assert "u_product" in refused.stderr and "--allow-approximate" in refused.stderr and not out.exists()
    report = run_json(["convert", source, "--model", factory("nadam"), "--out", out, "--allow-approximate"])
    assert report["exactness"] == "approximate" and len(report["approximations"]) == 1
    assert "Nadam" in report["approximations"][0] and "u_product" in report["approximations"][0]
    mine_1, mine_20 = keras3_continues(out, "nadam", "tf2")
    deviation_1, deviation_20 = max_deviation(after_1, mine_1), max_deviation(after_20, mine_20)
    print(f"keras2 nadam (approximate): after 1 step {deviation_1:.2g}, after {STEPS} {deviation_20:.2g}")
    assert deviation_1 > TOL_1  # the lost product is a real difference


def test_keras2_legacy_nadam_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "model.h5"
    keras2_source(source, "nadam", legacy=True)
    out = tmp_path / "out"
    refused = run_cli(["convert", source, "--model", factory("nadam"), "--out", out], 2)
    assert "Nadam" in refused.stderr and "0.96^(0.004*t)" in refused.stderr and not out.exists()
    assert len(refused.stderr.strip().splitlines()) == 1
    report = run_json(["convert", source, "--model", factory("nadam"), "--out", out, "--dry-run"], 2)
    assert any("schedule_decay" in p for p in report["optimizer"]["problems"])


@pytest.mark.parametrize(
    ("kind", "factory_name", "name"),
    [
        ("adamw", "adamw_other_decay", "weight_decay"),
        ("ftrl", "ftrl_shrinkage", "l2_shrinkage_regularization_strength"),
    ],
)
def test_keras2_hyper_mismatch_is_approximate(tmp_path: Path, kind: str, factory_name: str, name: str) -> None:
    source = tmp_path / "model.h5"
    keras2_source(source, kind, legacy=False)
    args = ["convert", source, "--model", factory(factory_name), "--out", tmp_path / "o", "--dry-run"]
    report = run_json(args, 2)
    named = [a.split(":")[0] for a in report["approximations"] if "exclude_from_weight_decay" not in a]
    assert named == [name], report["approximations"]
    assert [h["name"] for h in report["optimizer"]["hyperparameters"] if h["match"] is False] == [name]


def test_amsgrad_needs_an_amsgrad_target(tmp_path: Path) -> None:
    source = tmp_path / "model.h5"
    keras2_source(source, "amsgrad", legacy=False)
    result = run_cli(["convert", source, "--model", factory("adam_keras2"), "--out", tmp_path / "o"], 2)
    assert "velocity_hat" in result.stderr and "amsgrad=False" in result.stderr


# ---------------------------------------------------------------------------------------------- TF1
def tf1_optimizer(kind: str) -> Any:
    import tensorflow as tf

    train = tf.compat.v1.train
    ftrl = {"l1_regularization_strength": 0.001, "l2_regularization_strength": 0.01}
    return {
        "adadelta": lambda: train.AdadeltaOptimizer(1.0, rho=0.95, epsilon=1e-8),
        "ftrl": lambda: train.FtrlOptimizer(LR, learning_rate_power=-0.5, **ftrl),
        "ftrl_shrinkage": lambda: train.FtrlOptimizer(LR, l2_shrinkage_regularization_strength=0.001, **ftrl),
        "ftrl_beta": lambda: train.FtrlOptimizer(LR, beta=0.1, **ftrl),
        "adam": lambda: train.AdamOptimizer(LR, epsilon=1e-8),
    }[kind]()


def tf1_source(directory: Path, kind: str) -> tuple[Weights, Weights]:
    """A tf.compat.v1 graph MLP trained 3 steps and saved, then continued in the same session."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    from tf_keras.api._v1.keras.__internal__.legacy.layers import dense

    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(7)
        x, y = tf1.placeholder(tf.float32, [None, 4]), tf1.placeholder(tf.int32, [None])
        logits = dense(dense(x, 8, activation=tf.nn.relu, name="dense"), 3, name="dense_1")
        loss = tf1.losses.sparse_softmax_cross_entropy(y, logits)
        train = tf1_optimizer(kind).minimize(loss, global_step=tf1.train.get_or_create_global_step())
        saver = tf1.train.Saver()
        weights = {v.op.name: v for v in tf1.trainable_variables()}
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            for bx, by in BATCHES[:3]:
                sess.run(train, {x: bx, y: by})
            saver.save(sess, str(directory / "model.ckpt"), global_step=3)
            after = []
            for bx, by in CONTINUE:
                sess.run(train, {x: bx, y: by})
                after.append({name: sess.run(v) for name, v in weights.items()})
    return after[0], after[-1]


TF1_CASES = [
    ("adadelta", "adadelta_tf1", "tf2"),
    ("ftrl", "ftrl", "keras"),
    ("ftrl_shrinkage", "ftrl_shrinkage", "tf2"),
    ("ftrl_beta", "ftrl_beta", "tf2"),
]


@pytest.mark.parametrize(("kind", "factory_name", "to"), TF1_CASES, ids=[f"{k}-{t}" for k, _, t in TF1_CASES])
def test_tf1_continuation(tmp_path: Path, kind: str, factory_name: str, to: str) -> None:
    after_1, after_20 = tf1_source(tmp_path, kind)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    args = ["convert", tmp_path, "--model", factory(factory_name), "--out", out, "--to", to]
    report = run_json(args)
    assert report["written"] and report["resumable"], report
    slots = [r for r in report["optimizer"]["slots"] if r["target"]]
    assert len(slots) == 2 and all(r["exactness"] == "exact" for r in slots)
    # TF1 FtrlOptimizer feeds its op l2 + beta/(2*lr) through an AddV2 of constants: folded, and compared
    assert report["exactness"] == "exact", report["approximations"]
    checks = report["optimizer"]["hyperparameters"]
    assert checks and all(h["match"] for h in checks), checks
    mine_1, mine_20 = keras3_continues(out, factory_name, to)
    deviation_1, deviation_20 = max_deviation(after_1, mine_1), max_deviation(after_20, mine_20)
    print(f"tf1 {kind}: after 1 step {deviation_1:.2g}, after {STEPS} {deviation_20:.2g}")
    assert deviation_1 < TOL_1 and deviation_20 < TOL_20


@pytest.mark.parametrize(
    ("kind", "factory_name", "reason"),
    [
        ("adadelta", "adadelta", "epsilon"),  # TF1 eps 1e-8 against a factory's 1e-7
        ("ftrl", "ftrl_shrinkage", "l2_shrinkage_regularization_strength"),  # ApplyFtrl: no shrinkage
        ("ftrl_shrinkage", "ftrl", "l2_shrinkage_regularization_strength"),
        ("ftrl_beta", "ftrl", "l2_regularization_strength"),  # the folded l2 + beta/(2*lr) against beta 0
    ],
)
def test_tf1_hyper_mismatch_is_approximate(tmp_path: Path, kind: str, factory_name: str, reason: str) -> None:
    tf1_source(tmp_path, kind)
    report = run_json(["convert", tmp_path, "--model", factory(factory_name), "--out", tmp_path / "o", "--dry-run"], 2)
    assert reason in [a.split(":")[0] for a in report["approximations"]], report["approximations"]
    assert [h["name"] for h in report["optimizer"]["hyperparameters"] if h["match"] is False] == [reason]


def test_tf1_adam_into_amsgrad_is_refused(tmp_path: Path) -> None:
    tf1_source(tmp_path, "adam")
    result = run_cli(["convert", tmp_path, "--model", factory("adam_amsgrad_tf1"), "--out", tmp_path / "o"], 2)
    assert "velocity_hat" in result.stderr and "--allow-weights-only" in result.stderr
