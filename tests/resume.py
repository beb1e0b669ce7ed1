"""Shared resume-equivalence steps: a model trained on batches one tape step at a time, and Keras 3 restored
from a converted output (load_model for .keras, a factory's model restored by tf.train.Checkpoint for tf2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

State = TypeVar("State")


def tape_steps(model: Any, losses: Any, batches: Iterable[Any], state: Callable[[Any], State]) -> list[State]:
    """`state(model)` after each optimizer step on `batches` (mean softmax cross-entropy, one eager tape each),
    for a tf_keras or a Keras 3 model (`losses` is that framework's losses module)."""
    import tensorflow as tf

    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    after = []
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        after.append(state(model))
    return after


def restored(out: Path, to: str, factory_spec: str) -> Any:
    """Keras 3 continuing from OUT as a training script would: `keras.models.load_model` for the keras target;
    for tf2 the factory's model restored with tf.train.Checkpoint, every object matched."""
    import keras
    import tensorflow as tf

    if to == "keras":
        return keras.models.load_model(out)
    from ckpt_tools.conversion.factory import load_factory

    model = load_factory(factory_spec)()
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint.restore(tf.train.latest_checkpoint(str(out))).assert_existing_objects_matched()
    return model


BOUNDS = {1: 1e-5, 20: 1e-4}  # max weight difference allowed after 1 and 20 resumed steps of an exact conversion


def mlp_batches(seed: int, count: int = 23) -> list[tuple[Any, Any]]:
    """`count` fixed batches of 6 for the 4 -> 8 -> 3 MLPs: float32 inputs, int32 labels in 0..2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, 6).astype(np.int32)) for _ in range(count)]
