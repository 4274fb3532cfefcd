"""Transfer models: a pretrained backbone with a new head, and how much of it trains.

    image -> BackboneInput (to RGB, resize, the backbone's normalisation) -> backbone
          -> pool -> [head_dense_i -> head_dropout_i]* -> logits -> predictions (softmax)

The head is given by specification (pooling, hidden widths, dropout; E11's Dense(256), ReLU).
``logits`` is kept as its own layer so the scores before the softmax stay reachable; the
softmax ``predictions`` layer is float32, as in every kit model.

What trains is a policy, counted in the backbone's own stages (see ``lab.models.backbones``):
``unfreeze=0`` trains the head only (a feature extractor), ``unfreeze=2`` also the last two
stages (ResNet's conv4 and conv5), ``unfreeze="all"`` the whole network. BatchNormalization
layers that are frozen run in inference mode (Keras 3 does this for ``trainable=False``), and
by default every BatchNorm stays frozen even inside unfrozen stages, as the Keras fine-tuning
guide recommends: small batches would otherwise wreck the pretrained statistics.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers

from lab.config.base import check_rate
from lab.models.backbones import (backbone_spec, backbone_stages, build_backbone, check_backbone_input_size,
                                  find_backbone)
from lab.models.layers import BackboneInput, ClassToken

POOLINGS = ("avg", "max", "flatten", "token")


def transfer_model(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    backbone_input_size: int | None = None,
    pooling: str | None = None,
    head_units: Sequence[int] = (),
    head_dropout: float = 0.0,
    unfreeze: int | str = 0,
    freeze_batchnorm: bool | None = None,
    pixel_scale: float = 255.0,
    name: str | None = None,
) -> keras.Model:
    """Builds a pretrained backbone with a new classification head.

    Args:
        input_shape: the images' (height, width, channels) as the pipeline delivers them;
            grayscale is turned into RGB inside the model.
        num_classes: classes of the new task.
        backbone: a name from ``lab.models.backbones.BACKBONES`` ("resnet50", "vgg16",
            "densenet121", "efficientnetb0", "convnexttiny", "resnet18", "vit_b16", ...).
        weights: "imagenet", None (random), or a kit-saved run folder / ``.keras`` / ``.h5``.
        backbone_input_size: the side images are resized to inside the model (E3/E9: 28 px to 224).
            None keeps the data's size, or the backbone's minimum if the data is smaller.
        pooling: "avg" or "max" (global pooling), "flatten", or "token" (a transformer's class
            token). None: "token" for transformers, "avg" otherwise.
        head_units: widths of hidden Dense(ReLU) layers before the output (E11: ``(256,)``).
        head_dropout: dropout after each hidden layer (and before the logits if there are none).
        unfreeze: how many of the backbone's last stages train (0: head only), or "all".
        freeze_batchnorm: keep every BatchNorm frozen, also in unfrozen stages. None: freeze
            when the weights are pretrained, train them when training from scratch (weights=None).
        pixel_scale: what the incoming pixels are multiplied by to reach [0, 255].
        name: the model's name (default ``transfer_<backbone>``).

    Returns:
        An uncompiled ``keras.Model``.
    """
    spec = backbone_spec(backbone)
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"Transfer models take grayscale or RGB images; received {channels} channels.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, received {num_classes}.")
    check_rate("head_dropout", head_dropout)
    if any(not isinstance(units, int) or units < 1 for units in head_units):
        raise ValueError(f"head_units must be positive integers, received head_units={list(head_units)}.")
    size = backbone_input_size or spec.fixed_size or max(height, width, spec.min_size)
    check_backbone_input_size(spec.name, size)
    pooling = pooling or ("token" if spec.family == "transformer" else "avg")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, received pooling={pooling!r}.")
    if (pooling == "token") != (spec.family == "transformer"):
        raise ValueError(f"pooling={pooling!r} does not fit {spec.name}: use 'token' for transformers and "
                         "'avg', 'max' or 'flatten' for CNNs.")

    base = build_backbone(spec.name, size, weights=weights)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = BackboneInput(size, spec.preprocessing, pixel_scale, name="backbone_input")(inputs)
    x = base(x)
    x = _pool(pooling)(x)
    for i, units in enumerate(head_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        if head_dropout:
            x = layers.Dropout(head_dropout, name=f"head_dropout{i}")(x)
    if head_dropout and not head_units:
        x = layers.Dropout(head_dropout, name="head_dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name or f"transfer_{spec.name}")
    if freeze_batchnorm is None:
        freeze_batchnorm = weights is not None
    set_trainable(model, unfreeze, freeze_batchnorm=freeze_batchnorm)
    return model


def _pool(pooling: str) -> layers.Layer:
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="pool")
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="pool")
    if pooling == "flatten":
        return layers.Flatten(name="pool")
    return ClassToken(name="pool")


def stage_names(model: keras.Model) -> list[str]:
    """The backbone's stages, input to output (``["conv1", ..., "conv5"]`` for ResNet50)."""
    base, spec = find_backbone(model)
    return list(backbone_stages(base, spec))


