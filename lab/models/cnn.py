"""The course's CNNs: E9's "simple" and "basic", and E1's configurable CNN.

Every builder returns an uncompiled ``keras.Model`` with named layers (``block2_conv1``,
``head_dense``, ``predictions``...), so ``model.summary()`` reads like the architecture and a
stage can be found by name. The output layer is a float32 softmax, which keeps mixed
precision numerically safe.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from lab.config.base import check_rate  # the configuration's own check of a rate

NORMALIZATIONS = ("none", "batch", "layer")


def simple_cnn(input_shape: Sequence[int], num_classes: int, *, name: str = "simple") -> keras.Model:
    """E9's "simple" CNN, exactly as in the report (the TensorFlow CNN tutorial's network).

    Conv(32, 3x3, relu), MaxPool(2), Conv(64, 3x3, relu), MaxPool(2), Conv(64, 3x3, relu),
    Flatten, Dense(64, relu), Dense(classes, softmax). Valid padding, so inputs need at least
    18x18 pixels (resize smaller images in the pipeline).
    """
    _check_common(input_shape, num_classes)
    _check_min_side(input_shape, 18, name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def basic_cnn(input_shape: Sequence[int], num_classes: int, *, name: str = "basic") -> keras.Model:
    """E9's "basic" CNN, exactly as in the report.

    Conv(32, 2x2, relu), then three stages of Conv(relu), BatchNorm, LeakyReLU(0.3),
    MaxPool(2), Dropout (64/2x2/0.2, 128/2x2/0.2, 256/3x3/0.3), then Flatten, Dense(1024),
    LeakyReLU(0.3), Dropout(0.5), Dense(classes, softmax). Valid padding: at least 30x30 input.
    """
    _check_common(input_shape, num_classes)
    _check_min_side(input_shape, 30, name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(32, 2, activation="relu", name="conv1")(inputs)
    stages = ((64, 2, 0.2), (128, 2, 0.2), (256, 3, 0.3))
    for stage, (filters, kernel, rate) in enumerate(stages, start=2):
        x = layers.Conv2D(filters, kernel, activation="relu", name=f"conv{stage}")(x)
        x = layers.BatchNormalization(name=f"bn{stage}")(x)
        x = layers.LeakyReLU(negative_slope=0.3, name=f"leaky{stage}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = layers.Dropout(rate, name=f"dropout{stage}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, name="dense")(x)
    x = layers.LeakyReLU(negative_slope=0.3, name="dense_leaky")(x)
    x = layers.Dropout(0.5, name="dense_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    depth: int = 3,
    filters: int | Sequence[int] = 32,
    convs_per_block: int = 1,
    normalization: str = "none",
    dropout_rate: float = 0.0,
    l2: float = 0.0,
    dense_units: int = 128,
    name: str = "cnn",
) -> keras.Model:
    """E1's configurable CNN: 3x3 'same' conv blocks with 2x2 max-pooling and a dense head.

    Each block is ``convs_per_block`` x [Conv2D(3x3, same) -> normalisation -> ReLU], then
    MaxPool(2x2). Normalisation comes before the ReLU, as in E1. The head is Flatten ->
    Dense(dense_units) -> ReLU -> Dropout(dropout_rate) -> Dense(classes, softmax).

    Args:
        input_shape: (height, width, channels).
        num_classes: number of classes.
        depth: number of conv blocks (each halves the spatial size).
        filters: filters of the first block, doubled in each following block; or one value
            per block.
        convs_per_block: convolutions in each block.
        normalization: ``"none"``, ``"batch"`` (BatchNormalization) or ``"layer"``
            (LayerNormalization over the channels of each pixel).
        dropout_rate: dropout before the output layer, in [0, 1).
        l2: L2 weight-decay factor on every conv and dense kernel.
        dense_units: width of the hidden dense layer (0 for none).
        name: model name.
    """
    _check_common(input_shape, num_classes)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, received depth={depth}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, received {normalization!r}.")
    check_rate("dropout_rate", dropout_rate)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, received l2={l2}.")
    if convs_per_block < 1 or dense_units < 0:
        raise ValueError(
            f"convs_per_block must be >= 1 and dense_units >= 0, received {convs_per_block} and {dense_units}."
        )
    block_filters = [int(filters) * 2**i for i in range(depth)] if isinstance(filters, int) else list(filters)
    if len(block_filters) != depth or min(block_filters) < 1:
        raise ValueError(f"filters must be one positive int or {depth} of them, received {filters}.")
    _check_min_side(input_shape, 2**depth, name, hint=f"depth={depth} halves the size {depth} times")

    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for block, block_width in enumerate(block_filters, start=1):
        for conv in range(1, convs_per_block + 1):
            prefix = f"block{block}_"
            # A bias is redundant right before BatchNorm, which subtracts the mean anyway.
            x = layers.Conv2D(block_width, 3, padding="same", use_bias=normalization != "batch",
                              kernel_regularizer=regularizer, name=f"{prefix}conv{conv}")(x)
            x = _normalize(x, normalization, f"{prefix}norm{conv}")
            x = layers.ReLU(name=f"{prefix}relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if dense_units:
        x = layers.Dense(dense_units, use_bias=normalization != "batch", kernel_regularizer=regularizer,
                         name="head_dense")(x)
        x = _normalize(x, normalization, "head_norm")
        x = layers.ReLU(name="head_relu")(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer,
                           dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _normalize(x, normalization: str, name: str):
    if normalization == "batch":
        # Momentum 0.9 is PyTorch's default (momentum=0.1 there), which E1's report used.
        # With Keras' 0.99 the inference-time statistics need hundreds of steps to settle, and
        # on a small dataset a BatchNorm run then looks collapsed (train 99%, val 10%).
        return layers.BatchNormalization(momentum=0.9, name=name)(x)
    if normalization == "layer":
        return layers.LayerNormalization(name=name)(x)
    return x


def _check_common(input_shape: Sequence[int], num_classes: int) -> None:
    if len(tuple(input_shape)) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), received {tuple(input_shape)}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, received {num_classes}.")


def _check_min_side(input_shape: Sequence[int], minimum: int, name: str, hint: str = "") -> None:
    height, width = input_shape[0], input_shape[1]
    if min(height, width) < minimum:
        raise ValueError(
            f"Model {name!r} needs images of at least {minimum}x{minimum} pixels"
            + (f" ({hint})" if hint else "")
            + f", received {height}x{width}. Resize them in the pipeline (pipeline_size={minimum * 2})."
        )
