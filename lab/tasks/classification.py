"""Classification, as the runner's task: what a classifier's run does that others do not.

The runner (``lab.runs.runner``) owns the life of the run; this module supplies the model (a
registered builder, a saved model with a new output layer, or a transfer model), the
cross-entropy and accuracy, the image pipelines, and the evaluation (loss and accuracy on every
split, macro AUC, the confusion matrix and sample predictions). A transfer model can fit in
three ways, all as phases of the runner: on images, on cached backbone features (a frozen
backbone: the head trains on features computed once), or in progressive-unfreezing phases.
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lab.runs import plots
from lab.config import RunConfig
from lab.data.datasets import Dataset, load_data
from lab.data.datasets.streaming import choose_data_path, load_streamed
from lab.runs.evaluation import binary_threshold_metrics, classification_metrics, confusion_matrix, per_class_metrics
from lab.models.features import Features, compute_features
from lab.models.losses import SparseCategoricalCrossentropy, accuracy
from lab.models import build_model
from lab.models.backbones import find_backbone
from lab.models.transfer import head_model, set_trainable, transfer_summary
from lab.config.optimizers import make_optimizer
from lab.data.pipeline import make_augmenter, make_pipeline, mix_batches
from lab.runs.runner import FitPlan, Phase, compile_options, epoch_line
from lab.data.tfrecord import StreamedDataset


class Classification:
    """The runner's task for ``RunConfig`` runs (see ``lab.runs.runner.Task``)."""

    def check(self, config: RunConfig, data: Dataset) -> None:
        """``check_model``: builds the model once (transfer and saved models are skipped); and
        refuses a decision threshold for a task that is not binary."""
        check_binary_threshold(config.decision_threshold, data.num_classes)
        check_model(config, data)

    def load_data(self, config: RunConfig) -> Dataset:
        """The run's data: loaded into memory, or converted to TFRecords and streamed
        (``config.data_path``; ``lab.data.datasets.streaming.choose_data_path`` says which and why)."""
        path, reason = choose_data_path(config)
        if path == "stream":
            return load_streamed(config, reason=reason, verbose=config.verbose)
        return _in_memory(load_data(config), reason)

    def adopt_data(self, config: RunConfig, data: Dataset) -> Dataset:
        """Data passed to the run already loaded: streamed from TFRecords if the configuration
        says so (exported there first), used as it is otherwise."""
        if isinstance(data, StreamedDataset):
            return data
        path, reason = choose_data_path(config, data)
        if path == "stream":
            return load_streamed(config, data=data, reason=reason, verbose=config.verbose)
        return _in_memory(data, reason)

    def describe(self, config: RunConfig, data: Dataset) -> dict[str, Any]:
        return {"input_shape": list(input_shape_for(data, config))}

    def chance(self, config: RunConfig, data: Dataset) -> dict[str, float]:
        """Chance is the better of a uniform guess and the majority class of the validation
        split; "clearly above" is three binomial standard errors of that accuracy on the
        validation images (at least 0.01), so a run at chance does not pass by luck. On a split so
        small that not even a perfect score passes (two images), no run is judged stalled."""
        counts = np.asarray(data.class_counts("val"), dtype=float)
        total = max(counts.sum(), 1.0)
        chance = max(1.0 / data.num_classes, counts.max() / total)
        margin = max(0.01, 3.0 * math.sqrt(chance * (1.0 - chance) / total))
        return {"chance_accuracy": chance, "accuracy_margin": margin, "baseline_loss": math.log(data.num_classes),
                "val_examples": int(counts.sum())}

    def log_line(self, epochs: int) -> keras.callbacks.Callback:
        return epoch_line(epochs)

    def plan(self, config: RunConfig, data: Dataset) -> FitPlan:
        check_binary_threshold(config.decision_threshold, data.num_classes)
        model = build_for_run(config, data, input_shape_for(data, config))
        compile_model(model, config)
        augmenter = None
        if config.augment:
            augmenter = make_augmenter(flip=config.aug_flip, rotation=config.aug_rotation, zoom=config.aug_zoom,
                                       translation=config.aug_translation, contrast=config.aug_contrast,
                                       seed=config.seed)
        class_weight = data.class_weights() if config.class_weighting == "balanced" else None
        cache_note = feature_cache_decision(config, streamed=isinstance(data, StreamedDataset))
        facts: dict[str, Any] = {}
        if config.model == "transfer":
            facts["feature_cache"] = cache_note
        if cache_note is None:
            return _feature_plan(model, config, data, augmenter, class_weight, facts)
        train_ds, val_ds = _image_pipelines(config, data, augmenter)
        if config.mixup or config.cutmix:
            train_ds = mix_batches(train_ds, num_classes=data.num_classes, mixup=config.mixup, cutmix=config.cutmix,
                                   seed=config.seed, deterministic=config.deterministic)
        if config.unfreeze_schedule:
            phases = [_unfreezing_phase(model, config, index, unfreeze, epochs) for index, (unfreeze, epochs)
                      in enumerate(zip(config.unfreeze_schedule, config.phase_epochs, strict=True))]
            _check_schedule(model, config)
        else:
            phases = [Phase(config.epochs, model)]
        return FitPlan(model, train_ds, val_ds, phases, class_weight=class_weight, facts=facts)

    def evaluate(self, plan: FitPlan, config: RunConfig, data: Dataset, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """Evaluates the restored best model on every split, saves predictions and plots.

        With cached features the head is evaluated on them: the same numbers as the whole model
        on the images (the frozen backbone is deterministic in inference mode), without three
        more passes through it.

        With ``config.tta`` the predicted probabilities (test metrics from predictions, per-class
        scores, ``val_macro_auc``, the binary threshold, ``predictions.npz``) are the mean over
        the image and its flips, through the whole model; losses and ``train``/``val``
        accuracies stay without it, and ``test_accuracy_no_tta``/``test_macro_auc_no_tta`` are
        recorded beside. A binary task also records the accuracy at the threshold chosen on the
        validation split (Youden's J) beside the 0.5 one, and plots the test ROC curve; with
        ``decision_threshold="validation"`` the test confusion matrix and prediction grid use
        that threshold (``decision_threshold`` in the metrics: the one applied, or None).
        """
        features: Features | None = plan.state
        results: dict[str, Any] = {}
        if config.model == "transfer":
            results["transfer"] = transfer_summary(plan.model)
        batch_size = max(config.batch_size, 256)
        common = dict(batch_size=batch_size, pipeline_size=config.pipeline_size, input_scaling=config.input_scaling,
                      training=False, cache=False)
        evaluated = plan.model if features is None else plan.phases[0].fitted

        def inputs(split: str, labels: bool = True, images: bool = False) -> tf.data.Dataset:
            if isinstance(data, StreamedDataset):  # read from the shards, never held whole
                # The shards are the cache; nothing else is kept between epochs.
                ds = data.pipeline(split, **{key: value for key, value in common.items() if key != "cache"})
                return ds if labels else ds.map(lambda images, _labels: images)
            x, y = data.split(split)
            if features is None or images:
                return make_pipeline(x, y if labels else None, **common)
            tensors = (features.split(split), y) if labels else features.split(split)
            return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)

        for split in ("train", "val", "test"):
            loss, accuracy = evaluated.evaluate(inputs(split), verbose=0)
            results[f"{split}_loss"], results[f"{split}_accuracy"] = float(loss), float(accuracy)
        def probabilities(split: str) -> np.ndarray:
            if not config.tta:
                return predict_probabilities(evaluated, inputs(split, labels=False))
            views = [predict_probabilities(plan.model, inputs(split, labels=False, images=True).map(flip))
                     for flip in tta_flips(config.tta)]
            return np.mean(views, axis=0).astype(np.float32)

        y_prob = probabilities("test")
        y_true = data.y_test
        finite = bool(np.isfinite(y_prob).all())
        if finite:
            results |= classification_metrics(y_true, y_prob, prefix="test_")
            val_prob = probabilities("val")
            results["val_macro_auc"] = classification_metrics(data.y_val, val_prob)["macro_auc"]
            results["test_per_class"] = per_class_metrics(y_true, y_prob.argmax(axis=1), data.class_names)
            if config.tta:
                plain = classification_metrics(y_true, predict_probabilities(evaluated, inputs("test", labels=False)))
                results |= {"tta": config.tta, "tta_views": len(tta_flips(config.tta)),
                            "test_accuracy_no_tta": plain["accuracy"], "test_macro_auc_no_tta": plain["macro_auc"]}
            if data.num_classes == 2:
                results |= binary_threshold_metrics(data.y_val, val_prob, y_true, y_prob)
        np.savez_compressed(run_path / "predictions.npz", y_true=y_true, y_prob=y_prob,
                            class_names=np.asarray(data.class_names))
        y_pred = None
        if finite:
            y_pred, results["decision_threshold"] = decide(y_prob, config.decision_threshold,
                                                           results.get("val_threshold"))
        _plot(config, data, history, fit_info, run_path, y_prob if finite else None, y_pred)
        if finite and data.num_classes == 2:
            plots.save(plots.roc_curve(y_true, y_prob[:, 1], threshold=results.get("val_threshold"),
                                       title=f"Test ROC: {config.name or config.model} on {data.name}"),
                       run_path / "plots" / "roc.png")
        return results


