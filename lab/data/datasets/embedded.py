"""Datasets that need no network: scikit-learn's digits (real) and generated "shapes".

``digits`` is the real UCI handwritten-digits set that ships inside scikit-learn (1,797 8x8
grayscale images, 10 classes). ``shapes`` is drawn procedurally from a seed: coloured shapes on
noisy backgrounds, one class per shape, with a per-pixel mask for segmentation. Its default
class proportions are imbalanced like BloodMNIST's, so the imbalance tools have work to do.
"""

from __future__ import annotations

import numpy as np

from lab.data.datasets.base import Dataset, carve_validation

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring")

# Relative class frequencies of the default shapes set (BloodMNIST's train shares, largest
# first, folded onto six classes): imbalanced enough that accuracy alone can mislead.
DEFAULT_SHAPE_WEIGHTS = (0.29, 0.21, 0.18, 0.12, 0.12, 0.08)


def load_digits(*, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Loads scikit-learn's handwritten digits as 8x8x1 uint8 images (0-255).

    Args:
        val_fraction: share of the non-test images used for validation.
        test_fraction: share of all images held out for test.
        seed: draws the stratified splits.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixel values are 0..16; scale to 0..255 so digits look like every other uint8 dataset.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    labels = bunch.target.astype(np.int64)
    x_rest, y_rest, x_test, y_test = carve_validation(images, labels, test_fraction, seed)
    x_train, y_train, x_val, y_val = carve_validation(x_rest, y_rest, val_fraction, seed)
    return Dataset(
        name="digits", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, class_names=[str(d) for d in range(10)],
        source={"origin": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
                "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": seed},
    )


def load_shapes(
    *,
    num_train: int = 1200,
    num_val: int = 300,
    num_test: int = 300,
    dataset_size: int = 28,
    channels: int = 3,
    class_weights: tuple[float, ...] | None = DEFAULT_SHAPE_WEIGHTS,
    noise: float = 0.15,
    seed: int = 0,
) -> Dataset:
    """Generates the shapes dataset: one shape per image, its class, and its pixel mask.

    Args:
        num_train, num_val, num_test: images per split.
        dataset_size: side of the square images in pixels (at least 16).
        channels: 3 (colour) or 1 (grayscale).
        class_weights: relative class frequencies (len 6), or None for balanced classes.
        noise: standard deviation of the background noise, in [0, 1] intensity units.
        seed: the whole dataset is a function of the arguments and this seed.

    Returns:
        A Dataset whose ``masks_*`` hold 0 for background and ``class_id + 1`` on the shape.
    """
    if dataset_size < 16:
        raise ValueError(f"dataset_size must be at least 16 pixels for shapes, received {dataset_size}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, received {channels}.")
    weights = np.ones(len(SHAPE_CLASSES)) if class_weights is None else np.asarray(class_weights, float)
    if weights.shape != (len(SHAPE_CLASSES),) or (weights <= 0).any():
        raise ValueError(
            f"class_weights must be {len(SHAPE_CLASSES)} positive numbers (one per class in "
            f"{SHAPE_CLASSES}), received {class_weights}."
        )
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        labels = rng.choice(len(SHAPE_CLASSES), size=count, p=weights / weights.sum())
        images = np.empty((count, dataset_size, dataset_size, channels), np.uint8)
        masks = np.empty((count, dataset_size, dataset_size), np.uint8)
        for i, label in enumerate(labels):
            images[i], masks[i] = _draw(rng, int(label), dataset_size, channels, noise)
        arrays[split] = (images, labels.astype(np.int64), masks)
    return Dataset(
        name="shapes",
        x_train=arrays["train"][0], y_train=arrays["train"][1], masks_train=arrays["train"][2],
        x_val=arrays["val"][0], y_val=arrays["val"][1], masks_val=arrays["val"][2],
        x_test=arrays["test"][0], y_test=arrays["test"][1], masks_test=arrays["test"][2],
        class_names=list(SHAPE_CLASSES),
        source={"generator": "lab.data.datasets.embedded.load_shapes", "seed": seed,
                "image_size": dataset_size, "channels": channels, "noise": noise,
                "class_weights": None if class_weights is None else list(class_weights)},
    )


def _draw(rng: np.random.Generator, label: int, size: int, channels: int, noise: float):
    """Draws one shape of class ``label``; returns (uint8 image, uint8 mask)."""
    radius = rng.uniform(0.22, 0.38) * size
    cy, cx = rng.uniform(radius, size - radius, size=2)
    angle = rng.uniform(0, np.pi / 2)
    inside = shape_mask(SHAPE_CLASSES[label], (size, size), radius=radius, center=(cy, cx), angle=angle)

    background = rng.uniform(0.0, 0.5, size=channels)
    foreground = rng.uniform(0.5, 1.0, size=channels)
    if rng.random() < 0.5:  # light shapes on dark ground, or dark on light
        background, foreground = 1.0 - background, 1.0 - foreground
    image = np.where(inside[..., None], foreground, background)
    image = image + rng.normal(0.0, noise, size=image.shape)
    image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    mask = np.where(inside, label + 1, 0).astype(np.uint8)
    return image, mask


def shape_mask(name: str, shape: tuple[int, int], *, radius: float, center: tuple[float, float],
               angle: float) -> np.ndarray:
    """The pixels covered by one shape (shared by ``shapes`` and E7's multi-instance shapes).

    Args:
        name: one of ``SHAPE_CLASSES``.
        shape: ``(height, width)`` of the image in pixels.
        radius: the shape's radius in pixels (a circle's radius; the others scale with it).
        center: ``(y, x)`` of the shape's centre in pixels.
        angle: rotation in radians (squares, triangles, diamonds and crosses appear at any angle).

    Returns:
        A ``(height, width)`` bool array, True inside the shape (pixel centres are tested).
    """
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32) + 0.5
    dy, dx = yy - center[0], xx - center[1]
    # Rotate the frame so squares, triangles, diamonds and crosses appear at any angle.
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    r = np.hypot(dx, dy)
    if name == "circle":
        inside = r <= radius
    elif name == "square":
        inside = (np.abs(u) <= radius * 0.8) & (np.abs(v) <= radius * 0.8)
    elif name == "triangle":
        # Equilateral triangle pointing along -v, as the intersection of three half-planes.
        inside = v <= radius * 0.5
        for theta in (np.pi / 6, 5 * np.pi / 6):
            inside &= (u * np.cos(theta) - v * np.sin(theta)) <= radius * 0.5
    elif name == "diamond":
        # A rhombus with diagonals 2r and 1.1r. With equal diagonals it would be a square turned
        # 45 degrees, and since squares are drawn at every angle the two classes could only be
        # told apart by their (overlapping) sizes.
        inside = np.abs(u) / radius + np.abs(v) / (0.55 * radius) <= 1.0
    elif name == "cross":
        arm = radius * 0.3
        inside = ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    elif name == "ring":
        inside = (r <= radius) & (r >= radius * 0.55)
    else:
        raise ValueError(f"Unknown shape {name!r}; the shapes are {SHAPE_CLASSES}.")
    return inside
