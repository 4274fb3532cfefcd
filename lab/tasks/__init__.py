"""Every task by name, in one registry: ``TASKS``, like ``lab.models.MODELS``.

A task is what a run trains its model to do. Its entry says everything the kit needs to know of
it, in one place: the configuration class, the runner's plug-in (``lab.runs.runner.Task``: data,
model, fit plan, evaluation and plots), the monitors that may pick the best epoch, the summary
columns of its tables, the figures its runs draw and the per-class scores of its report.
``lab.run(config)`` (``lab.runs.training.run``) trains any task through it; sweeps, searches, the
report and TensorBoard ask it too, and none names a configuration class.

    task            config              plug-in                               entry point
    classification  RunConfig           lab.tasks.classification.CLASSIFICATION     lab.runs.training.train
    segmentation    SegmentationConfig  lab.tasks.segmentation.tasks.SEGMENTATION   lab.tasks.segmentation.train_segmentation
    reconstruction  SegmentationConfig  lab.tasks.segmentation.tasks.RECONSTRUCTION lab.tasks.segmentation.train_autoencoder
    instance        InstanceConfig      lab.tasks.instance.task.INSTANCE            lab.tasks.instance.train_instance

The model registry says which task trains each model (``lab.models.MODELS``), so a
configuration's task is its model's (``lab.config.config_for`` makes the right configuration
from a flat dict). The registry sits below everything it names: configuration classes,
plug-ins and functions are named as text and imported when used, so reading it (as a
configuration does to check its monitor) loads no TensorFlow, and the instance task's optional
extra is imported only when one of its runs starts.

Adding a task: a configuration class in ``lab.config``, a plug-in that implements
``lab.runs.runner.Task``, its models in ``lab.models.MODELS``, and an entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

# The figures a run's record holds in plots/, with the report's caption, in report order.
_CURVES = {"learning_curves.png": "Learning curves of the best run (best epoch marked)"}


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """One task: what trains it, what it records and how its results are shown.

    Attributes:
        name: the task's name, as records hold it (``config.json``'s ``task``).
        config: the name of its configuration class in ``lab.config``.
        plugin: ``"module:attribute"`` of its runner plug-in (``lab.runs.runner.Task``).
        entry_point: the function users call to train one, named in errors.
        monitors: what may pick the best epoch (restored, checkpointed, early stopping) and
            its direction; the first is the default.
        summary_columns: the metrics its results tables show, in order (those present).
        figures: the plots its runs write into ``plots/`` and their captions in a report.
        images: the figures TensorBoard shows as images (what the model predicts, not what the
            scalars already show), with their descriptions there.
        per_class: ``"module:function"`` of the report's per-class test scores of one run
            (``(table or None, where it comes from)``), or None when the task has no classes.
        compares_efficiency: the report compares models' training seconds per accuracy point.
        defaults: configuration values its entry point starts from (an autoencoder model).
        requires: ``"module:function"`` called before a run starts, which raises with how to
            install what the task needs (an optional extra), or None.
        prepare: ``"module:function"`` that turns a configuration into the one that runs
            (classification: ``weights="pretrain-offline"`` becomes the backbone pretrained
            offline, ``lab.tasks.pretraining``), or None.
    """

    name: str
    config: str
    plugin: str
    entry_point: str
    monitors: Mapping[str, str]
    summary_columns: tuple[str, ...]
    figures: Mapping[str, str]
    images: Mapping[str, str] = dataclasses.field(default_factory=dict)
    per_class: str | None = None
    compares_efficiency: bool = False
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    requires: str | None = None
    prepare: str | None = None

    @property
    def default_monitor(self) -> str:
        return next(iter(self.monitors))

    @property
    def config_class(self) -> type:
        """The configuration class (imported now: ``lab.config`` loads no TensorFlow)."""
        return getattr(importlib.import_module("lab.config"), self.config)

    @property
    def runner_task(self) -> Any:
        """The runner's plug-in (imported now: it loads TensorFlow and the task's libraries)."""
        return _resolve(self.plugin)

    def require(self) -> None:
        """Raises ImportError, saying how to install it, when what the task needs is missing."""
        if self.requires:
            _resolve(self.requires)()

    def prepared(self, config: Any) -> Any:
        """The configuration as it will run (see ``prepare``)."""
        return _resolve(self.prepare)(config) if self.prepare else config

    def per_class_scores(self, run: Any) -> tuple[Any, str]:
        """The report's per-class test scores of one of its runs, and where they come from."""
        if self.per_class is None:
            return None, f"A {self.name} run has no classes."
        return _resolve(self.per_class)(run)


