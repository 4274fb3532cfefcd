"""Segmentation metrics: pixel accuracy, per-class IoU (Jaccard) and Dice, and E6's flag.

Two forms of the same numbers:

* for the run record, ``segmentation_metrics(y_true, y_pred, class_names)`` counts a pixel
  confusion matrix in NumPy and derives everything from it, so a run can be re-scored from
  its saved masks;
* for the training history, streaming Keras metrics: ``PixelAccuracy``, ``MeanIoU`` (Keras'
  own, fed class ids) and ``MeanDice``.

From the confusion matrix C (rows = true class, columns = predicted class), for class c:

    IoU_c  = C[c, c] / (sum of row c + sum of column c - C[c, c])
    Dice_c = 2 C[c, c] / (sum of row c + sum of column c)

A class neither present nor predicted has no IoU or Dice (NaN) and is left out of the means,
as Keras' MeanIoU does.

E6: a network can reach a high pixel accuracy by predicting background everywhere. Every run
record therefore carries the share of pixels predicted as foreground next to the true share,
and ``all_background`` is set, with a warning, when the prediction covers less than
``flag_ratio`` (default a tenth) of the true foreground.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

BACKGROUND_FLAG_RATIO = 0.1


def pixel_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts pixels, rows = true class, columns = predicted class (int64, num_classes square)."""
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must hold the same number of pixels, received {y_true.size} "
                         f"and {y_pred.size}.")
    for label, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{label} holds class ids from {values.min()} to {values.max()}, outside "
                             f"[0, {num_classes}) for {num_classes} classes.")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``iou`` and ``dice`` (NaN where a class is neither present nor predicted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positives = np.diag(matrix)
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        union = true_counts + predicted_counts - true_positives
        iou = np.where(union > 0, true_positives / union, np.nan)
        dice = np.where(true_counts + predicted_counts > 0, 2 * true_positives / (true_counts + predicted_counts), np.nan)
    return {"iou": iou, "dice": dice}


def segmentation_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], *, prefix: str = "",
                         flag_ratio: float = BACKGROUND_FLAG_RATIO) -> dict[str, Any]:
    """Every number a segmentation run record holds, from true and predicted class-id masks.

    Args:
        y_true, y_pred: integer masks of the same shape (class 0 is the background).
        class_names: the name of each class id, background first.
        prefix: prepended to every key (``"test_"``).
        flag_ratio: ``all_background`` is set when the predicted foreground share is below this
            fraction of the true foreground share.

    Returns:
        A flat dict: ``pixel_accuracy``, ``mean_iou``, ``mean_dice``, ``foreground_iou`` (mean
        over the non-background classes), ``iou_<class>`` and ``dice_<class>`` for every class,
        ``foreground_fraction_true`` and ``foreground_fraction_predicted``, ``all_background``
        and, when it is set, ``warning``.
    """
    num_classes = len(class_names)
    matrix = pixel_confusion_matrix(y_true, y_pred, num_classes)
    scores = scores_from_confusion(matrix)
    total = matrix.sum()
    values: dict[str, Any] = {
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "mean_iou": _nanmean(scores["iou"]),
        "mean_dice": _nanmean(scores["dice"]),
        "foreground_iou": _nanmean(scores["iou"][1:]),
    }
    for index, name in enumerate(class_names):
        key = metric_key(name)
        values[f"iou_{key}"] = _float(scores["iou"][index])
        values[f"dice_{key}"] = _float(scores["dice"][index])
    values |= background_flag(matrix, flag_ratio=flag_ratio, pixel_accuracy=values["pixel_accuracy"],
                              mean_iou=values["mean_iou"])
    return {prefix + k: v for k, v in values.items()}


