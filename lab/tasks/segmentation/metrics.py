"""Streaming Keras metrics for segmentation training: ``PixelAccuracy``, ``MeanIoU`` (Keras'
own, fed class ids) and ``MeanDice``.

The numbers of the run record are computed from whole masks in NumPy by
``lab.runs.evaluation.segmentation_metrics`` (so a run can be re-scored from its saved masks); these
are their per-batch forms for the training history.
"""

from __future__ import annotations

import keras
from keras import ops

from lab.tasks.segmentation.losses import split_targets


def predicted_classes(y_pred):
    """Class ids from probabilities (argmax; one sigmoid channel is thresholded at 0.5)."""
    if y_pred.shape[-1] == 1:
        return ops.cast(ops.squeeze(y_pred, axis=-1) > 0.5, "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


def _squeeze_masks(y_true):
    y_true = ops.cast(split_targets(y_true)[0], "int32")  # a weight map, if any, is the loss's only
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
