"""A fully convolutional network (Long, Shelhamer and Darrell, 2015) for segmentation (E12).

A VGG-like encoder of convolution blocks and 2x2 poolings, a 1x1 convolution that scores every
class at the coarsest scale, and upsampling back to the input. With ``skip_levels`` the coarse
scores are refined FCN-16s/8s style: upsampled by two and added to the scores of the pooling
output one scale up (``skip_levels=0`` is FCN-32s's single big upsampling).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from lab.models.unet import check_divisible, check_segmentation_args, conv_block, upsample


def fcn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    depth: int = 4,
    filters: int = 32,
    convs_per_block: int = 2,
    normalization: str | None = None,
    dropout_rate: float = 0.0,
    skip_levels: int | None = None,
    upsampling: str = "transpose",
    output_activation: str = "softmax",
    name: str = "fcn",
) -> keras.Model:
    """Builds an FCN.

    Args:
        input_shape: (height, width, channels), sides multiples of ``2**depth``.
        num_classes: classes including the background.
        depth: number of conv blocks, each followed by 2x2 max-pooling.
        filters: filters of the first block, doubled per block.
        convs_per_block: 3x3 convolutions per block.
        normalization: None/"none", "batch" or "layer".
        dropout_rate: dropout before the coarsest scoring layer (FCN's dropout on fc6/fc7).
        skip_levels: how many finer pooling outputs are fused into the scores (0 to depth - 1;
            None: 2 as FCN-8s, or depth - 1 when that is smaller).
        upsampling: "transpose" (learned, kernel 2s and stride s) or "bilinear"/"nearest".
        output_activation: "softmax", or "sigmoid" for two classes.
        name: the model's name.

    Returns:
        An uncompiled keras.Model; layers ``block1_conv1``... ``score``, ``fuse1_add``...,
        ``output_up_*``, ``predictions``.
    """
    check_segmentation_args(input_shape, num_classes, output_activation, normalization, upsampling, dropout_rate)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive integer, received depth={depth!r}.")
    if skip_levels is None:
        skip_levels = min(2, depth - 1)
    if not isinstance(skip_levels, int) or not 0 <= skip_levels < depth:
        raise ValueError(f"skip_levels must be between 0 and depth - 1 = {depth - 1}, received {skip_levels!r}.")
    check_divisible(input_shape, 2**depth, f"An FCN of depth {depth} halves the image {depth} times")
    channels = 1 if output_activation == "sigmoid" else num_classes

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    pooled = []
    for block in range(1, depth + 1):
        x = conv_block(x, filters * 2 ** (block - 1), name=f"block{block}", normalization=normalization,
                       convs=convs_per_block)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        pooled.append(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="score_dropout")(x)
    scores = layers.Conv2D(channels, 1, name="score")(x)
    for level in range(1, skip_levels + 1):
        finer = pooled[depth - 1 - level]
        scores = upsample(scores, channels, mode=upsampling, name=f"fuse{level}_up", factor=2,
                          kernel_size=4 if upsampling == "transpose" else None)
        skip_scores = layers.Conv2D(channels, 1, name=f"fuse{level}_score")(finer)
        scores = layers.Add(name=f"fuse{level}_add")([scores, skip_scores])
    factor = 2 ** (depth - skip_levels)
    scores = upsample(scores, channels, mode=upsampling, name="output_up", factor=factor,
                      kernel_size=2 * factor if upsampling == "transpose" else None)
    outputs = layers.Activation(output_activation, dtype="float32", name="predictions")(scores)
    return keras.Model(inputs, outputs, name=name)
