"""U-Nets for semantic segmentation: one trained from scratch, one on a pretrained backbone.

``unet`` is Ronneberger et al.'s network (E12): at each scale two 3x3 convolutions, then 2x2
max-pooling; the decoder upsamples (a 2x2 transposed convolution, or nearest/bilinear resizing
followed by a 3x3 convolution), concatenates the encoder's feature map of the same scale, and
applies two 3x3 convolutions after each merge. ``pretrained_unet`` follows the TensorFlow
segmentation tutorial: a keras.applications network as the encoder, called its ``backbone``
as everywhere in the kit (its intermediate activations are the skip connections), and a
decoder of transposed convolutions.

Both return an uncompiled ``keras.Model`` with every layer named (``enc2_conv1``,
``dec2_concat``, ``predictions``...). The output is per-pixel class probabilities in float32:
a softmax over ``num_classes`` channels, or, for two classes with
``output_activation="sigmoid"``, one channel holding the foreground probability.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

# The configuration's own checks of these fields: one check for every layer.
from lab.config.base import check_frozen_or_all, check_rate
from lab.config.segmentation import check_backbone_weights
from lab.system.download import keras_downloads_through_fetch
from lab.models.layers import EncoderPreprocessing

NORMALIZATIONS = (None, "none", "batch", "layer")
UPSAMPLINGS = ("transpose", "bilinear", "nearest")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


def unet(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    depth: int = 4,
    filters: int = 64,
    normalization: str | None = None,
    dropout_rate: float = 0.0,
    upsampling: str = "transpose",
    output_activation: str = "softmax",
    name: str = "unet",
) -> keras.Model:
    """Builds a U-Net (Ronneberger et al. 2015, with 'same' padding).

    Args:
        input_shape: (height, width, channels); height and width must be multiples of
            ``2**depth``.
        num_classes: classes including the background (class 0).
        depth: number of 2x2 poolings (the paper: 4).
        filters: filters of the first level, doubled at each level down (the paper: 64).
        normalization: None/"none", "batch" (BatchNorm before each ReLU) or "layer".
        dropout_rate: dropout after each pooling, in the bottleneck and after each merge.
        upsampling: "transpose" (2x2 transposed convolution, stride 2), or "bilinear" /
            "nearest" resizing followed by a 3x3 convolution.
        output_activation: "softmax", or "sigmoid" (two classes only: one channel).
        name: the model's name.

    Returns:
        An uncompiled keras.Model from images to per-pixel probabilities.

    Raises:
        ValueError: a bad argument, or a size not divisible by ``2**depth`` (the message
        names the nearest sizes that work).
    """
    check_segmentation_args(input_shape, num_classes, output_activation, normalization, upsampling, dropout_rate)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive integer, received depth={depth!r}.")
    _check_positive_int("filters", filters)
    check_divisible(input_shape, 2**depth, f"A U-Net of depth {depth} halves the image {depth} times")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        x = conv_block(x, filters * 2 ** (level - 1), name=f"enc{level}", normalization=normalization)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name=f"enc{level}_dropout")(x)
    x = conv_block(x, filters * 2**depth, name="bottleneck", normalization=normalization)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="bottleneck_dropout")(x)
    for level in range(depth, 0, -1):
        level_filters = filters * 2 ** (level - 1)
        x = upsample(x, level_filters, mode=upsampling, name=f"dec{level}_up")
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level - 1]])
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name=f"dec{level}_dropout")(x)
        x = conv_block(x, level_filters, name=f"dec{level}", normalization=normalization)
    outputs = segmentation_head(x, num_classes, output_activation)
    return keras.Model(inputs, outputs, name=name)


# The skip layers of each backbone, highest resolution first; the last is the bottleneck.
# MobileNetV2's are the TensorFlow segmentation tutorial's.
UNET_BACKBONES: dict[str, dict] = {
    "mobilenetv2": {
        "application": "MobileNetV2",
        "preprocessing": "tf",
        "skips": ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                  "block_13_expand_relu", "block_16_project"),
    },
    "resnet50": {
        "application": "ResNet50",
        "preprocessing": "caffe",
        "skips": ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    },
    "vgg16": {
        "application": "VGG16",
        "preprocessing": "caffe",
        "skips": ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
    },
    "efficientnetb0": {
        "application": "EfficientNetB0",
        "preprocessing": None,  # EfficientNet rescales and normalises its 0-255 input itself
        "skips": ("block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
                  "block6a_expand_activation", "top_activation"),
    },
}


def pretrained_unet(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    backbone: str = "mobilenetv2",
    weights: str | None = "imagenet",
    unfreeze: int | str = 0,
    decoder_filters: Sequence[int] = (512, 256, 128, 64),
    normalization: str | None = "batch",
    dropout_rate: float = 0.0,
    upsampling: str = "transpose",
    output_activation: str = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Builds a U-Net on a pretrained keras.applications backbone (the TF tutorial's model).

    The backbone is one nested model named ``backbone`` whose outputs are the feature maps
    listed in ``UNET_BACKBONES``; the decoder upsamples the deepest one step by step (a 3x3
    transposed convolution with stride 2, BatchNorm and ReLU, as the tutorial's
    ``pix2pix.upsample``), concatenating the backbone map of each scale, and a last transposed
    convolution returns to the input resolution. Inputs are images scaled to [0, 1], as every
    pipeline of the kit delivers them; the model applies the backbone's own ImageNet
    preprocessing inside.

    Args:
        input_shape: (height, width, channels); sides multiples of the backbone's stride (32,
            16 for VGG16), at least 32 pixels; 3 channels for ImageNet weights.
        num_classes: classes including the background.
        backbone: a key of ``UNET_BACKBONES`` (mobilenetv2, resnet50, vgg16, efficientnetb0).
        weights: "imagenet" (downloaded once by Keras into ``~/.keras/models``) or None.
        unfreeze: 0 freezes the backbone (its BatchNorm layers then run in inference mode;
            set ``model.get_layer("backbone").trainable = True`` later to fine-tune), "all"
            trains it too.
        decoder_filters: filters of each decoder step, deepest first (one per skip).
        normalization: normalisation in the decoder steps (None/"none", "batch", "layer").
        dropout_rate: dropout in each decoder step.
        upsampling: "transpose", "bilinear" or "nearest" for the decoder steps.
        output_activation: "softmax", or "sigmoid" for two classes.
        name: the model's name (default ``unet_<backbone>``).

    Raises:
        ValueError: an unknown backbone (listing the valid ones), bad sizes or arguments.
        RuntimeError: ImageNet weights that cannot be downloaded (says where Keras caches them).
    """
    if backbone not in UNET_BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r} for pretrained_unet. Available backbones: "
                         f"{', '.join(UNET_BACKBONES)}.")
    check_backbone_weights(weights)
    check_frozen_or_all(unfreeze)
    check_segmentation_args(input_shape, num_classes, output_activation, normalization, upsampling, dropout_rate)
    spec = UNET_BACKBONES[backbone]
    if len(decoder_filters) != len(spec["skips"]) - 1:
        raise ValueError(f"decoder_filters needs {len(spec['skips']) - 1} values for backbone {backbone!r} (one per "
                         f"skip connection), received {tuple(decoder_filters)}.")
    stride = 16 if backbone == "vgg16" else 32
    check_divisible(input_shape, stride, f"The {backbone} backbone downsamples {stride} times")
    if min(input_shape[:2]) < 32:
        raise ValueError(f"The {backbone} backbone needs images of at least 32x32 pixels, received "
                         f"{input_shape[0]}x{input_shape[1]}.")
    if weights == "imagenet" and input_shape[2] != 3:
        raise ValueError(f"ImageNet weights need 3-channel images, received input_shape={tuple(input_shape)}. "
                         "Repeat the grayscale channel, or pass weights=None.")

    base = _load_application(spec["application"], tuple(input_shape), weights)
    features = keras.Model(base.input, [base.get_layer(n).output for n in spec["skips"]], name="backbone")
    features.trainable = unfreeze == "all"

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = EncoderPreprocessing(spec["preprocessing"], name="imagenet_preprocessing")(inputs)
    *skips, x = features(x)
    for step, (skip, step_filters) in enumerate(zip(reversed(skips), decoder_filters), start=1):
        factor = int(skip.shape[1]) // int(x.shape[1])
        x = upsample(x, step_filters, mode=upsampling, name=f"dec{step}_up", factor=factor, kernel_size=3)
        x = apply_normalization(x, normalization, f"dec{step}_norm")
        x = layers.Activation("relu", name=f"dec{step}_relu")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name=f"dec{step}_dropout")(x)
        x = layers.Concatenate(name=f"dec{step}_concat")([x, skip])
    factor = int(input_shape[0]) // int(x.shape[1])
    channels = 1 if output_activation == "sigmoid" else num_classes
    if factor > 1:
        x = upsample(x, channels, mode=upsampling, name="output_up", factor=factor, kernel_size=3)
    else:
        x = layers.Conv2D(channels, 1, name="output_conv")(x)
    outputs = layers.Activation(output_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name or f"unet_{backbone}")


