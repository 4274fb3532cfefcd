"""Training entry points for dense prediction: ``train_segmentation`` and ``train_autoencoder``.

The flow is ``lab.training.train``'s, with the kit's own pieces (seeding, optimizers, hardware
options, callbacks, run records): load the data, seed, build and compile, fit with the
callbacks, restore the best weights, evaluate every split, write the record. A segmentation
record adds per-class IoU and Dice, pixel accuracy, mean IoU and Dice, the foreground shares
and E6's ``all_background`` flag; its ``predictions.npz`` holds the true and predicted test
masks, and its plots include predicted masks overlaid next to the truth.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd

from lab import hardware, plots, tf_memory
from lab.callbacks import DivergenceMonitor, EpochLogLine, EpochTimer, RestoreBestWeights, format_epoch_line
from lab.datasets.segmentation import SegmentationDataset, load_segmentation_dataset
from lab.models.autoencoder import add_noise
from lab.records import RunWriter
from lab.segmentation.config import MONITORS, SegmentationConfig
from lab.segmentation.losses import make_loss
from lab.segmentation.metrics import MeanDice, MeanIoU, PixelAccuracy, pixel_confusion_matrix, segmentation_metrics
from lab.segmentation.pipeline import make_joint_augmenter, make_segmentation_pipeline
from lab.segmentation.registry import build_autoencoder, build_segmentation_model
from lab.training import RunResult, environment, finite_metrics, make_optimizer, seed_everything


# The same result object as classification runs: run_dir, config, metrics, history, model, status.
SegmentationResult = RunResult


def load_data(config: SegmentationConfig) -> SegmentationDataset:
    """Loads the dataset a config names, with its size and limit."""
    return load_segmentation_dataset(config.dataset, size=config.dataset_size, limit=config.limit,
                                     val_fraction=config.val_fraction, seed=config.seed)


def train_segmentation(config: SegmentationConfig | dict[str, Any] | None = None, *,
                       data: SegmentationDataset | None = None, raise_on_error: bool = True,
                       **overrides: Any) -> SegmentationResult:
    """Trains one segmentation model as the configuration says and writes its run record.

    Args:
        config: a SegmentationConfig, a flat dict of its fields, or None for the defaults.
        data: an already loaded SegmentationDataset (otherwise ``config.dataset`` is loaded).
        raise_on_error: re-raise an exception after recording the run as ``failed``.
        **overrides: config fields to change, e.g. ``train_segmentation(loss="dice")``.

    Returns:
        A SegmentationResult; ``metrics["all_background"]`` is E6's flag, with
        ``metrics["warning"]`` saying why when it is set.

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
    """
    config = _resolve(config, overrides)
    if config.task != "segmentation":
        raise ValueError(f"{config.model!r} is an autoencoder: train it with train_autoencoder.")
    return _run(config, data, raise_on_error, _evaluate_segmentation)


def train_autoencoder(config: SegmentationConfig | dict[str, Any] | None = None, *,
                      data: SegmentationDataset | None = None, raise_on_error: bool = True,
                      **overrides: Any) -> SegmentationResult:
    """Trains an autoencoder (plain, denoising or VAE) to reconstruct the images; records the run.

    Same arguments as ``train_segmentation`` (the masks are not used). The record holds the
    test reconstruction error (MSE, PSNR); a denoising autoencoder is also scored on test
    images noised with its ``noise_stddev``, against the noisy images themselves.
    """
    config = _resolve(config, overrides, model="autoencoder")
    if config.task != "reconstruction":
        raise ValueError(f"{config.model!r} is a segmentation model: train it with train_segmentation.")
    return _run(config, data, raise_on_error, _evaluate_reconstruction)


def _resolve(config, overrides: dict[str, Any], model: str | None = None) -> SegmentationConfig:
    if config is None:
        if model and "model" not in overrides:
            overrides = {"model": model, **overrides}
        return SegmentationConfig(**overrides)
    if isinstance(config, dict):
        return SegmentationConfig.from_dict({**config, **overrides})
    return config.replace(**overrides) if overrides else config


def _run(config: SegmentationConfig, data: SegmentationDataset | None, raise_on_error: bool,
         evaluate: Callable) -> SegmentationResult:
    if data is None:
        data = load_data(config)
    name = config.name or f"{config.model}-{data.name}"
    keras.backend.clear_session()
    seed_everything(config.seed, config.deterministic)
    record_config = {
        **config.to_dict(),
        "task": config.task,
        "config_hash": config.config_hash(),
        "data": data.summary() | {"source": data.source},
        "input_shape": list(data.input_shape),
        "class_weights": _class_weights(config, data),
        "environment": environment(),
    }
    writer = RunWriter(record_config, name=name, reports_dir=config.reports_dir)
    metrics: dict[str, Any] = {"name": name, "dataset": data.name, "model": config.model, "task": config.task,
                               "tags": list(config.tags), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    model, history = None, pd.DataFrame()
    try:
        with tf_memory.released_graphs():  # TensorFlow would keep every run's traced graphs (lab.tf_memory)
            model, history, fit_info = _fit(config, data, writer.path)
        metrics |= fit_info
        metrics |= evaluate(model, config, data, history, fit_info, writer.path)
        writer.config["params"] = metrics["params"] = int(model.count_params())
        metrics["trainable_params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    except KeyboardInterrupt:
        writer.discard()
        raise
    except Exception as error:  # recorded as a failed run; re-raised unless the caller goes on
        metrics |= {"status": "failed", "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()}
        history_path = writer.path / "history.csv"
        history = pd.read_csv(history_path) if history_path.exists() and history_path.stat().st_size else history
        run_dir = writer.publish(finite_metrics(metrics))
        if raise_on_error:
            raise
        return SegmentationResult(run_dir, config, finite_metrics(metrics), history, None)
    run_dir = writer.publish(finite_metrics(metrics))
    return SegmentationResult(run_dir, config, finite_metrics(metrics), history, model)


def _class_weights(config: SegmentationConfig, data: SegmentationDataset) -> list[float] | None:
    if config.class_weighting is None:
        return None
    if config.class_weighting == "balanced":
        return data.class_weights("train")
    weights = [float(w) for w in config.class_weighting]
    if len(weights) != data.num_classes:
        raise ValueError(f"class_weighting has {len(weights)} weights but {data.name} has {data.num_classes} classes "
                         f"{data.class_names}: give one per class, background first.")
    return weights


def build_model(config: SegmentationConfig, data: SegmentationDataset) -> keras.Model:
    """The config's model for this data (uncompiled)."""
    if config.task == "reconstruction":
        return build_autoencoder(config.model, data.input_shape, **config.model_options())
    return build_segmentation_model(config.model, data.input_shape, data.num_classes, **config.model_options())


