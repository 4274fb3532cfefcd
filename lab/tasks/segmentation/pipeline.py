"""tf.data pipelines for image-and-mask pairs, with augmentation applied to both alike.

The stages follow ``lab.data.pipeline``: cache, shuffle (training only), batch, scale the images,
random augmentation (training only), prefetch. Images are scaled exactly as the
classification pipeline scales them; masks stay integer class ids.

Joint augmentation uses Keras' preprocessing layers (``lab.data.pipeline.make_augmenter``) called
on ``{"images": ..., "segmentation_masks": ...}``: each layer draws one random transformation
per batch and applies it to the images (bilinear) and to the masks with nearest-neighbour
interpolation, so every mask pixel stays a valid class id and lies where its image pixel went.
Colour changes (contrast) touch the images only. U-Net's elastic deformation
(``elastic=``, ``lab.tasks.segmentation.elastic``) is one more such layer, last, with its own
displacement field per image.

With U-Net's weight maps (``weight_maps=``, ``lab.tasks.segmentation.weight_map``) the targets become
(batch, H, W, 2) floats, the class ids then the weights, which augmentation moves together (by
nearest neighbour, so each pixel keeps its weight) and the losses read (``split_targets``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from lab.config.segmentation import PAPER_ELASTIC_GRID, check_elastic
from lab.tasks.segmentation.elastic import RandomElasticDeformation
from lab.data.pipeline import AUTOTUNE, _scaler, augment_batch, augment_batches, check_batching, make_augmenter


def make_joint_augmenter(*, flip: str | None = "horizontal", rotation: float = 0.0, zoom: float = 0.0,
                         translation: float = 0.0, contrast: float = 0.0, seed: int = 0, elastic: float = 0.0,
                         elastic_grid: int = PAPER_ELASTIC_GRID) -> keras.Sequential:
    """The classification augmenter's layers, to be applied to images and masks together.

    Same arguments as ``lab.data.pipeline.make_augmenter``, and U-Net's elastic deformation
    (``lab.tasks.segmentation.elastic``): ``elastic`` the displacements' standard deviation in pixels
    (0: off; the paper: 10), ``elastic_grid`` the vectors on each side of its grid (the paper: 3).
    Apply it with ``augment_pair``.
    """
    check_elastic(elastic, elastic_grid)
    augmenter = make_augmenter(flip=flip, rotation=rotation, zoom=zoom, translation=translation, contrast=contrast,
                               seed=seed)
    if elastic:
        augmenter.add(RandomElasticDeformation(elastic, elastic_grid, seed=seed + 5, name="elastic"))
    return augmenter


def augment_pair(augmenter: keras.Sequential, images, masks, seed=None):
    """Applies each layer of ``augmenter`` once to a batch of images and its masks.

    Args:
        augmenter: from ``make_joint_augmenter``.
        images: (batch, H, W, C) floats.
        masks: (batch, H, W) integer class ids, or (batch, H, W, 2) class ids and weight maps.
        seed: a stateless seed for the draws, or None for the layers' own seed state
            (``lab.data.pipeline.augment_batch``).

    Returns:
        (images, masks) transformed by the same random draws; masks keep their dtype.
    """
    return augment_batch(augmenter, images, masks=masks, seed=seed)


def make_segmentation_pipeline(
    images: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    training: bool,
    batch_size: int = 16,
    input_scaling: str = "unit",
    cache: bool = True,
    augmenter: keras.Sequential | None = None,
    seed: int = 0,
    deterministic: bool = True,
    targets: str = "masks",
    weight_maps: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Turns in-memory images and masks into a batched, prefetched tf.data pipeline.

    Args:
        images: NHWC uint8 (0-255) or float images.
        masks: (N, H, W) class ids, or None for an images-only pipeline (prediction, or
            ``targets="images"``).
        training: shuffle and augment only when True.
        batch_size: images per batch.
        input_scaling: "unit", "imagenet" or "none", as in ``lab.data.pipeline.make_pipeline``.
        cache: cache the unbatched arrays in memory.
        augmenter: joint augmentation for training batches (``make_joint_augmenter``).
        seed: seeds the shuffle and the augmentation.
        deterministic: keep the element order fixed across runs.
        targets: "masks" yields (images, masks); "images" yields (images, images), the
            autoencoders' pairs (augmentation then moves input and target alike).
        weight_maps: (N, H, W) per-pixel loss weights, one per mask (U-Net's, from
            ``lab.tasks.segmentation.weight_map``): the targets are then (batch, H, W, 2) float32,
            the class ids and the weights (``lab.tasks.segmentation.losses.split_targets``).

    Returns:
        A ``tf.data.Dataset`` of batches.
    """
    check_batching(batch_size, input_scaling)
    if targets not in ("masks", "images"):
        raise ValueError(f"targets must be 'masks' or 'images', received {targets!r}.")
    if targets == "images" and masks is not None:
        raise ValueError("targets='images' pairs every image with itself: pass masks=None.")
    if masks is not None and len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks.")
    if weight_maps is not None and (masks is None or np.shape(weight_maps) != np.shape(masks)):
        raise ValueError(f"weight_maps must hold one (H, W) map per mask, shape {np.shape(masks)}, received shape "
                         f"{np.shape(weight_maps)}.")
    uint8_input = images.dtype == np.uint8
    pairs = (images, masks) if weight_maps is None else (images, masks, weight_maps.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(images if masks is None else pairs)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    scale = _scaler(input_scaling, uint8_input)
    if weight_maps is None:
        ds = ds.map(lambda x, *m: (scale(x), *m) if m else scale(x), num_parallel_calls=AUTOTUNE,
                    deterministic=deterministic)
    else:  # class ids and weights become one float target, which augmentation moves as one
        ds = ds.map(lambda x, m, w: (scale(x), tf.stack([tf.cast(m, tf.float32), w], axis=-1)),
                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    augment = training and augmenter is not None and augmenter.layers
    if augment:
        # In parallel, each batch from its own seed, as lab.data.pipeline does (augment_batches).
        ds = augment_batches(ds, augmenter, seed=seed, deterministic=deterministic, masks=masks is not None)
    if targets == "images":
        ds = ds.map(lambda x: (x, x), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False  # see lab.data.pipeline: autotune teardown stalls on CPU
    return ds.with_options(options).prefetch(AUTOTUNE)
