"""Model factories for the bundled fixtures, for `ckpt convert --model examples/fixture_models.py:NAME`."""

from __future__ import annotations

from typing import Any


def mlp(optimizer: Any) -> Any:
    """The fixtures' MLP in Keras 3: 4 -> Dense(8, relu) named `dense` -> Dense(3) named `dense_1`."""
    import keras

    layers = [
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu", name="dense"),
        keras.layers.Dense(3, name="dense_1"),
    ]
    model = keras.Sequential(layers, name="mlp")
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


def tf1_adam() -> Any:
    """Matches fixtures/tf1_adam (tf.compat.v1.train.AdamOptimizer(0.01), epsilon 1e-8)."""
    import keras

    return mlp(keras.optimizers.Adam(0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8))


def tf1_momentum() -> Any:
    """Matches fixtures/tf1_momentum (MomentumOptimizer(0.05, momentum=0.9))."""
    import keras

    return mlp(keras.optimizers.SGD(0.05, momentum=0.9))


def ident(optimizer: Any) -> Any:
    """fixtures/ident's model in Keras 3: Sequential 'net' of Dense(8, relu) 'enc', BatchNormalization 'norm',
    Dense(3) 'dec' on 4 inputs."""
    import keras

    layers = [
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu", name="enc"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Dense(3, name="dec"),
    ]
    model = keras.Sequential(layers, name="net")
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def ident_tf1() -> Any:
    """Matches fixtures/ident/tf1 (tf.compat.v1.train.AdamOptimizer(0.01), epsilon 1e-8)."""
    import keras

    return ident(keras.optimizers.Adam(0.01, epsilon=1e-8))


def ident_keras2() -> Any:
    """Matches fixtures/ident/model.h5 (tf_keras Adam(0.01), epsilon 1e-7)."""
    import keras

    return ident(keras.optimizers.Adam(0.01))


def tf1_adagrad() -> Any:
    """Matches fixtures/tf1_adagrad (AdagradOptimizer(0.1)); the accumulator offset makes any epsilon exact."""
    import keras

    return mlp(keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=1e-7))


def tf1_rmsprop() -> Any:
    """Matches fixtures/tf1_rmsprop (RMSPropOptimizer(0.01), decay 0.9, momentum 0, epsilon 1e-10)."""
    import keras

    return mlp(keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.0, epsilon=1e-10))