def compile_model(model: keras.Model, config: SegmentationConfig, data: SegmentationDataset) -> keras.Model:
    """Compiles as every run does: the config's optimizer and loss, pixel accuracy, mean IoU
    and mean Dice (segmentation) or MSE (autoencoders). Call it inside the strategy scope."""
    optimizer = make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.task == "reconstruction":
        loss, metrics = config.loss_name, ["mse"]
    else:
        loss = make_loss(config.loss_name, class_weights=_class_weights(config, data),
                         crossentropy_weight=config.crossentropy_weight, dice_weight=config.dice_weight)
        metrics = [PixelAccuracy(), MeanIoU(data.num_classes), MeanDice(data.num_classes)]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=config.jit_compile,
                  steps_per_execution=config.steps_per_execution)
    return model


class SegmentationLogLine(EpochLogLine):
    """The E4 epoch line (accuracy is pixel accuracy) with the validation mean IoU added."""

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        line = format_epoch_line(epoch + 1, self.epochs, logs)
        if "val_mean_iou" in logs:
            parts = line.split(" | ")
            position = len(parts) - 1 if "epoch_seconds" in logs else len(parts)
            parts.insert(position, f"ValMeanIoU: {float(logs['val_mean_iou']):.4f}")
            line = " | ".join(parts)
        self.print_fn(line)


