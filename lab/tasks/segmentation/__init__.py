"""Segmentation and dense prediction (E6, E12): losses, metrics, pipelines, training.

    from lab.tasks.segmentation import train_segmentation
    result = train_segmentation(dataset="shapes", model="unet", depth=3, filters=16, loss="combined")
    result.metrics["test_mean_iou"], result.metrics["all_background"]

Modules:
    losses     soft Dice, class-weighted per-pixel cross-entropy, their combination
    metrics    streaming pixel accuracy, mean IoU and mean Dice for the training history
    pipeline   tf.data for image/mask pairs, augmentation applied to both alike
    tasks      what a segmentation or autoencoder run adds to the runner (lab.runs.runner)
    tiling     overlap-tile prediction of whole images by a network trained on tiles
    elastic    U-Net's elastic deformation, a Keras augmentation layer for images and masks
    weight_map U-Net's weight map, computed once per mask and cached on the dataset
    training   train_segmentation, train_autoencoder: one run, one record
Elsewhere, in their one place: the builders (unet, pretrained_unet, deeplab, fcn, autoencoder,
denoising_autoencoder, vae) in ``lab.models``' registry; ``SegmentationConfig`` in
``lab.config``; the record's scores (per-class IoU and Dice, E6's all-background flag) in
``lab.runs.evaluation``; the data (``load_segmentation_dataset``) in ``lab.data.datasets.segmentation``.
"""

from lab.config import SegmentationConfig
from lab.data.datasets.segmentation import SegmentationDataset, load_segmentation_dataset
from lab.runs.evaluation import per_class_table, pixel_confusion_matrix, segmentation_metrics
from lab.tasks.segmentation.losses import CombinedLoss, DiceLoss, WeightedCrossentropy, make_loss
from lab.tasks.segmentation.metrics import MeanDice, MeanIoU, PixelAccuracy
from lab.tasks.segmentation.tasks import masks_per_image
from lab.tasks.segmentation.tiling import predict_whole_images
from lab.tasks.segmentation.training import train_autoencoder, train_segmentation

__all__ = [
    "CombinedLoss", "DiceLoss", "MeanDice", "MeanIoU", "PixelAccuracy", "SegmentationConfig", "SegmentationDataset",
    "WeightedCrossentropy", "load_segmentation_dataset", "make_loss", "masks_per_image", "per_class_table",
    "pixel_confusion_matrix", "predict_whole_images", "segmentation_metrics", "train_autoencoder", "train_segmentation",
]
