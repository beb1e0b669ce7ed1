"""`ckpt convert` from TF2-era sources: tf_keras SavedModels, save_weights TF-format and tf.train.Checkpoint
directories, BackupAndRestore directories; each resumed in Keras 3 and compared with the source's own run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json
from tests.resume import BOUNDS, mlp_batches, restored

pytestmark = [needs_tf, pytest.mark.tensorflow]
slow = pytest.mark.slow  # the resume matrices run in tox -e slow: the CI gate stays < 30 min

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
MODELS = Path(__file__).resolve().parent / "convert_models.py"
LR = 0.05
BATCHES = mlp_batches(2468)
TRAINED, RESUMED = BATCHES[:3], BATCHES[3:]
UNRECORDED = (
    "hyper-parameters not recorded by the source ({}): the factory's values cannot be checked against the run's"
)
FACTORIES = {"adam": "adam_keras2", "rmsprop": "rmsprop_momentum_keras2"}


# ---------------------------------------------------------------------------------------------- helpers
def tf_keras_mlp(optimizer: str, *, batch_norm: bool = False, lambda_layer: bool = False) -> Any:
    """tf_keras Dense(8, relu) [-> BatchNormalization] -> Dense(3), compiled as convert_models' Keras-2 twins."""
    import tf_keras

    layers = [tf_keras.layers.Dense(8, activation="relu", name="dense")]
    if batch_norm:
        layers.append(tf_keras.layers.BatchNormalization(name="bn"))
    if lambda_layer:
        layers.append(tf_keras.layers.Lambda(lambda t: t * 2.0, name="doubled"))
    model = tf_keras.Sequential([tf_keras.Input((4,)), *layers, tf_keras.layers.Dense(3, name="dense_1")], name="mlp")
    make = {
        "adam": lambda: tf_keras.optimizers.Adam(LR),
        "rmsprop": lambda: tf_keras.optimizers.RMSprop(LR, momentum=0.5),
        "legacy_adam": lambda: tf_keras.optimizers.legacy.Adam(LR),
        "momentum": lambda: tf_keras.optimizers.SGD(LR, momentum=0.9),
    }[optimizer]
    model.compile(optimizer=make(), loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def trained(model: Any, batches: list[Any] = TRAINED) -> Any:
    import tensorflow as tf

    tf.random.set_seed(11)
    for x, y in batches:
        model.train_on_batch(x, y)
    return model


def name_of(variable: Any) -> str:
    """`layer/weight` for tf_keras (`name`) and Keras 3 (`path`) variables alike."""
    return "/".join(str(getattr(variable, "path", None) or variable.name).split(":")[0].split("/")[-2:])


def continued(model: Any, losses: Any) -> dict[int, dict[str, np.ndarray]]:
    """Every weight after 1 and after 20 more optimizer steps on the resumed batches (mean softmax cross-entropy)."""
    import tensorflow as tf

    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    out = {}
    for step, (x, y) in enumerate(RESUMED[:20], start=1):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        if step in BOUNDS:
            out[step] = {name_of(v): np.array(v.numpy()) for v in model.weights}
    return out


def deviation(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b) and {"dense/kernel", "dense_1/bias"} <= set(a), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def resumed(out: Path, to: str, factory: str) -> Any:
    """Keras 3 continuing from OUT (tests/resume.py)."""
    return restored(out, to, f"{MODELS}:{factory}")


def assert_resumes(source_model: Any, source_losses: Any, out: Path, to: str, factory: str, step: int) -> list[float]:
    """The converted run against the source's own continued run: after 1 and 20 steps within BOUNDS."""
    import keras

    start = {name_of(v): np.array(v.numpy()) for v in source_model.weights}
    reference = continued(source_model, source_losses)
    model = resumed(out, to, factory)
    assert int(model.optimizer.iterations.numpy()) == step
    converted = continued(model, keras.losses)
    assert deviation(start, reference[20]) > 1e-3  # the runs move: equal weights prove something
    found = [deviation(reference[n], converted[n]) for n in BOUNDS]
    assert all(d < BOUNDS[n] for d, n in zip(found, BOUNDS, strict=True)), found
    return found


def convert(source: Path, out: Path, to: str, *extra: str) -> Any:
    return run_json(["convert", source, "--out", out, "--to", to, *extra])


def out_path(tmp_path: Path, to: str) -> Path:
    return tmp_path / ("out.keras" if to == "keras" else "out")


# ---------------------------------------------------------------------------------------------- (a) SavedModel
SAVED_MODEL_CASES = [("adam", "keras"), ("adam", "tf2"), ("legacy_adam", "keras"), ("momentum", "keras")]


@slow
@pytest.mark.parametrize(("optimizer", "to"), SAVED_MODEL_CASES, ids=[f"{o}-{t}" for o, t in SAVED_MODEL_CASES])
def test_tf_keras_saved_model_converts_without_model_exactly(tmp_path: Path, optimizer: str, to: str) -> None:
    """keras_metadata.pb records the architecture, optimizer and loss: rebuilt in safe mode, no --model."""
    import tf_keras

    source_model = trained(tf_keras_mlp(optimizer, batch_norm=True))
    source_model.save(tmp_path / "sm")  # tf_keras' default: a SavedModel with keras_metadata.pb
    report = convert(tmp_path / "sm", out_path(tmp_path, to), to)
    assert report["model"] == "<rebuilt from model_config>" and report["source_format"] == "saved-model"
    assert report["exactness"] == "exact" and report["approximations"] == [], report["approximations"]
    assert report["optimizer"]["hyperparameters_from"] == "keras_metadata.pb training_config"
    assert all(h["match"] for h in report["optimizer"]["hyperparameters"]), report["optimizer"]
    assert report["checkpoints"][0]["step"] == 3 and report["warnings"] == [], report
    assert report["optimizer"]["target"] == ("SGD" if optimizer == "momentum" else "Adam")
    assert_resumes(source_model, tf_keras.losses, out_path(tmp_path, to), to, "twin_adam_sequential", 3)


# ---------------------------------------------------------------------------------------------- (b) save_weights
@slow
@pytest.mark.parametrize("to", ["keras", "tf2"])
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_tf_keras_save_weights_tf_format(tmp_path: Path, optimizer: str, to: str) -> None:
    """Only learning_rate is stored: approximate for exactly that reason, and still the same run."""
    import tf_keras

    source_model = trained(tf_keras_mlp(optimizer))
    source_model.save_weights(str(tmp_path / "w" / "weights"), save_format="tf")
    factory = FACTORIES[optimizer]
    refused = run_cli(["convert", tmp_path / "w", "--out", tmp_path / "x", "--model", f"{MODELS}:{factory}"], 2)
    assert "approximate" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    report = convert(
        tmp_path / "w", out_path(tmp_path, to), to, "--model", f"{MODELS}:{factory}", "--allow-approximate"
    )
    unrecorded = {"adam": "beta_1, beta_2, epsilon, amsgrad", "rmsprop": "rho, momentum, epsilon, centered"}
    assert report["approximations"] == [UNRECORDED.format(unrecorded[optimizer])], report["approximations"]
    assert report["optimizer"]["hyperparameters_from"] == "optimizer variables"
    assert report["checkpoints"][0]["step"] == 3
    assert_resumes(source_model, tf_keras.losses, out_path(tmp_path, to), to, factory, 3)


@slow
def test_the_resume_comparison_can_fail(tmp_path: Path) -> None:
    """Keras 3 with the translated slots zeroed moves far from the source's run: the bounds above mean something."""
    import keras
    import tf_keras

    source_model = trained(tf_keras_mlp("adam"))
    source_model.save_weights(str(tmp_path / "w" / "weights"), save_format="tf")
    out = tmp_path / "out.keras"
    convert(tmp_path / "w", out, "keras", "--model", f"{MODELS}:adam_keras2", "--allow-approximate")
    reference = continued(source_model, tf_keras.losses)
    model = keras.models.load_model(out)
    for variable in model.optimizer.variables:
        if "momentum" in variable.path or "velocity" in variable.path:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    assert deviation(reference[1], continued(model, keras.losses)[1]) > 100 * BOUNDS[1]


# ---------------------------------------------------------------------------------------------- (c) tf.train.Checkpoint
@slow
@pytest.mark.parametrize("framework", ["tf_keras", "tf_keras_legacy", "keras3"])
def test_checkpoint_manager_directory(tmp_path: Path, framework: str) -> None:
    """A CheckpointManager directory of model + optimizer: --all writes every retained step."""
    import tensorflow as tf

    if framework == "keras3":
        import keras as losses_module

        from ckpt_tools.conversion.factory import load_factory

        source_model = load_factory(f"{MODELS}:adam_keras2")()
    else:
        import tf_keras as losses_module

        source_model = tf_keras_mlp("legacy_adam" if framework == "tf_keras_legacy" else "adam")
    checkpoint = tf.train.Checkpoint(model=source_model, optimizer=source_model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "ckpts"), max_to_keep=3)
    trained(source_model, TRAINED[:2])
    manager.save()
    trained(source_model, TRAINED[2:])
    manager.save()
    out = tmp_path / "out"
    report = convert(tmp_path / "ckpts", out, "tf2", "--model", f"{MODELS}:adam_keras2", "--all", "--allow-approximate")
    assert [c["step"] for c in report["checkpoints"]] == [2, 3]
    unrecorded = "epsilon, amsgrad" if framework == "tf_keras_legacy" else "beta_1, beta_2, epsilon, amsgrad"
    assert report["approximations"] == [UNRECORDED.format(unrecorded)], report["approximations"]
    assert report["warnings"] == [], report["warnings"]
    assert_resumes(source_model, losses_module.losses, out, "tf2", "adam_keras2", 3)