def _load_application(application: str, input_shape: tuple, weights: str | None) -> keras.Model:
    """Builds a keras.applications network without its classifier; explains offline failures."""
    constructor = getattr(keras.applications, application)
    try:
        with keras_downloads_through_fetch():  # bounded waits and retries (lab.system.download)
            return constructor(include_top=False, weights=weights, input_shape=input_shape)
    except ValueError:
        raise  # Keras' own argument errors say what is wrong; a wrong checksum says what to do
    except Exception as error:
        if weights is None:
            raise
        raise RuntimeError(
            f"Could not load the ImageNet weights of {application} ({type(error).__name__}: {error}). Keras "
            "downloads them once into ~/.keras/models (or $KERAS_HOME/models when KERAS_HOME is set). On an "
            "offline machine, copy that file there from a machine that has it, or pass weights=None to train "
            "the backbone from scratch."
        ) from error


# -- building blocks shared by the dense-prediction builders ---------------------------------------


def conv_block(x, filters: int, *, name: str, normalization: str | None = None, convs: int = 2,
               kernel_size: int = 3, dilation_rate: int = 1):
    """``convs`` times: 3x3 convolution ('same'), optional normalisation, ReLU.

    Layers are named ``<name>_conv1``, ``<name>_norm1``, ``<name>_relu1``, ...
    """
    for i in range(1, convs + 1):
        normalized = normalization not in (None, "none")
        x = layers.Conv2D(filters, kernel_size, padding="same", dilation_rate=dilation_rate, use_bias=not normalized,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = apply_normalization(x, normalization, f"{name}_norm{i}")
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def upsample(x, filters: int, *, mode: str, name: str, factor: int = 2, kernel_size: int | None = None):
    """Enlarges a feature map ``factor`` times.

    "transpose": a transposed convolution with stride ``factor`` (kernel ``factor`` unless
    given: output side ``(i - 1) * s + k - 2p``, exactly ``factor * i`` with 'same' padding),
    named ``<name>_transpose``. "nearest"/"bilinear": ``UpSampling2D`` (``<name>_resize``) then
    a 3x3 convolution to ``filters`` channels (``<name>_conv``).
    """
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, kernel_size or factor, strides=factor, padding="same",
                                      kernel_initializer="he_normal", name=f"{name}_transpose")(x)
    x = layers.UpSampling2D(factor, interpolation=mode, name=f"{name}_resize")(x)
    return layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"{name}_conv")(x)


