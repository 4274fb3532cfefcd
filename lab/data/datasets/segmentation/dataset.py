"""The segmentation dataset type: images with per-pixel class-id masks, ``SegmentationDataset``.

Every segmentation loader (``lab.data.datasets.segmentation``) returns one. It checks its masks
against its images and classes, states its background class, and, for a tiled mask folder,
keeps the whole validation and test images beside their tiles. ``_split_indices`` is the
seeded train/validation split the loaders share.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lab.data.datasets.base import SPLITS, Dataset, ImageSplits

# The validation and test images are kept whole when a folder is tiled; training sees tiles only.
WHOLE_SPLITS = ("val", "test")


@dataclasses.dataclass
class SegmentationDataset(ImageSplits):
    """Images and class-id masks for the train, validation and test splits.

    Attributes:
        name: registry name, recorded with every run.
        x_train, x_val, x_test: NHWC uint8 (or float) images (tiles when ``tile_size`` is set).
        masks_train, masks_val, masks_test: (N, H, W) uint8 class ids.
        class_names: the name of every class id.
        source: provenance kept in the run record.
        background_class: the class id that is background (0 unless stated).
        tile_size: the side of the tiles the splits were cut into, or None (whole images).
        tile_margin: the context margin of overlap-tile prediction (see ``lab.tasks.segmentation.tiling``).
        originals: for a tiled set, the whole validation and test images and masks before
            tiling, ``{"val": (images, masks), "test": (images, masks)}`` (lists: sizes may differ).
        tile_origins: for a tiled set, the index of the image each tile of a split was cut from.
        weight_map_cache: U-Net weight maps computed for this dataset's masks, ``{split: (what
            they were made from, maps)}`` (``lab.tasks.segmentation.weight_map``); a copy made by
            ``dataclasses.replace`` or ``limit`` starts empty.
    """

    name: str
    x_train: np.ndarray
    masks_train: np.ndarray
    x_val: np.ndarray
    masks_val: np.ndarray
    x_test: np.ndarray
    masks_test: np.ndarray
    class_names: list[str]
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    background_class: int = 0
    tile_size: int | None = None
    tile_margin: int = 0
    originals: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = dataclasses.field(default_factory=dict)
    tile_origins: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    weight_map_cache: dict[str, tuple[dict[str, Any], np.ndarray]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ValueError(f"Dataset {self.name!r}: class_names must include the background and at least one "
                             f"class, received {self.class_names}.")
        if isinstance(self.background_class, bool) or not isinstance(self.background_class, (int, np.integer)) \
                or not 0 <= self.background_class < self.num_classes:
            raise ValueError(f"Dataset {self.name!r}: background_class must be one of the class ids 0 to "
                             f"{self.num_classes - 1} of {list(self.class_names)}, received "
                             f"background_class={self.background_class!r}.")
        self.background_class = int(self.background_class)
        for split in SPLITS:
            x, masks = getattr(self, f"x_{split}"), np.asarray(getattr(self, f"masks_{split}"))
            if x.ndim == 3:
                x = x[..., np.newaxis]
                setattr(self, f"x_{split}", x)
            setattr(self, f"masks_{split}", self._checked_masks(x, masks, split))
        if self.tile_size is not None:
            self._check_tiling()

    def _checked_masks(self, x: np.ndarray, masks: np.ndarray, where: str) -> np.ndarray:
        """Masks as uint8, refused when they do not fit their images or hold unknown class ids."""
        if masks.ndim == x.ndim and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.shape != x.shape[:-1]:
            raise ValueError(f"Dataset {self.name!r}: {where} has images of shape {x.shape} but masks of shape "
                             f"{masks.shape}; every image needs a mask of its height and width.")
        if masks.size and (masks.min() < 0 or masks.max() >= self.num_classes):
            raise ValueError(f"Dataset {self.name!r}: {where} masks hold class ids from {masks.min()} to "
                             f"{masks.max()}, outside [0, {self.num_classes}) for classes {self.class_names}.")
        return masks.astype(np.uint8)

    def _check_tiling(self) -> None:
        if not isinstance(self.tile_size, int) or self.tile_size < 1 or not 0 <= 2 * self.tile_margin < self.tile_size:
            raise ValueError(f"Dataset {self.name!r}: tile_size must be a positive integer and tile_margin a margin "
                             f"with 2 * tile_margin < tile_size, received tile_size={self.tile_size!r}, "
                             f"tile_margin={self.tile_margin!r}.")
        if set(self.originals) != set(WHOLE_SPLITS) or set(self.tile_origins) != set(SPLITS):
            raise ValueError(f"Dataset {self.name!r}: a tiled dataset keeps its whole {' and '.join(WHOLE_SPLITS)} "
                             f"images (originals) and the image of every tile (tile_origins) of every split.")
        # New dicts: dataclasses.replace hands this object the dicts of the one it copies.
        self.tile_origins = {split: np.asarray(self.tile_origins[split], dtype=np.int64) for split in SPLITS}
        self.originals = dict(self.originals)
        for split in SPLITS:
            if self.tile_origins[split].shape != (len(self.split(split)[0]),):
                raise ValueError(f"Dataset {self.name!r}: {split} has {len(self.split(split)[0])} tiles but "
                                 f"{self.tile_origins[split].size} tile origins.")
        for split in WHOLE_SPLITS:
            images, masks = self.originals[split]
            if len(images) != len(masks) or (len(self.tile_origins[split]) and
                                             self.tile_origins[split].max() >= len(images)):
                raise ValueError(f"Dataset {self.name!r}: the whole {split} images, their masks and the tiles' "
                                 "origins do not match.")
            images = [image[..., np.newaxis] if image.ndim == 2 else image for image in images]
            masks = [self._checked_masks(image, np.asarray(mask), f"whole {split} image {i}")
                     for i, (image, mask) in enumerate(zip(images, masks))]
            self.originals[split] = (images, masks)

    @property
    def tiled(self) -> bool:
        """Whether the splits hold tiles (and the validation and test images are also kept whole)."""
        return self.tile_size is not None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(images, masks)`` of ``"train"``, ``"val"`` or ``"test"`` (tiles when tiled)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, f"x_{name}"), getattr(self, f"masks_{name}")

    def whole_images(self, name: str) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
        """The images and masks a run predicts and scores: the split itself, or for a tiled
        set the whole validation or test images (lists, since their sizes may differ)."""
        if not self.tiled:
            return self.split(name)
        if name not in WHOLE_SPLITS:
            raise ValueError(f"A tiled dataset keeps only its {' and '.join(WHOLE_SPLITS)} images whole; the "
                             f"{name!r} split holds tiles (dataset.split({name!r})).")
        return self.originals[name]

    def pixel_counts(self, split: str = "train") -> np.ndarray:
        """Pixels of each class in ``split``."""
        return np.bincount(self.split(split)[1].reshape(-1), minlength=self.num_classes)

    def class_weights(self, split: str = "train") -> list[float]:
        """Balanced per-class weights from pixel counts, ``n / (k * count)`` (0 for absent classes)."""
        counts = self.pixel_counts(split).astype(np.float64)
        total, k = counts.sum(), self.num_classes
        return [float(total / (k * c)) if c else 0.0 for c in counts]

    def summary(self) -> dict[str, Any]:
        """Shapes, sizes and the share of pixels of each class (the background imbalance)."""
        summary = {
            "name": self.name,
            "task": "segmentation",
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "background_class": self.background_class,
            "sizes": {s: int(len(self.split(s)[0])) for s in SPLITS},
            "pixel_shares": {s: [round(float(v), 4) for v in self.pixel_counts(s) / max(self.pixel_counts(s).sum(), 1)]
                             for s in SPLITS},
        }
        if self.tiled:
            summary |= {"tile_size": self.tile_size, "tile_margin": self.tile_margin,
                        "images": {s: _image_count(self.tile_origins[s]) for s in SPLITS}}
        return summary

    def limit(self, per_split: int | None, seed: int = 0) -> "SegmentationDataset":
        """Keeps at most ``per_split`` images of each split, drawn by ``seed`` (order kept).

        A tiled set keeps ``per_split`` source images of each split, with all their tiles.
        """
        if per_split is None:
            return self
        if not isinstance(per_split, int) or per_split < 1:
            raise ValueError(f"per_split must be a positive number of images, received {per_split!r}.")
        rng = np.random.default_rng(seed)
        arrays: dict[str, Any] = {}
        origins: dict[str, np.ndarray] = {}
        originals: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for split in SPLITS:
            x, masks = self.split(split)
            count = _image_count(self.tile_origins[split]) if self.tiled else len(x)
            index = np.sort(rng.choice(count, per_split, replace=False)) if count > per_split else np.arange(count)
            if self.tiled:
                keep = np.isin(self.tile_origins[split], index)
                renumber = np.zeros(max(count, 1), dtype=np.int64)
                renumber[index] = np.arange(len(index))
                arrays[f"x_{split}"], arrays[f"masks_{split}"] = x[keep], masks[keep]
                origins[split] = renumber[self.tile_origins[split][keep]]
                if split in WHOLE_SPLITS:
                    images, whole_masks = self.originals[split]
                    originals[split] = ([images[i] for i in index], [whole_masks[i] for i in index])
            else:
                arrays[f"x_{split}"], arrays[f"masks_{split}"] = x[index], masks[index]
        return dataclasses.replace(self, source=dict(self.source, limit=per_split), tile_origins=origins,
                                   originals=originals, **arrays)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "SegmentationDataset":
        """Turns a classification Dataset with masks (``shapes``) into a segmentation one.

        Its masks hold 0 for background and ``label + 1`` on the object, so the class names
        become ``["background", *dataset.class_names]``.
        """
        if any(dataset.masks(s) is None for s in SPLITS):
            raise ValueError(f"Dataset {dataset.name!r} has no masks; only datasets with masks_* can be segmented.")
        return cls(name=dataset.name, x_train=dataset.x_train, masks_train=dataset.masks_train,
                   x_val=dataset.x_val, masks_val=dataset.masks_val, x_test=dataset.x_test,
                   masks_test=dataset.masks_test, class_names=["background", *dataset.class_names],
                   source=dict(dataset.source))


def _image_count(origins: np.ndarray) -> int:
    """The number of source images of a split's tiles (they are numbered 0, 1, ...)."""
    return int(origins.max()) + 1 if len(origins) else 0


def _split_indices(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) indices, val holding ``fraction`` of ``count`` (at least one)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, received {fraction}.")
    if count < 2:
        raise ValueError(f"Cannot carve a validation split from {count} image(s).")
    order = np.random.default_rng(seed).permutation(count)
    n_val = min(max(1, int(round(fraction * count))), count - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