def background_flag(matrix: np.ndarray, *, flag_ratio: float = BACKGROUND_FLAG_RATIO,
                    pixel_accuracy: float | None = None, mean_iou: float | None = None) -> dict[str, Any]:
    """E6's check: did the model predict (almost) only background?

    Returns ``foreground_fraction_true``, ``foreground_fraction_predicted``, ``all_background``
    and, when set, a ``warning`` sentence that says why pixel accuracy misleads here.
    """
    matrix = np.asarray(matrix)
    total = matrix.sum()
    true_share = float(matrix[1:, :].sum() / total) if total else 0.0
    predicted_share = float(matrix[:, 1:].sum() / total) if total else 0.0
    flagged = bool(true_share > 0 and predicted_share < flag_ratio * true_share)
    result: dict[str, Any] = {"foreground_fraction_true": true_share,
                              "foreground_fraction_predicted": predicted_share, "all_background": flagged}
    if flagged:
        accuracy = "" if pixel_accuracy is None else f"pixel accuracy {pixel_accuracy:.3f} "
        iou = "" if mean_iou is None else f" (mean IoU {mean_iou:.3f})"
        result["warning"] = (
            f"ALL BACKGROUND: the model predicts foreground on {predicted_share:.1%} of the pixels, although "
            f"{true_share:.1%} are foreground. Its {accuracy}comes from the background alone and says nothing "
            f"about the objects{iou}; look at the per-class IoU and Dice. Try a Dice or combined loss, class "
            "weights, more epochs or a higher learning rate."
        )
    return result


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: IoU, Dice, its share of the true pixels and of the predicted pixels."""
    matrix = pixel_confusion_matrix(y_true, y_pred, len(class_names))
    scores = scores_from_confusion(matrix)
    total = max(int(matrix.sum()), 1)
    return pd.DataFrame({
        "class": list(class_names),
        "iou": scores["iou"],
        "dice": scores["dice"],
        "true_share": matrix.sum(axis=1) / total,
        "predicted_share": matrix.sum(axis=0) / total,
    })


def metric_key(class_name: str) -> str:
    """A class name as it appears in metric keys: lower case, non-alphanumerics as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in str(class_name).lower())


def predicted_classes(y_pred):
    """Class ids from probabilities (argmax; one sigmoid channel is thresholded at 0.5)."""
    if y_pred.shape[-1] == 1:
        return ops.cast(ops.squeeze(y_pred, axis=-1) > 0.5, "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


def _squeeze_masks(y_true):
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == 4 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    return y_true


def _pixel_accuracy(y_true, y_pred):
    return ops.cast(ops.equal(_squeeze_masks(y_true), predicted_classes(y_pred)), "float32")


@keras.saving.register_keras_serializable(package="lab")
class PixelAccuracy(keras.metrics.MeanMetricWrapper):
    """The share of pixels whose predicted class is the true one (named ``accuracy`` by default,
    so the kit's learning curves and epoch line show it)."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(_pixel_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="lab")
class MeanIoU(keras.metrics.MeanIoU):
    """Keras' streaming MeanIoU fed with class ids from probabilities (softmax or one sigmoid)."""

    def __init__(self, num_classes: int, name: str = "mean_iou", dtype=None, **kwargs):
        kwargs.pop("sparse_y_pred", None)
        super().__init__(num_classes=num_classes, name=name, dtype=dtype, sparse_y_pred=True, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_squeeze_masks(y_true), predicted_classes(y_pred), sample_weight)


@keras.saving.register_keras_serializable(package="lab")
class MeanDice(MeanIoU):
    """The mean over classes of ``2 TP / (true + predicted)``, from the same confusion matrix."""

    def __init__(self, num_classes: int, name: str = "mean_dice", dtype=None, **kwargs):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype, **kwargs)

    def result(self):
        matrix = ops.cast(self.total_cm, "float32")
        true_positives = ops.diagonal(matrix)
        totals = ops.sum(matrix, axis=0) + ops.sum(matrix, axis=1)
        valid = ops.cast(totals > 0, "float32")
        dice = ops.where(totals > 0, 2.0 * true_positives / ops.maximum(totals, 1.0), 0.0)
        return ops.sum(dice) / ops.maximum(ops.sum(valid), 1.0)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