# ---------------------------------------------------------------------------------------------- (d) BackupAndRestore
class Interrupted(RuntimeError):
    """Stops fit() after an epoch, as a crash would: BackupAndRestore keeps its directory."""


def interrupted_fit(keras_module: Any, model: Any, backup_dir: Path, epochs: int) -> None:
    """fit() with BackupAndRestore (saving at each epoch's end) stopped after `epochs` epochs of 3 batches."""

    class Stop(keras_module.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch + 1 == epochs:
                raise Interrupted

    x = np.concatenate([b[0] for b in TRAINED])
    y = np.concatenate([b[1] for b in TRAINED])
    backup = keras_module.callbacks.BackupAndRestore(backup_dir=str(backup_dir))
    with pytest.raises(Interrupted):
        model.fit(x, y, epochs=5, batch_size=6, shuffle=False, verbose=0, callbacks=[backup, Stop()])


@slow
@pytest.mark.parametrize(("framework", "to"), [("tf_keras", "tf2"), ("tf_keras", "keras"), ("keras3", "keras")])
def test_backup_and_restore_directory(tmp_path: Path, framework: str, to: str) -> None:
    """The step continues; the epoch is reported (the outputs have no place for it)."""
    if framework == "keras3":
        import keras as module

        from ckpt_tools.conversion.factory import load_factory

        source_model = load_factory(f"{MODELS}:adam_keras2")()
    else:
        import tf_keras as module

        source_model = tf_keras_mlp("adam")
    interrupted_fit(module, source_model, tmp_path / "backup", epochs=2)
    out = out_path(tmp_path, to)
    report = convert(tmp_path / "backup", out, to, "--model", f"{MODELS}:adam_keras2", "--allow-approximate")
    assert report["source_format"] == "backup-and-restore" and report["checkpoints"][0]["step"] == 6
    assert report["approximations"] == [UNRECORDED.format("beta_1, beta_2, epsilon, amsgrad")]
    assert any("initial_epoch=2" in w for w in report["warnings"]), report["warnings"]
    assert report["unmatched"]["source"] == [], report["unmatched"]  # the callback's counters are not weights
    assert_resumes(source_model, module.losses, out, to, "adam_keras2", 6)


# ---------------------------------------------------------------------------------------------- fast: refusals
def _one_line(args: list[Any]) -> str:
    result = run_cli(["convert", *args], expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error:"), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("fixture", "says"),
    [
        ("tf2_tfkeras_adam", "a TF2 checkpoint"),
        ("tf2_tfkeras_weights/weights", "a TF2 checkpoint"),
        ("backup_tfkeras", "a BackupAndRestore directory"),
        ("backup_keras3", "a BackupAndRestore directory"),
    ],
)
def test_no_architecture_needs_model(tmp_path: Path, fixture: str, says: str) -> None:
    line = _one_line([FIXTURES / fixture, "--out", tmp_path / "out"])
    assert says in line and "--model" in line and "no architecture" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fixture", "says"),
    [
        ("saved_model_keras3_export", "without keras_metadata.pb"),
        ("saved_model_module", "without keras_metadata.pb"),
        ("keras3_adam/model.keras", "keras.models.load_model"),
        ("keras3_adam/model.weights.h5", "load_weights"),
    ],
)
def test_unsupported_sources_are_refused(tmp_path: Path, fixture: str, says: str) -> None:
    line = _one_line([FIXTURES / fixture, "--out", tmp_path / "out", "--model", f"{MODELS}:adam"])
    assert says in line, line
    assert not (tmp_path / "out").exists()


