"""Segmentation losses (E6, E12): soft Dice, class-weighted per-pixel cross-entropy, both.

Every loss takes integer masks ``y_true`` of shape (batch, height, width) (or with a trailing
1) and per-pixel probabilities ``y_pred`` of shape (batch, height, width, classes). A model with
one sigmoid channel (two classes) is understood too: its channel is the foreground probability.

Soft Dice, exactly as E12 writes it, for each class c over all pixels i of the batch:

    dice_c = 2 * sum_i(y_ic * p_ic) / (sum_i(y_ic ** 2) + sum_i(p_ic ** 2))
    loss   = 1 - sum_c(w_c * dice_c) / sum_c(w_c)          (w_c = 1 unless class_weights)

A class absent from the batch's masks gets dice_c near 0 unless it is predicted nowhere, so
Dice also penalises probability spent on absent classes. All losses are Keras-serialisable.

Targets may also carry U-Net's weight map (``lab.tasks.segmentation.weight_map``): float targets of
shape (batch, height, width, 2), the class ids in channel 0 and each pixel's weight w(x) in
channel 1 (``split_targets``). The cross-entropy then multiplies each pixel's term by w(x), the
paper's weighted loss; Dice and the metrics read the class ids only.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from lab.config import SEGMENTATION_LOSSES


def class_probabilities(y_pred):
    """(…, classes) probabilities; one sigmoid channel p becomes the two channels (1 - p, p)."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        return ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
    return y_pred


def split_targets(y_true):
    """The class ids and the per-pixel weights of targets: ``(masks, weights)``, weights None
    unless the targets carry a weight map ((batch, H, W, 2): class ids, then w(x))."""
    if len(y_true.shape) == 4 and y_true.shape[-1] == 2:
        return ops.round(y_true[..., 0]), ops.cast(y_true[..., 1], "float32")
    return y_true, None


def one_hot_masks(y_true, num_classes: int):
    """Integer masks (…, H, W) or (…, H, W, 1) as float32 one-hot (…, H, W, classes); targets
    with a weight map give their class ids."""
    y_true = ops.cast(split_targets(y_true)[0], "int32")
    if len(y_true.shape) == 4 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.one_hot(y_true, num_classes, dtype="float32")


def soft_dice_per_class(y_true, y_pred, smooth: float = 1e-7):
    """Soft Dice of each class over every pixel of the batch, shape (classes,)."""
    probabilities = class_probabilities(y_pred)
    truth = one_hot_masks(y_true, probabilities.shape[-1])
    axes = tuple(range(len(probabilities.shape) - 1))
    intersection = ops.sum(truth * probabilities, axis=axes)
    denominator = ops.sum(ops.square(truth), axis=axes) + ops.sum(ops.square(probabilities), axis=axes)
    return (2.0 * intersection + smooth) / (denominator + smooth)


def _weights(class_weights: Sequence[float] | None, num_classes: int):
    if class_weights is None:
        return ops.ones((num_classes,), dtype="float32")
    if len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} values but the model predicts {num_classes} "
                         "classes (background included): give one weight per class.")
    return ops.convert_to_tensor(list(class_weights), dtype="float32")


def _check_class_weights(class_weights: Sequence[float] | None) -> list[float] | None:
    if class_weights is None:
        return None
    weights = [float(w) for w in class_weights]
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"class_weights must be >= 0 with at least one > 0, received {list(class_weights)}.")
    return weights


@keras.saving.register_keras_serializable(package="lab")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss: 1 minus the (weighted) mean over classes of the per-class soft Dice.

    Args:
        class_weights: one weight per class (background first), or None for a plain mean.
        smooth: added to numerator and denominator only to avoid 0 / 0.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, smooth: float = 1e-7,
                 name: str = "dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = _check_class_weights(class_weights)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        dice = soft_dice_per_class(y_true, y_pred, self.smooth)
        weights = _weights(self.class_weights, dice.shape[-1])
        return 1.0 - ops.sum(weights * dice) / ops.sum(weights)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="lab")
class WeightedCrossentropy(keras.losses.Loss):
    """Per-pixel cross-entropy ``-w[y] * log p[y]``, averaged over all pixels.

    With ``class_weights`` each pixel's loss is multiplied by the weight of its true class (what
    Keras' ``class_weight`` does for classification but refuses for masks): weighting the
    background down makes the foreground count more (E6). Targets with a weight map multiply
    each pixel's loss by its w(x) too (``split_targets``).

    Args:
        class_weights: one weight per class (background first), or None for all ones.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, name: str = "weighted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = _check_class_weights(class_weights)

    def call(self, y_true, y_pred):
        probabilities = class_probabilities(y_pred)
        truth = one_hot_masks(y_true, probabilities.shape[-1])
        epsilon = keras.config.epsilon()
        log_p = ops.log(ops.clip(probabilities, epsilon, 1.0 - epsilon))
        weights = _weights(self.class_weights, probabilities.shape[-1])
        # (batch, H, W): weight of the true class times its negative log-probability.
        loss = -ops.sum(truth * log_p * weights, axis=-1)
        pixel_weights = split_targets(y_true)[1]
        return loss if pixel_weights is None else loss * pixel_weights

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="lab")
class CombinedLoss(keras.losses.Loss):
    """``crossentropy_weight * cross-entropy + dice_weight * Dice``, with the same class weights.

    Cross-entropy gives every pixel a gradient from the first step; Dice keeps small classes
    from being drowned by the background.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, crossentropy_weight: float = 1.0,
                 dice_weight: float = 1.0, smooth: float = 1e-7, name: str = "combined_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if crossentropy_weight < 0 or dice_weight < 0 or crossentropy_weight + dice_weight == 0:
            raise ValueError("crossentropy_weight and dice_weight must be >= 0 and not both 0, received "
                             f"{crossentropy_weight} and {dice_weight}.")
        self.class_weights = _check_class_weights(class_weights)
        self.crossentropy_weight = float(crossentropy_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self._crossentropy = WeightedCrossentropy(self.class_weights)
        self._dice = DiceLoss(self.class_weights, smooth)

    def call(self, y_true, y_pred):
        crossentropy = ops.mean(self._crossentropy.call(y_true, y_pred))
        return self.crossentropy_weight * crossentropy + self.dice_weight * self._dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights,
                "crossentropy_weight": self.crossentropy_weight, "dice_weight": self.dice_weight,
                "smooth": self.smooth}


LOSSES = SEGMENTATION_LOSSES  # the names the configuration accepts


def make_loss(name: str, *, class_weights: Sequence[float] | None = None, crossentropy_weight: float = 1.0,
              dice_weight: float = 1.0) -> keras.losses.Loss:
    """Returns a fresh segmentation loss by name: "crossentropy", "dice" or "combined"."""
    if name == "crossentropy":
        return WeightedCrossentropy(class_weights)
    if name == "dice":
        return DiceLoss(class_weights)
    if name == "combined":
        return CombinedLoss(class_weights, crossentropy_weight=crossentropy_weight, dice_weight=dice_weight)
    raise ValueError(f"Unknown segmentation loss {name!r}. Available losses: {', '.join(LOSSES)}.")
