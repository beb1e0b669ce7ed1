"""`ckpt convert` of a Keras-2 .h5 without --model: the model rebuilt from model_config, resumed on both sides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json
from tests.resume import BOUNDS, mlp_batches, restored, tape_steps

pytestmark = [needs_tf, pytest.mark.tensorflow, pytest.mark.slow]  # tox -e slow: the CI gate stays < 30 min

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "convert_models.py"
LR = 0.05
BATCHES = mlp_batches(4321)
TRAINED, RESUMED = BATCHES[:3], BATCHES[3:]


def tf_keras_model(functional: bool, optimizer: str, *, compiled: bool = True, lambda_layer: bool = False) -> Any:
    """The tf_keras MLP: Dense(8, relu) -> BatchNormalization (non-trainable moving statistics) -> Dense(3)."""
    import tf_keras

    layers: list[Any] = [tf_keras.layers.Dense(8, activation="relu", name="dense")]
    if lambda_layer:
        layers.append(tf_keras.layers.Lambda(lambda t: t * 2.0, name="doubled"))
    layers += [tf_keras.layers.BatchNormalization(name="bn"), tf_keras.layers.Dense(3, name="dense_1")]
    if functional:
        inputs = tf_keras.Input((4,))
        x = inputs
        for layer in layers:
            x = layer(x)
        model = tf_keras.Model(inputs, x, name="mlp")
    else:
        model = tf_keras.Sequential([tf_keras.Input((4,)), *layers], name="mlp")
    if compiled:
        make = {
            "rmsprop": lambda: tf_keras.optimizers.RMSprop(LR, momentum=0.5),
            "adam": lambda: tf_keras.optimizers.Adam(LR),
        }[optimizer]
        model.compile(optimizer=make(), loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def save_trained(path: Path, functional: bool, optimizer: str) -> Path:
    import tensorflow as tf

    tf.random.set_seed(11)
    model = tf_keras_model(functional, optimizer)
    for x, y in TRAINED:
        model.train_on_batch(x, y)
    model.save(path)
    return path


def continue_run(model: Any, losses: Any, steps: int, name_of: Any) -> dict[str, np.ndarray]:
    """`steps` optimizer steps on the resumed batches (mean softmax cross-entropy); every weight by layer/name."""
    after = tape_steps(model, losses, RESUMED[:steps], lambda m: {name_of(v): np.array(v) for v in m.weights})
    return after[-1]


def tf_keras_name(variable: Any) -> str:
    return "/".join(variable.name.split(":")[0].split("/")[-2:])


def keras_name(variable: Any) -> str:
    return "/".join(variable.path.split("/")[-2:])


def deviation(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b) and {"bn/moving_mean", "bn/moving_variance", "dense_1/kernel"} <= set(a), (a, b)
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def resumed_keras(out: Path, to: str, twin: str) -> Any:
    """Keras 3 continuing from OUT: load_model for .keras, a hand-written twin restored for tf2."""
    return restored(out, to, f"{MODELS}:{twin}")


CASES = [
    (False, "rmsprop", "tf2"),
    (False, "rmsprop", "keras"),
    (True, "adam", "tf2"),
    (True, "adam", "keras"),
    (True, "rmsprop", "keras"),
]


@pytest.mark.parametrize(
    ("functional", "optimizer", "to"),
    CASES,
    ids=[f"{'functional' if f else 'sequential'}-{o}-{t}" for f, o, t in CASES],
)
def test_h5_converts_without_model_and_resumes(tmp_path: Path, functional: bool, optimizer: str, to: str) -> None:
    import keras
    import tf_keras

    source = save_trained(tmp_path / "model.h5", functional, optimizer)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    report = run_json(["convert", source, "--out", out, "--to", to])
    assert report["model"] == "<rebuilt from model_config>" and report["written"] and report["resumable"], report
    assert report["exactness"] == "exact" and report["checkpoints"][0]["step"] == 3, report
    assert report["warnings"] == [], report["warnings"]  # the loss too was rebuilt
    assert report["optimizer"]["target"] == {"rmsprop": "RMSprop", "adam": "Adam"}[optimizer]
    assert all(h["match"] for h in report["optimizer"]["hyperparameters"]), report["optimizer"]
    twin = f"twin_{optimizer}_{'functional' if functional else 'sequential'}"
    for steps, bound in BOUNDS.items():
        reference = continue_run(tf_keras.models.load_model(source), tf_keras.losses, steps, tf_keras_name)
        model = resumed_keras(out, to, twin)
        assert int(model.optimizer.iterations.numpy()) == 3
        converted = continue_run(model, keras.losses, steps, keras_name)
        assert deviation(reference, converted) < bound, (steps, deviation(reference, converted))
    if to == "keras":
        loaded = keras.models.load_model(out)
        assert type(loaded.optimizer).__name__ == report["optimizer"]["target"]
        assert loaded.loss.get_config()["from_logits"] is True


def test_the_restarted_optimizer_would_differ(tmp_path: Path) -> None:
    """The resume test can fail: Keras 3 with fresh optimizer state moves the weights far from tf_keras' run."""
    import keras
    import tf_keras

    source = save_trained(tmp_path / "model.h5", False, "rmsprop")
    out = tmp_path / "out.keras"
    run_cli(["convert", source, "--out", out, "--to", "keras"])
    reference = continue_run(tf_keras.models.load_model(source), tf_keras.losses, 1, tf_keras_name)
    model = keras.models.load_model(out)
    for variable in model.optimizer.variables[1:]:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    assert deviation(reference, continue_run(model, keras.losses, 1, keras_name)) > 100 * BOUNDS[1]


