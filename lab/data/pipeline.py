"""tf.data input pipelines, in the order the tf.data performance guide gives.

    deterministic per-image work (resize)  ->  cache  ->  shuffle (training only)  ->  batch
    ->  scale to float  ->  random augmentation (training only)  ->  prefetch

Scaling happens after batching because one vectorised op per batch is much cheaper than one
per image, and caching the uint8 images keeps the cache four times smaller than float32.
Every ``map`` runs with ``num_parallel_calls=AUTOTUNE``; ``deterministic=True`` keeps the
element order fixed so the same seed gives the same batches.

Augmentation is stateless, so it too runs in parallel: each training batch is zipped with a
seed of its own from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`` (a
sequence fixed by the run's seed, a new one every epoch), and the Keras layers draw their
random transformations from that seed alone (``augment_batch``). A batch's augmentation thus
depends on (seed, epoch, batch index) only, not on which batches ran before it or alongside
it: the same seed gives the same images however many batches are augmented at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import keras

from lab.data.datasets.base import check_float_range

AUTOTUNE = tf.data.AUTOTUNE

# keras.applications' ImageNet statistics, for "imagenet" scaling (E11).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INPUT_SCALINGS = ("unit", "imagenet", "none")


def make_augmenter(
    *,
    flip: str | None = "horizontal",
    rotation: float = 0.0,
    zoom: float = 0.0,
    translation: float = 0.0,
    contrast: float = 0.0,
    seed: int = 0,
) -> keras.Sequential:
    """Builds the random augmentation as Keras preprocessing layers.

    Args:
        flip: ``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"`` or None.
        rotation: maximum rotation as a fraction of a full turn (0.1 = +-36 degrees).
        zoom: maximum zoom in or out as a fraction of the size.
        translation: maximum shift (width and height) as a fraction of the size.
        contrast: maximum contrast change factor.
        seed: seeds every layer, so augmentation is repeatable.

    Returns:
        A ``keras.Sequential`` named ``augmentation`` (empty if every option is off). Calling it
        draws from the layers' own seed state; pipelines instead apply it with
        ``augment_batch(..., seed=...)``, which draws from a per-batch seed.
    """
    for label, value in (("rotation", rotation), ("zoom", zoom), ("translation", translation), ("contrast", contrast)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Augmentation {label} must be in [0, 1), received {value}.")
    flips = (None, "none", "horizontal", "vertical", "horizontal_and_vertical")
    if flip not in flips:
        raise ValueError(f"flip must be one of {flips}, received {flip!r}.")
    layers = []
    if flip not in (None, "none"):
        layers.append(keras.layers.RandomFlip(flip, seed=seed, name="flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 1, name="rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 2, name="zoom"))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="reflect",
                                                     seed=seed + 3, name="translation"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 1), seed=seed + 4, name="contrast"))
    return keras.Sequential(layers, name="augmentation")


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    training: bool,
    batch_size: int = 64,
    pipeline_size: int | tuple[int, int] | None = None,
    to_rgb: bool = False,
    input_scaling: str = "unit",
    cache: bool | str | Path = True,
    shuffle_buffer: int | None = None,
    augmenter: keras.Sequential | None = None,
    seed: int = 0,
    deterministic: bool = True,
    drop_remainder: bool = False,
    balance_classes: bool = False,
) -> tf.data.Dataset:
    """Turns in-memory images (and labels) into a batched, prefetched tf.data pipeline.

    Args:
        images: NHWC uint8 (0-255) or float images in [0, 1] (``lab.data.datasets.base.FLOAT_RANGE``).
        labels: integer labels, or None for an images-only pipeline (prediction).
        training: shuffle and augment only when True.
        batch_size: images per batch.
        pipeline_size: resize to this (height, width) first (bilinear), e.g. to enlarge 28 px
            MedMNIST images for a pretrained backbone.
        to_rgb: repeat a single grayscale channel three times.
        input_scaling: ``"unit"`` (to [0, 1]), ``"imagenet"`` ([0, 1] then ImageNet mean/std),
            or ``"none"`` (float32 0-255, for models that preprocess their own input).
        cache: True caches in memory, a path caches to files there, False disables caching.
        shuffle_buffer: shuffle buffer size when training (default: the whole dataset).
        augmenter: random augmentation applied per batch when training (see make_augmenter).
        seed: seeds the shuffle and the augmentation.
        deterministic: keep the element order fixed across runs.
        drop_remainder: drop the last, smaller batch.
        balance_classes: when training, draw every class equally often instead of shuffling
            (``balanced_classes``); an epoch stays as long as the data.

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)`` batches (or images alone).

    Raises:
        ValueError: float images outside [0, 1], which every scaling would get wrong.
    """
    check_batching(batch_size, input_scaling)
    if labels is not None and len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    check_float_range(images, "The images given to make_pipeline")
    uint8_input = images.dtype == np.uint8
    ds = tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels))
    # 1. Deterministic per-image work, done once and cached.
    ds = prepare_images(ds, pipeline_size=pipeline_size, to_rgb=to_rgb, uint8_input=uint8_input,
                        deterministic=deterministic)
    # 2. Cache.
    if cache is True:
        ds = ds.cache()
    elif cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache))
    # 3. Shuffle the training split only; reshuffled every epoch, repeatably from the seed.
    if training and balance_classes:
        if labels is None:
            raise ValueError("balance_classes=True needs labels: it draws the images by class.")
        ds = balanced_classes(ds, labels, seed=seed)
    elif training:
        ds = ds.shuffle(shuffle_buffer or len(images), seed=seed, reshuffle_each_iteration=True)
    # 4.-7. Batch, scale, augment, prefetch.
    return batch_and_finish(ds, training=training, batch_size=batch_size, input_scaling=input_scaling,
                            uint8_input=uint8_input, augmenter=augmenter, deterministic=deterministic,
                            drop_remainder=drop_remainder, seed=seed)


def balanced_classes(ds: tf.data.Dataset, labels: np.ndarray, *, seed: int = 0) -> tf.data.Dataset:
    """Class-balanced sampling: each element is drawn from a class chosen uniformly at random.

    Args:
        ds: elements ``(image, label)``, in the order of ``labels``.
        labels: the integer labels (to find the classes and the epoch's length).
        seed: seeds the class draws and each class's shuffle (afresh every epoch).

    Returns:
        An epoch of ``len(labels)`` elements in which every present class is equally likely:
        minority images repeat within an epoch, majority images are left out of it.
    """
    classes = np.unique(np.asarray(labels))
    per_class = [ds.filter(lambda _image, label, c=int(c): tf.equal(tf.cast(label, tf.int64), c))
                 .shuffle(int(np.sum(labels == c)), seed=seed + int(c), reshuffle_each_iteration=True).repeat()
                 for c in classes]
    mixed = tf.data.Dataset.sample_from_datasets(per_class, weights=[1.0 / len(classes)] * len(classes), seed=seed,
                                                 rerandomize_each_iteration=True)
    return mixed.take(len(labels))


def check_batching(batch_size: int, input_scaling: str) -> None:
    """Raises ValueError for a batch size or scaling that no pipeline accepts."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size}.")
    if input_scaling not in INPUT_SCALINGS:
        raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, received {input_scaling!r}.")