def _fit(config: SegmentationConfig, data: SegmentationDataset, run_path: Path):
    """Builds, compiles and fits the model; returns (model, history, fit facts)."""
    strategy = hardware.get_strategy(config.distribute)
    with hardware.precision(config.mixed_precision), strategy.scope():
        model = compile_model(build_model(config, data), config, data)
    augmenter = None
    if config.augment:
        augmenter = make_joint_augmenter(flip=config.aug_flip, rotation=config.aug_rotation, zoom=config.aug_zoom,
                                         translation=config.aug_translation, contrast=config.aug_contrast,
                                         seed=config.seed)
    reconstruction = config.task == "reconstruction"
    common = dict(batch_size=config.batch_size, input_scaling=config.input_scaling, seed=config.seed,
                  deterministic=config.deterministic, cache=config.cache,
                  targets="images" if reconstruction else "masks")
    train_ds = make_segmentation_pipeline(data.x_train, None if reconstruction else data.masks_train,
                                          training=True, augmenter=augmenter, **common)
    val_ds = make_segmentation_pipeline(data.x_val, None if reconstruction else data.masks_val, training=False,
                                        **common)

    timer = EpochTimer()
    # A plain cross-entropy can be judged against chance level, ln(k); other losses only for NaN.
    plain_crossentropy = config.loss_name == "crossentropy" and config.class_weighting is None
    divergence = DivergenceMonitor(baseline_loss=math.log(data.num_classes) if plain_crossentropy else None,
                                   patience=config.divergence_patience)
    mode = MONITORS[config.monitor]
    best = RestoreBestWeights(monitor=config.monitor, mode=mode)
    callbacks: list[keras.callbacks.Callback] = [timer, divergence, best]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode,
                                                       patience=config.early_stopping_patience))
    if config.save_model:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(run_path / "model.keras"), monitor=config.monitor,
                                                         mode=mode, save_best_only=True))
    callbacks.append(keras.callbacks.CSVLogger(str(run_path / "history.csv")))
    if config.verbose:
        callbacks.append(SegmentationLogLine(config.epochs))

    started = time.perf_counter()
    fit = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks, verbose=0,
                    shuffle=False)
    history = pd.DataFrame(fit.history)
    seconds = timer.seconds
    info: dict[str, Any] = {
        "status": "diverged" if divergence.diverged else "completed",
        "divergence_reason": divergence.reason,
        "epochs_run": len(history),
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "stopped_early": len(history) < config.epochs and not divergence.diverged,
        "train_seconds": time.perf_counter() - started,
        "seconds_per_epoch": float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else None,
        "seconds_first_epoch": seconds[0] if seconds else None,
    }
    if best.best_epoch is not None:
        row = history.iloc[best.best_epoch]
        keys = ("loss", "accuracy", "mean_iou", "val_loss", "val_accuracy", "val_mean_iou", "val_mean_dice")
        info |= {f"best_epoch_{k}": float(row[k]) for k in keys if k in row}
    return model, history, info


def _evaluate_segmentation(model, config: SegmentationConfig, data: SegmentationDataset, history: pd.DataFrame,
                           fit_info: dict, run_path: Path) -> dict[str, Any]:
    """Evaluates the restored best model on every split; saves masks and plots."""
    common = dict(batch_size=max(config.batch_size, 64), input_scaling=config.input_scaling, training=False,
                  cache=False)
    results: dict[str, Any] = {"class_names": list(data.class_names)}
    for split in ("train", "val", "test"):
        x, masks = data.split(split)
        values = model.evaluate(make_segmentation_pipeline(x, masks, **common), verbose=0, return_dict=True)
        for key in ("loss", "accuracy", "mean_iou", "mean_dice"):
            if key in values:
                results[f"{split}_{key}"] = float(values[key])
    predicted = {}
    for split in ("val", "test"):
        probabilities = model.predict(make_segmentation_pipeline(data.split(split)[0], **common), verbose=0)
        if not np.isfinite(probabilities).all():
            return results  # a diverged model: the losses above say so; no masks to score
        predicted[split] = _classes(probabilities)
    results |= segmentation_metrics(data.masks_val, predicted["val"], data.class_names, prefix="val_",
                                    flag_ratio=config.background_flag_ratio)
    test = segmentation_metrics(data.masks_test, predicted["test"], data.class_names,
                                flag_ratio=config.background_flag_ratio)
    # The E6 flag and its warning are the test split's, under their plain names.
    for key in ("all_background", "warning", "foreground_fraction_true", "foreground_fraction_predicted"):
        if key in test:
            results[key] = test.pop(key)
    results |= {f"test_{k}": v for k, v in test.items()}
    results.pop("val_warning", None)
    if results.get("warning"):
        warnings.warn(results["warning"], stacklevel=3)
        if config.verbose:
            print(results["warning"])
    np.savez_compressed(run_path / "predictions.npz", y_true=data.masks_test, y_pred=predicted["test"],
                        class_names=np.asarray(data.class_names))

    title = f"{config.name or config.model} on {data.name}"
    plot_dir = run_path / "plots"
    plots.save(plots.learning_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
               plot_dir / "learning_curves.png")
    plots.save(plots.segmentation_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
               plot_dir / "iou_dice_curves.png")
    plots.save(plots.mask_overlays(data.x_test, data.masks_test, predicted["test"], data.class_names,
                                   seed=config.seed, title=f"Test masks: {title}"),
               plot_dir / "predicted_masks.png")
    plots.save(plots.per_class_scores(results, data.class_names, prefix="test_", title=f"Test IoU and Dice: {title}"),
               plot_dir / "per_class_scores.png")
    matrix = pixel_confusion_matrix(data.masks_test, predicted["test"], data.num_classes)
    plots.save(plots.confusion_matrix(matrix, data.class_names, normalize=True,
                                      title=f"Test pixel confusion matrix (rows sum to 1): {title}"),
               plot_dir / "confusion_matrix.png")
    plots.save(plots.class_distribution({s: data.pixel_counts(s) for s in ("train", "val", "test")},
                                        data.class_names, title=f"Pixels per class: {data.name}"),
               plot_dir / "class_distribution.png")
    return results