def test_lambda_layer_needs_model(tmp_path: Path) -> None:
    source = tmp_path / "model.h5"
    model = tf_keras_model(True, "adam", lambda_layer=True)
    model.train_on_batch(*TRAINED[0])
    model.save(source)
    out = tmp_path / "out.keras"
    result = run_cli(["convert", source, "--out", out, "--to", "keras"], expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error:"), result.stderr
    assert "Lambda" in lines[0] and "doubled" in lines[0] and "--model" in lines[0]
    assert not out.exists()


def test_custom_layer_needs_model(tmp_path: Path) -> None:
    import tf_keras

    @tf_keras.saving.register_keras_serializable(package="ckpt_test")
    class Scaled(tf_keras.layers.Dense):  # type: ignore[misc]
        """A custom layer: its code is not in the file."""

    model = tf_keras.Sequential([tf_keras.Input((4,)), Scaled(3, name="scaled")])
    model.compile(optimizer=tf_keras.optimizers.Adam(LR), loss="mse")
    model.train_on_batch(TRAINED[0][0], np.ones((6, 3), np.float32))
    source = tmp_path / "model.h5"
    model.save(source)
    result = run_cli(["convert", source, "--out", tmp_path / "out", "--dry-run"], expect=2)
    [line] = result.stderr.strip().splitlines()
    assert "ckpt_test>Scaled" in line and "--model" in line


def test_learning_rate_schedule_is_refused(tmp_path: Path) -> None:
    import tf_keras

    schedule = tf_keras.optimizers.schedules.ExponentialDecay(LR, decay_steps=10, decay_rate=0.5)
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, name="dense")])
    model.compile(optimizer=tf_keras.optimizers.Adam(schedule), loss="mse")
    model.train_on_batch(TRAINED[0][0], np.ones((6, 3), np.float32))
    source = tmp_path / "model.h5"
    model.save(source)
    result = run_cli(["convert", source, "--out", tmp_path / "out"], expect=2)
    [line] = result.stderr.strip().splitlines()
    assert "ExponentialDecay" in line and "--model" in line and not (tmp_path / "out").exists()


def custom_loss(y_true: Any, y_pred: Any) -> Any:
    """A loss tf_keras saves by its name only: Keras 3 cannot rebuild it."""
    import tf_keras

    return tf_keras.backend.mean(tf_keras.backend.square(y_true - y_pred))


def test_loss_keras_cannot_rebuild_is_a_warning(tmp_path: Path) -> None:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, name="dense")])
    model.compile(optimizer=tf_keras.optimizers.Adam(LR), loss=custom_loss)
    model.train_on_batch(TRAINED[0][0], np.ones((6, 3), np.float32))
    source = tmp_path / "model.h5"
    model.save(source)
    report = run_json(["convert", source, "--out", tmp_path / "out"])
    assert report["written"] and report["resumable"] and report["exactness"] == "exact", report
    [warning] = report["warnings"]
    assert "custom_loss" in warning and "optimizer only" in warning


def test_h5_without_training_config(tmp_path: Path) -> None:
    """No optimizer recorded: refused without --allow-weights-only; with it, the weights alone."""
    from ckpt_tools.validation.checks import validate

    source = tmp_path / "model.h5"
    tf_keras_model(False, "adam", compiled=False).save(source)
    out = tmp_path / "out"
    refused = run_cli(["convert", source, "--out", out], expect=2)
    assert "training_config" in refused.stderr and "--model" in refused.stderr
    assert "--allow-weights-only" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists()
    report = run_json(["convert", source, "--out", out, "--allow-weights-only"])
    assert report["written"] and report["weights_only"] and not report["resumable"]
    assert report["checkpoints"][0]["verification"]["weights_identical"] == 8
    assert not validate(out).ok