CLASSIFICATION = Classification()


def predict_probabilities(model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    """``model.predict(dataset)``, as float32: one compiled forward pass per batch, outputs gathered.

    The same calls as ``predict_step`` (``model(images, training=False)``, compiled as the model
    was, on the same batches), so the probabilities are bit for bit those of ``Model.predict``.
    Why not ``Model.predict``: on 224x224x3 batches of 256 streamed from TFRecords, Keras 3.15's
    predict loop held about 1.5 GB more than this loop (peak 3.9-4.0 GB against 2.4 GB, kit CNN,
    TF 2.21 CPU), built up over its first ~8 batches and kept afterwards; a split of one or two
    batches never reached it, so a streamed run's peak memory grew with its data
    (benchmarks/streaming_memory.py). A distributed model keeps ``Model.predict``, which splits
    each batch over the replicas.

    Args:
        model: a built Keras model with one output.
        dataset: batches of inputs (no labels).

    Returns:
        The outputs of every batch, concatenated: (N, classes) float32.
    """
    if tf.distribute.has_strategy() or getattr(model, "_distribute_strategy", None) is not None:
        return model.predict(dataset, verbose=0).astype(np.float32)
    forward = _FORWARD.get(model)
    if forward is None or model.run_eagerly:
        forward = _forward_function(model)
        _FORWARD[model] = forward
    outputs = [np.asarray(forward(images)) for images in dataset]
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs).astype(np.float32)