TASKS: dict[str, TaskEntry] = {entry.name: entry for entry in (
    TaskEntry(
        "classification", "RunConfig", "lab.tasks.classification:CLASSIFICATION", "lab.runs.training.train",
        monitors={"val_loss": "min", "val_accuracy": "max"},
        summary_columns=("status", "best_epoch", "epochs_run", "train_accuracy", "val_accuracy", "val_loss",
                         "val_macro_auc", "test_accuracy", "test_loss", "test_macro_auc", "seconds_per_epoch"),
        figures={**_CURVES,
                 "confusion_matrix.png": "Test confusion matrix of the best run (rows: true class)",
                 "sample_predictions.png": "Test predictions of the best run: green right, red wrong (with the "
                                           "true class)",
                 "top_losses.png": "The best run's test images with the highest loss: predicted class and its "
                                   "probability, true class, loss (red wrong, green right)"},
        images={"confusion_matrix": "Test confusion matrix",
                "sample_predictions": "Test images with their true and predicted classes"},
        per_class="lab.report.tables:classification_per_class", compares_efficiency=True,
        prepare="lab.tasks.pretraining:resolve_weights"),
    TaskEntry(
        "segmentation", "SegmentationConfig", "lab.tasks.segmentation.tasks:SEGMENTATION",
        "lab.tasks.segmentation.train_segmentation",
        monitors={"val_loss": "min", "val_accuracy": "max", "val_mean_iou": "max", "val_mean_dice": "max"},
        summary_columns=("status", "all_background", "best_epoch", "epochs_run", "val_loss", "val_mean_iou",
                         "test_pixel_accuracy", "test_mean_iou", "test_mean_dice", "test_foreground_iou",
                         "seconds_per_epoch"),
        figures={**_CURVES,
                 "iou_dice_curves.png": "Pixel accuracy, IoU and Dice per epoch",
                 "confusion_matrix.png": "Test pixel confusion matrix of the best run (rows: true class)",
                 "predicted_masks.png": "Test images, true and predicted masks, wrong pixels in red",
                 "per_class_scores.png": "IoU and Dice per class on the test set"},
        images={"predicted_masks": "Test images with their true and predicted masks"},
        per_class="lab.report.tables:segmentation_per_class"),
    TaskEntry(
        "reconstruction", "SegmentationConfig", "lab.tasks.segmentation.tasks:RECONSTRUCTION",
        "lab.tasks.segmentation.train_autoencoder",
        monitors={"val_loss": "min"},
        summary_columns=("status", "best_epoch", "epochs_run", "val_loss", "test_loss", "test_mse", "test_psnr",
                         "test_denoised_psnr", "seconds_per_epoch"),
        figures={**_CURVES, "reconstructions.png": "Test reconstructions"},
        images={"reconstructions": "Test images and their reconstructions"},
        defaults={"model": "autoencoder"}),
    TaskEntry(
        "instance", "InstanceConfig", "lab.tasks.instance.task:INSTANCE", "lab.tasks.instance.train_instance",
        # No validation loss (Model Garden computes its losses only while training): the best
        # epoch is the one with the best validation COCO AP.
        monitors={"val_mask_ap": "max", "val_box_ap": "max", "val_mask_ap50": "max"},
        summary_columns=("status", "best_epoch", "epochs_run", "val_box_ap", "val_mask_ap", "test_box_ap",
                         "test_box_ap50", "test_mask_ap", "test_mask_ap50", "seconds_per_step", "seconds_per_epoch"),
        figures={**_CURVES},
        requires="lab.tasks.instance.extra:require_model_garden"),
)}


def task_entry(name: str) -> TaskEntry:
    """The registry entry of a task; an unknown name lists the valid ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def tasks_of(config_class: type) -> tuple[str, ...]:
    """The tasks whose runs a configuration class describes (SegmentationConfig: two)."""
    return tuple(name for name, entry in TASKS.items() if entry.config == config_class.__name__)


def _resolve(path: str) -> Any:
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)
