"""Model factories for tests/test_convert.py: the 4->8->3 MLP compiled with each supported optimizer."""

from __future__ import annotations

from typing import Any

LEARNING_RATE = 0.05


def mlp(optimizer: Any, names: tuple[str, str] = ("dense", "dense_1")) -> Any:
    """A built Keras 3 MLP 4->8->3 (relu), compiled with `optimizer` and mean softmax cross-entropy."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name=names[0]),
            keras.layers.Dense(3, name=names[1]),
        ],
        name="mlp",  # explicit names keep variable paths stable however many models a process builds
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def adam() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-8))


def adam_keras2() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-7))


def adam_default() -> Any:
    import keras

    return mlp(keras.optimizers.Adam())


def momentum() -> Any:
    import keras

    return mlp(keras.optimizers.SGD(LEARNING_RATE, momentum=0.9))


def momentum_inverse_time(steps: int = 1, staircase: bool = False) -> Any:
    """SGD(momentum) under the Keras 3 schedule of a legacy tf_keras SGD(decay=0.01): lr / (1 + 0.01 * step)
    (with staircase and 2 decay steps: the rate changes every second step only)."""
    import keras

    rate = keras.optimizers.schedules.InverseTimeDecay(LEARNING_RATE, steps, 0.01 * steps, staircase=staircase)
    return mlp(keras.optimizers.SGD(rate, momentum=0.9))


def momentum_inverse_time_staircase() -> Any:
    return momentum_inverse_time(steps=2, staircase=True)


def momentum_exponential() -> Any:
    """Another schedule than a legacy decay's."""
    import keras

    rate = keras.optimizers.schedules.ExponentialDecay(LEARNING_RATE, 1, 0.99)
    return mlp(keras.optimizers.SGD(rate, momentum=0.9))


def nesterov() -> Any:
    import keras

    return mlp(keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True))


def sgd() -> Any:
    import keras

    return mlp(keras.optimizers.SGD(LEARNING_RATE))


def rmsprop() -> Any:
    import keras

    return mlp(keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.5, epsilon=1e-10))


def rmsprop_plain() -> Any:
    import keras

    return mlp(keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.0, epsilon=1e-10))


def rmsprop_centered() -> Any:
    import keras

    return mlp(keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.5, epsilon=1e-10, centered=True))


def rmsprop_keras2() -> Any:
    import keras

    return mlp(keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.0, epsilon=1e-7))


def rmsprop_momentum_keras2() -> Any:
    import keras

    return mlp(keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.5, epsilon=1e-7))


def adagrad() -> Any:
    import keras

    return mlp(keras.optimizers.Adagrad(LEARNING_RATE, initial_accumulator_value=0.1, epsilon=1e-7))


def renamed() -> Any:
    """Same architecture, other layer names: needs --map rules to match a TF1 `dense`/`dense_1` checkpoint."""
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8), names=("hidden", "logits"))


def not_compiled() -> Any:
    import keras

    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="dense"), keras.layers.Dense(3, name="dense_1")], name="mlp"
    )


# ---------------------------------------------------------------------- tests/test_convert_exactness.py
def adam_global_clip() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, global_clipnorm=1.0))


def adam_clipnorm() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, clipnorm=0.5))


def adam_clipvalue() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, clipvalue=0.1))


def embedding(optimizer: Any) -> Any:
    """Keras 3 twin of the TF1 embedding model: ids [3] -> Embedding(10, 4) -> flatten -> Dense(3)."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="embedding"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="dense"),
        ],
        name="emb",
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def embedding_momentum() -> Any:
    import keras

    return embedding(keras.optimizers.SGD(LEARNING_RATE, momentum=0.9))


def embedding_adam() -> Any:
    import keras

    return embedding(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8))


def batchnorm_adam() -> Any:
    """Keras 3 twin of the TF1 batch-norm MLP: Dense(8, no bias) -> BatchNormalization -> relu -> Dense(3)."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="dense", use_bias=False),
            keras.layers.BatchNormalization(name="batch_normalization", momentum=0.99, epsilon=1e-3),
            keras.layers.ReLU(),
            keras.layers.Dense(3, name="dense_1"),
        ],
        name="bn",
    )
    optimizer = keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def adam_global_clip_half() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, global_clipnorm=0.5))