def segmentation_head(x, num_classes: int, output_activation: str):
    """A 1x1 convolution to the class channels and the float32 output layer ``predictions``."""
    channels = 1 if output_activation == "sigmoid" else num_classes
    return layers.Conv2D(channels, 1, activation=output_activation, dtype="float32", name="predictions")(x)


def check_segmentation_args(input_shape: Sequence[int], num_classes: int, output_activation: str,
                            normalization: str | None, upsampling: str, dropout_rate: float) -> None:
    """Raises ValueError for arguments every dense-prediction builder shares."""
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels), received {tuple(input_shape)}.")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be at least 2, received {num_classes!r}. "
                         "For one foreground class use num_classes=2 (with output_activation='sigmoid' for a "
                         "single output channel).")
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, received {output_activation!r}.")
    if output_activation == "sigmoid" and num_classes != 2:
        raise ValueError(f"output_activation='sigmoid' gives one foreground channel and needs num_classes=2, "
                         f"received num_classes={num_classes}. Use 'softmax' for several classes.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, received {normalization!r}.")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, received {upsampling!r}.")
    check_rate("dropout_rate", dropout_rate)


def check_divisible(input_shape: Sequence[int], divisor: int, why: str) -> None:
    """Raises ValueError unless height and width are multiples of ``divisor``, naming sizes that work."""
    height, width = int(input_shape[0]), int(input_shape[1])
    if height % divisor or width % divisor:
        def nearest(side: int) -> str:
            low = side // divisor * divisor
            return f"{low} or {low + divisor}" if low else f"{divisor}"
        raise ValueError(
            f"{why}: height and width must be multiples of {divisor}, received {height}x{width}. Resize the "
            f"images to {nearest(height)} (height) and {nearest(width)} (width), or use a shallower model."
        )


def apply_normalization(x, normalization: str | None, name: str):
    if normalization == "batch":
        return layers.BatchNormalization(name=name)(x)
    if normalization == "layer":
        return layers.LayerNormalization(name=name)(x)
    return x


def _check_positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, received {key}={value!r}.")