def prepare_images(ds: tf.data.Dataset, *, pipeline_size: int | tuple[int, int] | None, to_rgb: bool,
                   uint8_input: bool, deterministic: bool = True,
                   num_parallel_calls: int = AUTOTUNE) -> tf.data.Dataset:
    """Stage 1: resizing and grayscale-to-RGB per image (elements: image or (image, label)).

    Resized uint8 images are rounded back to uint8, so a cache after this stage stays small.
    """
    if pipeline_size is None and not to_rgb:
        return ds
    size = (pipeline_size, pipeline_size) if isinstance(pipeline_size, int) else pipeline_size

    def prepare(image, *label):
        if to_rgb and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        if size is not None:
            image = tf.image.resize(image, size, method="bilinear")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8) if uint8_input else image
        return (image, *label) if label else image

    return ds.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=deterministic)


def batch_and_finish(ds: tf.data.Dataset, *, training: bool, batch_size: int, input_scaling: str,
                     uint8_input: bool, augmenter: keras.Sequential | None = None, deterministic: bool = True,
                     drop_remainder: bool = False, num_parallel_calls: int = AUTOTUNE,
                     seed: int = 0) -> tf.data.Dataset:
    """Stages 4-7: batch, scale whole batches, augment training batches (seeded by ``seed``,
    see ``augment_batches``), prefetch."""
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls,
                  deterministic=deterministic)
    scale = _scaler(input_scaling, uint8_input)
    if training and augmenter is not None and augmenter.layers:
        # Scaled in the augmentation's map: one tf.data stage fewer for every batch.
        ds = augment_batches(ds, augmenter, seed=seed, deterministic=deterministic,
                             num_parallel_calls=num_parallel_calls, prepare=scale)
    else:
        ds = ds.map(lambda x, *y: (scale(x), *y) if y else scale(x), num_parallel_calls=num_parallel_calls,
                    deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    # tf.data's autotuner is off: in TF 2.21, tearing down an epoch's iterator with autotuning on
    # sometimes blocks until the autotuner's next wake-up (0.63 s, 1.27 s, 5.11 s, ...), which
    # stretched some 3.3 s epochs of the E1 CNN to 5.1 s on 2 cores. With fixed parallelism
    # (AUTOTUNE then means one per core) epochs were steady (benchmarks/training_speed.py).
    options.autotune.enabled = False
    ds = ds.with_options(options)
    # Prefetch so the next batches are ready while the model trains on this one.
    return ds.prefetch(AUTOTUNE)


def _scaler(input_scaling: str, uint8_input: bool):
    divisor = 255.0 if uint8_input else 1.0
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)

    def scale(images):
        images = tf.cast(images, tf.float32)
        if input_scaling == "none":
            return images * (255.0 / divisor)
        images = images / divisor
        if input_scaling == "imagenet":
            images = (images - mean) / std
        return images

    return scale