def adam_schedule() -> Any:
    """A schedule equal to the TF1 constant at step 3 only."""
    import keras

    rate = keras.optimizers.schedules.PiecewiseConstantDecay([5], [LEARNING_RATE, LEARNING_RATE / 10])
    return mlp(keras.optimizers.Adam(rate, epsilon=1e-8))


def adam_mixed_bfloat16() -> Any:
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def adam_accumulating() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, gradient_accumulation_steps=2))


def embedding_sgd() -> Any:
    import keras

    return embedding(keras.optimizers.SGD(LEARNING_RATE))


# ---------------------------------------------------------------------- tests/test_convert_optimizers.py
FTRL = {"l1_regularization_strength": 0.001, "l2_regularization_strength": 0.01}


def adamax() -> Any:
    import keras

    return mlp(keras.optimizers.Adamax(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-7))


def nadam() -> Any:
    import keras

    return mlp(keras.optimizers.Nadam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-7))


def adadelta() -> Any:
    import keras

    return mlp(keras.optimizers.Adadelta(1.0, rho=0.95, epsilon=1e-7))


def adadelta_tf1() -> Any:
    import keras

    return mlp(keras.optimizers.Adadelta(1.0, rho=0.95, epsilon=1e-8))


def ftrl() -> Any:
    import keras

    return mlp(keras.optimizers.Ftrl(LEARNING_RATE, learning_rate_power=-0.5, **FTRL))


def ftrl_shrinkage() -> Any:
    import keras

    return mlp(keras.optimizers.Ftrl(LEARNING_RATE, l2_shrinkage_regularization_strength=0.001, **FTRL))


def ftrl_beta() -> Any:
    import keras

    return mlp(keras.optimizers.Ftrl(LEARNING_RATE, beta=0.1, **FTRL))


def adamw() -> Any:
    import keras

    return mlp(keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.01, epsilon=1e-7))


def adamw_other_decay() -> Any:
    import keras

    return mlp(keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.004, epsilon=1e-7))


def adam_amsgrad() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-7, amsgrad=True))


def adam_amsgrad_tf1() -> Any:
    import keras

    return mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8, amsgrad=True))


# ---------------------------------------------------------------------- tests/test_convert_rebuild.py
def twin(functional: bool, optimizer: Any) -> Any:
    """Keras 3 twin of the tf_keras MLP of tests/test_convert_rebuild.py: Dense(8, relu) -> BatchNormalization ->
    Dense(3), written by hand (not rebuilt by ckpt-tools) to restore a converted TF2 checkpoint into."""
    import keras

    layers = [
        keras.layers.Dense(8, activation="relu", name="dense"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(3, name="dense_1"),
    ]
    if functional:
        inputs = keras.Input((4,))
        x = inputs
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x, name="mlp")
    else:
        model = keras.Sequential([keras.Input((4,)), *layers], name="mlp")
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def twin_rmsprop_sequential() -> Any:
    import keras

    return twin(False, keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.5, epsilon=1e-7))


def twin_rmsprop_functional() -> Any:
    import keras

    return twin(True, keras.optimizers.RMSprop(LEARNING_RATE, rho=0.9, momentum=0.5, epsilon=1e-7))


def twin_adam_sequential() -> Any:
    import keras

    return twin(False, keras.optimizers.Adam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-7))


def twin_adam_functional() -> Any:
    import keras

    return twin(True, keras.optimizers.Adam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-7))


def adam_ema() -> Any:
    """Adam averaging the weights (momentum 0.9), overwriting them with the averages every 4 steps."""
    import keras

    optimizer = keras.optimizers.Adam(
        LEARNING_RATE, epsilon=1e-7, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=4
    )
    return mlp(optimizer)


def adam_loss_scale() -> Any:
    import keras

    return mlp(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-7)))


def adam_frozen_dense() -> Any:
    """The Adam MLP with its first layer frozen."""
    import keras

    model = mlp(keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8))
    model.get_layer("dense").trainable = False
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8), loss=model.loss)
    return model
