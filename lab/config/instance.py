"""The configuration of an instance-segmentation run: ``InstanceConfig`` (E7, ``lab.tasks.instance``).

It lives here, not in ``lab.tasks.instance``, so that a batch can check it without the optional
extra (Model Garden) or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from lab.config.base import BaseConfig, _positive_int, check_frozen_or_all, model_option


@dataclasses.dataclass
class InstanceConfig(BaseConfig):
    """An instance-segmentation run (E7): TensorFlow Model Garden's Mask R-CNN (``lab.tasks.instance``).

    The defaults are E7's real setting (a ResNet-50-FPN Mask R-CNN on an ImageNet backbone, SGD
    with momentum, 15 epochs), meant for a GPU; a CPU needs the quick setting (a small
    ``pipeline_size``, ``backbone="resnet18"``, light heads, few images).

    Data: dataset is "shapes" (the embedded generated instance set, E7's 300/50 images by
        default; dataset_size is its image side, default 128) or "coco:<path>" (a COCO
        instance-annotation JSON with its images, or a folder with train.json and val.json;
        split_fractions splits a single JSON). limit keeps that many images per split.
    Model ("maskrcnn"; None takes the builder's default, ``lab.tasks.instance.model``):
        backbone: "resnet18", "resnet34", "resnet50" or "resnet101" (Model Garden's ResNet).
        pipeline_size: the side of the square model input: Model Garden's parser resizes each
            image in the tf.data pipeline, keeping its aspect ratio, and pads it to this side (a
            multiple of 64). It is a pipeline_size, not a backbone_input_size: nothing is
            resized inside the model (see ``lab.config`` for the size fields).
        fpn_filters, head_convs, head_filters, fc_dims, sampled_rois: the FPN width, the
            convolutions and width of the box and mask heads, the box head's fully connected
            width, and the proposals sampled per image for the heads (the "light heads" of the
            quick setting are small values here).
        norm_momentum: the BatchNorm moving statistics' momentum (default 0.99; 0.9 for a quick
            run of a few dozen steps, whose statistics must settle within them).
        aspect_ratios, proposals: the anchors' aspect ratios (default 0.5, 1 and 2; (1.0,) for
            square boxes) and the RPN proposals kept for the heads (default 1000): fewer make a
            CPU step cheaper (the quick setting's light RPN).
        weights: "imagenet" (Model Garden's ResNet-50 ImageNet checkpoint, downloaded once into
            the data folder, loaded into the backbone), None (random initialisation), or the
            path of a TensorFlow checkpoint (prefix) holding a backbone.
        unfreeze: "all" (the default: everything trains) or 0 (the backbone stays frozen; the
            FPN and the heads train).
    Training: optimizer "sgd" (momentum 0.9) or "adam"; weight_decay is the L2 weight decay of
        every kernel (Model Garden's ``l2_weight_decay``); augment=True flips horizontally
        (aug_flip="horizontal") and scales by a factor in [1 - aug_zoom, 1 + aug_zoom] (Model
        Garden's parser; no other aug_* applies). monitor: "val_mask_ap" (default),
        "val_box_ap" or "val_mask_ap50", the validation COCO AP computed after every epoch.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "shapes", "model": "maskrcnn", "batch_size": 4,
                                          "unfreeze": "all", "steps_per_execution": 1}
    FOLDER_PREFIXES: ClassVar[tuple[str, ...]] = ("coco:",)
    FOLDER_DATA: ClassVar[str] = "COCO annotation files"

    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    epochs: int = 15
    aug_flip: str | None = None
    backbone: str | None = model_option()
    pipeline_size: int | None = model_option()
    fpn_filters: int | None = model_option()
    head_convs: int | None = model_option()
    head_filters: int | None = model_option()
    fc_dims: int | None = model_option()
    sampled_rois: int | None = model_option()
    norm_momentum: float | None = model_option()
    aspect_ratios: tuple[float, ...] | None = model_option()
    proposals: int | None = model_option()

    def validate(self) -> None:
        super().validate()
        if self.norm_momentum is not None and not 0.0 < self.norm_momentum < 1.0:
            raise ValueError(f"norm_momentum must be between 0 and 1, received norm_momentum={self.norm_momentum!r}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam' for Mask R-CNN (Model Garden's optimizers), "
                             f"received optimizer={self.optimizer!r}.")
        check_frozen_or_all(self.unfreeze)
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights must be 'imagenet', None or a checkpoint path, received weights={self.weights!r}.")
        if self.color_mode is not None:
            raise ValueError(f"color_mode does not apply to instance data (images are read as RGB), received "
                             f"color_mode={self.color_mode!r}. Leave it unset (None).")
        for key in ("pipeline_size", "fpn_filters", "head_convs", "head_filters", "fc_dims", "sampled_rois",
                    "proposals"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if self.pipeline_size is not None and self.pipeline_size % 64:
            raise ValueError(f"pipeline_size must be a multiple of 64 (the FPN's coarsest level is 1/64 of the "
                             f"image), received pipeline_size={self.pipeline_size}.")
        if self.sampled_rois is not None and self.sampled_rois < 4:
            raise ValueError(f"sampled_rois must be at least 4 (a quarter of them are foreground for the mask head), "
                             f"received sampled_rois={self.sampled_rois}.")
        if self.aug_flip not in (None, "horizontal"):
            raise ValueError(f"aug_flip must be 'horizontal' or None for Mask R-CNN (Model Garden's parser flips "
                             f"horizontally only), received aug_flip={self.aug_flip!r}.")
        if not 0.0 <= self.aug_zoom < 1.0:
            raise ValueError(f"aug_zoom must be in [0, 1) (scale jitter), received aug_zoom={self.aug_zoom!r}.")
        unused = {key: value for key, value in (("aug_rotation", self.aug_rotation), ("aug_translation", self.aug_translation),
                                                ("aug_contrast", self.aug_contrast), ("class_weighting", self.class_weighting))
                  if value not in (None, 0, 0.0)}
        if self.input_scaling != "unit":
            unused["input_scaling"] = self.input_scaling  # Model Garden's parser normalises with ImageNet's mean and std
        if self.cache is not True:
            unused["cache"] = self.cache
        if self.lr_schedule == "plateau":
            unused["lr_schedule"] = self.lr_schedule
        if unused:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in unused.items())}: not used by Mask R-CNN runs "
                             f"(Model Garden's parser augments with flips and scale jitter only, normalises the images "
                             f"itself, and the learning rate follows a per-step schedule or stays constant). Leave "
                             f"{'it' if len(unused) == 1 else 'them'} at the default.")