# One compiled forward pass per model, as Keras keeps one predict function per model: a new
# tf.function per call would trace again on every split (and TF warns about it).
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_function(model: keras.Model):
    """``model(images, training=False)``, compiled as ``Model.predict`` compiles it."""
    # A weak reference: the cache's value must not keep its key (the model) alive.
    reference = weakref.ref(model)
    training_arg = {"training": False} if getattr(model, "_call_has_training_arg", True) else {}

    def forward(images):
        return reference()(images, **training_arg)

    if model.run_eagerly:
        return forward
    return tf.function(forward, reduce_retracing=True, jit_compile=bool(model.jit_compile))


def tta_flips(mode: str) -> list:
    """The views test-time augmentation averages over: the image itself and its flips.

    Args:
        mode: "horizontal" (2 views), "vertical" (2) or "horizontal_and_vertical" (4: both
            mirrors and the 180-degree turn), the names of ``aug_flip``.

    Returns:
        Functions of an NHWC image batch.
    """
    views = {"horizontal": [_mirror_left_right], "vertical": [_mirror_up_down],
             "horizontal_and_vertical": [_mirror_left_right, _mirror_up_down, _turn_half]}
    if mode not in views:
        raise ValueError(f"tta must be one of {', '.join(repr(m) for m in views)} or None, received tta={mode!r}.")
    return [_unchanged, *views[mode]]


