"""The configuration of a segmentation or autoencoder run: ``SegmentationConfig`` (E6, E12)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, ClassVar

from lab.config.base import BaseConfig, _one_of, check_frozen_or_all, model_option
from lab.models import model_options

SEGMENTATION_LOSSES = ("crossentropy", "dice", "combined")
RECONSTRUCTION_LOSSES = ("binary_crossentropy", "mse")
# U-Net's training as published (Ronneberger et al., 2015): elastic deformation by displacements
# of 10 pixels' standard deviation on a 3x3 grid, and the weight map's w0 = 10 and sigma = 5 pixels.
PAPER_ELASTIC_STDDEV = 10.0
PAPER_ELASTIC_GRID = 3
PAPER_WEIGHT_MAP_W0 = 10.0
PAPER_WEIGHT_MAP_SIGMA = 5.0


def check_backbone_weights(weights: str | None) -> None:
    """``weights`` of a segmentation backbone (pretrained_unet's): the one check that the
    configuration and the builder call."""
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be 'imagenet' or None (random initialisation) for a segmentation backbone, "
                         f"received weights={weights!r}.")


def check_elastic(stddev: float, grid: int) -> None:
    """The one check of an elastic deformation's settings, which the configuration and
    ``lab.tasks.segmentation.elastic.RandomElasticDeformation`` call.

    Raises:
        ValueError: a negative or non-finite stddev, or a grid of fewer than 2 points a side.
    """
    if isinstance(stddev, bool) or not isinstance(stddev, numbers.Real) or not math.isfinite(stddev) or stddev < 0:
        raise ValueError(f"aug_elastic is the standard deviation in pixels of the elastic deformation's displacements, "
                         f"a number >= 0 (0: off; the paper: {PAPER_ELASTIC_STDDEV:g}), received "
                         f"aug_elastic={stddev!r}.")
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or grid < 2:
        raise ValueError(f"aug_elastic_grid is the number of displacement vectors on each side of the elastic "
                         f"deformation's coarse grid, an integer >= 2 (the paper: {PAPER_ELASTIC_GRID}), received "
                         f"aug_elastic_grid={grid!r}.")


def check_weight_map(w0: float, sigma: float) -> None:
    """The one check of U-Net's weight-map parameters, which the configuration and
    ``lab.tasks.segmentation.weight_map`` call.

    Raises:
        ValueError: w0 negative or sigma not positive (or either not a finite number).
    """
    for key, value, allowed in (("weight_map_w0", w0, ">= 0"), ("weight_map_sigma", sigma, "> 0")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or value < 0 or (key == "weight_map_sigma" and value == 0):
            raise ValueError(f"{key} must be a number {allowed} (the paper: w0 = {PAPER_WEIGHT_MAP_W0:g}, sigma = "
                             f"{PAPER_WEIGHT_MAP_SIGMA:g} pixels), received {key}={value!r}.")


def check_tiles(tile_size: int | None, tile_margin: int | None) -> None:
    """The one check of ``tile_size`` and ``tile_margin``, which the configuration and the
    overlap-tile prediction (``lab.tasks.segmentation.tiling``) call (the mask-folder loader of
    ``lab.data.datasets`` still restates it: it should call this one).

    Args:
        tile_size: the tile side (None: untiled), a positive integer.
        tile_margin: the context kept around a tile's centre, 0 <= 2 * tile_margin < tile_size
            (None: the loader's default, tile_size // 8).

    Raises:
        ValueError: a value that is not a whole number, a tile_margin without tile_size, or a
            margin that leaves no tile centre.
    """
    if tile_size is None:
        if tile_margin is not None:
            raise ValueError(f"tile_margin={tile_margin!r} is the context margin of tiles: set tile_size too.")
        return
    # numbers.Integral takes NumPy's integers too (a tile side read from an array's shape).
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, received tile_size={tile_size!r}.")
    if tile_margin is not None and (isinstance(tile_margin, bool) or not isinstance(tile_margin, numbers.Integral)
                                    or tile_margin < 0 or 2 * tile_margin >= tile_size):
        raise ValueError(f"tile_margin must be an integer with 0 <= 2 * tile_margin < tile_size={tile_size} (a "
                         f"tile's centre must remain), received tile_margin={tile_margin!r}.")


@dataclasses.dataclass
class SegmentationConfig(BaseConfig):
    """A segmentation or autoencoder run (E6, E12).

    Data: dataset is "shapes", "membranes", "tfds:oxford_iiit_pet" or "folder:<path>";
        dataset_size the image side (shapes: generated at this size, default 32; membranes: the
        same, default 128; pets: resized, default 128; folders: resized).
        background_class: the class id that is background (None: the data's own, 0). The
            foreground shares, the foreground IoU and the all_background flag are computed
            against it (EM membranes: the membrane may be class 0 and the foreground).
    Mask folders only (``lab.data.datasets.segmentation.load_mask_folder``; None: its default):
        tile_size: cut the images (after the dataset_size resize, if any) into tiles of this
            side to train on; the validation and test images are predicted whole by
            overlap-tile and scored per image (``lab.tasks.segmentation.tiling``).
        tile_margin: the context each predicted tile keeps around its centre, 0 <= 2 *
            tile_margin < tile_size (None: tile_size // 8; 0: naive tiling, seams). Both are
            checked by ``check_tiles``, the one check of both (the tiling calls it too).
        class_names: the name of every class id, e.g. ["membrane", "cell"].
        class_values: {mask value: class id}, e.g. {0: 0, 255: 1} or {0: 0, 128: 1, 255: 2}.
        mask_suffix, images_dir, masks_dir: how masks are named and where images and masks
            are (defaults "", "images", "masks").
    Model: "unet", "pretrained_unet", "deeplab", "fcn" (segmentation) or "autoencoder",
        "denoising_autoencoder", "vae"; upsampling, output_activation, backbone, decoder_filters,
        output_stride, atrous_rates, aspp_filters, skip_levels, latent_channels, latent_dim,
        noise_stddev, kl_weight are their switches (None: the builder's default).
    Training:
        loss: segmentation "crossentropy" (per pixel), "dice" (soft Dice, E12) or "combined"
            (crossentropy_weight * CE + dice_weight * Dice); autoencoders "binary_crossentropy"
            or "mse". None: "combined" (it reached a mean IoU of 0.9 on shapes in fewer epochs
            than either alone, benchmarks/segmentation.py) or "binary_crossentropy".
        class_weighting: None, "balanced" (inverse pixel frequency of the training masks) or a
            list of one weight per class, background first (E6's "weight the background down").
        aug_elastic: with augment=True, U-Net's elastic deformation of the training batches:
            the standard deviation in pixels of the displacements on a coarse grid (0: off; the
            paper: 10), one field per image, masks by nearest neighbour (``lab.tasks.segmentation.elastic``).
        aug_elastic_grid: displacement vectors on each side of that grid (the paper: 3).
        weight_map: train with U-Net's weight map, w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 /
            (2 sigma^2)), multiplying each pixel's cross-entropy (``lab.tasks.segmentation.weight_map``;
            the cells are the background class's regions). Computed once per training mask and
            kept with the data. It shapes the training loss only: validation and test losses
            are the unweighted ones, so runs with and without it compare. Not with
            class_weighting (w_c is its class balancing); not with loss="dice" (no per-pixel term).
        weight_map_w0, weight_map_sigma: the border term's height and width in pixels (the
            paper: 10 and 5).
    Record:
        background_flag_ratio: the run is flagged ``all_background`` when its predicted
            foreground share is below this fraction of the true one (E6).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "shapes", "model": "unet", "batch_size": 16,
                                          "steps_per_execution": 1, "aug_rotation": 0.0}

    background_class: int | None = None
    tile_size: int | None = None
    tile_margin: int | None = None
    class_names: list[str] | None = None
    class_values: dict[int, int] | None = None
    mask_suffix: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    upsampling: str | None = model_option()
    output_activation: str | None = model_option()
    backbone: str | None = model_option()
    decoder_filters: list[int] | None = model_option()
    output_stride: int | None = model_option()
    atrous_rates: list[int] | None = model_option()
    aspp_filters: int | None = model_option()
    skip_levels: int | None = model_option()
    latent_channels: int | None = model_option()
    latent_dim: int | None = model_option()
    noise_stddev: float | None = model_option()
    kl_weight: float | None = model_option()
    loss: str | None = None
    crossentropy_weight: float = 1.0
    dice_weight: float = 1.0
    background_flag_ratio: float = 0.1
    aug_elastic: float = 0.0
    aug_elastic_grid: int = PAPER_ELASTIC_GRID
    weight_map: bool = False
    weight_map_w0: float = PAPER_WEIGHT_MAP_W0
    weight_map_sigma: float = PAPER_WEIGHT_MAP_SIGMA

    @property
    def loss_name(self) -> str:
        """The loss, with None resolved to the task's default."""
        if self.loss is not None:
            return self.loss
        return "binary_crossentropy" if self.task == "reconstruction" else "combined"

    def validate(self) -> None:
        super().validate()
        reconstruction = self.task == "reconstruction"
        if self.loss is not None:
            _one_of("loss", self.loss, RECONSTRUCTION_LOSSES if reconstruction else SEGMENTATION_LOSSES,
                    f" for {self.task} model {self.model!r}")
        weighting = self.class_weighting
        if weighting is not None and not (weighting == "balanced" or isinstance(weighting, (list, tuple))):
            raise ValueError(f"class_weighting must be None, 'balanced' or a list of per-class weights, received "
                             f"{weighting!r}.")
        if isinstance(weighting, (list, tuple)) and (
                not weighting or any(not isinstance(w, (int, float)) or w < 0 for w in weighting)):
            raise ValueError(f"class_weighting as a list needs one weight >= 0 per class, received {weighting}.")
        if weighting is not None and reconstruction:
            raise ValueError("class_weighting applies to segmentation models only.")
        if self.crossentropy_weight < 0 or self.dice_weight < 0 or self.crossentropy_weight + self.dice_weight == 0:
            raise ValueError(f"crossentropy_weight and dice_weight must be >= 0 and not both 0, received "
                             f"{self.crossentropy_weight} and {self.dice_weight}.")
        if reconstruction and self.input_scaling != "unit":
            raise ValueError(f"Autoencoders reconstruct images in [0, 1]: input_scaling must be 'unit', received "
                             f"{self.input_scaling!r}.")
        if not isinstance(self.cache, bool):
            raise ValueError(f"cache must be True or False for {self.task} runs, received cache={self.cache!r}.")
        check_backbone_weights(self.weights)
        if self.unfreeze is not None:
            check_frozen_or_all(self.unfreeze)
        if self.unfreeze is not None and "unfreeze" not in model_options(self.model):
            raise ValueError(f"unfreeze applies to pretrained_unet's backbone; model {self.model!r} trains whole. "
                             f"Received unfreeze={self.unfreeze!r}.")
        if not 0.0 < self.background_flag_ratio < 1.0:
            raise ValueError(f"background_flag_ratio must be between 0 and 1, received {self.background_flag_ratio}.")
        self._validate_mask_folder_options()
        self._validate_unet_recipe()

    def _validate_unet_recipe(self) -> None:
        """Elastic deformation and the weight map (U-Net's training as published)."""
        check_elastic(self.aug_elastic, self.aug_elastic_grid)
        check_weight_map(self.weight_map_w0, self.weight_map_sigma)
        if not isinstance(self.weight_map, bool):
            raise ValueError(f"weight_map must be True or False, received weight_map={self.weight_map!r}.")
        if not self.weight_map:
            return
        if self.task == "reconstruction":
            raise ValueError("weight_map weights a segmentation loss per pixel; autoencoders have no masks. Leave "
                             "weight_map=False.")
        if self.class_weighting is not None:
            raise ValueError(f"weight_map holds its own class balancing (w_c); received class_weighting="
                             f"{self.class_weighting!r} as well. Leave class_weighting=None with weight_map=True.")
        if self.loss_name == "dice":
            raise ValueError("weight_map weights the per-pixel cross-entropy, which loss='dice' does not have: use "
                             "loss='crossentropy' or 'combined' with weight_map=True.")

    def _validate_mask_folder_options(self) -> None:
        """The background class and the mask-folder options, each refused by name; class_values
        is normalised to int keys (a JSON record gives them back as strings)."""
        from lab.data.datasets.segmentation.mask_folders import FOLDER_OPTIONS

        if self.background_class is not None and (isinstance(self.background_class, bool) or
                                                  not isinstance(self.background_class, int) or
                                                  self.background_class < 0):
            raise ValueError(f"background_class must be a class id (0 or more), received "
                             f"background_class={self.background_class!r}.")
        given = [key for key in FOLDER_OPTIONS if getattr(self, key) is not None]
        if given and not str(self.dataset).lower().startswith("folder:"):
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to mask folders "
                             f"(dataset='folder:<path>'); received dataset={self.dataset!r}. Leave "
                             f"{' and '.join(given)} unset (None).")
        check_tiles(self.tile_size, self.tile_margin)
        if self.tile_size is not None and self.dataset_size is not None and self.tile_size > self.dataset_size:
            raise ValueError(f"tile_size={self.tile_size} is larger than the images resized to dataset_size="
                             f"{self.dataset_size} (they are resized first, then cut into tiles): choose "
                             "tile_size <= dataset_size.")
        if self.class_names is not None:
            names = self.class_names
            if len(names) < 2 or any(not isinstance(n, str) or not n.strip() for n in names) or \
                    len(set(names)) != len(names):
                raise ValueError(f"class_names must be two or more distinct, non-empty names, one per class id, "
                                 f"received class_names={names!r}.")
            if self.background_class is not None and self.background_class >= len(names):
                raise ValueError(f"background_class={self.background_class} is not a class id of class_names "
                                 f"{names} (ids 0 to {len(names) - 1}).")
        if self.class_values is not None:
            self.class_values = _class_values(self.class_values)
            classes = max(self.class_values.values()) + 1
            if self.class_names is not None and len(self.class_names) != classes:
                raise ValueError(f"class_values {self.class_values} maps to {classes} class ids but class_names has "
                                 f"{len(self.class_names)} names {self.class_names}: give one name per class id.")
        for key in ("mask_suffix", "images_dir", "masks_dir"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or (key != "mask_suffix" and not value.strip())):
                raise ValueError(f"{key} must be a{' non-empty' if key != 'mask_suffix' else ''} string, "
                                 f"received {key}={value!r}.")


def _class_values(values: Any) -> dict[int, int]:
    """``{mask value: class id}`` with int keys in order, refusing anything else by name."""
    problem = None
    if not isinstance(values, dict) or not values:
        problem = "a non-empty dict"
    else:
        # Keys are ints, or their digits as a JSON record gives them back; 1.5 is not truncated to 1.
        whole = all((isinstance(k, int) and not isinstance(k, bool) and k >= 0) or
                    (isinstance(k, str) and k.strip().isdigit()) for k in values)
        mapping = {int(k): v for k, v in values.items()} if whole else {}
        if not whole:
            problem = "whole-number mask values (0 or more) as keys"
        elif any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in mapping.values()):
            problem = "mask values (0 or more) mapped to class ids 0 to 255"
        elif 0 not in mapping.values():
            problem = "class ids counted from 0 (class 0 among them)"
    if problem is not None:
        raise ValueError(f"class_values must be {problem}, e.g. class_values={{0: 0, 255: 1}}; received "
                         f"class_values={values!r}.")
    return dict(sorted(mapping.items()))

