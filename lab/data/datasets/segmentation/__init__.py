"""Segmentation data: images with per-pixel class masks, and the loaders that make them.

``load_segmentation_dataset(name, ...)`` loads the registry's segmentation sets (the rows of
``lab.data.datasets.registry`` whose tasks include segmentation):

    shapes                   the embedded shapes with their masks (0 = background, shape's class + 1)
    membranes                generated EM-like cell membranes (0 = cell, 1 = membrane; ``load_membranes``)
    tfds:oxford_iiit_pet     Oxford-IIIT Pet trimaps (1 pet, 2 background, 3 border) as classes
    folder:<path>            image and mask files matched by name (see ``load_mask_folder``)

Images are resized with bilinear interpolation and masks with nearest neighbour only, so a
mask never holds a class id that is a blend of two others.

Which class is the background is stated, not assumed: ``background_class`` (0 unless said
otherwise). In electron-microscopy membrane data the membrane is often class 0 and is what
one looks for; there the cell interior is the background. The foreground shares, the
foreground IoU and E6's all-background flag are computed against this class.

A mask folder may be cut into tiles (``tile_size``) for training. Its validation and test
images are then also kept whole, so that a run predicts each of them whole with the
overlap-tile strategy (``lab.tasks.segmentation.tiling``) and scores it as one image.

The package has one module per concern, and every name is importable from here:

    lab.data.datasets.segmentation.dataset       SegmentationDataset, the type every loader returns
    lab.data.datasets.segmentation.mask_folders  load_mask_folder: image and mask files, tiles
    lab.data.datasets.segmentation.pets          load_oxford_pets: Oxford-IIIT Pet trimaps from TFDS
    lab.data.datasets.segmentation.membranes     load_membranes: a generated, EM-like cell-membrane set
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lab.data.datasets.segmentation.dataset import WHOLE_SPLITS, SegmentationDataset
from lab.data.datasets.segmentation.mask_folders import (COLOR_MODES, FOLDER_OPTIONS, cut_tiles, load_mask_folder,
                                                    tile_starts)
from lab.data.datasets.segmentation.membranes import MEMBRANE_CLASSES, load_membranes
from lab.data.datasets.segmentation.pets import PET_CLASSES, load_oxford_pets, trimap_to_classes


# -- the registry -------------------------------------------------------------------------------


def list_segmentation_datasets() -> list[str]:
    """The segmentation sets of the registry (``lab.data.datasets.registry``)."""
    from lab.data.datasets.registry import list_sources

    return list_sources("segmentation")


def load_segmentation_dataset(
    name: str,
    *,
    size: int | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
    background_class: int | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Loads a segmentation dataset by name, then applies the size limit.

    Args:
        name: "shapes", "membranes", "tfds:oxford_iiit_pet" or "folder:<path>".
        size: image side: for shapes the generated size (default 32, a multiple of 2**5 so a
            U-Net of depth up to 5 fits), for membranes too (default 128), for pets and folders
            the resize target (pets: 128; a tiled folder is resized first, then cut into tiles).
        limit: keep at most this many images per split (drawn by ``seed``); a tiled folder
            keeps this many images, each with all its tiles.
        val_fraction: validation share carved from train where a set has no validation split.
        seed: the seed of every random choice.
        data_dir, download: for TFDS (see ``lab.data.datasets.load_tfds``).
        background_class: the class id that is background (None: the set's own, 0).
        **options: passed to the loader (``load_shapes``, ``load_membranes``, ``load_oxford_pets``,
            ``load_mask_folder``); the ``FOLDER_OPTIONS`` (tile_size, class_values...) apply
            to folders only (None: unset).

    Raises:
        ValueError: an unknown name; a folder option given for another set.
    """
    from lab.data.datasets.registry import find_source

    source, argument = find_source(name, "segmentation")
    folder = source.kind == "folder"
    # A folder option left at None is unset (a notebook passes its parameters whatever the set).
    options = {key: value for key, value in options.items() if not (key in FOLDER_OPTIONS and value is None)}
    misplaced = [key for key in FOLDER_OPTIONS if key in options]
    if misplaced and not folder:
        raise ValueError(f"{', '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} to mask folders "
                         f"(dataset='folder:<path>'), not to {name!r}; leave {' and '.join(misplaced)} unset.")
    if source.kind == "shapes":
        from lab.data.datasets.embedded import load_shapes

        dataset = SegmentationDataset.from_dataset(load_shapes(seed=seed, dataset_size=size or 32, **options))
    elif source.kind == "membranes":
        dataset = load_membranes(seed=seed, dataset_size=size or 128, **options)
    elif source.kind == "pets":
        dataset = load_oxford_pets(dataset_size=size or 128, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                                   download=download, **options)
    else:
        dataset = load_mask_folder(argument, **({"dataset_size": size} if size else {}),
                                   **({"background_class": background_class} if background_class is not None else {}),
                                   val_fraction=val_fraction, seed=seed, **options)
    if background_class is not None and background_class != dataset.background_class:
        dataset = dataclasses.replace(dataset, background_class=background_class)
    dataset = dataset.limit(limit, seed=seed)
    dataset.source = {**dataset.source, "loaded_as": name}  # the registry name, which a run record names
    return dataset


__all__ = ["COLOR_MODES", "FOLDER_OPTIONS", "MEMBRANE_CLASSES", "PET_CLASSES", "WHOLE_SPLITS", "SegmentationDataset",
           "cut_tiles", "list_segmentation_datasets", "load_mask_folder", "load_membranes", "load_oxford_pets",
           "load_segmentation_dataset", "tile_starts", "trimap_to_classes"]
