"""The one in-memory dataset type every loader returns, and what can be done with it.

A ``Dataset`` holds train/val/test arrays (images as ``uint8`` or ``float32`` in NHWC, labels
as ``int64`` class ids), the class names, and where the data came from. Everything downstream
(pipelines, training, records, plots) reads these fields and nothing else.

Pixel ranges. ``uint8`` images hold 0-255 and ``float32`` images hold [0, 1]: every
``input_scaling`` of the pipelines starts from that (``lab.data.pipeline``: uint8 is divided by 255,
floats are taken as they are), so a float image in 0..255 would reach a pretrained backbone
255 times too bright. ``check_float_range`` refuses float images outside [0, 1] (and NaN) where
data enters the kit: a ``Dataset`` on creation, and every chunk a streamed reader hands out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
# The range of float images (uint8 images are 0-255): what every input_scaling assumes.
FLOAT_RANGE = (0.0, 1.0)


def check_float_range(images: np.ndarray, where: str) -> None:
    """Refuses float images with a value outside ``FLOAT_RANGE`` (or NaN); uint8 passes unread.

    Args:
        images: an array of images (any shape).
        where: what holds them, for the message (``"Dataset 'x': train images"``).

    Raises:
        ValueError: naming ``where``, the values received and what to do.
    """
    if images.dtype.kind != "f" or not images.size:
        return
    low, high = float(np.min(images)), float(np.max(images))
    if low >= FLOAT_RANGE[0] and high <= FLOAT_RANGE[1]:  # False for NaN, which min and max propagate
        return
    hint = " Divide them by 255" if high <= 255.0 and low >= 0.0 else " Rescale them to [0, 1]"
    raise ValueError(
        f"{where} are {images.dtype.name} values from {low:g} to {high:g}, but float images must hold [0, 1] "
        f"(uint8 images hold 0-255); every input_scaling starts from that range, so these would reach the "
        f"model scaled wrongly.{hint} (or store them as uint8 0-255) and load them again.")


class ImageSplits:
    """What every in-memory dataset of the kit answers from its ``class_names`` and its splits."""

    def content_hash(self) -> str:
        """A sha256 of every split's images and targets (labels or masks), shapes and dtypes:
        what a run record and a configuration hash name the data by. Computed once per object
        (about 0.15 s for CIFAR-100's 184 MB)."""
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            digest = hashlib.sha256()
            for split in SPLITS:
                for array in self.split(split):
                    array = np.ascontiguousarray(array)
                    digest.update(f"{split}{array.shape}{array.dtype.str}".encode())
                    digest.update(memoryview(array).cast("B"))
            cached = self.__dict__["_content_hash"] = digest.hexdigest()
        return cached

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]


