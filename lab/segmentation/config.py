"""The flat configuration of a segmentation or autoencoder run.

Same rules as ``lab.config.RunConfig``: every field a flat value a notebook's parameters cell
can hold, unknown keys refused, validation with messages that say what was received, model
switches left at None take the builder's default, and only the switches a model has may be set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lab.config import FlatConfig
from lab.segmentation.losses import LOSSES
from lab.segmentation.registry import AUTOENCODERS, SEGMENTATION_MODELS, model_options

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
DISTRIBUTE = (None, "mirrored", "multiworker", "tpu")
RECONSTRUCTION_LOSSES = ("binary_crossentropy", "mse")
MONITORS = {"val_loss": "min", "val_accuracy": "max", "val_mean_iou": "max", "val_mean_dice": "max"}

# Flat fields that are builder options (passed when not None), and their builder argument names.
MODEL_FIELDS = {
    "depth": "depth", "filters": "filters", "normalization": "normalization", "dropout_rate": "dropout_rate",
    "upsampling": "upsampling", "output_activation": "output_activation", "encoder": "encoder",
    "encoder_weights": "weights", "trainable_encoder": "trainable_encoder", "decoder_filters": "decoder_filters",
    "output_stride": "output_stride", "atrous_rates": "atrous_rates", "aspp_filters": "aspp_filters",
    "skip_levels": "skip_levels", "convs_per_block": "convs_per_block", "latent_channels": "latent_channels",
    "latent_dim": "latent_dim", "dense_units": "dense_units", "noise_stddev": "noise_stddev",
    "kl_weight": "kl_weight",
}


@dataclasses.dataclass
class SegmentationConfig(FlatConfig):
    """Everything that defines a segmentation (or autoencoder) run.

    Data:
        dataset: "shapes", "tfds:oxford_iiit_pet" or "folder:<path>"
            (see ``lab.datasets.segmentation``).
        dataset_size: image side (shapes: generated at this size, default 32; pets: resized,
            default 128; folders: resized).
        limit: at most this many images per split (quick runs).
        val_fraction: validation share carved from train where a set has none.
        input_scaling: "unit", "imagenet" or "none".
        cache: cache the arrays in the pipeline.
        augment: random flips, rotations, zooms, shifts applied to image and mask together
            (aug_flip, aug_rotation, aug_zoom, aug_translation; aug_contrast on images only).
    Model:
        model: "unet", "pretrained_unet", "deeplab", "fcn" (segmentation) or "autoencoder",
            "denoising_autoencoder", "vae". The switches below take the builder's default
            when None; ``encoder_weights`` is ``pretrained_unet``'s ``weights``: "imagenet"
            (its default) or "none" (random initialisation).
    Training:
        loss: segmentation "crossentropy" (per pixel), "dice" (soft Dice, E12) or "combined"
            (crossentropy_weight * CE + dice_weight * Dice); autoencoders "binary_crossentropy"
            or "mse". None: "combined" (it reached a mean IoU of 0.9 on shapes in fewer epochs
            than either alone, benchmarks/segmentation.py) or "binary_crossentropy".
        class_weighting: None, "balanced" (inverse pixel frequency of the training masks) or a
            list of one weight per class, background first (E6's "weight the background down").
        optimizer, learning_rate, momentum, weight_decay, epochs, batch_size,
        early_stopping_patience (None: off), divergence_patience, seed, deterministic.
        monitor: what picks the best epoch (restored, checkpointed, early stopping):
            "val_loss", "val_accuracy", "val_mean_iou" or "val_mean_dice".
    Hardware: mixed_precision, jit_compile, steps_per_execution, distribute (as RunConfig).
    Record:
        name, tags, reports_dir, save_model, verbose.
        background_flag_ratio: the run is flagged ``all_background`` when its predicted
            foreground share is below this fraction of the true one (E6).
    """

    # data
    dataset: str = "shapes"
    dataset_size: int | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    input_scaling: str = "unit"
    cache: bool = True
    augment: bool = False
    aug_flip: str | None = "horizontal"
    aug_rotation: float = 0.0
    aug_zoom: float = 0.0
    aug_translation: float = 0.0
    aug_contrast: float = 0.0
    # model
    model: str = "unet"
    depth: int | None = None
    filters: int | list[int] | None = None
    normalization: str | None = None
    dropout_rate: float | None = None
    upsampling: str | None = None
    output_activation: str | None = None
    encoder: str | None = None
    encoder_weights: str | None = None
    trainable_encoder: bool | None = None
    decoder_filters: list[int] | None = None
    output_stride: int | None = None
    atrous_rates: list[int] | None = None
    aspp_filters: int | None = None
    skip_levels: int | None = None
    convs_per_block: int | None = None
    latent_channels: int | None = None
    latent_dim: int | None = None
    dense_units: int | None = None
    noise_stddev: float | None = None
    kl_weight: float | None = None
    # training
    loss: str | None = None
    class_weighting: str | list[float] | None = None
    crossentropy_weight: float = 1.0
    dice_weight: float = 1.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 4e-3
    epochs: int = 30
    batch_size: int = 16
    early_stopping_patience: int | None = 10
    divergence_patience: int = 3
    monitor: str = "val_loss"
    seed: int = 0
    deterministic: bool = True
    # hardware
    mixed_precision: bool = False
    jit_compile: bool = False
    steps_per_execution: int = 1
    distribute: str | None = None
    # record
    name: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    reports_dir: str | None = None
    save_model: bool = True
    verbose: int = 1
    background_flag_ratio: float = 0.1

    @property
    def task(self) -> str:
        """"segmentation" or "reconstruction" (autoencoders)."""
        return "reconstruction" if self.model in AUTOENCODERS else "segmentation"

    @property
    def loss_name(self) -> str:
        """The loss, with None resolved to the task's default."""
        if self.loss is not None:
            return self.loss
        return "binary_crossentropy" if self.task == "reconstruction" else "combined"

    def model_options(self) -> dict[str, Any]:
        """The model switches that were set, as the builder's keyword arguments."""
        options = {}
        for field, option in MODEL_FIELDS.items():
            value = getattr(self, field)
            if value is not None:
                options[option] = tuple(value) if isinstance(value, list) else value
        if options.get("weights") == "none":  # None already means "the builder's default" here
            options["weights"] = None
        return options

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value and what is allowed."""
        models = {**SEGMENTATION_MODELS, **AUTOENCODERS}
        if self.model not in models:
            raise ValueError(f"Unknown model {self.model!r}. Available models: {', '.join(models)}.")
        accepted = model_options(self.model)
        fields = {option: field for field, option in MODEL_FIELDS.items()}
        for option, value in self.model_options().items():
            if option not in accepted:
                raise ValueError(f"Model {self.model!r} has no option {fields[option]!r} (received "
                                 f"{fields[option]}={value!r}). Its options: {', '.join(accepted) or 'none'}.")
        if self.encoder_weights not in (None, "imagenet", "none"):
            raise ValueError(f"encoder_weights must be 'imagenet' or 'none', received {self.encoder_weights!r}.")
        allowed_losses = RECONSTRUCTION_LOSSES if self.task == "reconstruction" else LOSSES
        if self.loss is not None and self.loss not in allowed_losses:
            raise ValueError(f"loss must be one of {allowed_losses} for {self.task} model {self.model!r}, received "
                             f"loss={self.loss!r}.")
        if self.class_weighting is not None and not (self.class_weighting == "balanced"
                                                     or isinstance(self.class_weighting, (list, tuple))):
            raise ValueError(f"class_weighting must be None, 'balanced' or a list of per-class weights, received "
                             f"{self.class_weighting!r}.")
        if isinstance(self.class_weighting, (list, tuple)) and (
                not self.class_weighting or any(not isinstance(w, (int, float)) or w < 0 for w in self.class_weighting)):
            raise ValueError(f"class_weighting as a list needs one weight >= 0 per class, received {self.class_weighting}.")
        if self.class_weighting is not None and self.task == "reconstruction":
            raise ValueError("class_weighting applies to segmentation models only.")
        if self.crossentropy_weight < 0 or self.dice_weight < 0 or self.crossentropy_weight + self.dice_weight == 0:
            raise ValueError(f"crossentropy_weight and dice_weight must be >= 0 and not both 0, received "
                             f"{self.crossentropy_weight} and {self.dice_weight}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}. Available optimizers: {', '.join(OPTIMIZERS)}.")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, received monitor={self.monitor!r}.")
        if self.task == "reconstruction" and self.input_scaling != "unit":
            raise ValueError(f"Autoencoders reconstruct images in [0, 1]: input_scaling must be 'unit', received "
                             f"{self.input_scaling!r}.")
        if self.task == "reconstruction" and self.monitor != "val_loss":
            raise ValueError("Autoencoders have no IoU or accuracy: use monitor='val_loss'.")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be a positive number, received learning_rate={self.learning_rate!r}.")
        for key in ("epochs", "batch_size", "divergence_patience", "steps_per_execution"):
            _positive_int(key, getattr(self, key))
        for key in ("limit", "dataset_size", "early_stopping_patience"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, received val_fraction={self.val_fraction}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received momentum={self.momentum}.")
        if not 0.0 < self.background_flag_ratio < 1.0:
            raise ValueError(f"background_flag_ratio must be between 0 and 1, received {self.background_flag_ratio}.")
        if self.jit_compile and self.deterministic:
            raise ValueError("jit_compile=True needs deterministic=False: Keras disables XLA while TensorFlow's op "
                             "determinism is on.")
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {DISTRIBUTE}, received {self.distribute!r}.")


def _positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, received {key}={value!r}.")
