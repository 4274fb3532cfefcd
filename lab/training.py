"""One training entry point: ``train(config)`` runs one experiment and records it.

The flow reads top to bottom: load the data, seed everything, build and compile the model,
make the pipelines, fit with the callbacks, restore the best weights, evaluate every split,
then write the run record (config, history, metrics, predictions, plots, model).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lab import __version__, hardware, plots, tf_memory
from lab.callbacks import DivergenceMonitor, EpochLogLine, EpochTimer, RestoreBestWeights
from lab.config import RunConfig
from lab.datasets import Dataset, load_dataset
from lab.evaluation import classification_metrics, confusion_matrix
from lab.features import Features, compute_features
from lab.losses import SparseCategoricalCrossentropy
from lab.models import build_model
from lab.models.backbones import find_backbone
from lab.models.transfer import head_model, set_trainable, transfer_summary
from lab.pipeline import make_augmenter, make_pipeline
from lab.records import RunWriter
from lab.transfer import with_learning_rate_factor


@dataclasses.dataclass
class RunResult:
    """What ``train`` returns: where the record is, and its contents in memory."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model | None

    @property
    def status(self) -> str:
        return self.metrics["status"]


def make_optimizer(name: str, learning_rate: float, *, momentum: float = 0.0,
                   weight_decay: float = 4e-3) -> keras.optimizers.Optimizer:
    """Returns a fresh optimizer by name (adam, sgd, rmsprop, adamw)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=momentum)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}. Available optimizers: adam, sgd, rmsprop, adamw.")


def compile_model(model: keras.Model, config: RunConfig, *, learning_rate: float | None = None) -> keras.Model:
    """Compiles a model as every run does: the config's optimizer, the (smoothed) sparse
    cross-entropy, accuracy, XLA and steps per execution. Call it inside the strategy scope.

    A transfer model's backbone gets ``config.backbone_lr_factor`` times the learning rate;
    ``learning_rate`` overrides the config's (a progressive-unfreezing phase)."""
    optimizer = make_optimizer(config.optimizer, learning_rate or config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.model == "transfer" and config.backbone_lr_factor != 1.0 and _has_backbone(model):
        backbone, _ = find_backbone(model)
        optimizer = with_learning_rate_factor(optimizer, backbone.trainable_weights, config.backbone_lr_factor)
    model.compile(
        optimizer=optimizer,
        loss=SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
        # Keras 3 fails with several replicas and more than one step per call (keras-team/keras#19246).
        steps_per_execution=config.steps_per_execution if tf.distribute.get_strategy().num_replicas_in_sync == 1
        else 1,
    )
    return model


def _has_backbone(model: keras.Model) -> bool:
    """False for the head-only model the feature cache trains."""
    try:
        find_backbone(model)
    except ValueError:
        return False
    return True


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras; optionally makes TF ops deterministic.

    Determinism is what makes "same seed, same data, same result" hold on CPU. It is a
    process-wide switch, and Keras turns XLA off while it is on.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # Not public API, but the only way to switch determinism off again in a process
        # (a notebook that ran a deterministic run and now wants XLA).
        from tensorflow.python.framework import config as tf_config

        getattr(tf_config, "disable_op_determinism", lambda: None)()


def load_data(config: RunConfig) -> Dataset:
    """Loads the dataset a config names, with its class subset and size limit."""
    options = {"resize_to": config.resize_to} if config.resize_to else {}
    return load_dataset(config.dataset, size=config.dataset_size, num_classes=config.num_classes,
                        limit=config.limit, val_fraction=config.val_fraction, seed=config.seed, **options)


def train(config: RunConfig | dict[str, Any] | None = None, *, data: Dataset | None = None,
          raise_on_error: bool = True, **overrides: Any) -> RunResult:
    """Trains one model as the configuration says and writes its run record.

    Args:
        config: a RunConfig, a flat dict of its fields, or None for the defaults.
        data: an already loaded dataset (otherwise the one ``config.dataset`` names is loaded;
            pass one to share it between the runs of a sweep).
        raise_on_error: re-raise an exception during training after recording the run as
            ``failed`` (sweeps pass False to go on with the next run).
        **overrides: config fields to change, e.g. ``train(learning_rate=1e-4)``.

    Returns:
        A RunResult. ``status`` is ``"completed"``, ``"diverged"`` (NaN loss, or a loss that
        never fell below chance level; recorded, not raised) or ``"failed"``.

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
    """
    if config is None:
        config = RunConfig(**overrides)
    elif isinstance(config, dict):
        config = RunConfig.from_dict({**config, **overrides})
    elif overrides:
        config = config.replace(**overrides)
    if data is None:
        data = load_data(config)
    input_shape = input_shape_for(data, config)
    name = config.name or f"{config.model}-{data.name}"

    keras.backend.clear_session()  # free the previous run's graphs and layers (long sweeps)
    seed_everything(config.seed, config.deterministic)
    record_config = {
        **config.to_dict(),
        "config_hash": config.config_hash(),
        "data": data.summary() | {"source": data.source},
        "input_shape": list(input_shape),
        "environment": environment(),
    }
    # Every worker of a multi-worker run trains the same model; only the chief keeps the record.
    reports_dir = config.reports_dir if hardware.is_chief() else tempfile.mkdtemp(prefix="lab-worker-")
    writer = RunWriter(record_config, name=name, reports_dir=reports_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    metrics: dict[str, Any] = {"name": name, "dataset": data.name, "model": config.model,
                               "tags": list(config.tags), "created": started}
    model, history = None, pd.DataFrame()
    try:
        with tf_memory.released_graphs():  # TensorFlow would keep every run's traced graphs (lab.tf_memory)
            model, history, fit_info, features = _fit(config, data, input_shape, writer.path)
        metrics |= fit_info
        metrics |= _evaluate_and_plot(model, config, data, history, fit_info, writer.path, features)
        writer.config["params"] = metrics["params"] = int(model.count_params())
        metrics["trainable_params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    except KeyboardInterrupt:
        writer.discard()  # nothing half-written is left for a later run to trust
        raise
    except Exception as error:  # recorded as a failed run; re-raised unless in a sweep
        metrics |= {"status": "failed", "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()}
        history = _read_history(writer.path)
        run_dir = writer.publish(finite_metrics(metrics))
        if raise_on_error:
            raise
        return RunResult(run_dir, config, finite_metrics(metrics), history, None)
    run_dir = writer.publish(finite_metrics(metrics))
    return RunResult(run_dir, config, finite_metrics(metrics), history, model)


def model_from_saved(source: str | Path, num_classes: int, *, trainable: str = "all") -> keras.Model:
    """Loads a saved model and gives it a new output layer for ``num_classes`` classes.

    Args:
        source: a run folder (its ``model.keras``) or a ``.keras`` file.
        num_classes: classes of the new task.
        trainable: "all" fine-tunes every layer; "head" freezes everything but the new output
            layer (frozen BatchNorm layers then run in inference mode, as they should).
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
    if trainable == "head":
        for layer in base.layers:
            layer.trainable = False
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(base.inputs, outputs, name=f"{base.name}_retargeted")


def input_shape_for(data: Dataset, config: RunConfig) -> tuple[int, int, int]:
    """The model's input shape: the data's, resized to ``config.image_size`` if set."""
    height, width, channels = data.input_shape
    if config.image_size:
        height = width = config.image_size
    return height, width, channels


def build_for_run(config: RunConfig, data: Dataset, input_shape) -> keras.Model:
    """The model a config describes (built, not compiled), for ``data``'s classes."""
    if config.init_from:
        return model_from_saved(config.init_from, data.num_classes, trainable=config.trainable)
    options = config.model_options()
    if config.model == "transfer":
        # The model rescales its input to [0, 255] for the backbone's own preprocessing.
        options["pixel_scale"] = 255.0 if config.input_scaling == "unit" else 1.0
        if config.unfreeze_schedule:
            options["unfreeze"] = config.unfreeze_schedule[0]
    return build_model(config.model, input_shape, data.num_classes, **options)


def _fit(config: RunConfig, data: Dataset, input_shape, run_path: Path):
    """Builds, compiles and fits the model; returns (model, history, fit facts, features).

    Three ways to fit: on images (the usual), on cached backbone features (a frozen transfer
    model: the head trains on features computed once), or in phases (progressive unfreezing).
    """
    strategy = hardware.get_strategy(config.distribute)
    with hardware.precision(config.mixed_precision), strategy.scope():
        model = build_for_run(config, data, input_shape)
        compile_model(model, config)
    augmenter = None
    if config.augment:
        augmenter = make_augmenter(flip=config.aug_flip, rotation=config.aug_rotation, zoom=config.aug_zoom,
                                   translation=config.aug_translation, contrast=config.aug_contrast,
                                   seed=config.seed)
    cache_note = feature_cache_decision(config)
    features = None
    if cache_note is None:
        features = compute_features(model, data, cache=config.feature_cache, passes=config.feature_cache_passes,
                                    augmenter=augmenter, batch_size=max(config.batch_size, 256),
                                    input_scaling=config.input_scaling, image_size=config.image_size,
                                    seed=config.seed)
        train_ds, val_ds = _feature_pipelines(features, data, config)
    else:
        train_ds, val_ds = _image_pipelines(config, data, augmenter)

    timer = EpochTimer()
    divergence = DivergenceMonitor(baseline_loss=math.log(data.num_classes), patience=config.divergence_patience)
    best = RestoreBestWeights(monitor="val_loss")
    callbacks: list[keras.callbacks.Callback] = [timer, divergence, best]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience))
    if config.save_model and features is None:
        # With cached features the head model trains; the whole model is saved after fitting.
        callbacks.append(keras.callbacks.ModelCheckpoint(str(run_path / "model.keras"), monitor="val_loss",
                                                         save_best_only=True))
    if config.verbose:
        callbacks.append(EpochLogLine(config.epochs if not config.phase_epochs else sum(config.phase_epochs)))

    started = time.perf_counter()
    class_weight = data.class_weights() if config.class_weighting == "balanced" else None
    phases = []
    if config.unfreeze_schedule:
        history, phases = _fit_phases(model, config, strategy, train_ds, val_ds, callbacks, run_path, class_weight)
    else:
        fitted = head_model(model) if features is not None else model
        if features is not None:
            with strategy.scope():
                compile_model(fitted, config)
        csv = keras.callbacks.CSVLogger(str(run_path / "history.csv"))
        fit = fitted.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[*callbacks, csv],
                         verbose=0, shuffle=False, class_weight=class_weight,
                         steps_per_epoch=_steps_per_epoch(features, config))
        history = pd.DataFrame(fit.history)
    if features is not None and config.save_model:
        model.save(run_path / "model.keras")  # the head's best weights, restored, in the whole model
    seconds = timer.seconds if not phases else [s for phase in phases for s in phase.pop("seconds")]
    info = {
        "status": "diverged" if divergence.diverged else "completed",
        "divergence_reason": divergence.reason,
        "epochs_run": len(history),
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "stopped_early": len(history) < (sum(config.phase_epochs) if phases else config.epochs)
        and not divergence.diverged,
        "train_seconds": time.perf_counter() - started,
        # The first epoch includes tracing and compilation; the steady-state figure excludes it.
        "seconds_per_epoch": float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else None,
        "seconds_first_epoch": seconds[0] if seconds else None,
    }
    if config.model == "transfer":
        info["transfer"] = transfer_summary(model)
        info["feature_cache"] = cache_note or {
            "mode": config.feature_cache, "hit": features.hit, "passes": config.feature_cache_passes,
            "seconds": features.seconds, "key": features.key,
            "note": "head trained on cached backbone features" + (
                f"; {config.feature_cache_passes} augmented passes, epoch e uses pass e % "
                f"{config.feature_cache_passes}" if config.feature_cache_passes > 1 else ""),
        }
        if features is not None:
            # Honest timing: what filling the cache cost is part of the training time.
            info["train_seconds"] += features.seconds
        if phases:
            info["phases"] = phases
    if best.best_epoch is not None:
        row = history.iloc[best.best_epoch]
        info |= {f"best_epoch_{k}": float(row[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in row}
    return model, history, info, features


def feature_cache_decision(config: RunConfig) -> str | None:
    """None when a run trains its head on cached features, otherwise why it does not."""
    if config.model != "transfer":
        return "off: not a transfer model"
    if config.feature_cache is None:
        return "off: feature_cache=None"
    if config.unfreeze_schedule or (config.unfreeze or 0) != 0:
        return "off: backbone stages train, so their features change every step"
    if config.distribute:
        return "off: distributed runs pass images through the backbone"
    if config.augment and config.feature_cache_passes == 1:
        return ("off: augmentation changes the images every epoch (set feature_cache_passes > 1 to cache "
                "that many augmented passes)")
    if config.tfrecord_dir:
        return "off: streaming from TFRecords"
    return None


def _image_pipelines(config: RunConfig, data: Dataset, augmenter):
    common = dict(batch_size=config.batch_size, image_size=config.image_size, input_scaling=config.input_scaling,
                  seed=config.seed, deterministic=config.deterministic)
    if config.tfrecord_dir:
        train_ds = _tfrecord_training_pipeline(data, config, augmenter, common)
    else:
        cache = config.cache if config.cache in (True, False) else str(Path(config.cache) / "train")
        train_ds = make_pipeline(data.x_train, data.y_train, training=True, augmenter=augmenter, cache=cache,
                                 **common)
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


def _steps_per_epoch(features: Features | None, config: RunConfig) -> int | None:
    if features is None or features.train.shape[0] == 1:
        return None
    return math.ceil(features.train.shape[1] / config.batch_size)


def _fit_phases(model, config: RunConfig, strategy, train_ds, val_ds, callbacks, run_path: Path, class_weight):
    """Progressive unfreezing: one fit per phase, more stages and a lower learning rate each time.

    The callbacks carry over (the best weights of the whole run are restored at the end); the
    optimizer is new in each phase, since the set of trained variables changes.
    """
    histories, phases, epoch = [], [], 0
    best = next(c for c in callbacks if isinstance(c, RestoreBestWeights))
    timer = next(c for c in callbacks if isinstance(c, EpochTimer))
    overall_best = (math.inf, None, None)  # (val_loss, epoch, weights)
    freeze_batchnorm = config.weights is not None if config.freeze_batchnorm is None else config.freeze_batchnorm
    for unfreeze in config.unfreeze_schedule:  # a bad phase is refused before the first one trains
        set_trainable(model, unfreeze, freeze_batchnorm=freeze_batchnorm)
    for index, (unfreeze, epochs) in enumerate(zip(config.unfreeze_schedule, config.phase_epochs, strict=True)):
        learning_rate = config.learning_rate * config.phase_lr_factor ** index
        with strategy.scope():
            stages = set_trainable(model, unfreeze, freeze_batchnorm=freeze_batchnorm)
            compile_model(model, config, learning_rate=learning_rate)
        csv = keras.callbacks.CSVLogger(str(run_path / "history.csv"), append=index > 0)
        fit = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + epochs,
                        callbacks=[*callbacks, csv], verbose=0, shuffle=False, class_weight=class_weight)
        phase_history = pd.DataFrame(fit.history).assign(phase=index + 1)
        histories.append(phase_history)
        phases.append({"phase": index + 1, "unfreeze": unfreeze, "trainable_stages": stages,
                       "learning_rate": learning_rate, "epochs": len(phase_history), "seconds": list(timer.seconds)})
        if best.best_epoch is not None and best.best < overall_best[0]:
            overall_best = (best.best, best.best_epoch, best.best_weights)  # Keras counts epochs across fits
        epoch += len(phase_history)
        if any(getattr(c, "diverged", False) for c in callbacks):
            break
    best.best, best.best_epoch, best.best_weights = overall_best
    if overall_best[2] is not None:
        model.set_weights(overall_best[2])
    return pd.concat(histories, ignore_index=True), phases


def _tfrecord_training_pipeline(data: Dataset, config: RunConfig, augmenter, common: dict):
    """Streams the training split from TFRecord shards, exporting them first if missing."""
    from lab import tfrecord

    directory = Path(config.tfrecord_dir)
    if not tfrecord.manifest_path(directory, "train").exists():
        tfrecord.export_dataset(data, directory)
    manifest = tfrecord.read_manifest(directory, "train")
    if manifest["num_examples"] != len(data.y_train):
        raise ValueError(f"The TFRecords in {directory} hold {manifest['num_examples']} training images but "
                         f"{data.name} has {len(data.y_train)}: they belong to other data. Point tfrecord_dir "
                         "at an empty folder or delete it.")
    return tfrecord.make_tfrecord_pipeline(directory, "train", training=True, augmenter=augmenter, **common)


def _evaluate_and_plot(model, config: RunConfig, data: Dataset, history: pd.DataFrame, fit_info, run_path: Path,
                       features: Features | None = None):
    """Evaluates the restored best model on every split, saves predictions and plots.

    With cached features the head is evaluated on them: the same numbers as the whole model
    on the images (the frozen backbone is deterministic in inference mode), without three more
    passes through it.
    """
    batch_size = max(config.batch_size, 256)
    common = dict(batch_size=batch_size, image_size=config.image_size,
                  input_scaling=config.input_scaling, training=False, cache=False)
    evaluated = model if features is None else head_model(model)
    if features is not None:
        evaluated.compile(loss=SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
                          metrics=["accuracy"])

    def inputs(split: str, labels: bool = True) -> tf.data.Dataset:
        x, y = data.split(split)
        if features is None:
            return make_pipeline(x, y if labels else None, **common)
        tensors = (features.split(split), y) if labels else features.split(split)
        return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)

    results: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        loss, accuracy = evaluated.evaluate(inputs(split), verbose=0)
        results[f"{split}_loss"], results[f"{split}_accuracy"] = float(loss), float(accuracy)
    y_prob = evaluated.predict(inputs("test", labels=False), verbose=0).astype(np.float32)
    y_true = data.y_test
    if np.isfinite(y_prob).all():
        results |= classification_metrics(y_true, y_prob, prefix="test_")
        val_prob = evaluated.predict(inputs("val", labels=False), verbose=0)
        results["val_macro_auc"] = classification_metrics(data.y_val, val_prob)["macro_auc"]
    np.savez_compressed(run_path / "predictions.npz", y_true=y_true, y_prob=y_prob,
                        class_names=np.asarray(data.class_names))

    title = f"{config.name or config.model} on {data.name}"
    plots.save(plots.learning_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
               run_path / "plots" / "learning_curves.png")
    if np.isfinite(y_prob).all():
        y_pred = y_prob.argmax(axis=1)
        matrix = confusion_matrix(y_true, y_pred, data.num_classes)
        plots.save(plots.confusion_matrix(matrix, data.class_names, title=f"Test confusion matrix: {title}"),
                   run_path / "plots" / "confusion_matrix.png")
        plots.save(plots.sample_predictions(data.x_test, y_true, y_pred, data.class_names, seed=config.seed),
                   run_path / "plots" / "sample_predictions.png")
    plots.save(plots.class_distribution({s: data.class_counts(s) for s in ("train", "val", "test")},
                                        data.class_names, title=f"Class distribution: {data.name}"),
               run_path / "plots" / "class_distribution.png")
    return results


def _read_history(run_path: Path) -> pd.DataFrame:
    path = run_path / "history.csv"
    try:
        return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def finite_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinity become None, so metrics.json is standard JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def environment() -> dict[str, str]:
    """The versions and device a run record names."""
    return {"lab": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "device": hardware.device_summary()}