def _evaluate_reconstruction(model, config: SegmentationConfig, data: SegmentationDataset, history: pd.DataFrame,
                             fit_info: dict, run_path: Path) -> dict[str, Any]:
    """Reconstruction error on every split; denoising scores; reconstructions plot."""
    common = dict(batch_size=max(config.batch_size, 64), input_scaling=config.input_scaling, training=False,
                  cache=False)
    results: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        values = model.evaluate(make_segmentation_pipeline(data.split(split)[0], targets="images", **common),
                                verbose=0, return_dict=True)
        results[f"{split}_loss"] = float(values["loss"])
        results[f"{split}_mse"] = float(values["mse"])
        results[f"{split}_psnr"] = _psnr(values["mse"])
    shown = _unit(data.x_test[:64])
    reconstructed = model.predict(shown, verbose=0)
    noisy = None
    noise_layers = [layer for layer in model.layers if layer.name == "noise"]
    if noise_layers:
        # The denoiser is scored on test images noised as in training, against their clean
        # versions, beside the error of the noisy images themselves (chunked: any set size).
        stddev = float(noise_layers[0].stddev)
        noisy_error = denoised_error = 0.0
        for start in range(0, len(data.x_test), 256):
            clean = _unit(data.x_test[start:start + 256])
            noisy_chunk = add_noise(clean, stddev, seed=config.seed + start)
            denoised = model.predict(noisy_chunk, batch_size=64, verbose=0)
            noisy_error += float(np.sum((noisy_chunk - clean) ** 2))
            denoised_error += float(np.sum((denoised - clean) ** 2))
            if start == 0:
                noisy, reconstructed = noisy_chunk[:64], denoised[:64]
        values = data.x_test.size
        results |= {"noise_stddev": stddev, "test_noisy_psnr": _psnr(noisy_error / values),
                    "test_denoised_psnr": _psnr(denoised_error / values)}
    np.savez_compressed(run_path / "predictions.npz", images=shown, reconstructions=reconstructed,
                        **({"noisy": noisy} if noisy is not None else {}))
    title = f"{config.name or config.model} on {data.name}"
    plots.save(plots.learning_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
               run_path / "plots" / "learning_curves.png")
    plots.save(plots.reconstructions(shown, reconstructed, noisy=noisy, title=f"Test reconstructions: {title}"),
               run_path / "plots" / "reconstructions.png")
    return results


def _classes(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > 0.5).astype(np.uint8)
    return probabilities.argmax(axis=-1).astype(np.uint8)


def _unit(images: np.ndarray) -> np.ndarray:
    """Images as the "unit" pipeline feeds them: float32 in [0, 1]."""
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return float(10.0 * math.log10(1.0 / mse)) if mse > 0 else float("inf")

