"""`ckpt convert` of optimizer wrappers: tf_keras weight averages (use_ema) continue exactly in Keras 3 (1 and 20
steps, and one fit epoch whose end overwrites the weights), TF1 shadows and loss scaling are named or refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json
from tests.resume import tape_steps
from tests.test_convert import BATCHES, WEIGHTS, factory
from tests.test_convert_exactness import Graph, _adam, _ema, _mlp_loss

pytestmark = [needs_tf, pytest.mark.tensorflow]

LR = 0.05
STEPS = 20
TOL_1, TOL_20 = 1e-5, 1e-4
RNG = np.random.default_rng(2468)
CONTINUE = [(RNG.normal(size=(6, 4)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32)) for _ in range(STEPS)]
EPOCH = (RNG.normal(size=(42, 4)).astype(np.float32), RNG.integers(0, 3, 42).astype(np.int32))  # 7 batches of 6
State = dict[str, np.ndarray]


def _name(variable: Any) -> str:
    """`dense/kernel` for a tf_keras variable (`dense/kernel:0`) and a Keras 3 one (`mlp/dense/kernel`)."""
    return "/".join(getattr(variable, "path", variable.name).split(":")[0].split("/")[-2:])


def _state(model: Any) -> State:
    """Every weight and its average (`dense/kernel@average`), by name."""
    out = {_name(v): np.array(v.numpy()) for v in model.weights}
    optimizer = model.optimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None) or []
    for variable in model.trainable_variables:
        index = optimizer._index_dict[optimizer._var_key(variable)] if hasattr(optimizer, "_index_dict") else None
        if index is None:
            index = optimizer._get_variable_index(variable)
        out[f"{_name(variable)}@average"] = np.array(averages[index].numpy())
    return out


def _continue(model: Any, losses: Any) -> tuple[State, State]:
    """The state after 1 and after STEPS more optimizer steps on CONTINUE (eager, one tape per step)."""
    after = tape_steps(model, losses, CONTINUE, _state)
    return after[0], after[-1]


def _fit(model: Any) -> State:
    """The state after one fit epoch of 7 batches (unshuffled): fit ends by overwriting weights with averages."""
    model.fit(EPOCH[0], EPOCH[1], batch_size=6, epochs=1, shuffle=False, verbose=0)
    return _state(model)


def deviation(a: State, b: State) -> float:
    names = [*WEIGHTS, *(f"{w}@average" for w in WEIGHTS)]
    assert set(names) <= set(a) and set(names) <= set(b), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in names)


def tf_keras_ema_source(path: Path, overwrite: int | None) -> Any:
    """Train 3 steps in tf_keras with Adam(use_ema=True), save the legacy .h5; the model goes on in memory."""
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
    optimizer = tf_keras.optimizers.Adam(
        LR, epsilon=1e-7, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=overwrite
    )
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for x, y in BATCHES[:3]:
        model.train_on_batch(x, y)
    model.save(path)
    return model


def _keras3_model(out: Path, to: str, factory_name: str | None) -> Any:
    """Keras 3 resuming from OUT: `load_model`, or the factory's model restored from the TF2 checkpoint."""
    import keras
    import tensorflow as tf

    from ckpt_tools.conversion.factory import load_factory

    if to == "keras":
        model = keras.models.load_model(out)
    else:
        model = load_factory(factory(factory_name or "adam_ema"))()
        model.optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        checkpoint.restore(tf.train.latest_checkpoint(str(out))).assert_existing_objects_matched()
    assert int(model.optimizer.iterations.numpy()) == 3 and model.optimizer.use_ema
    return model


