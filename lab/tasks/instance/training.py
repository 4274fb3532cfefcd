"""Model Garden's Mask R-CNN in the kit's fit loop, and its predictions as ``Instances``.

The model is a tf_keras (Keras 2) model trained by Model Garden's own ``task.train_step``; the
kit's runner (``lab.runs.runner``) fits Keras 3 models with Keras 3 callbacks (epoch timer,
divergence, best weights, early stopping, TensorBoard, the learning-rate schedule, the CSV
history). ``GardenModel`` stands between them: it offers the runner what it uses of a Keras 3
model (``fit``, ``get_weights``/``set_weights``, ``optimizer``, ``stop_training``,
``count_params``, ``trainable_weights``, ``save``) and drives the callbacks' hooks itself, so
an E7 run has exactly the life, the record and the policies of every other run.

An epoch is ``steps_per_epoch`` training steps (one pass over the training images; Model
Garden's training input repeats, so one iterator is kept across epochs) followed by the COCO
scores of the validation images (Model Garden computes its losses only in training mode, so
there is no validation loss: ``val_mask_ap`` picks the best epoch).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lab.tasks.instance.types import Instances


@dataclasses.dataclass
class EvalSet:
    """One split to score: Model Garden's evaluation input and the truth it is scored against.

    Attributes:
        dataset: batches of Model Garden's evaluation parser (``is_training=False``), each
            image identified by its ``source_id``, its index in the split.
        truth: the split's ground truth, by index.
        class_names: the foreground classes (id i + 1 is ``class_names[i]``).
    """

    dataset: Any
    truth: Sequence[Instances]
    class_names: Sequence[str]


class _OptimizerView:
    """The tf_keras optimizer as the kit's schedules and callbacks see an optimizer.

    ``learning_rate`` reads as a float and accepts a float (assigned now) or a per-step
    schedule (a callable of the step, such as ``lab.config.schedules``' Keras 3 schedules), which the
    fit loop evaluates before every step. ``iterations`` counts the steps taken.
    """

    def __init__(self, optimizer: Any):
        self.inner = optimizer
        self.schedule: Callable[[int], Any] | None = None

    @property
    def learning_rate(self) -> float:
        return float(np.asarray(self.inner.learning_rate))

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        if callable(value):
            self.schedule = value
            self.apply_schedule()
        else:
            self.schedule = None
            self.inner.learning_rate.assign(float(value))

    @property
    def iterations(self) -> Any:
        return self.inner.iterations

    def apply_schedule(self) -> None:
        """Sets the rate of the coming step from the schedule, if there is one."""
        if self.schedule is not None:
            self.inner.learning_rate.assign(float(np.asarray(self.schedule(int(self.inner.iterations.numpy())))))


class GardenModel:
    """A Model Garden Mask R-CNN that the runner fits like a Keras 3 model (see the module docstring).

    Args:
        task: Model Garden's MaskRCNNTask (its train step, losses and loss metrics).
        model: the task's tf_keras model.
        optimizer: a tf_keras optimizer (wrapped for loss scaling when mixed_float16).
        jit_compile: compile the training step with XLA.
    """

    # Not "*.weights.h5": for that name tf_keras' save_weights and load_weights use a format that
    # leaves out the RPN head's per-level BatchNorm variables (see ``save``); "*.h5" is its
    # complete HDF5 weights format, which ``model.load_weights(path)`` reads back layer by layer.
    WEIGHTS_FILE = "model_weights.h5"

    def __init__(self, task: Any, model: Any, optimizer: Any, *, jit_compile: bool = False):
        import tensorflow as tf

        self.task, self.model = task, model
        self.optimizer = _OptimizerView(optimizer)
        self.stop_training = False
        self.loss_metrics = task.build_metrics(training=True)
        self.step_seconds: list[float] = []  # each training step's wall time, the traced first one excluded
        self._train_iterator = None
        self._train_step = tf.function(lambda batch: task.train_step(batch, model, optimizer, self.loss_metrics),
                                       jit_compile=jit_compile)
        self._infer = tf.function(lambda images, labels: model(
            images, anchor_boxes=labels["anchor_boxes"], image_shape=labels["image_info"][:, 1, :], training=False))

    # -- what the runner reads of a Keras model --------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)

    def count_params(self) -> int:
        return int(self.model.count_params())

    @property
    def trainable_weights(self) -> list:
        return self.model.trainable_weights

    def save(self, path: str | Path) -> None:
        """Saves the weights at ``path`` (tf_keras' HDF5 weights format, every variable of every
        layer); rebuild the model from the run's config with ``lab.tasks.instance.model`` and
        ``model.load_weights(path)`` to use them.

        Raises:
            ValueError: a path ending in ".weights.h5", which tf_keras writes and reads in its
                Keras 3 style format: that one silently leaves out the RPN head's per-level
                BatchNorm variables of Model Garden's Mask R-CNN.
        """
        from lab.system import atomic

        if str(path).endswith(".weights.h5"):
            raise ValueError(f"Save a Mask R-CNN's weights under a name not ending in '.weights.h5' (received {path}): "
                             f"tf_keras would use a format that leaves out some of its variables. Use e.g. "
                             f"{self.WEIGHTS_FILE!r}.")
        with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
            # tf_keras warns about Model Garden's TensorFlow initialisers in its layer configs,
            # which weights files do not hold.
            warnings.filterwarnings("ignore", message=r"The `keras.initializers.serialize\(\)` API")
            self.model.save_weights(str(tmp), save_format="h5")

    # -- fitting ------------------------------------------------------------------------------------------

    def fit(self, x: Any, *, validation_data: EvalSet | None = None, initial_epoch: int = 0, epochs: int = 1,
            callbacks: Sequence[Any] = (), steps_per_epoch: int | None = None, **_: Any) -> Any:
        """Trains from epoch ``initial_epoch`` to ``epochs`` as ``keras.Model.fit`` does, calling
        the callbacks' hooks; returns Keras' History (``history`` maps each logged key to its
        values per epoch).

        Args:
            x: Model Garden's training input (repeating).
            validation_data: the validation split, scored after every epoch (``val_`` keys).
            steps_per_epoch: training steps in one epoch (required: the input repeats).
            Other ``keras.Model.fit`` arguments (verbose, shuffle, class_weight) do not apply.
        """
        import keras

        if not steps_per_epoch:
            raise ValueError("GardenModel.fit needs steps_per_epoch: Model Garden's training input repeats.")
        # Keras' History last: the callbacks add to a copy of each epoch's logs (epoch_seconds,
        # learning_rate), which only the callbacks see.
        history = keras.callbacks.History()
        callback_list = keras.callbacks.CallbackList([*callbacks, history], model=self)
        self.stop_training = False
        if self._train_iterator is None:
            self._train_iterator = iter(x)
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            for metric in self.loss_metrics:
                metric.reset_state()
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                self.optimizer.apply_schedule()
                started = time.perf_counter()
                loss = float(self._train_step(next(self._train_iterator))[self.task.loss])
                if self.optimizer.iterations.numpy() > 1:
                    self.step_seconds.append(time.perf_counter() - started)
                callback_list.on_train_batch_end(step, {"loss": loss})
                if self.stop_training:
                    break
            logs = {("loss" if metric.name == "total_loss" else metric.name): float(metric.result())
                    for metric in self.loss_metrics}
            if validation_data is not None and not self.stop_training:
                logs |= {f"val_{key}": value for key, value in self.score(validation_data).items()
                         if key in ("box_ap", "box_ap50", "mask_ap", "mask_ap50")}
            callback_list.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        callback_list.on_train_end()
        return history

    # -- predicting and scoring ----------------------------------------------------------------------------

    def predict(self, dataset: Any, count: int) -> list[Instances]:
        """The detections of every image of an evaluation input, in the original image's pixels.

        Boxes are scaled back from the resized input, and each detection's mask (Model Garden's
        28x28 mask in its box) is pasted into the full image and thresholded at 0.5, as Model
        Garden's own COCO evaluator does.

        Args:
            dataset: Model Garden's evaluation input.
            count: the number of images in the split (each ``source_id`` is an index below it).
        """
        from official.vision.ops import box_ops, mask_ops

        found: dict[int, Instances] = {}
        for images, labels in dataset:
            outputs = {key: np.asarray(value) for key, value in self._infer(images, labels).items()}
            info = np.asarray(labels["image_info"])
            for j, source_id in enumerate(np.asarray(labels["groundtruths"]["source_id"])):
                kept = int(outputs["num_detections"][j])
                height, width = (int(v) for v in info[j, 0])
                boxes = outputs["detection_boxes"][j, :kept] / np.tile(info[j, 2], 2)
                boxes = np.clip(boxes, 0, [height, width, height, width]).astype(np.float32)
                masks = (mask_ops.paste_instance_masks(outputs["detection_masks"][j, :kept],
                                                       box_ops.yxyx_to_xywh(boxes), height, width) > 0)
                found[int(source_id)] = Instances(boxes=boxes, classes=outputs["detection_classes"][j, :kept],
                                                  masks=masks.astype(np.uint8).reshape(kept, height, width),
                                                  scores=outputs["detection_scores"][j, :kept])
        missing = sorted(set(range(count)) - set(found))
        if missing:
            raise RuntimeError(f"The evaluation input gave no prediction for images {missing[:10]} of {count}: "
                               f"its source ids do not number the split's images.")
        return [found[i] for i in range(count)]

    def score(self, split: EvalSet) -> dict[str, Any]:
        """COCO box and mask AP of the split (``lab.tasks.instance.metrics.coco_scores``)."""
        from lab.tasks.instance.metrics import coco_scores

        return coco_scores(split.truth, self.predict(split.dataset, len(split.truth)), split.class_names)