def test_saved_model_lambda_layer_needs_model(tmp_path: Path) -> None:
    source = tmp_path / "sm"
    trained(tf_keras_mlp("adam", lambda_layer=True)).save(source)
    line = _one_line([source, "--out", tmp_path / "out.keras", "--to", "keras"])
    assert "Lambda" in line and "doubled" in line and "--model" in line


def test_saved_model_without_optimizer_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "sm"
    trained(tf_keras_mlp("adam")).save(source, include_optimizer=False)
    line = _one_line([source, "--out", tmp_path / "out"])
    assert "no optimizer state" in line


def test_saved_model_fixture_dry_run_reads_its_hyperparameters(tmp_path: Path) -> None:
    report = run_json(["convert", FIXTURES / "saved_model_tfkeras", "--out", tmp_path / "out", "--dry-run"])
    assert report["model"] == "<rebuilt from model_config>" and report["exactness"] == "exact", report
    assert report["optimizer"]["hyperparameters_from"] == "keras_metadata.pb training_config"
    assert report["problems"] == [] and report["checkpoints"][0]["step"] == 2


def test_backup_fixture_reports_the_epoch(tmp_path: Path) -> None:
    args = [FIXTURES / "backup_tfkeras", "--out", tmp_path / "out", "--dry-run", "--model", f"{MODELS}:adam"]
    report = run_json(["convert", *args], expect=2)  # the fixture trained at another learning rate
    assert any("initial_epoch=2" in w for w in report["warnings"]), report["warnings"]
    assert report["unmatched"]["source"] == [] and report["checkpoints"][0]["step"] == 4