EMA_CASES = [  # (tf_keras ema_overwrite_frequency, --model factory or None, --to)
    (None, None, "keras"),
    (4, None, "keras"),
    (4, "adam_ema", "tf2"),
    (4, "adam_ema", "keras"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overwrite", "factory_name", "to"), EMA_CASES)
def test_tf_keras_ema_continues_exactly(
    tmp_path: Path, overwrite: int | None, factory_name: str | None, to: str
) -> None:
    import keras
    import tf_keras

    source = tmp_path / "ema.h5"
    model = tf_keras_ema_source(source, overwrite)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    args = ["--model", factory(factory_name)] if factory_name else []
    report = run_json(["convert", source, *args, "--out", out, "--to", to])
    assert report["written"] and report["exactness"] == "exact" and report["approximations"] == [], report
    rules = {r["source"]: r for r in report["optimizer"]["slots"]}
    assert rules["average"]["target"] == "average" and rules["average"]["exactness"] == "exact"
    assert report["checkpoints"][0]["verification"]["slots_equal"] == 3 * len(WEIGHTS)
    checks = {h["name"]: h for h in report["optimizer"]["hyperparameters"]}
    assert checks["ema_momentum"]["match"] and checks["ema_overwrite_frequency"]["match"], checks
    assert deviation(_state(model), _state(_keras3_model(out, to, factory_name))) == 0.0
    assert "IDENTICAL" in run_cli(["diff", source, out]).output  # averages pair with averages, by name
    run_cli(["validate", out])
    theirs_1, theirs_20 = _continue(model, tf_keras.losses)
    mine_1, mine_20 = _continue(_keras3_model(out, to, factory_name), keras.losses)
    d1, d20 = deviation(theirs_1, mine_1), deviation(theirs_20, mine_20)
    print(f"ema overwrite={overwrite} factory={factory_name} to={to}: after 1 step {d1:.2g}, after {STEPS} {d20:.2g}")
    assert d1 < TOL_1 and d20 < TOL_20


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [None, 4])
def test_tf_keras_ema_fit_epoch_continues_exactly(tmp_path: Path, overwrite: int | None) -> None:
    """One fit epoch on each side: the periodic overwrite (at iterations 3 and 7 of 3..9) and fit's final one."""
    source = tmp_path / "ema.h5"
    model = tf_keras_ema_source(source, overwrite)
    out = tmp_path / "out.keras"
    report = run_json(["convert", source, "--out", out, "--to", "keras"])
    assert report["exactness"] == "exact", report["approximations"]
    theirs, mine = _fit(model), _fit(_keras3_model(out, "keras", None))
    afresh = _keras3_model(out, "keras", None)  # the averages restarted from the weights: another run
    averages = afresh.optimizer._model_variables_moving_average
    for variable, average in zip(afresh.trainable_variables, averages, strict=True):
        average.assign(variable)
    apart = deviation(theirs, _fit(afresh))
    assert apart > 1e-3
    for name in WEIGHTS:  # fit's end wrote the averages into the weights, on both sides
        np.testing.assert_array_equal(mine[name], mine[f"{name}@average"])
    d = deviation(theirs, mine)
    print(f"ema fit epoch overwrite={overwrite}: {d:.2g} (averages restarted: {apart:.2g})")
    assert d < TOL_20


def test_tf_keras_ema_into_plain_adam_is_approximate(tmp_path: Path) -> None:
    source = tmp_path / "ema.h5"
    tf_keras_ema_source(source, None)
    report = run_json(["convert", source, "--model", factory("adam_keras2"), "--out", tmp_path / "o", "--dry-run"], 2)
    rule = next(r for r in report["optimizer"]["slots"] if r["source"] == "average")
    assert rule["target"] is None and rule["transform"] == "drop" and rule["exactness"] == "approximate"
    assert any("use_ema=False" in a for a in report["approximations"]), report["approximations"]


def test_tf1_ema_is_named_and_refused_into_use_ema(tmp_path: Path) -> None:
    """TF1 shadows are not translated (the checkpoint cannot show they followed Keras 3's rule); a factory that
    averages has nothing to continue from, so it is refused; plain Adam continues the weights, approximately."""
    (tmp_path / "constant").mkdir()
    directory = Graph(_ema).save(tmp_path / "constant")
    refused = run_json(["convert", directory, "--model", factory("adam_ema"), "--out", tmp_path / "o", "--dry-run"], 2)
    assert any("keeps no averages" in p for p in refused["problems"]), refused["problems"]
    report = run_json(["convert", directory, "--model", factory("adam"), "--out", tmp_path / "o", "--dry-run"], 2)
    reason = next(a for a in report["approximations"] if a.startswith("weight averages (EMA: "))
    assert "ExponentialMovingAverage decay 0.99)" in reason and "not translated" in reason, reason
    (tmp_path / "counted").mkdir()
    counted = Graph(_ema_num_updates).save(tmp_path / "counted")
    report = run_json(["convert", counted, "--model", factory("adam"), "--out", tmp_path / "o", "--dry-run"], 2)
    reason = next(a for a in report["approximations"] if a.startswith("weight averages (EMA: "))
    assert "decay min(0.99, (1+n)/(10+n)) with num_updates n" in reason, reason


def _ema_num_updates(x: Any, y: Any, step: Any) -> Any:
    """Adam, then an ExponentialMovingAverage whose decay follows the global step (num_updates)."""
    import tensorflow as tf

    train = _adam().minimize(_mlp_loss(x, y), global_step=step)
    with tf.control_dependencies([train]):
        return tf.train.ExponentialMovingAverage(0.99, num_updates=step).apply(tf.compat.v1.trainable_variables())


def test_tf_keras_loss_scale_is_named(tmp_path: Path) -> None:
    """A tf_keras LossScaleOptimizer's .h5 keeps no loss scale or counter: approximate without --model, and a
    Keras 3 LossScaleOptimizer factory is refused by name."""
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.Input((4,)),
            tf_keras.layers.Dense(8, activation="relu", name="dense"),
            tf_keras.layers.Dense(3, name="dense_1"),
        ]
    )
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam(LR, epsilon=1e-7))
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for x, y in BATCHES[:3]:
        model.train_on_batch(x, y)
    source = tmp_path / "ls.h5"
    model.save(source)
    report = run_json(["convert", source, "--out", tmp_path / "o", "--dry-run"], 2)
    assert report["optimizer"]["target"] == "Adam"
    assert any(a.startswith("loss scaling (LossScaleOptimizer") for a in report["approximations"]), report
    refused = run_json(
        ["convert", source, "--model", factory("adam_loss_scale"), "--out", tmp_path / "o", "--dry-run"], 2
    )
    assert any("LossScaleOptimizer" in p for p in refused["problems"]), refused["problems"]


@pytest.mark.slow
def test_tf_keras_ema_at_step_0_is_approximate(tmp_path: Path) -> None:
    """Saved before any update: Keras 3's first update sets average = weight, tf_keras blends in the initial
    weight, so the averages part by more than 1e-3 while the weights agree."""
    import keras
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
    optimizer = tf_keras.optimizers.Adam(LR, epsilon=1e-7, use_ema=True, ema_momentum=0.9)
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
    source = tmp_path / "step0.h5"
    model.save(source)
    out = tmp_path / "out.keras"
    report = run_json(["convert", source, "--out", out, "--to", "keras", "--allow-approximate"])
    assert any(a.startswith("weight averages: the source is at step 0") for a in report["approximations"]), report
    theirs, _ = _continue(model, tf_keras.losses)
    mine, _ = _continue(keras.models.load_model(out), keras.losses)
    weights = max(float(np.max(np.abs(theirs[w] - mine[w]))) for w in WEIGHTS)
    print(f"ema step 0: weights {weights:.2g}, with averages {deviation(theirs, mine):.2g} after 1 step")
    assert weights < TOL_1 and deviation(theirs, mine) > 1e-3