def set_trainable(model: keras.Model, unfreeze: int | str, *, freeze_batchnorm: bool = True) -> list[str]:
    """Applies a freeze policy: the head trains, plus the backbone's last ``unfreeze`` stages.

    Call it before compiling (Keras reads ``trainable`` at compile time).

    Args:
        model: a model built by ``transfer_model``.
        unfreeze: 0 (head only), a number of last stages, or "all".
        freeze_batchnorm: keep BatchNorm layers frozen (inference mode) in unfrozen stages too.

    Returns:
        The names of the stages that now train.

    Raises:
        ValueError: ``unfreeze`` is negative, not "all", or more than the stages there are.
    """
    base, spec = find_backbone(model)
    stages = backbone_stages(base, spec)
    count = _stage_count(unfreeze, stages, spec.name)
    training = list(stages)[len(stages) - count:] if count else []
    base.trainable = True  # the container trains; its layers decide one by one
    for layer in base.layers:
        layer.trainable = False
    for stage in training:
        for layer in stages[stage]:
            layer.trainable = True
    if freeze_batchnorm:
        for layer in _all_layers(base):
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    for layer in model.layers:
        if layer is not base:
            layer.trainable = True
    return training


def _stage_count(unfreeze: int | str, stages: dict, name: str) -> int:
    if unfreeze == "all":
        return len(stages)
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 0:
        raise ValueError(f"unfreeze must be a number of stages (0 = head only) or 'all', received "
                         f"unfreeze={unfreeze!r}.")
    if unfreeze > len(stages):
        raise ValueError(f"{name} has {len(stages)} stages ({', '.join(stages)}); received unfreeze={unfreeze}. "
                         f"Use at most {len(stages)}, or unfreeze='all' for the whole network.")
    return unfreeze


def _all_layers(layer: keras.layers.Layer):
    """Every layer nested inside ``layer`` (a backbone's blocks can hold sublayers)."""
    for sub in getattr(layer, "_flatten_layers", lambda **_: [])(include_self=False, recursive=True):
        yield sub


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers after the backbone's pooling: what a feature-cache head trains."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index("pool") + 1:]


def feature_extractor(model: keras.Model) -> keras.Model:
    """The model from the image to the pooled backbone features (the head's input)."""
    return keras.Model(model.inputs, model.get_layer("pool").output, name=f"{model.name}_features")


def head_model(model: keras.Model) -> keras.Model:
    """A model from pooled features to predictions that shares the head layers of ``model``.

    Training it trains ``model``'s head (the layers are the same objects), which is how the
    feature cache trains a frozen-backbone model without running the backbone each epoch.
    """
    features = keras.Input(shape=tuple(model.get_layer("pool").output.shape[1:]), name="features")
    x = features
    for layer in head_layers(model):
        x = layer(x)
    return keras.Model(features, x, name=f"{model.name}_head")


def transfer_summary(model: keras.Model) -> dict:
    """Which stages train and how many weights: for run records and notebooks."""
    base, spec = find_backbone(model)
    stages = backbone_stages(base, spec)
    trainable = [name for name, group in stages.items()
                 if any(w.trainable for layer in group for w in layer.weights)]
    return {
        "backbone": spec.name,
        "stages": list(stages),
        "trainable_stages": trainable,
        "backbone_params": int(base.count_params()),
        "trainable_backbone_params": int(sum(np.prod(w.shape) for w in base.trainable_weights)),
    }
