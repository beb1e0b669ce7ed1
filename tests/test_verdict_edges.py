"""Edge cases a review found in the resume verdict, each written by real TF / Keras / tf_keras at test time.

Each case states what the framework itself does with the artifact (restore, resume) and checks that
`validate` agrees: resumable only when resuming is the same run, never "complete" when nothing was decoded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tools.validation.checks import validate

from .conftest import FIXTURES, needs_tf, run_json

pytestmark = needs_tf


def _tf1_adam(out: Path, keep: Any, *, meta: bool = True) -> Path:
    """Three Adam steps in a TF1 graph, saved by a Saver over the variables `keep(name)` accepts."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        x = v1.constant(np.ones((2, 4), np.float32))
        with v1.variable_scope("dense", use_resource=True):
            w = v1.get_variable("kernel", [4, 1])
            b = v1.get_variable("bias", [1], initializer=v1.zeros_initializer())
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - 1.0))
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = v1.train.Saver(var_list=[v for v in v1.global_variables() if keep(v.op.name)])
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train)
            out.mkdir(parents=True)
            saver.save(sess, str(out / "model.ckpt"), global_step=step, write_meta_graph=meta)
    return out


def test_tf1_saver_without_adams_beta_powers_is_not_resumable(tmp_path: Path) -> None:
    """A full-graph Saver cannot restore it (NotFoundError), and the bias correction would restart."""
    folder = _tf1_adam(tmp_path / "ckpt", lambda name: "power" not in name)
    report = validate(folder)
    assert not report.ok and report.check("slots").status == "fail"


def test_tf1_adam_with_only_its_first_slot_and_no_graph_is_not_resumable(tmp_path: Path) -> None:
    folder = _tf1_adam(tmp_path / "ckpt", lambda name: not name.endswith("Adam_1"), meta=False)
    report = validate(folder)
    assert report.check("slots").status == "fail", report.check("slots")


def test_tf1_beta_powers_without_slots_are_absent_not_plain_sgd(tmp_path: Path) -> None:
    folder = _tf1_adam(tmp_path / "ckpt", lambda name: not name.endswith(("Adam", "Adam_1")), meta=False)
    report = run_json(["inspect", folder])
    assert report["optimizer"]["present"] is False and "beta1_power" in report["optimizer"]["reason"]


def _keras3_checkpoint(out: Path, **tracked: Any) -> Path:
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(**tracked)
    checkpoint.write(str(out / "ckpt-1"))
    (out / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    return out


def _trained_keras3(optimizer: Any, frozen: bool = False) -> Any:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(1, name="b")])
    if frozen:
        model.get_layer("a").trainable = False
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 4), np.float32), np.ones((4, 1), np.float32), epochs=1, batch_size=4, verbose=0)
    return model


def test_frozen_layers_need_no_slots(tmp_path: Path) -> None:
    """Keras keeps no optimizer slots for non-trainable weights: resuming is exact."""
    import keras

    model = _trained_keras3(keras.optimizers.Adam(0.01), frozen=True)
    folder = _keras3_checkpoint(tmp_path, model=model, optimizer=model.optimizer)
    assert validate(folder).ok, validate(folder).problems()


def test_loss_scale_optimizer_reports_the_inner_step(tmp_path: Path) -> None:
    import keras

    model = _trained_keras3(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01)))
    folder = _keras3_checkpoint(tmp_path, model=model, optimizer=model.optimizer)
    report = run_json(["inspect", folder])
    assert report["step"] == int(model.optimizer.iterations.numpy()) == 1
    assert [o["name"] for o in report["optimizer"]["optimizers"]] == ["Adam"]


def test_counters_at_the_checkpoint_root_are_not_an_optimizer(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    model = _trained_keras3(keras.optimizers.SGD(0.01))
    folder = _keras3_checkpoint(
        tmp_path, model=model, iterations=tf.Variable(5, dtype=tf.int64), learning_rate=tf.Variable(0.1)
    )
    report = run_json(["inspect", folder])
    assert [o["path"] for o in report["optimizer"]["optimizers"]] == ["model/optimizer"]


def test_an_optimizer_whose_state_cannot_be_tied_is_not_complete(tmp_path: Path) -> None:
    """Adafactor's factored moments do not split evenly over the weights: never report them as covering."""
    import keras

    model = _trained_keras3(keras.optimizers.Adafactor(0.01))
    folder = _keras3_checkpoint(tmp_path, model=model, optimizer=model.optimizer)
    report = run_json(["inspect", folder])
    assert not report["resume"]["resumable"] and "could not be tied" in report["optimizer"]["reason"]


def test_tf_keras_legacy_plain_sgd_is_resumable(tmp_path: Path) -> None:
    import tensorflow as tf
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(1)])
    model.compile(optimizer=tf_keras.optimizers.legacy.SGD(0.01), loss="mse")
    model.fit(np.ones((4, 4), np.float32), np.ones((4, 1), np.float32), epochs=2, verbose=0)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint.write(str(tmp_path / "ckpt-1"))
    report = validate(tmp_path / "ckpt-1")
    assert report.ok, report.problems()


def test_tf_keras_mid_epoch_backup_resumes_inside_that_epoch(tmp_path: Path) -> None:
    """tf_keras saves ckpt_saved_batch >= 0 mid-epoch and resumes that epoch, not the next one."""
    import tensorflow as tf
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(1)])
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    model.fit(np.ones((4, 4), np.float32), np.ones((4, 1), np.float32), epochs=1, verbose=0)
    chief = tmp_path / "backup" / "chief"
    checkpoint = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        ckpt_saved_epoch=tf.Variable(1, dtype=tf.int64),
        ckpt_saved_batch=tf.Variable(1, dtype=tf.int64),
    )
    checkpoint.write(str(chief / "ckpt-1"))
    (chief / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    report = run_json(["inspect", tmp_path / "backup"])
    assert report["epoch"] == 1 and "mid-epoch" in report["metadata"]["resume_note"]


def test_deeply_nested_backup_metadata_is_not_echoed(tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    shutil.copytree(FIXTURES / "backup_keras3", folder)
    (folder / "training_metadata.json").write_text('{"epoch": 2, "x": ' + "[" * 900 + "]" * 900 + "}")
    report = run_json(["inspect", folder])
    assert report["epoch"] == 2 and "x" not in json.dumps(report["metadata"])
    (folder / "training_metadata.json").write_text('{"epoch": "2"}')
    report = run_json(["inspect", folder])
    assert report["epoch"] is None and any("epoch unknown" in w for w in report["metadata"]["warnings"])