# -- mixup and cutmix -----------------------------------------------------------------------------------------------

# A constant folded into the run's seed for the mixing draws, so that they never share a stream
# with the augmentation's (which uses the run's seed itself).
MIX_SEED_OFFSET = 7919


def mix_batches(ds: tf.data.Dataset, *, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, seed: int = 0,
                deterministic: bool = True, num_parallel_calls: int = AUTOTUNE) -> tf.data.Dataset:
    """Mixup and cutmix on training batches: labels become the same blend of one-hot labels.

    Args:
        ds: batches of ``(float images, integer labels)`` (a finished training pipeline).
        num_classes: the width of the one-hot labels.
        mixup: the Beta(alpha, alpha) alpha of mixup's ratio (0: off).
        cutmix: the Beta(alpha, alpha) alpha of cutmix's ratio (0: off).
        seed: the run's seed; with the epoch and the batch's index it fixes each batch's draws
            (``batch_seeds``, as the augmentation), so batches mix in parallel and repeatably.
        deterministic, num_parallel_calls: as for the other maps.

    Returns:
        Batches of ``(images, soft labels)``, labels of shape (batch, num_classes) summing to 1.

    Each batch draws one ratio and is mixed with itself reversed (image i with image n-1-i), as
    timm does. With both methods on, each batch uses one of them, chosen with probability 0.5.
    """
    if mixup <= 0 and cutmix <= 0:
        raise ValueError(f"mix_batches needs mixup > 0 or cutmix > 0, received mixup={mixup}, cutmix={cutmix}.")

    def apply(batch, batch_seed):
        images, labels = batch
        return mix_batch(images, labels, num_classes=num_classes, mixup=mixup, cutmix=cutmix, seed=batch_seed)

    ds = tf.data.Dataset.zip((ds, batch_seeds(seed + MIX_SEED_OFFSET)))
    return ds.map(apply, num_parallel_calls=num_parallel_calls, deterministic=deterministic).prefetch(AUTOTUNE)


