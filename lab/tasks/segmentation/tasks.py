"""Segmentation and reconstruction, as the runner's tasks (see ``lab.runs.runner.Task``).

A segmentation record adds per-class IoU and Dice, pixel accuracy, mean IoU and Dice, the
foreground shares and E6's ``all_background`` flag (all against the stated background class);
its ``predictions.npz`` holds the true and predicted test masks, and its plots include predicted
masks overlaid next to the truth. A tiled dataset trains on tiles, and its validation and test
images are predicted whole by overlap-tile (``lab.tasks.segmentation.tiling``): scores, masks and
overlays are per original image. An
autoencoder's record holds the reconstruction error (MSE, PSNR) and, for a denoising one, the
error on noised test images.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from lab.runs import plots
from lab.runs.callbacks import EpochLogLine, format_epoch_line
from lab.config import SegmentationConfig
from lab.data.datasets import load_data
from lab.data.datasets.segmentation import SegmentationDataset
from lab.runs.evaluation import pixel_confusion_matrix, segmentation_metrics
from lab.models import build_model
from lab.models.autoencoder import add_noise
from lab.config.optimizers import make_optimizer
from lab.runs.runner import FitPlan, Phase, compile_options, epoch_line
from lab.tasks.segmentation.losses import make_loss
from lab.tasks.segmentation.metrics import MeanDice, MeanIoU, PixelAccuracy
from lab.tasks.segmentation.pipeline import make_joint_augmenter, make_segmentation_pipeline
from lab.tasks.segmentation.tiling import predict_whole_images
from lab.tasks.segmentation.weight_map import dataset_weight_maps


class _DensePrediction:
    """What segmentation and reconstruction share: data, building, pipelines."""

    targets = "masks"

    def load_data(self, config: SegmentationConfig) -> SegmentationDataset:
        return load_data(config)

    def check(self, config: SegmentationConfig, data: SegmentationDataset) -> None:
        """Builds the model once and throws it away (a value only the builder refuses stops a
        sweep or a search before its first run). Pretrained encoders are skipped: their runs are
        refused before anything is written anyway, and a download per candidate costs too much."""
        if config.weights is not None:
            return
        self.build(config, data)
        keras.backend.clear_session()

    def describe(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, Any]:
        return {"input_shape": list(data.input_shape), "class_weights": class_weights(config, data)}

    def plan(self, config: SegmentationConfig, data: SegmentationDataset) -> FitPlan:
        model = self.build(config, data)
        model.compile(optimizer=make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                                               weight_decay=config.weight_decay),
                      **self.loss_and_metrics(config, data), **compile_options(config))
        augmenter = None
        if config.augment:
            augmenter = make_joint_augmenter(flip=config.aug_flip, rotation=config.aug_rotation, zoom=config.aug_zoom,
                                             translation=config.aug_translation, contrast=config.aug_contrast,
                                             seed=config.seed, elastic=config.aug_elastic,
                                             elastic_grid=config.aug_elastic_grid)
        masks = self.targets == "masks"
        common = dict(batch_size=config.batch_size, input_scaling=config.input_scaling, seed=config.seed,
                      deterministic=config.deterministic, cache=config.cache, targets=self.targets)
        # U-Net's weight maps weight the training loss only (SegmentationConfig.weight_map).
        weights = None
        if config.weight_map:
            weights = dataset_weight_maps(data, "train", w0=config.weight_map_w0, sigma=config.weight_map_sigma)
        train_ds = make_segmentation_pipeline(data.x_train, data.masks_train if masks else None, training=True,
                                              augmenter=augmenter, weight_maps=weights, **common)
        val_ds = make_segmentation_pipeline(data.x_val, data.masks_val if masks else None, training=False, **common)
        return FitPlan(model, train_ds, val_ds, [Phase(config.epochs, model)])

    def evaluation_pipeline(self, config: SegmentationConfig, images: np.ndarray, masks=None):
        return make_segmentation_pipeline(images, masks, batch_size=max(config.batch_size, 64),
                                          input_scaling=config.input_scaling, training=False, cache=False,
                                          targets=self.targets)


class Segmentation(_DensePrediction):
    """Per-pixel classification: U-Net, DeepLabV3+, FCN."""

    def build(self, config: SegmentationConfig, data: SegmentationDataset) -> keras.Model:
        return build_model(config.model, data.input_shape, data.num_classes, **config.model_options())

    def loss_and_metrics(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, Any]:
        loss = make_loss(config.loss_name, class_weights=class_weights(config, data),
                         crossentropy_weight=config.crossentropy_weight, dice_weight=config.dice_weight)
        return {"loss": loss, "metrics": [PixelAccuracy(), MeanIoU(data.num_classes), MeanDice(data.num_classes)]}

    def chance(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, float]:
        # Only a loss that is not finite or grows is divergence. A network that predicts background
        # everywhere has learned the majority class and nothing else: its record keeps its numbers and
        # says so with E6's all_background flag (and a warning), which is more useful than "stalled".
        return {}

    def log_line(self, epochs: int) -> keras.callbacks.Callback:
        return SegmentationLogLine(epochs)

    def describe(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, Any]:
        background_class(config, data)  # a stated background the data lacks is refused before training
        if config.tile_size is not None:  # data passed in by hand must be tiled as the record will say
            stated = (config.tile_size, data.tile_margin if config.tile_margin is None else config.tile_margin)
            if not data.tiled or stated != (data.tile_size, data.tile_margin):
                cut = f"cut into {data.tile_size}-pixel tiles, tile_margin={data.tile_margin}" if data.tiled \
                    else "not tiled"
                raise ValueError(f"The configuration says tile_size={config.tile_size}, tile_margin="
                                 f"{config.tile_margin}, but the data passed in is {cut}. Load it with the same "
                                 "tile_size and tile_margin, or leave them unset in the configuration.")
        return super().describe(config, data)

    def evaluate(self, plan: FitPlan, config: SegmentationConfig, data: SegmentationDataset, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """Evaluates the restored best model on every split; saves masks and plots.

        A tiled dataset's validation and test images are predicted whole by overlap-tile and
        scored per image: their loss, accuracy and masks are those of the whole images (the
        training split is scored on its tiles, which are what trains).
        """
        model = plan.model
        background = background_class(config, data)
        results: dict[str, Any] = {"class_names": list(data.class_names)}
        for split in ("train",) if data.tiled else ("train", "val", "test"):
            values = model.evaluate(self.evaluation_pipeline(config, *data.split(split)), verbose=0, return_dict=True)
            for key in ("loss", "accuracy", "mean_iou", "mean_dice"):
                if key in values:
                    results[f"{split}_{key}"] = float(values[key])
        truth, predicted = {}, {}
        for split in ("val", "test"):
            scored = self._predict(model, config, data, split)
            if scored is None:
                return results  # a diverged model: the losses above say so; no masks to score
            truth[split], predicted[split], whole_loss = scored
            if whole_loss is not None:
                results[f"{split}_loss"], results[f"{split}_images"] = whole_loss, len(truth[split])
        scoring = dict(flag_ratio=config.background_flag_ratio, background_class=background)
        results |= segmentation_metrics(_pixels(truth["val"]), _pixels(predicted["val"]), data.class_names,
                                        prefix="val_", **scoring)
        test = segmentation_metrics(_pixels(truth["test"]), _pixels(predicted["test"]), data.class_names, **scoring)
        if data.tiled:  # Keras' per-batch accuracy saw tiles; the whole images' pixel accuracy replaces it
            results["val_accuracy"], results["test_accuracy"] = results["val_pixel_accuracy"], test["pixel_accuracy"]
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
        save_predictions(run_path / "predictions.npz", truth["test"], predicted["test"], data.class_names, background)
        self._plot(config, data, history, fit_info, run_path, results, truth["test"], predicted["test"], background)
        return results

    def _predict(self, model: keras.Model, config: SegmentationConfig, data: SegmentationDataset, split: str
                 ) -> tuple[Any, Any, float | None] | None:
        """The true and predicted masks of a split's whole images, and (tiled) their loss.

        Returns:
            ``(true masks, predicted masks, loss)``: arrays for an untiled set (loss None: Keras'
            evaluation has it), lists of whole-image masks for a tiled one; None when the model
            predicts a non-finite value (diverged).
        """
        images, masks = data.whole_images(split)
        if not data.tiled:
            probabilities = model.predict(self.evaluation_pipeline(config, images), verbose=0)
            return (masks, _classes(probabilities), None) if np.isfinite(probabilities).all() else None

        def predict(windows: np.ndarray) -> np.ndarray:
            return model.predict(self.evaluation_pipeline(config, windows), verbose=0)

        predicted, loss_sum = [], 0.0
        for image, mask in zip(images, masks):
            probabilities = predict_whole_images(predict, [image], data.tile_size, data.tile_margin)[0]
            if not np.isfinite(probabilities).all():
                return None
            predicted.append(_classes(probabilities))
            # The compiled loss of the whole image, weighted by its pixels (Dice is per image here).
            loss_sum += float(keras.ops.convert_to_numpy(model.loss(mask[np.newaxis], probabilities[np.newaxis]))) \
                * mask.size
        return list(masks), predicted, loss_sum / sum(mask.size for mask in masks)

    def _plot(self, config, data, history, fit_info, run_path: Path, results, truth, predicted,
              background: int) -> None:
        title = f"{config.name or config.model} on {data.name}"
        plot_dir = run_path / "plots"
        plots.save(plots.learning_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
                   plot_dir / "learning_curves.png")
        plots.save(plots.segmentation_curves(history, title=title, best_epoch=fit_info.get("best_epoch")),
                   plot_dir / "iou_dice_curves.png")
        images = data.whole_images("test")[0]
        whole = " (whole images, overlap-tile)" if data.tiled else ""
        plots.save(plots.mask_overlays(images, truth, predicted, data.class_names, seed=config.seed,
                                       title=f"Test masks{whole}: {title}", background_class=background),
                   plot_dir / "predicted_masks.png")
        plots.save(plots.per_class_scores(results, data.class_names, prefix="test_",
                                          title=f"Test IoU and Dice: {title}"),
                   plot_dir / "per_class_scores.png")
        matrix = pixel_confusion_matrix(_pixels(truth), _pixels(predicted), data.num_classes)
        plots.save(plots.confusion_matrix(matrix, data.class_names, normalize=True,
                                          title=f"Test pixel confusion matrix (rows sum to 1): {title}"),
                   plot_dir / "confusion_matrix.png")
        plots.save(plots.class_distribution({s: data.pixel_counts(s) for s in ("train", "val", "test")},
                                            data.class_names, title=f"Pixels per class: {data.name}"),
                   plot_dir / "class_distribution.png")


class Reconstruction(_DensePrediction):
    """Autoencoders (plain, denoising, VAE): the images are the targets."""

    targets = "images"

    def build(self, config: SegmentationConfig, data: SegmentationDataset) -> keras.Model:
        return build_model(config.model, data.input_shape, **config.model_options())

    def loss_and_metrics(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, Any]:
        return {"loss": config.loss_name, "metrics": ["mse"]}

    def chance(self, config: SegmentationConfig, data: SegmentationDataset) -> dict[str, float]:
        return {}  # a reconstruction loss has no chance level: only a non-finite or growing loss is divergence

    def log_line(self, epochs: int) -> keras.callbacks.Callback:
        return epoch_line(epochs)

    def evaluate(self, plan: FitPlan, config: SegmentationConfig, data: SegmentationDataset, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """Reconstruction error on every split; denoising scores; reconstructions plot."""
        model = plan.model
        results: dict[str, Any] = {}
        for split in ("train", "val", "test"):
            values = model.evaluate(self.evaluation_pipeline(config, data.split(split)[0]), verbose=0,
                                    return_dict=True)
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


SEGMENTATION = Segmentation()
RECONSTRUCTION = Reconstruction()


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


def background_class(config: SegmentationConfig, data: SegmentationDataset) -> int:
    """The class id that is background: the configuration's when it states one, else the data's.

    Raises:
        ValueError: a stated background class the data does not have.
    """
    if config.background_class is None:
        return data.background_class
    if config.background_class >= data.num_classes:
        raise ValueError(f"background_class={config.background_class} is not a class of {data.name}, whose class ids "
                         f"are 0 to {data.num_classes - 1} ({data.class_names}).")
    return config.background_class


def save_predictions(path: Path, y_true: np.ndarray | list[np.ndarray], y_pred: np.ndarray | list[np.ndarray],
                     class_names: list[str], background: int) -> None:
    """Writes the test masks, one per original image, to ``predictions.npz``.

    Masks of one size are saved as (N, H, W) arrays; masks of several sizes (whole images of a
    tiled folder) as their pixels one image after the other, with ``image_shapes`` (N, 2) to
    cut them apart (re-scoring needs only the pixels). ``background_class`` is saved for
    re-scoring.

    Args:
        path: the file to write.
        y_true, y_pred: the true and predicted class-id masks, one per image.
        class_names: the name of every class id.
        background: the background class id.
    """
    shapes = np.asarray([np.shape(mask) for mask in y_true], dtype=np.int64).reshape(-1, 2)
    if len({tuple(shape) for shape in shapes}) <= 1:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    else:
        y_true, y_pred = _pixels(y_true), _pixels(y_pred)
    np.savez_compressed(path, y_true=y_true, y_pred=y_pred, image_shapes=shapes, class_names=np.asarray(class_names),
                        background_class=np.int64(background))


def masks_per_image(predictions: dict[str, np.ndarray]) -> tuple[np.ndarray | list[np.ndarray],
                                                                 np.ndarray | list[np.ndarray]]:
    """The true and predicted test masks of a run's ``predictions.npz``, one per image.

    Args:
        predictions: the file's arrays (``lab.runs.records.Run.predictions()``).

    Returns:
        ``(y_true, y_pred)``: (N, H, W) arrays when the images have one size, else lists of
        (H, W) masks cut apart by ``image_shapes``.
    """
    y_true, y_pred = predictions["y_true"], predictions["y_pred"]
    if y_true.ndim == 3 or "image_shapes" not in predictions:
        return y_true, y_pred
    ends = np.cumsum([height * width for height, width in predictions["image_shapes"]])[:-1]
    shapes = [tuple(int(v) for v in shape) for shape in predictions["image_shapes"]]
    return ([part.reshape(shape) for part, shape in zip(np.split(y_true, ends), shapes)],
            [part.reshape(shape) for part, shape in zip(np.split(y_pred, ends), shapes)])


def class_weights(config: SegmentationConfig, data: SegmentationDataset) -> list[float] | None:
    """The per-class loss weights the configuration asks for, checked against the data."""
    if config.class_weighting is None:
        return None
    if config.class_weighting == "balanced":
        return data.class_weights("train")
    weights = [float(w) for w in config.class_weighting]
    if len(weights) != data.num_classes:
        raise ValueError(f"class_weighting has {len(weights)} weights but {data.name} has {data.num_classes} classes "
                         f"{data.class_names}: give one per class, background first when it is class 0 (the "
                         "weights follow the class ids).")
    return weights


def _pixels(masks: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Masks as scoring reads them: an array as it is, a list of masks (of any sizes) as their
    pixels one after the other."""
    if isinstance(masks, np.ndarray):
        return masks
    return np.concatenate([np.asarray(mask).reshape(-1) for mask in masks]) if masks else np.zeros(0, np.uint8)


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