# Named functions, not lambdas: tf.data's autograph cannot tell lambdas on one line apart.
def _unchanged(images):
    return images


def _mirror_left_right(images):
    return tf.reverse(images, axis=[2])


def _mirror_up_down(images):
    return tf.reverse(images, axis=[1])


def _turn_half(images):
    return tf.reverse(images, axis=[1, 2])


def _in_memory(data: Dataset, reason: str) -> Dataset:
    """Marks data as read from memory, with why (the record's ``data.access``)."""
    data.access = {"path": "memory", "reason": reason}
    return data


def _sample_predictions(data: Dataset | StreamedDataset, y_pred: np.ndarray, *, seed: int, count: int = 24):
    """The sample grid of test predictions; streamed data reads only the images shown."""
    if not isinstance(data, StreamedDataset):
        return plots.sample_predictions(data.x_test, data.y_test, y_pred, data.class_names, seed=seed, count=count)
    # The same images the in-memory grid would show (sample_predictions draws them so), read alone.
    chosen = np.random.default_rng(seed).choice(len(data.y_test), size=min(count, len(data.y_test)), replace=False)
    return plots.sample_predictions(data.images("test", chosen), data.y_test[chosen], y_pred[chosen],
                                    data.class_names, seed=seed, count=count)


def _top_losses(data: Dataset | StreamedDataset, y_prob: np.ndarray, *, title: str, count: int = 16):
    """The test images with the highest loss (fastai's plot_top_losses); streamed data reads only those."""
    if not isinstance(data, StreamedDataset):
        return plots.top_losses(data.x_test, data.y_test, y_prob, data.class_names, count=count, title=title)
    chosen = np.sort(plots.top_loss_order(data.y_test, y_prob, count))
    return plots.top_losses(data.images("test", chosen), data.y_test[chosen], y_prob[chosen], data.class_names,
                            count=count, title=title)


def decide(y_prob: np.ndarray, rule: str | None, val_threshold: float | None) -> tuple[np.ndarray, float | None]:
    """The predicted classes: the largest probability, or with ``rule="validation"`` a binary
    task's positive class where its probability reaches the validation threshold.

    Returns:
        The classes and the threshold applied: None for argmax, which is also what a validation
        split without a threshold (one class only: ``val_threshold`` NaN) leaves.

    Raises:
        ValueError: an unknown rule, or "validation" for a task that is not binary.
    """
    if rule is None:
        return y_prob.argmax(axis=1), None
    if rule != "validation":
        raise ValueError(f"decision_threshold must be None or 'validation', received decision_threshold={rule!r}.")
    check_binary_threshold(rule, y_prob.shape[1])
    if val_threshold is None or not np.isfinite(val_threshold):
        return y_prob.argmax(axis=1), None
    return (y_prob[:, 1] >= val_threshold).astype(np.int64), float(val_threshold)


def check_binary_threshold(rule: str | None, num_classes: int) -> None:
    """Refuses ``decision_threshold="validation"`` for a task that is not binary (before training)."""
    if rule is not None and num_classes != 2:
        raise ValueError(f"decision_threshold={rule!r} applies to binary tasks; this one has {num_classes} classes. "
                         "Leave decision_threshold=None.")


