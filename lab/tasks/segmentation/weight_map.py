"""U-Net's weight map (Ronneberger et al., 2015, equation 2), computed once per mask and cached.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies (the balanced weight of the pixel's class, ``n / (k *
count)`` over the training masks: ``SegmentationDataset.class_weights``); ``d1`` and ``d2`` are
the distances to the nearest and the second-nearest cell. The cells are the connected regions
(4-connected) of the background class, the cell interior in EM membrane data; the border term
is added on every other pixel, so the thin membranes between two close cells weigh most
(the paper's figure 3d). The defaults are the paper's: w0 = 10, sigma = 5 pixels.

Distances are computed per cell within its bounding box widened by ``REACH_SIGMAS * sigma``:
a pixel farther than that from its second-nearest cell gets no border term, which the formula
gives anyway up to ``w0 * exp(-REACH_SIGMAS**2 / 2)`` (1.5e-7 for w0 = 10). That keeps a
512x512 mask with hundreds of cells to well under a second.

A run computes the maps of its training split once (``dataset_weight_maps``) and keeps them on
the dataset (``SegmentationDataset.weight_map_cache``), with what they were made from: a sha256
of the split's masks, w0, sigma, the cell class and w_c. A later run on the same dataset object
(the runs of a sweep share one) reuses them only when all of that still holds, and computes
them again otherwise (the masks of a dataset are arrays, which can be changed in place).

The pipeline hands the maps to the loss in the targets' second channel (``make_segmentation_pipeline``,
``lab.tasks.segmentation.losses.split_targets``); augmentation moves them with their masks.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from lab.config.segmentation import PAPER_WEIGHT_MAP_SIGMA, PAPER_WEIGHT_MAP_W0, check_weight_map
from lab.data.datasets.segmentation import SegmentationDataset

# Each cell's distances are computed this many sigmas around it (see the module docstring).
REACH_SIGMAS = 6.0


def unet_weight_map(mask: np.ndarray, *, cell_class: int, class_weights: Sequence[float],
                    w0: float = PAPER_WEIGHT_MAP_W0, sigma: float = PAPER_WEIGHT_MAP_SIGMA) -> np.ndarray:
    """The weight map of one mask.

    Args:
        mask: (H, W) class ids.
        cell_class: the class whose connected regions are the cells (the background class).
        class_weights: w_c, one weight per class id.
        w0, sigma: the border term's height and width (pixels).

    Returns:
        (H, W) float32 weights.

    Raises:
        ValueError: a mask that is not 2-D, a class id without a weight, bad w0 or sigma.
    """
    check_weight_map(w0, sigma)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"unet_weight_map takes one (H, W) mask of class ids, received shape {mask.shape}.")
    class_weights = np.asarray(class_weights, np.float32)
    if mask.size and int(mask.max()) >= len(class_weights):
        raise ValueError(f"The mask holds class id {int(mask.max())} but class_weights has {len(class_weights)} "
                         "weights: give one per class id.")
    weights = class_weights[mask]
    cells, count = ndimage.label(mask == cell_class)
    if count < 2 or w0 == 0:
        return weights  # without two cells d2 is infinite everywhere and the border term 0
    nearest = np.full(mask.shape, np.inf, np.float32)
    second = np.full(mask.shape, np.inf, np.float32)
    reach = int(math.ceil(REACH_SIGMAS * sigma))
    for label, box in enumerate(ndimage.find_objects(cells), start=1):
        window = tuple(slice(max(part.start - reach, 0), min(part.stop + reach, size))
                       for part, size in zip(box, mask.shape))
        # Exact inside the window: the whole cell lies in it, so its nearest pixel does too.
        distance = ndimage.distance_transform_edt(cells[window] != label).astype(np.float32)
        closest, runner_up = nearest[window], second[window]
        second[window] = np.minimum(runner_up, np.maximum(closest, distance))
        nearest[window] = np.minimum(closest, distance)
    border = np.exp(-np.square(nearest + second) / (2.0 * sigma ** 2))  # exp(-inf) = 0: no second cell near
    return weights + np.where(mask != cell_class, w0 * border, 0.0).astype(np.float32)


def weight_maps(masks: np.ndarray, *, cell_class: int, class_weights: Sequence[float],
                w0: float = PAPER_WEIGHT_MAP_W0, sigma: float = PAPER_WEIGHT_MAP_SIGMA) -> np.ndarray:
    """``unet_weight_map`` of every mask of (N, H, W): (N, H, W) float32."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"weight_maps takes (N, H, W) masks, received shape {masks.shape}.")
    maps = np.empty(masks.shape, np.float32)
    for index, mask in enumerate(masks):
        maps[index] = unet_weight_map(mask, cell_class=cell_class, class_weights=class_weights, w0=w0, sigma=sigma)
    return maps


def masks_sha256(masks: np.ndarray) -> str:
    """A sha256 of masks, their shape and dtype: what cached weight maps are checked against."""
    masks = np.ascontiguousarray(masks)
    digest = hashlib.sha256(f"{masks.shape}{masks.dtype.str}".encode())
    digest.update(memoryview(masks).cast("B"))
    return digest.hexdigest()


def dataset_weight_maps(data: SegmentationDataset, split: str = "train", *, w0: float = PAPER_WEIGHT_MAP_W0,
                        sigma: float = PAPER_WEIGHT_MAP_SIGMA) -> np.ndarray:
    """The weight maps of a split's masks, computed once and kept on the dataset.

    The cells are the dataset's background class; w_c its balanced class weights of the
    training masks. A cached entry is reused only when it was made from masks with the same
    sha256 and the same w0, sigma, cell class and w_c.

    Args:
        data: the dataset.
        split: "train", "val" or "test" (tiles for a tiled set).
        w0, sigma: as in ``unet_weight_map``.

    Returns:
        (N, H, W) float32, one map per mask of the split.
    """
    masks = data.split(split)[1]
    made_from = {"masks_sha256": masks_sha256(masks), "w0": float(w0), "sigma": float(sigma),
                 "cell_class": data.background_class, "class_weights": data.class_weights("train")}
    cached = data.weight_map_cache.get(split)
    if cached is not None and cached[0] == made_from:
        return cached[1]
    maps = weight_maps(masks, cell_class=data.background_class, class_weights=made_from["class_weights"], w0=w0,
                       sigma=sigma)
    data.weight_map_cache[split] = (made_from, maps)
    return maps