def mix_batch(images: Any, labels: Any, *, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0,
              seed: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes one batch (see ``mix_batches``) from a stateless seed (shape [2] integers).

    Returns:
        ``(images, soft labels)``. Mixup: ``lam * x + (1 - lam) * x_reversed``; cutmix: a box of
        about ``1 - lam`` of the image comes from the partner, and the labels' share is the box's
        exact area after clipping at the borders.
    """
    images = tf.convert_to_tensor(images)
    one_hot = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), num_classes, dtype=images.dtype)
    partner_images, partner_labels = tf.reverse(images, [0]), tf.reverse(one_hot, [0])
    seeds = [tf.random.experimental.stateless_fold_in(seed, index) for index in range(4)]

    def beta(alpha, draw_seed):
        # Beta(a, a) as a ratio of two Gamma(a) draws, from stateless seeds.
        gammas = tf.random.stateless_gamma([2], draw_seed, alpha=alpha)
        return gammas[0] / tf.reduce_sum(gammas)

    def mixed_up():
        lam = tf.cast(beta(mixup, seeds[0]), images.dtype)
        return lam * images + (1 - lam) * partner_images, lam

    def cut_mixed():
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        lam = beta(cutmix, seeds[1])
        side = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
        cut_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
        centre = tf.random.stateless_uniform([2], seeds[2], maxval=1.0)
        cy = tf.cast(centre[0] * tf.cast(height, tf.float32), tf.int32)
        cx = tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32)
        top, bottom = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h - cut_h // 2, 0, height)
        left, right = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w - cut_w // 2, 0, width)
        rows, columns = tf.range(height), tf.range(width)
        inside = (((rows >= top) & (rows < bottom))[:, None] & ((columns >= left) & (columns < right))[None, :])
        box = tf.cast(inside, images.dtype)[None, :, :, None]
        area = tf.cast((bottom - top) * (right - left), images.dtype) / tf.cast(height * width, images.dtype)
        return images * (1 - box) + partner_images * box, 1 - area

    if mixup > 0 and cutmix > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[3]) < 0.5
        mixed, lam = tf.cond(use_cutmix, cut_mixed, mixed_up)
    else:
        mixed, lam = cut_mixed() if cutmix > 0 else mixed_up()
    return mixed, lam * one_hot + (1 - lam) * partner_labels


# -- stateless augmentation ----------------------------------------------------------------------------------------

# The layers make_augmenter builds. In Keras 3.15 each of them takes every random draw of
# ``get_random_transformation`` from its ``seed`` argument when one is given (read in their source),
# so they can augment from a per-batch seed. Other layers (RandAugment, RandomColorJitter...) draw
# from their own generator whatever the argument says; an augmenter holding one runs statefully.
# The kit's own augmentation layers (U-Net's elastic deformation, ``lab.tasks.segmentation.elastic``)
# say that they draw from the given seed with a class attribute ``draws_from_given_seed = True``.
STATELESS_LAYERS = (keras.layers.RandomFlip, keras.layers.RandomRotation, keras.layers.RandomZoom,
                    keras.layers.RandomTranslation, keras.layers.RandomContrast)


def is_stateless(augmenter: keras.Sequential) -> bool:
    """Whether every layer of ``augmenter`` can draw from a given seed (see ``STATELESS_LAYERS``)."""
    return all(_draws_from_given_seed(layer) for layer in augmenter.layers)


def _draws_from_given_seed(layer) -> bool:
    return type(layer) in STATELESS_LAYERS or getattr(type(layer), "draws_from_given_seed", False) is True


def batch_seeds(seed: int) -> tf.data.Dataset:
    """An endless dataset of stateless-op seeds (int64 pairs), one per batch.

    The sequence is fixed by ``seed`` (and TensorFlow's global seed, as for ``shuffle``) and is
    drawn afresh for every iterator, i.e. every epoch: batch ``i`` of epoch ``e`` always gets
    the same seed, and epochs get different ones.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)


def augment_batches(ds: tf.data.Dataset, augmenter: keras.Sequential, *, seed: int, deterministic: bool = True,
                    masks: bool = False, num_parallel_calls: int = AUTOTUNE,
                    prepare: Callable | None = None) -> tf.data.Dataset:
    """Augments every batch of ``ds``, in parallel and repeatably.

    Args:
        ds: batches of float images: ``images``, ``(images, *others)``, or with ``masks=True``
            ``(images, masks)`` (integer class ids, augmented with the same transformation).
        augmenter: from ``make_augmenter``.
        seed: the run's seed; with the epoch and the batch's index it fixes each batch's draws.
        deterministic: keep the batch order fixed.
        masks: the batches are (images, masks) pairs.
        num_parallel_calls: batches augmented at once; the images do not depend on it.
        prepare: applied to the images first, in the same map (the pipeline's scaling to float).

    Returns:
        The dataset with augmented images (and masks); other elements pass through.

    An augmenter with a layer outside ``STATELESS_LAYERS`` is applied one batch at a time
    instead, drawing from its layers' seed state in batch order, which is repeatable only that way.
    """
    def apply(batch, batch_seed=None):
        parts = batch if isinstance(batch, tuple) else (batch,)
        images = parts[0] if prepare is None else prepare(parts[0])
        if masks:
            return augment_batch(augmenter, images, masks=parts[1], seed=batch_seed)
        images = augment_batch(augmenter, images, seed=batch_seed)
        return (images, *parts[1:]) if isinstance(batch, tuple) else images

    if not is_stateless(augmenter):
        return ds.map(lambda *batch: apply(batch if len(batch) > 1 else batch[0]), num_parallel_calls=1,
                      deterministic=deterministic)
    ds = tf.data.Dataset.zip((ds, batch_seeds(seed)))
    return ds.map(apply, num_parallel_calls=num_parallel_calls, deterministic=deterministic)


def augment_batch(augmenter: keras.Sequential, images: Any, *, masks: Any = None, seed: Any = None) -> Any:
    """Applies each layer of ``augmenter`` once to a batch of images (and their masks).

    Args:
        augmenter: from ``make_augmenter``.
        images: (batch, H, W, C) floats.
        masks: None, or (batch, H, W) integer class ids, moved by the same transformation as
            their images with nearest-neighbour interpolation (colour changes leave them alone);
            or (batch, H, W, K) floats holding the class ids in channel 0 and other per-pixel
            values in the rest (a weight map), all moved alike.
        seed: a stateless seed (shape [2] integers): every random draw comes from it, so the
            result depends on the images and the seed only. None draws from the layers' own
            seed state, which advances with every call, and applies the layers one by one.

    Returns:
        The augmented images, or ``(images, masks)`` with the masks' dtype and shape kept.

    Raises:
        ValueError: a seed was given but a layer cannot draw from it (see ``STATELESS_LAYERS``).

    With a seed, each layer draws its random transformation exactly as Keras does (its own
    ``get_random_transformation``), but consecutive geometric layers (flip, rotation, zoom,
    translation) with the same fill are applied as one composed affine transformation: one
    resampling of the image instead of one per layer, which is faster and blurs less. Inside
    the image the result is the layers' own, up to float rounding; where the composed
    transformation reaches outside the image, the fill reflects the original image once rather
    than each intermediate one.
    """
    if seed is not None and not is_stateless(augmenter):
        others = sorted({type(layer).__name__ for layer in augmenter.layers if not _draws_from_given_seed(layer)})
        raise ValueError(f"Stateless augmentation supports {[cls.__name__ for cls in STATELESS_LAYERS]}; the "
                         f"augmenter also has {others}. Pass seed=None to draw from the layers' own seed state.")
    mask_dtype = None if masks is None else masks.dtype
    channels = masks is not None and masks.shape.rank == 4
    if masks is not None:
        # Masks travel as float channels so the image transforms accept them; nearest-neighbour
        # interpolation keeps every value a class id, and rounding undoes any float error.
        masks = tf.cast(masks if channels else masks[..., tf.newaxis], tf.float32)
    if seed is None:
        for layer in augmenter.layers:
            if masks is None:
                images = layer(images, training=True)
            else:
                data = layer({"images": images, "segmentation_masks": masks}, training=True)
                images, masks = data["images"], data["segmentation_masks"]
    else:
        for group in _layer_groups(augmenter.layers):
            transformations = []
            for index, layer in group:
                # Each layer's draws come from the batch seed folded with the layer's position and
                # own seed, so two layers never share draws and make_augmenter's seed still matters.
                layer_seed = tf.random.experimental.stateless_fold_in(seed, index)
                layer_seed = tf.random.experimental.stateless_fold_in(layer_seed,
                                                                      tf.constant(layer.seed or 0, tf.int64))
                data = images if masks is None else {"images": images, "segmentation_masks": masks}
                transformations.append(layer.get_random_transformation(data, training=True,
                                                                       seed=_SeedStream(layer_seed)))
            layers = [layer for _, layer in group]
            if all(isinstance(layer, keras.layers.RandomFlip) for layer in layers) or len(layers) == 1:
                # The layers' own ops: a flip alone reverses pixels, cheaper than resampling them.
                for layer, transformation in zip(layers, transformations):
                    images = layer.transform_images(images, transformation, training=True)
                    if masks is not None:
                        masks = layer.transform_segmentation_masks(masks, transformation, training=True)
                continue
            images, masks = _transform_geometrically(layers, transformations, images, masks)
    if masks is None:
        return images
    if channels:
        return images, tf.cast(tf.concat([tf.round(masks[..., :1]), masks[..., 1:]], axis=-1), mask_dtype)
    return images, tf.cast(tf.round(masks[..., 0]), mask_dtype)


# Layers that move pixels: each is an affine map of the pixel grid, so a run of them composes into one.
GEOMETRIC_LAYERS = (keras.layers.RandomFlip, keras.layers.RandomRotation, keras.layers.RandomZoom,
                    keras.layers.RandomTranslation)


def _fill(layer) -> tuple | None:
    """How a geometric layer resamples: (interpolation, fill_mode, fill_value); None for a flip,
    which moves whole pixels and fits any."""
    if isinstance(layer, keras.layers.RandomFlip):
        return None
    return layer.interpolation, layer.fill_mode, float(layer.fill_value)


def _layer_groups(layers: list) -> list[list[tuple[int, Any]]]:
    """Splits the layers, with their positions, into runs applied at once: consecutive geometric
    layers (channels-last) that resample alike, and every other layer on its own."""
    groups: list[list[tuple[int, Any]]] = []
    fill = None
    for index, layer in enumerate(layers):
        geometric = isinstance(layer, GEOMETRIC_LAYERS) and layer.data_format == "channels_last"
        joins = (geometric and groups and isinstance(groups[-1][-1][1], GEOMETRIC_LAYERS)
                 and groups[-1][-1][1].data_format == "channels_last"
                 and (fill is None or _fill(layer) is None or _fill(layer) == fill))
        if joins:
            groups[-1].append((index, layer))
            fill = fill or _fill(layer)
        else:
            groups.append([(index, layer)])
            fill = _fill(layer) if geometric else None
    return groups


def _transform_geometrically(layers: list, transformations: list, images, masks):
    """Applies a run of geometric layers' drawn transformations as one affine transformation.

    Keras' affine transforms map each output pixel (x, y) to the input point it samples,
    ``M @ (x, y, 1)``. Applying layer 1, then layer 2, samples the input at ``M1 @ M2 @ p``, so the
    run's matrix is the product in layer order.
    """
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    matrix = None
    for layer, transformation in zip(layers, transformations):
        step = _affine_matrix(layer, transformation, height, width, shape[0])
        matrix = step if matrix is None else tf.linalg.matmul(matrix, step)
    fill = next((_fill(layer) for layer in layers if _fill(layer) is not None), ("bilinear", "constant", 0.0))
    interpolation, fill_mode, fill_value = fill
    transform = tf.reshape(matrix, [-1, 9])[:, :8]
    images = keras.ops.image.affine_transform(images, transform, interpolation=interpolation, fill_mode=fill_mode,
                                              fill_value=fill_value, data_format="channels_last")
    if masks is not None:
        masks = keras.ops.image.affine_transform(masks, transform, interpolation="nearest", fill_mode=fill_mode,
                                                 fill_value=fill_value, data_format="channels_last")
    return images, masks


def _affine_matrix(layer, transformation: dict, height, width, batch) -> tf.Tensor:
    """The (batch, 3, 3) matrices, output pixel to input point, of one layer's drawn transformation,
    built as the layer builds them (Keras 3.15; tests compare the results with the layer's own)."""
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    if isinstance(layer, keras.layers.RandomFlip):
        flips = tf.cast(tf.reshape(transformation["flips"], [-1]), tf.float32)
        # A flip maps x to (width - 1) - x. Keras' "horizontal_and_vertical" flips both axes on one draw.
        horizontal = 1.0 if layer.mode in ("horizontal", "horizontal_and_vertical") else 0.0
        vertical = 1.0 if layer.mode in ("vertical", "horizontal_and_vertical") else 0.0
        sx, sy = 1.0 - 2.0 * flips * horizontal, 1.0 - 2.0 * flips * vertical
        rows = [sx, zeros, flips * horizontal * (width - 1.0), zeros, sy, flips * vertical * (height - 1.0)]
    elif isinstance(layer, keras.layers.RandomRotation):
        rows = tf.unstack(tf.cast(transformation["rotation_matrix"], tf.float32), axis=1)[:6]
    elif isinstance(layer, keras.layers.RandomZoom):
        zx = tf.reshape(tf.cast(transformation["width_zoom"], tf.float32), [-1])
        zy = tf.reshape(tf.cast(transformation["height_zoom"], tf.float32), [-1])
        rows = [zx, zeros, (width - 1.0) / 2.0 * (1.0 - zx), zeros, zy, (height - 1.0) / 2.0 * (1.0 - zy)]
    elif isinstance(layer, keras.layers.RandomTranslation):
        translations = tf.cast(transformation["translations"], tf.float32)
        rows = [ones, zeros, -translations[:, 0], zeros, ones, -translations[:, 1]]
    else:
        raise TypeError(f"{type(layer).__name__} is not a geometric augmentation layer.")
    return tf.reshape(tf.stack([*rows, zeros, zeros, ones], axis=1), [-1, 3, 3])


class _SeedStream(keras.random.SeedGenerator):
    """The seed a Keras layer draws from: its n-th draw gets ``stateless_fold_in(seed, n)``.

    Keras' random ops take a seed as an int or a ``SeedGenerator``, whose ``next()`` they call
    once per draw. A real ``SeedGenerator`` keeps its state in a variable that each draw
    advances, so batches augmented in parallel would take the draws in a varying order. This
    one derives every draw from the batch's seed tensor and a count kept while tracing, so it
    has no state at run time. ``SeedGenerator.__init__`` is skipped on purpose: it would make
    that variable (inside a tf.data function).
    """

    def __init__(self, seed):  # noqa: super().__init__ is not called, see above
        self._seed = seed
        self._draws = 0

    def next(self, ordered: bool = True):
        value = tf.random.experimental.stateless_fold_in(self._seed, self._draws)
        self._draws += 1
        return value