def test_model_still_overrides_for_h5(tmp_path: Path) -> None:
    source = save_trained(tmp_path / "model.h5", False, "rmsprop")
    spec = f"{MODELS}:twin_rmsprop_sequential"
    report = run_json(["convert", source, "--model", spec, "--out", tmp_path / "out", "--dry-run"])
    assert report["model"] == spec and report["optimizer"]["target"] == "RMSprop"


def test_tf1_source_without_model_says_why(tmp_path: Path) -> None:
    result = run_cli(["convert", ROOT / "fixtures" / "tf1_adam", "--out", tmp_path / "out"], expect=2)
    [line] = result.stderr.strip().splitlines()
    assert "TF1" in line and "--model" in line and "Keras-2 .h5" in line and "Missing option" not in line


# ---------------------------------------------------------------------------------------------- fast CLI
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from click.testing import CliRunner
from ckpt_tools.cli import main
run = CliRunner().invoke(main, sys.argv[2:])
print(json.dumps({"exit": run.exit_code, "stderr": run.stderr, "imported": sorted(
    m for m in ("tensorflow", "keras", "tf_keras", "h5py") if m in sys.modules)}))
"""


def _child(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, text=True, timeout=600, check=False, **kwargs)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (f"{MODELS}:nope", "defines no 'nope'"),
        (f"{ROOT}/no/such/file.py:build", "no such file"),
        ("no_such_package_xyz.models:build", "no module named 'no_such_package_xyz'"),
        ("models.py", "must look like"),
    ],
)
def test_bad_model_fails_before_tensorflow_is_imported(tmp_path: Path, spec: str, says: str) -> None:
    source = str(ROOT / "fixtures" / "tf1_adam")
    args = ["-c", CHILD, str(ROOT), "convert", source, "--model", spec, "--out", str(tmp_path / "o")]
    proc = _child(*args, capture_output=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["exit"] == 2 and says in result["stderr"] and len(result["stderr"].strip().splitlines()) == 1
    assert result["imported"] == [], result
    assert not (tmp_path / "o").exists()


def test_progress_lines_only_on_a_terminal(tmp_path: Path) -> None:
    """One stderr line per phase when stderr is a terminal; none otherwise; --json stdout stays JSON."""
    import pty

    source = save_trained(tmp_path / "model.h5", False, "adam")
    script = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from ckpt_tools.cli import main; main()"
    args = ["-c", script, "convert", str(source), "--to", "keras", "--json"]
    primary, secondary = pty.openpty()
    try:
        proc = _child(*args, "--out", str(tmp_path / "a.keras"), stdout=subprocess.PIPE, stderr=secondary)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["written"]
    progress = [line for line in b"".join(chunks).decode().splitlines() if line.startswith("ckpt convert: ")]
    for phase in ("reading", "building", "planning", "writing", "verifying"):
        assert any(phase in line for line in progress), progress
    quiet = _child(*args, "--out", str(tmp_path / "b.keras"), capture_output=True)
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["written"]
    assert "ckpt convert: " not in quiet.stderr


def test_loss_weights_are_rebuilt(tmp_path: Path) -> None:
    """A two-output model compiled with one loss and loss_weights [1, 0.2]: the rebuilt model weighs its losses
    the same (red team: ignoring them moved the weights by 3.3e-1 after 20 steps); train_on_batch on both sides."""
    import keras
    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(5)
    inputs = tf_keras.Input((4,), name="x")
    hidden = tf_keras.layers.Dense(8, activation="relu", name="dense")(inputs)
    outputs = [tf_keras.layers.Dense(3, name="out_a")(hidden), tf_keras.layers.Dense(3, name="out_b")(hidden)]
    model = tf_keras.Model(inputs, outputs, name="two")
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=tf_keras.optimizers.Adam(LR), loss=loss, loss_weights=[1.0, 0.2])
    second = [y[::-1].copy() for _, y in BATCHES]
    for (x, y), z in zip(TRAINED, second, strict=False):
        model.train_on_batch(x, [y, z])
    model.save(tmp_path / "two.h5")
    out = tmp_path / "out.keras"
    report = run_json(["convert", tmp_path / "two.h5", "--out", out, "--to", "keras"])
    assert report["exactness"] == "exact" and report["warnings"] == [], report
    reference, converted = tf_keras.models.load_model(tmp_path / "two.h5"), keras.models.load_model(out)
    for steps, ((x, y), z) in enumerate(zip(RESUMED, second[3:], strict=False), start=1):
        reference.train_on_batch(x, [y, z])
        converted.train_on_batch(x, [y, z])
        if steps in BOUNDS:
            mine = {keras_name(v): np.array(v) for v in converted.weights}
            theirs = {tf_keras_name(v): np.array(v) for v in reference.weights}
            assert set(mine) == set(theirs)
            worst = max(float(np.max(np.abs(mine[n] - theirs[n]))) for n in mine)
            assert worst < BOUNDS[steps], (steps, worst)