@pytest.mark.parametrize("damage", ["garbage", "outside"])
def test_hostile_keras_metadata_is_one_line(tmp_path: Path, damage: str) -> None:
    """keras_metadata.pb is parsed as data within limits, and read only inside the SavedModel's folder."""
    source = tmp_path / "sm"
    shutil.copytree(FIXTURES / "saved_model_tfkeras", source)
    metadata = source / "keras_metadata.pb"
    if damage == "garbage":
        metadata.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 64)
    else:
        outside = tmp_path / "elsewhere.pb"
        outside.write_bytes(metadata.read_bytes())
        metadata.unlink()
        metadata.symlink_to(outside)
    line = _one_line([source, "--out", tmp_path / "out"])
    assert ("not a valid keras_metadata.pb" if damage == "garbage" else "outside") in line, line


def test_a_checkpointed_loss_scale_is_named(tmp_path: Path) -> None:
    """A tf_keras LossScaleOptimizer in a tf.train.Checkpoint stores its scale and good-steps counter; the
    converted run continues without them, so the conversion says so (before, they were dropped silently)."""
    import tensorflow as tf
    import tf_keras

    model = tf_keras_mlp("adam")
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(model.optimizer)
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained(model)
    tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ck" / "ckpt"))
    args = ["convert", tmp_path / "ck" / "ckpt", "--model", f"{MODELS}:adam", "--out", tmp_path / "o", "--dry-run"]
    report = run_json(args, 2)
    assert any(a.startswith("loss scaling (state ") and "current_loss_scale" in a for a in report["approximations"])
