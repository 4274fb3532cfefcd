"""Elastic deformation, U-Net's main augmentation (Ronneberger et al., 2015), as a Keras layer.

The paper: "we generate smooth deformations using random displacement vectors on a coarse 3 by 3
grid. The displacements are sampled from a Gaussian distribution with 10 pixels standard
deviation. Per-pixel displacements are then computed using bicubic interpolation." Here, for
every image of a batch:

    coarse       = normal(0, stddev, (grid, grid, 2))             # (dy, dx) in pixels
    displacement = tf.image.resize(coarse, (H, W), "bicubic")    # smooth, per pixel
    output[y, x] = input[y + dy, x + dx]                         # bilinear for images,
                                                                 # nearest for masks

Points that land outside the image are mirrored at its border pixels, as the overlap-tile
strategy mirrors (``lab.tasks.segmentation.tiling``). Masks are sampled by nearest neighbour, so
every mask pixel stays a class id and lies where its image pixel went; any other per-pixel
channels of the masks (a weight map) move with them.

Why not ``keras.layers.RandomElasticTransform`` (Keras 3.15): it smooths a per-pixel random
field with a Gaussian (Simard et al., 2003) instead of the paper's coarse grid, draws one
magnitude per batch, and draws the field afresh for the masks from its seed generator, so a
mask is not moved as its image (read in its source). This layer draws one field per image,
applies it to images and masks alike, and takes every draw from the seed it is given, so the
kit's pipelines can augment batches in parallel and repeatably (``lab.data.pipeline.augment_batch``,
which knows it by its ``draws_from_given_seed``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lab.config.segmentation import PAPER_ELASTIC_GRID, PAPER_ELASTIC_STDDEV, check_elastic


@keras.saving.register_keras_serializable(package="lab")
class RandomElasticDeformation(keras.layers.Layer):
    """Deforms each image of a batch by its own smooth random displacement field.

    Args:
        stddev: the standard deviation, in pixels, of the displacements on the coarse grid
            (the paper: 10). 0 leaves the images alone.
        grid: displacement vectors on each side of the coarse grid (the paper: 3).
        seed: the layer's own seed, for calls without a given seed (``lab.data.pipeline`` folds it
            into each batch's seed).

    Call it on images (batch, H, W, C) or on ``{"images": ..., "segmentation_masks": ...}``
    (masks (batch, H, W, K) floats, class ids first), like Keras' augmentation layers; only while
    training (``training=True``).
    """

    # Every draw of get_random_transformation comes from its seed argument (lab.data.pipeline reads this).
    draws_from_given_seed = True

    def __init__(self, stddev: float = PAPER_ELASTIC_STDDEV, grid: int = PAPER_ELASTIC_GRID, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        check_elastic(stddev, grid)
        self.stddev = float(stddev)
        self.grid = int(grid)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, data, training: bool = True, seed=None) -> dict | None:
        """Draws one displacement field per image: ``{"displacement": (batch, H, W, 2)}`` (dy, dx).

        Args:
            data: images or the ``{"images": ...}`` dict (only their shape is read).
            training: None is returned (no deformation) when False.
            seed: a ``keras.random.SeedGenerator`` (or anything Keras' random ops take); None:
                the layer's own.
        """
        if not training or self.stddev == 0:
            return None
        images = data["images"] if isinstance(data, dict) else data
        shape = tf.shape(images)
        coarse = keras.random.normal((shape[0], self.grid, self.grid, 2), stddev=self.stddev,
                                     seed=seed if seed is not None else self.generator)
        # Bicubic interpolation of the coarse grid gives every pixel a smooth displacement.
        return {"displacement": tf.image.resize(tf.cast(coarse, tf.float32), shape[1:3], method="bicubic")}

    def transform_images(self, images, transformation, training: bool = True):
        """Images sampled bilinearly at their displaced positions."""
        if not training or transformation is None:
            return images
        return deform(images, transformation["displacement"], interpolation="bilinear")

    def transform_segmentation_masks(self, masks, transformation, training: bool = True):
        """Masks (and their other per-pixel channels) sampled by nearest neighbour: class ids stay ids."""
        if not training or transformation is None:
            return masks
        return deform(masks, transformation["displacement"], interpolation="nearest")

    def call(self, data, training: bool = True):
        transformation = self.get_random_transformation(data, training=training)
        if not isinstance(data, dict):
            return self.transform_images(data, transformation, training=training)
        data = dict(data)
        data["images"] = self.transform_images(data["images"], transformation, training=training)
        if "segmentation_masks" in data:
            data["segmentation_masks"] = self.transform_segmentation_masks(data["segmentation_masks"], transformation,
                                                                           training=training)
        return data

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "grid": self.grid, "seed": self.seed}


def deform(images, displacement, *, interpolation: str = "bilinear"):
    """Samples every image at its pixel positions plus a displacement field.

    Args:
        images: (batch, H, W, C).
        displacement: (batch, H, W, 2) float32, (dy, dx) in pixels for each output pixel.
        interpolation: "bilinear" (images) or "nearest" (masks: only values that are there).

    Returns:
        (batch, H, W, C) in the images' dtype; positions outside the image are mirrored at its
        border pixels (the border pixel itself is not repeated).
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', received {interpolation!r}.")
    dtype = images.dtype
    values = tf.cast(images, tf.float32)
    shape = tf.shape(values)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows, columns = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                                indexing="ij")
    y = _mirror(rows[tf.newaxis] + displacement[..., 0], height)
    x = _mirror(columns[tf.newaxis] + displacement[..., 1], width)
    # One gather from the flattened batch: pixel (b, y, x) is row (b * H + y) * W + x.
    flat = tf.reshape(values, [-1, channels])
    offsets = tf.reshape(tf.range(batch) * height, [-1, 1, 1])

    def gather(y_index, x_index):
        return tf.gather(flat, (offsets + y_index) * width + x_index)

    if interpolation == "nearest":
        sampled = gather(tf.cast(tf.round(y), tf.int32), tf.cast(tf.round(x), tf.int32))
    else:
        y0, x0 = tf.floor(y), tf.floor(x)
        wy, wx = (y - y0)[..., tf.newaxis], (x - x0)[..., tf.newaxis]
        y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
        y1, x1 = tf.minimum(y0 + 1, height - 1), tf.minimum(x0 + 1, width - 1)
        sampled = ((1 - wy) * ((1 - wx) * gather(y0, x0) + wx * gather(y0, x1))
                   + wy * ((1 - wx) * gather(y1, x0) + wx * gather(y1, x1)))
    return tf.cast(sampled, dtype)


def _mirror(position, size):
    """Positions folded into [0, size - 1] by mirroring at the first and last pixel centres."""
    last = tf.cast(tf.maximum(size - 1, 1), tf.float32)
    folded = last - tf.abs(tf.math.floormod(position, 2.0 * last) - last)
    return tf.clip_by_value(folded, 0.0, tf.cast(size - 1, tf.float32))