def _plot(config: RunConfig, data: Dataset, history: pd.DataFrame, fit_info: dict, run_path: Path,
          y_prob: np.ndarray | None, y_pred: np.ndarray | None = None) -> None:
    title = f"{config.name or config.model} on {data.name}"
    plot_dir = run_path / "plots"
    plots.save(plots.learning_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
               plot_dir / "learning_curves.png")
    if y_prob is not None:
        y_pred = y_prob.argmax(axis=1) if y_pred is None else y_pred
        matrix = confusion_matrix(data.y_test, y_pred, data.num_classes)
        plots.save(plots.confusion_matrix(matrix, data.class_names, title=f"Test confusion matrix: {title}"),
                   plot_dir / "confusion_matrix.png")
        plots.save(_sample_predictions(data, y_pred, seed=config.seed), plot_dir / "sample_predictions.png")
        plots.save(_top_losses(data, y_prob, title=f"Highest-loss test images: {title}"), plot_dir / "top_losses.png")
    plots.save(plots.class_distribution({s: data.class_counts(s) for s in ("train", "val", "test")},
                                        data.class_names, title=f"Class distribution: {data.name}"),
               plot_dir / "class_distribution.png")


# -- the model -------------------------------------------------------------------------------------


def compile_model(model: keras.Model, config: RunConfig, *, learning_rate: float | None = None) -> keras.Model:
    """Compiles a model as every classification run does: the config's optimizer, the
    (smoothed) sparse cross-entropy, accuracy, XLA and steps per call; the optimizer keeps an
    average of the weights with ``config.ema``. Call it inside the strategy scope.

    A transfer model's backbone gets ``config.backbone_lr_factor`` times the learning rate;
    ``learning_rate`` overrides the config's (a progressive-unfreezing phase)."""
    backbone_variables = None
    if config.model == "transfer" and config.backbone_lr_factor != 1.0 and _has_backbone(model):
        backbone_variables = find_backbone(model)[0].trainable_weights
    optimizer = make_optimizer(config.optimizer, learning_rate or config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay, scaled_variables=backbone_variables,
                               factor=config.backbone_lr_factor, ema=config.ema, ema_momentum=config.ema_momentum)
    # Keras resolves "accuracy" once, from the training labels' shape: mixed (soft) training
    # labels would make it the categorical accuracy, wrong on validation's integer labels.
    metric = keras.metrics.MeanMetricWrapper(accuracy, name="accuracy") if config.mixup or config.cutmix \
        else "accuracy"
    model.compile(optimizer=optimizer, loss=SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=[metric], **compile_options(config))
    return model


def _has_backbone(model: keras.Model) -> bool:
    """False for the head-only model the feature cache trains."""
    try:
        find_backbone(model)
    except ValueError:
        return False
    return True


def input_shape_for(data: Dataset, config: RunConfig) -> tuple[int, int, int]:
    """The model's input shape: the data's, resized to ``config.pipeline_size`` if set."""
    height, width, channels = data.input_shape
    if config.pipeline_size:
        height = width = config.pipeline_size
    return height, width, channels


def build_for_run(config: RunConfig, data: Dataset, input_shape) -> keras.Model:
    """The model a config describes (built, not compiled), for ``data``'s classes."""
    if config.init_from:
        return model_from_saved(config.init_from, data.num_classes, unfreeze=config.unfreeze)
    options = config.model_options()
    if config.model == "transfer":
        # The model rescales its input to [0, 255] for the backbone's own preprocessing.
        options["pixel_scale"] = 255.0 if config.input_scaling == "unit" else 1.0
        if config.unfreeze_schedule:
            options["unfreeze"] = config.unfreeze_schedule[0]
    return build_model(config.model, input_shape, data.num_classes, **options)


