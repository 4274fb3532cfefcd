"""E10's multilayer perceptron, in Keras."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from lab.config.base import check_rate
from lab.models.cnn import _check_common


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    hidden_units: Sequence[int] = (128, 64),
    activation: str = "relu",
    dropout_rate: float = 0.0,
    l2: float = 0.0,
    name: str = "mlp",
) -> keras.Model:
    """A fully connected network on flattened images: Flatten -> [Dense -> activation] x n -> softmax.

    Args:
        input_shape: (height, width, channels).
        num_classes: number of classes.
        hidden_units: width of each hidden layer (E10: one or two hidden layers).
        activation: hidden activation (``"relu"``, ``"sigmoid"``, ``"tanh"``...).
        dropout_rate: dropout after each hidden layer, in [0, 1).
        l2: L2 weight decay on every kernel.
        name: model name.
    """
    _check_common(input_shape, num_classes)
    check_rate("dropout_rate", dropout_rate)
    if not hidden_units or min(hidden_units) < 1:
        raise ValueError(f"hidden_units must be one or more positive widths, received {hidden_units}.")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units, start=1):
        x = layers.Dense(units, activation=activation, kernel_regularizer=regularizer, name=f"hidden{i}")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name=f"hidden{i}_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer,
                           dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
