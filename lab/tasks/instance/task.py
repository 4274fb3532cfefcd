"""What an instance-segmentation run adds to the runner (``lab.runs.runner``): E7's task.

The runner's life of a run is unchanged (seeding, a refused configuration writing nothing, the
kit's callbacks, best weights, the record or the failure). This task loads the instance data,
writes it once as Model Garden's TFRecords (``lab.tasks.instance.tfrecords``, reused while the data is
the same), builds Model Garden's Mask R-CNN (``lab.tasks.instance.model``), hands the runner a
``GardenModel`` (``lab.tasks.instance.training``) to fit, and scores the restored best model with
pycocotools on the validation and test images.

Evaluation writes, besides the record's metrics (box and mask AP, AP50, AP75, per class):
``predictions/<split>_detections.json`` and ``<split>_truth.json`` (COCO results and ground
truth, re-scorable with pycocotools alone), ``plots/learning_curves.png``,
``plots/instances.png`` (predicted masks, boxes and scores beside the truth) and
``plots/per_class_ap.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from lab.system import atomic, paths
from lab.runs import plots
from lab.runs.callbacks import EpochLogLine
from lab.config import InstanceConfig
from lab.tasks.instance.extra import require_model_garden
from lab.tasks.instance.training import EvalSet, GardenModel
from lab.runs.runner import FitPlan, Phase

GENERATED_DATASET_SIZE = 128  # the generated set's side when dataset_size is not set


class InstanceTask:
    """E7's task for ``lab.runs.runner.run`` (see the module docstring)."""

    def load_data(self, config: InstanceConfig) -> Any:
        from lab.data.datasets.registry import find_source
        from lab.tasks.instance.data import load_instance_dataset

        options: dict[str, Any] = {}
        if find_source(config.dataset, "instance")[0].kind == "shapes":
            options["dataset_size"] = config.dataset_size or GENERATED_DATASET_SIZE
        elif config.dataset_size is not None:
            raise ValueError(f"dataset_size applies to the generated sets ('shapes', 'shapes_easy'), received "
                             f"dataset_size={config.dataset_size} with dataset={config.dataset!r}: Mask R-CNN resizes images to "
                             f"pipeline_size itself. Leave dataset_size unset.")
        if config.split_fractions is not None:
            options["split_fractions"] = config.split_fractions
        if str(config.dataset).startswith("coco:"):
            options["seed"] = config.seed
        data = load_instance_dataset(config.dataset, **options)
        if config.limit is not None:
            data = data.limit(config.limit, seed=config.seed)
        if data.name != config.dataset:
            data.source.setdefault("loaded_as", config.dataset)
        return data

    def check(self, config: InstanceConfig, data: Any) -> None:
        """Builds the configuration's Model Garden experiment (not the model), so that a sweep or a
        search refuses a value only the builder checks (an unknown backbone, ImageNet weights for
        a backbone without a checkpoint) before its first run."""
        from lab.tasks.instance.model import maskrcnn_experiment

        maskrcnn_experiment(data.num_classes, **config.model_options())

    def describe(self, config: InstanceConfig, data: Any) -> dict[str, Any]:
        return {"class_names": list(data.class_names), "model_options": config.model_options()}

    def plan(self, config: InstanceConfig, data: Any) -> FitPlan:
        require_model_garden()
        import tf_keras

        from lab.system.hardware import use_mixed_precision
        from lab.tasks.instance.model import build, maskrcnn_experiment, precision
        from lab.tasks.instance.tfrecords import export_instances

        if config.distribute is not None:
            raise ValueError(f"distribute={config.distribute!r}: Mask R-CNN runs train on one device for now (the "
                             "kit's Model Garden loop does not distribute its input). Leave distribute unset.")
        if not len(data.split("train")[0]) or not len(data.split("val")[0]):
            raise ValueError(f"Mask R-CNN needs training and validation images; {data.name} has "
                             f"{len(data.split('train')[0])} and {len(data.split('val')[0])}.")
        tf_keras.backend.clear_session()
        # tf_keras draws each unseeded initialiser's seed from its own generator, which Keras 3's
        # set_random_seed (the runner's seeding) does not reset: without this, a second run in the
        # same process (a sweep, a notebook) started from other weights than the first.
        tf_keras.utils.set_random_seed(config.seed)
        experiment = maskrcnn_experiment(data.num_classes, **config.model_options())
        records = export_instances(data, paths.data_dir() / "instance-records" /
                                   f"{_safe(data.name)}-{data.content_hash()[:16]}", verbose=bool(config.verbose))
        dtype = "float32"
        if use_mixed_precision(config.mixed_precision):
            dtype = "float16" if _gpu() else "bfloat16"
        _set_inputs(experiment, config, records, dtype)
        with precision(config.mixed_precision), quiet_tensorflow():
            task, model, facts = build(experiment, config.weights)
            train, val = task.build_inputs(experiment.task.train_data), task.build_inputs(experiment.task.validation_data)
        optimizer = _optimizer(config, dtype)
        fitted = GardenModel(task, model, optimizer, jit_compile=config.jit_compile)
        steps = math.ceil(len(data.split("train")[0]) / config.batch_size)
        return FitPlan(model=fitted, train=train, val=EvalSet(val, data.split("val")[1], data.class_names),
                       phases=[Phase(epochs=config.epochs, fitted=fitted, steps_per_epoch=steps)],
                       checkpoint=False, model_file=GardenModel.WEIGHTS_FILE, facts={**facts, "steps_per_epoch": steps, "tfrecords": str(records.directory),
                                                "tfrecords_reused": records.reused},
                       state={"experiment": experiment, "task": task, "records": records})

    def chance(self, config: InstanceConfig, data: Any) -> dict[str, float]:
        return {}  # no accuracy to compare with chance: only a non-finite or growing loss is divergence

    def log_line(self, epochs: int) -> keras.callbacks.Callback:
        return EpochLogLine(epochs, print_fn=print, fields=(("TrainLoss", "loss", False), ("ValBoxAP", "val_box_ap", False),
                                                            ("ValMaskAP", "val_mask_ap", False)))

    def evaluate(self, plan: FitPlan, config: InstanceConfig, data: Any, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        from lab.tasks.instance.metrics import coco_detections, coco_ground_truth, coco_scores
        from lab.tasks.instance.plots import instance_predictions, per_class_ap

        fitted: GardenModel = plan.model
        experiment, task, records = plan.state["experiment"], plan.state["task"], plan.state["records"]
        results: dict[str, Any] = {"class_names": list(data.class_names)}
        if fitted.step_seconds:
            results["seconds_per_step"] = float(sum(fitted.step_seconds) / len(fitted.step_seconds))
        shown = None
        for split in ("val", "test"):
            images, truth = data.split(split)
            if not len(images):
                continue  # a COCO set without a test split
            if split == "val":
                dataset = plan.val.dataset
            else:
                with quiet_tensorflow():
                    dataset = task.build_inputs(experiment.task.validation_data.replace(
                        input_path=records.input_path("test")))
            predicted = fitted.predict(dataset, len(truth))
            scores = coco_scores(truth, predicted, data.class_names)
            results |= {f"{split}_{key}": value for key, value in _flat(scores).items()}
            folder = run_path / "predictions"
            atomic.write_json(folder / f"{split}_truth.json", coco_ground_truth(truth, data.class_names))
            atomic.write_text(folder / f"{split}_detections.json", json.dumps(coco_detections(predicted)))
            shown = (split, images, truth, predicted, scores)
        split, images, truth, predicted, scores = shown
        best = fit_info.get("best_epoch")
        plots.save(plots.learning_curves(history, title=config.name or "maskrcnn", best_epoch=best,
                                         metric=config.monitor.removeprefix("val_")),
                   run_path / "plots" / "learning_curves.png")
        plots.save(instance_predictions(images, truth, predicted, data.class_names),
                   run_path / "plots" / "instances.png")
        plots.save(per_class_ap(scores, data.class_names, title=f"AP per class ({split})"),
                   run_path / "plots" / "per_class_ap.png")
        return results


def _flat(scores: dict[str, Any]) -> dict[str, Any]:
    """The scores with each per-class dict spread into ``<metric>_<class>`` keys (as E6 names its
    per-class IoU), so that a record's metrics stay flat columns of a results table."""
    from lab.runs.evaluation import metric_key

    flat = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            flat |= {f"{key.removesuffix('_per_class')}_{metric_key(name)}": ap for name, ap in value.items()}
        else:
            flat[key] = value
    return flat


def _set_inputs(experiment: Any, config: InstanceConfig, records: Any, precision: str) -> None:
    """Points Model Garden's training and validation inputs at the exported records."""
    task = experiment.task
    train = task.train_data
    train.input_path = records.input_path("train")
    train.global_batch_size = config.batch_size
    train.shuffle_buffer_size = max(1, records.counts["train"])
    train.seed = config.seed
    train.deterministic = config.deterministic
    train.dtype = precision
    train.parser.aug_rand_hflip = bool(config.augment and config.aug_flip == "horizontal")
    train.parser.aug_scale_min = 1.0 - config.aug_zoom if config.augment else 1.0
    train.parser.aug_scale_max = 1.0 + config.aug_zoom if config.augment else 1.0
    validation = task.validation_data  # the test split reads the same way (``evaluate``)
    validation.input_path = records.input_path("val")
    validation.global_batch_size = config.batch_size
    validation.drop_remainder = False
    validation.deterministic = True
    validation.dtype = precision


def _optimizer(config: InstanceConfig, precision: str) -> Any:
    """SGD with momentum (Model Garden's Mask R-CNN recipe) or Adam, at the run's rate; loss
    scaling for float16."""
    import tf_keras

    if config.optimizer == "sgd":
        optimizer = tf_keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    else:
        optimizer = tf_keras.optimizers.Adam(learning_rate=config.learning_rate)
    if precision == "float16":
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def _gpu() -> bool:
    from lab.system.hardware import gpus

    return bool(gpus())


def _safe(name: str) -> str:
    """A dataset name as a folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's Python warnings held back while Model Garden builds its model and inputs: its
    parser calls APIs deprecated since TensorFlow 2 (``map_fn``'s ``dtype``), and their warnings
    tell a student nothing they can act on. Errors still show."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


INSTANCE = InstanceTask()