def check_model(config: RunConfig, data: Dataset) -> None:
    """Builds the configuration's model once and throws it away, so that a value only the
    builder refuses (``normalization="bn"``, a model too deep for the image) stops a sweep or a
    search before its first run rather than in the middle. Transfer models and saved models are
    skipped: building a pretrained backbone per candidate costs too much, and their runs are
    refused before anything is written anyway."""
    if config.model == "transfer" or config.init_from:
        return
    build_model(config.model, input_shape_for(data, config), data.num_classes, **config.model_options())
    keras.backend.clear_session()


def model_from_saved(source: str | Path, num_classes: int, *, unfreeze: int | str | None = "all") -> keras.Model:
    """Loads a saved model and gives it a new output layer for ``num_classes`` classes.

    Args:
        source: a run folder (its ``model.keras``) or a ``.keras`` file.
        num_classes: classes of the new task.
        unfreeze: "all" (or None) fine-tunes every layer; 0 freezes everything but the new
            output layer (frozen BatchNorm layers then run in inference mode, as they should).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}: init_from takes a run folder with a model.keras "
                                "(runs save one unless save_model=False) or a .keras file.")
    base = keras.models.load_model(path, compile=False)
    try:
        # A transfer model's softmax follows its "logits" layer: replace both.
        output = "logits" if any(layer.name == "logits" for layer in base.layers) else "predictions"
        features = base.get_layer(output).input
    except ValueError as error:
        raise ValueError(f"{path} has no layer named 'predictions' to replace; the kit's builders name "
                         "their output layer so.") from error
    if unfreeze == 0:
        for layer in base.layers:
            layer.trainable = False
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(base.inputs, outputs, name=f"{base.name}_retargeted")


# -- the three ways to fit --------------------------------------------------------------------------


def feature_cache_decision(config: RunConfig, *, streamed: bool | None = None) -> str | None:
    """None when a run trains its head on cached features, otherwise why it does not.

    Args:
        config: the run's configuration.
        streamed: whether its data is streamed from TFRecords (None: as ``tfrecord_dir`` and
            ``data_path="stream"`` say; ``data_path="auto"`` is decided when the data loads).
    """
    if config.model != "transfer":
        return "off: not a transfer model"
    if config.feature_cache is None:
        return "off: feature_cache=None"
    if config.unfreeze_schedule or (config.unfreeze or 0) != 0:
        return "off: backbone stages train, so their features change every step"
    if config.distribute:
        return "off: distributed runs pass images through the backbone"
    if config.mixup or config.cutmix:
        return "off: mixup/cutmix mix the images of every batch"
    if config.balanced_sampling:
        return "off: balanced_sampling draws the training images by class"
    if config.augment and config.feature_cache_passes == 1:
        return ("off: augmentation changes the images every epoch (set feature_cache_passes > 1 to cache "
                "that many augmented passes)")
    if streamed or (streamed is None and (config.tfrecord_dir or config.data_path == "stream")):
        return "off: streaming from TFRecords"
    return None


def _feature_plan(model: keras.Model, config: RunConfig, data: Dataset, augmenter, class_weight,
                  facts: dict[str, Any]) -> FitPlan:
    """The head trains alone on backbone features computed once (exact for a frozen backbone)."""
    features = compute_features(model, data, cache=config.feature_cache, passes=config.feature_cache_passes,
                                augmenter=augmenter, batch_size=max(config.batch_size, 256),
                                input_scaling=config.input_scaling, pipeline_size=config.pipeline_size,
                                seed=config.seed)
    head = compile_model(head_model(model), config)
    train_ds, val_ds = _feature_pipelines(features, data, config)
    steps = None if features.train.shape[0] == 1 else math.ceil(features.train.shape[1] / config.batch_size)
    facts["feature_cache"] = {
        "mode": config.feature_cache, "hit": features.hit, "passes": config.feature_cache_passes,
        "seconds": features.seconds, "key": features.key,
        "note": "head trained on cached backbone features" + (
            f"; {config.feature_cache_passes} augmented passes, epoch e uses pass e % "
            f"{config.feature_cache_passes}" if config.feature_cache_passes > 1 else ""),
    }
    return FitPlan(model, train_ds, val_ds, [Phase(config.epochs, head, steps_per_epoch=steps)],
                   class_weight=class_weight, checkpoint=False, setup_seconds=features.seconds, facts=facts,
                   state=features)


def _unfreezing_phase(model: keras.Model, config: RunConfig, index: int, unfreeze: int | str, epochs: int) -> Phase:
    """Progressive unfreezing: each phase trains more stages at a lower learning rate, with a
    new optimizer (the set of trained variables changes)."""
    learning_rate = config.learning_rate * config.phase_lr_factor ** index

    def prepare() -> dict[str, Any]:
        stages = set_trainable(model, unfreeze, freeze_batchnorm=_freeze_batchnorm(config))
        compile_model(model, config, learning_rate=learning_rate)
        return {"unfreeze": unfreeze, "trainable_stages": stages, "learning_rate": learning_rate}

    return Phase(epochs, model, prepare=prepare)


def _check_schedule(model: keras.Model, config: RunConfig) -> None:
    """Refuses a bad phase before the first one trains (then restores the first phase's policy)."""
    for unfreeze in config.unfreeze_schedule:
        set_trainable(model, unfreeze, freeze_batchnorm=_freeze_batchnorm(config))
    set_trainable(model, config.unfreeze_schedule[0], freeze_batchnorm=_freeze_batchnorm(config))


def _freeze_batchnorm(config: RunConfig) -> bool:
    return config.weights is not None if config.freeze_batchnorm is None else config.freeze_batchnorm


def _image_pipelines(config: RunConfig, data: Dataset, augmenter):
    common = dict(batch_size=config.batch_size, pipeline_size=config.pipeline_size, input_scaling=config.input_scaling,
                  seed=config.seed, deterministic=config.deterministic)
    if isinstance(data, StreamedDataset):
        if config.balanced_sampling:  # data_path="auto" chose to stream this data
            raise ValueError(f"balanced_sampling draws in-memory images by class, but this data is streamed from "
                             f"TFRecords ({data.access.get('reason', 'data_path')}). Use class_weighting='balanced', "
                             "or data_path='memory' if it fits in memory.")
        # Streamed from the shards (verified once here, by sha256); no cache: the shards are it.
        return (data.pipeline("train", training=True, augmenter=augmenter, **common),
                data.pipeline("val", training=False, **common))
    cache = config.cache if config.cache in (True, False) else str(Path(config.cache) / "train")
    train_ds = make_pipeline(data.x_train, data.y_train, training=True, augmenter=augmenter, cache=cache,
                             balance_classes=config.balanced_sampling, **common)
    val_ds = make_pipeline(data.x_val, data.y_val, training=False, cache=bool(config.cache), **common)
    return train_ds, val_ds


def _feature_pipelines(features: Features, data: Dataset, config: RunConfig):
    """Batches of cached features; with several augmented passes, epoch e reads pass e % passes."""
    passes, count = features.train.shape[:2]

    def one_pass(index):
        return tf.data.Dataset.from_tensor_slices((features.train[index], features.train_labels[index]))

    if passes == 1:
        train_ds = one_pass(0).shuffle(count, seed=config.seed, reshuffle_each_iteration=True)
        train_ds = train_ds.batch(config.batch_size)
    else:
        epochs = [one_pass(e % passes).shuffle(count, seed=config.seed + e).batch(config.batch_size)
                  for e in range(config.epochs)]
        train_ds = epochs[0]
        for epoch in epochs[1:]:
            train_ds = train_ds.concatenate(epoch)
    val_ds = tf.data.Dataset.from_tensor_slices((features.val, data.y_val)).batch(max(config.batch_size, 256))
    return train_ds.prefetch(tf.data.AUTOTUNE), val_ds.prefetch(tf.data.AUTOTUNE)
