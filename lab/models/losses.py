"""Losses the course uses that Keras does not ship in the needed form."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lab")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels, with optional label smoothing (E4, E5).

    Keras' own ``SparseCategoricalCrossentropy`` has no ``label_smoothing``, and switching the
    whole pipeline to one-hot labels would change every other part of the kit, so this loss
    one-hot encodes inside and calls the categorical cross-entropy.

    With smoothing ``s`` and ``k`` classes the target becomes ``(1 - s) * one_hot + s / k``, so
    the loss of a perfect prediction is no longer 0: a smoothed run reports a higher loss even
    when it is more accurate (E4's lesson).

    Labels of the predictions' shape are taken as class probabilities (mixup's and cutmix's
    soft labels, ``lab.data.pipeline.mix_batches``), smoothed alike.

    Args:
        label_smoothing: ``s`` in [0, 1).
        from_logits: whether predictions are logits rather than probabilities.
    """

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = False,
                 name: str = "sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        if is_soft(y_true, y_pred):
            return keras.losses.categorical_crossentropy(
                ops.cast(y_true, y_pred.dtype), y_pred, from_logits=self.from_logits,
                label_smoothing=self.label_smoothing)
        num_classes = ops.shape(y_pred)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        if self.label_smoothing == 0.0:
            return keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        one_hot = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def is_soft(y_true, y_pred) -> bool:
    """Whether labels are class probabilities (one row per example, one column per class) rather
    than integer ids: decided from the static shapes, which a compiled step knows."""
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] not in (None, 1) \
        and y_true.shape[-1] == y_pred.shape[-1]


def accuracy(y_true, y_pred):
    """Accuracy for integer or soft labels: a soft label's class is its largest share (the
    larger image of a mixup or cutmix pair)."""
    if is_soft(y_true, y_pred):
        y_true = ops.argmax(y_true, axis=-1)
    return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)
