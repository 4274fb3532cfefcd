"""Segmentation and dense prediction (E6, E12): models, losses, metrics, data, training.

    from lab.segmentation import train_segmentation
    result = train_segmentation(dataset="shapes", model="unet", depth=3, filters=16, loss="combined")
    result.metrics["test_mean_iou"], result.metrics["all_background"]

Modules:
    registry   builders by name: unet, pretrained_unet, deeplab, fcn; autoencoder,
               denoising_autoencoder, vae (the builders live in lab.models.*)
    losses     soft Dice, class-weighted per-pixel cross-entropy, their combination
    metrics    pixel accuracy, per-class IoU and Dice, E6's all-background flag
    pipeline   tf.data for image/mask pairs, augmentation applied to both alike
    config     SegmentationConfig, the flat run configuration
    training   train_segmentation, train_autoencoder: one run, one record
The data (SegmentationDataset, load_segmentation_dataset) is in lab.datasets.segmentation.
"""

from lab.datasets.segmentation import SegmentationDataset, load_segmentation_dataset
from lab.segmentation.config import SegmentationConfig
from lab.segmentation.losses import CombinedLoss, DiceLoss, WeightedCrossentropy, make_loss
from lab.segmentation.metrics import (MeanDice, MeanIoU, PixelAccuracy, per_class_table, pixel_confusion_matrix,
                                      segmentation_metrics)
from lab.segmentation.registry import (AUTOENCODERS, SEGMENTATION_MODELS, build_autoencoder,
                                       build_segmentation_model, model_options)
from lab.segmentation.training import SegmentationResult, train_autoencoder, train_segmentation

__all__ = [
    "AUTOENCODERS", "CombinedLoss", "DiceLoss", "MeanDice", "MeanIoU", "PixelAccuracy", "SEGMENTATION_MODELS",
    "SegmentationConfig", "SegmentationDataset", "SegmentationResult", "WeightedCrossentropy", "build_autoencoder",
    "build_segmentation_model", "load_segmentation_dataset", "make_loss", "model_options", "per_class_table",
    "pixel_confusion_matrix", "segmentation_metrics", "train_autoencoder", "train_segmentation",
]
