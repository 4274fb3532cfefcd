"""A small DeepLabV3+-style network (Chen et al. 2018) for segmentation (E12's DeepLab ideas).

    encoder: strided conv blocks down to ``output_stride``, then atrous (dilated) convolutions
             that enlarge the receptive field without reducing the resolution further
    ASPP:    atrous spatial pyramid pooling: a 1x1 convolution, depthwise-separable 3x3 atrous
             convolutions at several rates, and image-level pooling, concatenated and mixed
    decoder: the ASPP output upsampled (bilinear) to 1/4 resolution, concatenated with the
             encoder's 1/4-resolution features (reduced by a 1x1 convolution), two separable
             3x3 convolutions, class scores, bilinear upsampling to the input size

It is small enough to train on a CPU; for the full-size model with a pretrained ResNet
backbone see ``keras_hub.models.DeepLabV3ImageSegmenter`` (its weights need a download).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from lab.models.unet import apply_normalization, check_divisible, check_segmentation_args, conv_block


def deeplab_v3_plus(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: int = 32,
    output_stride: int = 16,
    atrous_rates: Sequence[int] = (6, 12, 18),
    aspp_filters: int | None = None,
    normalization: str | None = "batch",
    dropout_rate: float = 0.1,
    output_activation: str = "softmax",
    name: str = "deeplab_v3_plus",
) -> keras.Model:
    """Builds a small DeepLabV3+.

    Args:
        input_shape: (height, width, channels), sides multiples of ``output_stride``.
        num_classes: classes including the background.
        filters: filters of the stem, doubled at each downsampling step.
        output_stride: 8 or 16, the encoder's total downsampling (the paper's 16 with rates
            6, 12, 18; small images want 8 and smaller rates, e.g. (1, 2, 3)).
        atrous_rates: dilation rates of the ASPP's separable 3x3 branches.
        aspp_filters: filters of every ASPP branch (default: 4 * filters).
        normalization: None/"none", "batch" or "layer" after every convolution.
        dropout_rate: dropout after the ASPP projection.
        output_activation: "softmax", or "sigmoid" for two classes.
        name: the model's name.
    """
    check_segmentation_args(input_shape, num_classes, output_activation, normalization, "bilinear", dropout_rate)
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, received output_stride={output_stride!r}.")
    if not atrous_rates or any(not isinstance(r, int) or r < 1 for r in atrous_rates):
        raise ValueError(f"atrous_rates must be positive integers, received {tuple(atrous_rates)}.")
    check_divisible(input_shape, output_stride, f"DeepLab with output_stride={output_stride} downsamples "
                                                f"{output_stride} times")
    aspp_filters = aspp_filters or 4 * filters
    channels = 1 if output_activation == "sigmoid" else num_classes

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    # Encoder: /2, /4 (the decoder's low-level features), /8, optionally /16.
    x = _strided(inputs, filters, "stem", normalization)
    low_level = x = _strided(x, 2 * filters, "block1", normalization)
    x = _strided(x, 4 * filters, "block2", normalization)
    if output_stride == 16:
        x = _strided(x, 8 * filters, "block3", normalization)
    x = conv_block(x, x.shape[-1], name="atrous", normalization=normalization, dilation_rate=2)

    # ASPP.
    height, width = int(x.shape[1]), int(x.shape[2])
    branches = [_conv_norm_relu(x, aspp_filters, 1, "aspp_1x1", normalization)]
    for rate in atrous_rates:
        branch = layers.SeparableConv2D(aspp_filters, 3, padding="same", dilation_rate=rate, use_bias=False,
                                        name=f"aspp_rate{rate}_sepconv")(x)
        branch = apply_normalization(branch, normalization, f"aspp_rate{rate}_norm")
        branches.append(layers.Activation("relu", name=f"aspp_rate{rate}_relu")(branch))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = _conv_norm_relu(pooled, aspp_filters, 1, "aspp_image", normalization)
    branches.append(layers.UpSampling2D((height, width), name="aspp_image_resize")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = _conv_norm_relu(x, aspp_filters, 1, "aspp_project", normalization)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="aspp_dropout")(x)

    # Decoder.
    x = layers.UpSampling2D(output_stride // 4, interpolation="bilinear", name="decoder_resize")(x)
    low_level = _conv_norm_relu(low_level, max(filters, 8), 1, "decoder_low_level", normalization)
    x = layers.Concatenate(name="decoder_concat")([x, low_level])
    for i in (1, 2):
        x = layers.SeparableConv2D(aspp_filters, 3, padding="same", use_bias=False, name=f"decoder_sepconv{i}")(x)
        x = apply_normalization(x, normalization, f"decoder_norm{i}")
        x = layers.Activation("relu", name=f"decoder_relu{i}")(x)
    x = layers.Conv2D(channels, 1, name="score")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="output_resize")(x)
    outputs = layers.Activation(output_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _strided(x, filters: int, name: str, normalization: str | None):
    """A stride-2 3x3 convolution then a 3x3 convolution (``<name>_conv1``, ``<name>_conv2``)."""
    x = _conv_norm_relu(x, filters, 3, name, normalization, strides=2, index="1")
    return _conv_norm_relu(x, filters, 3, name, normalization, index="2")


def _conv_norm_relu(x, filters: int, kernel_size: int, name: str, normalization: str | None, strides: int = 1,
                    index: str = ""):
    """Convolution, optional normalisation, ReLU: ``<name>_conv<index>``, ``_norm<index>``, ``_relu<index>``."""
    normalized = normalization not in (None, "none")
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=not normalized,
                      kernel_initializer="he_normal", name=f"{name}_conv{index}")(x)
    x = apply_normalization(x, normalization, f"{name}_norm{index}")
    return layers.Activation("relu", name=f"{name}_relu{index}")(x)
