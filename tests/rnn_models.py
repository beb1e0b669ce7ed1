"""Model factories for tests/test_convert_rnn.py: a 5-step, 3-feature sequence through one recurrent layer of
4 units, then Dense(3), as the TF1 graphs there build it with tf.compat.v1 rnn cells."""

from __future__ import annotations

from typing import Any

LEARNING_RATE = 0.05


def recurrent(layer: Any, optimizer: Any) -> Any:
    """A built Keras 3 model: Input (5, 3) -> `layer` (or a list of layers; last output) -> Dense(3),
    softmax cross-entropy."""
    import keras

    layers = layer if isinstance(layer, list) else [layer]
    model = keras.Sequential([keras.Input((5, 3)), *layers, keras.layers.Dense(3, name="dense")], name="seq")
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _adam() -> Any:
    import keras

    return keras.optimizers.Adam(LEARNING_RATE, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


def _momentum() -> Any:
    import keras

    return keras.optimizers.SGD(LEARNING_RATE, momentum=0.9)


def lstm_adam() -> Any:
    import keras

    return recurrent(keras.layers.LSTM(4, name="lstm"), _adam())


def lstm_momentum() -> Any:
    import keras

    return recurrent(keras.layers.LSTM(4, name="lstm"), _momentum())


def gru_momentum() -> Any:
    import keras

    return recurrent(keras.layers.GRU(4, reset_after=False, name="gru"), _momentum())


def gru_adam() -> Any:
    import keras

    return recurrent(keras.layers.GRU(4, reset_after=False, name="gru"), _adam())


def gru_reset_after() -> Any:
    """Keras' default GRU (reset_after=True): another function, and a [2, 12] bias."""
    import keras

    return recurrent(keras.layers.GRU(4, name="gru"), _momentum())


def lstm_relu() -> Any:
    import keras

    return recurrent(keras.layers.LSTM(4, activation="relu", name="lstm"), _adam())


def stacked_lstm_adam() -> Any:
    """Two LSTM layers, as a TF1 MultiRNNCell of two LSTMCells computes them."""
    import keras

    layers = [keras.layers.LSTM(4, return_sequences=True, name="lstm"), keras.layers.LSTM(4, name="lstm_1")]
    return recurrent(layers, _adam())