@dataclasses.dataclass
class Dataset(ImageSplits):
    """Images and integer labels for the train, validation and test splits.

    Attributes:
        name: registry name (``"bloodmnist"``, ``"cifar100"``...), recorded with every run.
        x_train, y_train, x_val, y_val, x_test, y_test: NHWC images and int64 labels.
        class_names: human-readable name of each class id.
        task: ``"multi-class"`` or ``"binary-class"`` (both trained with a softmax).
        source: provenance (url, checksum, license, options) kept in the run record.
        masks_train, masks_val, masks_test: optional per-pixel class ids (segmentation).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    task: str = "multi-class"
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    masks_train: np.ndarray | None = None
    masks_val: np.ndarray | None = None
    masks_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            x, y = self.split(split)
            if x.ndim == 3:  # grayscale without a channel axis: (N, H, W) -> (N, H, W, 1)
                setattr(self, f"x_{split}", x[..., np.newaxis])
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:  # MedMNIST and CIFAR store labels as (N, 1)
                y = y[:, 0]
            if y.ndim != 1:
                raise ValueError(
                    f"Dataset {self.name!r}: {split} labels must be one class id per image, "
                    f"received an array of shape {y.shape}. Multi-label data is not supported."
                )
            setattr(self, f"y_{split}", y.astype(np.int64))
            if len(getattr(self, f"x_{split}")) != len(y):
                raise ValueError(
                    f"Dataset {self.name!r}: {split} has {len(x)} images but {len(y)} labels."
                )
            check_float_range(x, f"Dataset {self.name!r}: the {split} images")
        for split in SPLITS:
            y = self.split(split)[1]
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"Dataset {self.name!r}: {split} labels must lie in [0, {self.num_classes}) "
                    f"for {self.num_classes} class names, received labels from {y.min()} to {y.max()}."
                )

    # -- what the data is --------------------------------------------------------------------

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def masks(self, name: str) -> np.ndarray | None:
        """Returns the per-pixel masks of a split, or None if the dataset has none."""
        self.split(name)
        return getattr(self, f"masks_{name}")

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Returns the number of images of each class in ``split``."""
        return np.bincount(self.split(split)[1], minlength=self.num_classes)

    def class_weights(self, split: str = "train") -> dict[int, float]:
        """Returns balanced class weights, ``n / (k * count)``, as Keras' ``class_weight`` wants.

        A class absent from the split gets weight 0 (nothing to weight).
        """
        return balanced_class_weights(self.class_counts(split))

    def summary(self) -> dict[str, Any]:
        """Returns shapes, sizes and class counts: what a notebook prints about its data."""
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": {s: int(len(self.split(s)[1])) for s in SPLITS},
            "class_counts": {s: self.class_counts(s).tolist() for s in SPLITS},
            "class_names": list(self.class_names),
        }

    # -- derived datasets --------------------------------------------------------------------

    def subset_classes(self, num_classes: int, seed: int = 0) -> "Dataset":
        """Keeps ``num_classes`` classes drawn at random by ``seed``, labels remapped to 0..n-1.

        The chosen classes keep their relative order, so the same seed always gives the same
        classes and the same label ids (E9's class-subset studies).
        """
        kept, indices, labels = select_classes({s: self.split(s)[1] for s in SPLITS}, self.num_classes,
                                               num_classes, seed=seed, name=self.name)
        arrays: dict[str, Any] = {}
        for split in SPLITS:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = self.split(split)[0][indices[split]], labels[split]
            masks = self.masks(split)
            arrays[f"masks_{split}"] = masks[indices[split]] if masks is not None else None
        source = dict(self.source, subset_classes=[int(c) for c in kept], subset_seed=seed)
        return dataclasses.replace(
            self, class_names=[self.class_names[c] for c in kept], source=source, **arrays
        )

    def limit(self, per_split: int | None, seed: int = 0) -> "Dataset":
        """Keeps at most ``per_split`` images of each split (a stratified random sample).

        Used for quick runs; the sample is drawn by ``seed`` and stratified so that every class
        keeps its share, and every class present in a split keeps at least one image there.

        Raises:
            ValueError: ``per_split`` is not a positive integer, or is smaller than the number
                of classes in a split (some class would vanish from it; to train on fewer
                classes on purpose, use ``subset_classes`` / ``num_classes``).
        """
        if per_split is None:
            return self
        indices = limit_indices({s: self.split(s)[1] for s in SPLITS}, per_split, seed=seed, name=self.name)
        arrays: dict[str, Any] = {}
        for split in SPLITS:
            x, y = self.split(split)
            index = indices[split]
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x[index], y[index]
            masks = self.masks(split)
            arrays[f"masks_{split}"] = masks[index] if masks is not None else None
        return dataclasses.replace(self, source=dict(self.source, limit=per_split), **arrays)


def balanced_class_weights(counts: np.ndarray) -> dict[int, float]:
    """Balanced class weights ``n / (k * count)`` of per-class image counts (0 for an absent class)."""
    counts = np.asarray(counts, dtype=np.float64)
    total, k = counts.sum(), len(counts)
    return {i: (float(total / (k * c)) if c else 0.0) for i, c in enumerate(counts)}


# -- choices made from the labels alone ------------------------------------------------------------
# Class subsets and limits depend only on the labels and the seed, so the streamed path
# (lab.data.datasets.streaming), which never holds the images, picks exactly the images the
# in-memory path keeps.


