"""MedMNIST's baseline ResNets, from scratch: ResNet-18 and ResNet-50 for 28 px and 224 px inputs.

MedMNIST v2 (Yang et al., 2023) reports ResNet-18 (28) and ResNet-50 (28) trained on the 28x28
images, and ResNet-18 (224) and ResNet-50 (224) on the images enlarged to 224x224. Their code
(github.com/MedMNIST/experiments, ``MedMNIST2D/models.py`` and ``train_and_eval_pytorch.py``)
uses, at 28 px, the CIFAR-style ResNet of kuangliu/pytorch-cifar: a 3x3 stride-1 stem and no
max-pool, so the four stages see 28, 14, 7 and 4 pixels; at 224 px torchvision's standard
``resnet18``/``resnet50``: a 7x7 stride-2 stem and a 3x3 stride-2 max-pool. ``stem="auto"``
picks the small stem for inputs up to 64 px and the standard one above.

Both follow the PyTorch models exactly, so parameter counts match: bias-free convolutions
followed by BatchNorm (epsilon 1e-5 and momentum 0.9, PyTorch's defaults), a 1x1 convolution
with BatchNorm on the shortcut where the shape changes, ResNet-50's stride on its 3x3
convolution (torchvision's "v1.5"), convolution kernels initialised as torchvision does
(He normal, fan-out), global average pooling and one Dense softmax layer. Strided convolutions
pad explicitly (as PyTorch's ``padding=1``), because Keras' "same" pads an even input on one
side only.

Layers are named per stage as in ``keras.applications``' ResNets: ``conv1_conv``,
``conv2_block1_1_conv`` ... ``conv5_block2_out``, ``avg_pool``, ``predictions``.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from lab.models.cnn import _check_common

STEMS = ("auto", "small", "standard")
# The side up to which stem="auto" uses the small 3x3 stem (MedMNIST's 28 and 64 px images).
SMALL_STEM_MAX_SIDE = 64
_BN = dict(epsilon=1e-5, momentum=0.9)
# torchvision: nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu").
_KERNEL_INIT = dict(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def resnet18(input_shape: Sequence[int], num_classes: int, *, stem: str = "auto", name: str = "resnet18"
             ) -> keras.Model:
    """MedMNIST's ResNet-18: basic blocks [2, 2, 2, 2] of 64, 128, 256, 512 filters.

    Args:
        input_shape: (height, width, channels).
        num_classes: number of classes.
        stem: "small" (3x3 stride 1, no max-pool: MedMNIST's 28 px model), "standard" (7x7
            stride 2 and a max-pool: torchvision's, for 224 px) or "auto" (small up to 64 px).
        name: model name.

    Returns:
        An uncompiled model. With the standard stem, 3 channels and 10 classes it has
        11,181,642 trainable parameters, torchvision's ``resnet18(num_classes=10)``.
    """
    return _resnet(input_shape, num_classes, blocks=(2, 2, 2, 2), bottleneck=False, stem=stem, name=name)


def resnet50(input_shape: Sequence[int], num_classes: int, *, stem: str = "auto", name: str = "resnet50"
             ) -> keras.Model:
    """MedMNIST's ResNet-50: bottleneck blocks [3, 4, 6, 3] (widths 64 to 512, outputs x4).

    Args:
        input_shape, num_classes, stem, name: as for ``resnet18``.

    Returns:
        An uncompiled model. With the standard stem, 3 channels and 10 classes it has
        23,528,522 trainable parameters, torchvision's ``resnet50(num_classes=10)``.
    """
    return _resnet(input_shape, num_classes, blocks=(3, 4, 6, 3), bottleneck=True, stem=stem, name=name)


def resolve_stem(stem: str, input_shape: Sequence[int]) -> str:
    """"small" or "standard": what ``stem`` means for this input size."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(repr(s) for s in STEMS)}, received stem={stem!r}.")
    if stem != "auto":
        return stem
    return "small" if min(input_shape[0], input_shape[1]) <= SMALL_STEM_MAX_SIDE else "standard"


def _resnet(input_shape: Sequence[int], num_classes: int, *, blocks: Sequence[int], bottleneck: bool, stem: str,
            name: str) -> keras.Model:
    """The one builder behind both depths: stem, four stages, pooling, softmax."""
    _check_common(input_shape, num_classes)
    stem = resolve_stem(stem, input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if stem == "small":
        x = _conv(inputs, 64, 3, 1, "conv1_conv")
    else:
        x = _conv(inputs, 64, 7, 2, "conv1_conv")
    x = layers.BatchNormalization(**_BN, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    if stem == "standard":
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    block = _bottleneck_block if bottleneck else _basic_block
    for stage, (count, filters) in enumerate(zip(blocks, (64, 128, 256, 512)), start=2):
        for index in range(1, count + 1):
            stride = 2 if stage > 2 and index == 1 else 1
            x = block(x, filters, stride, f"conv{stage}_block{index}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv(x, filters: int, kernel: int, stride: int, name: str):
    """A bias-free convolution padded as PyTorch's ``padding=kernel // 2`` (symmetric)."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=name.replace("_conv", "_pad"))(x)
        padding = "valid"
    else:
        padding = "same"  # symmetric for stride 1 and odd kernels
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                         kernel_initializer=keras.initializers.VarianceScaling(**_KERNEL_INIT), name=name)(x)


def _shortcut(x, filters: int, stride: int, name: str):
    """The identity, or a 1x1 convolution and BatchNorm where the shape changes."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    shortcut = _conv(x, filters, 1, stride, f"{name}_0_conv")
    return layers.BatchNormalization(**_BN, name=f"{name}_0_bn")(shortcut)


def _basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 convolutions (the first may stride) and the shortcut."""
    shortcut = _shortcut(x, filters, stride, name)
    x = _conv(x, filters, 3, stride, f"{name}_1_conv")
    x = layers.BatchNormalization(**_BN, name=f"{name}_1_bn")(x)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv(x, filters, 3, 1, f"{name}_2_conv")
    x = layers.BatchNormalization(**_BN, name=f"{name}_2_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def _bottleneck_block(x, filters: int, stride: int, name: str):
    """1x1 down to ``filters``, 3x3 (strided), 1x1 up to 4 x ``filters``, and the shortcut."""
    shortcut = _shortcut(x, 4 * filters, stride, name)
    x = _conv(x, filters, 1, 1, f"{name}_1_conv")
    x = layers.BatchNormalization(**_BN, name=f"{name}_1_bn")(x)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv(x, filters, 3, stride, f"{name}_2_conv")
    x = layers.BatchNormalization(**_BN, name=f"{name}_2_bn")(x)
    x = layers.ReLU(name=f"{name}_2_relu")(x)
    x = _conv(x, 4 * filters, 1, 1, f"{name}_3_conv")
    x = layers.BatchNormalization(**_BN, name=f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)