def select_classes(
    labels: dict[str, np.ndarray], total: int, num_classes: int, *, seed: int = 0, name: str = "the dataset"
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draws ``num_classes`` of ``total`` classes by ``seed`` and says which images keep them.

    Args:
        labels: each split's int64 labels.
        total: the number of classes of the dataset.
        num_classes: how many to keep (2 to ``total``).
        seed: draws the classes.
        name: the dataset, named in errors.

    Returns:
        ``(kept classes (sorted), {split: indices of the kept images}, {split: remapped labels})``.
    """
    if not 1 < num_classes <= total:
        raise ValueError(
            f"num_classes must be between 2 and {total} for {name!r}, "
            f"received {num_classes}."
        )
    rng = np.random.default_rng(seed)
    kept = np.sort(rng.choice(total, size=num_classes, replace=False))
    remap = np.full(total, -1, dtype=np.int64)
    remap[kept] = np.arange(num_classes)
    indices = {split: np.flatnonzero(remap[y] >= 0) for split, y in labels.items()}
    return kept, indices, {split: remap[labels[split][index]] for split, index in indices.items()}


def limit_indices(
    labels: dict[str, np.ndarray], per_split: int, *, seed: int = 0, name: str = "the dataset"
) -> dict[str, np.ndarray]:
    """The sorted indices ``Dataset.limit`` keeps of each split (a stratified sample by ``seed``).

    Raises:
        ValueError: ``per_split`` is not a positive integer, or is smaller than the number of
            classes in a split.
    """
    if isinstance(per_split, bool) or not isinstance(per_split, (int, np.integer)) or per_split < 1:
        raise ValueError(f"limit must be a positive number of images per split, received {per_split!r}.")
    for split, y in labels.items():
        present = np.count_nonzero(np.bincount(y)) if len(y) else 0
        if per_split < present:
            raise ValueError(
                f"limit={per_split} would drop classes: the {split} split of {name!r} has {present} "
                f"classes; use limit >= {present} (or num_classes to keep fewer classes on purpose)."
            )
    return {split: _stratified_sample(y, per_split, seed) if len(y) > per_split else np.arange(len(y))
            for split, y in labels.items()}


def carve_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits ``fraction`` of (x, y) off as a stratified validation set, drawn by ``seed``.

    Returns:
        ``(x_train, y_train, x_val, y_val)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), received {fraction}.")
    from sklearn.model_selection import train_test_split

    # Stratify when possible: scikit-learn refuses when a class has a single image or when a
    # side of the split is smaller than the number of classes (tiny quick-run datasets).
    counts = np.bincount(y)
    classes = np.count_nonzero(counts)
    n_val = int(np.ceil(fraction * len(y)))
    possible = counts[counts > 0].min() >= 2 and classes <= n_val <= len(y) - classes
    stratify = y if possible else None
    index = np.arange(len(y))
    train_idx, val_idx = train_test_split(
        index, test_size=fraction, random_state=seed, stratify=stratify
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def _stratified_sample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` of the labels ``y`` (``size`` at least the number of classes in
    ``y``, fewer than ``len(y)``), stratified, with at least one of every class present."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    classes = np.count_nonzero(counts)
    # scikit-learn stratifies when every class has two images and both sides of the split can
    # hold one of each class. Its draw comes first so that limits that already kept every class
    # keep the same images as before (recorded runs stay reproducible).
    stratify = y if counts[counts > 0].min() >= 2 and classes <= size <= len(y) - classes else None
    index, _ = train_test_split(np.arange(len(y)), train_size=size, random_state=seed, stratify=stratify)
    if np.count_nonzero(np.bincount(y[index])) == classes:
        return np.sort(index)
    # A rare class got no image (its share rounded down to 0, or the draw was not stratified):
    # give every class one image, then share the rest in proportion to what each class has left.
    present = np.flatnonzero(counts)
    spare = counts[present] - 1
    extra = size - classes
    share = spare * (extra / spare.sum()) if spare.sum() else np.zeros(classes)
    quota = np.floor(share).astype(np.int64)
    # Largest remainders first; a class whose share has a remainder has room for one more image.
    quota[np.argsort(quota - share, kind="stable")[: extra - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == label), 1 + take, replace=False) for label, take in zip(present, quota)]
    return np.sort(np.concatenate(chosen))
