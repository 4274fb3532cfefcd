"""A generated cell-membrane set, EM-like (``load_membranes``): a thin-structure problem offline.

Each image is a tessellation of cells (a Voronoi diagram of jittered seed points, its borders
bent by a smooth random warp) whose borders are membranes: thin (1.5 to 4 pixels, varying along
each membrane), dark but unevenly so, blurred. Cell interiors are mid-grey with a smooth texture
and darker organelle-like blobs, and the whole image gets Gaussian noise: a grayscale uint8 image,
dark membranes on lighter cells, like the serial-section EM images of the ISBI 2012 challenge
that U-Net won. The masks hold 0 for the cell interiors (the background) and 1 for the membranes
(about a fifth of the pixels), so a model that predicts only cells already gets a pixel accuracy
near 0.8 while finding no membrane at all: what E6's all-background flag and the membrane Dice
are for.

Everything is a function of the arguments and the seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, spatial

from lab.data.datasets.segmentation.dataset import SegmentationDataset

MEMBRANE_CLASSES = ("cell", "membrane")
# Cell diameter in pixels at any image size (EM membranes are thin whatever the field of view).
CELL_SIZE = 24.0


def load_membranes(*, num_train: int = 20, num_val: int = 5, num_test: int = 5, dataset_size: int = 128,
                   noise: float = 0.08, seed: int = 0) -> SegmentationDataset:
    """Generates the membrane set.

    Args:
        num_train, num_val, num_test: images per split (the ISBI set has 30 images: 20 train,
            as in the issue this set stands in for).
        dataset_size: the images' side in pixels (at least 32).
        noise: standard deviation of the Gaussian noise, in [0, 1] intensity units.
        seed: the whole set is a function of the arguments and this seed.

    Returns:
        A SegmentationDataset of (N, size, size, 1) uint8 images and masks with class 0 "cell"
        (the background) and 1 "membrane".
    """
    for key, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be a positive number of images, received {key}={value!r}.")
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, (int, np.integer)) or dataset_size < 32:
        raise ValueError(f"dataset_size must be an integer of at least 32 pixels for membranes, received "
                         f"dataset_size={dataset_size!r}.")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], received noise={noise!r}.")
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        pairs = [draw_membranes(rng, int(dataset_size), noise) for _ in range(count)]
        arrays[f"x_{split}"] = np.stack([image for image, _ in pairs])[..., np.newaxis]
        arrays[f"masks_{split}"] = np.stack([mask for _, mask in pairs])
    return SegmentationDataset(
        name="membranes", class_names=list(MEMBRANE_CLASSES), background_class=0, **arrays,
        source={"generator": "lab.data.datasets.segmentation.membranes.load_membranes", "seed": seed,
                "image_size": int(dataset_size), "noise": noise, "splits": [num_train, num_val, num_test]})


def draw_membranes(rng: np.random.Generator, size: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask: (size, size) uint8 intensities, (size, size) uint8 class ids."""
    # Seed points on a jittered grid: cells of similar size that tile the image.
    cells = max(int(round(size / CELL_SIZE)), 2)
    step = size / cells
    grid = (np.stack(np.meshgrid(np.arange(cells + 2), np.arange(cells + 2), indexing="ij"), -1).reshape(-1, 2) - 0.5)
    seeds = (grid + rng.uniform(-0.35, 0.35, grid.shape)) * step
    # Pixel positions bent by a smooth warp, so that the borders curve as cell walls do.
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = [_smooth_field(rng, size, scale=size / 3, amplitude=0.18 * step) for _ in range(2)]
    points = np.stack([rows + warp[0], columns + warp[1]], -1).reshape(-1, 2)
    distances, _ = spatial.cKDTree(seeds).query(points, k=2)
    # Half the gap between the nearest and second-nearest seed is the distance to the border.
    to_border = ((distances[:, 1] - distances[:, 0]) / 2.0).reshape(size, size)
    half_width = 0.75 + 1.25 * _unit_field(rng, size, scale=size / 6)  # 1.5 to 4 pixels wide
    mask = (to_border < half_width).astype(np.uint8)

    interior = 0.62 + 0.1 * rng.uniform(-1, 1) + 0.08 * (_unit_field(rng, size, scale=4.0) - 0.5)
    blobs = _unit_field(rng, size, scale=3.0) > 0.82  # dark organelle-like specks inside cells
    interior = np.where(blobs, interior - 0.18, interior)
    darkness = 0.3 + 0.35 * _unit_field(rng, size, scale=size / 5)  # membranes dark, unevenly
    # A soft membrane profile, then the blur of the microscope: the label's edge is not sharp.
    profile = np.clip(1.0 - to_border / (half_width + 0.5), 0.0, 1.0)
    image = interior - darkness * profile
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0.0, noise, image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8), mask


def _unit_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random values in [0, 1] varying over about ``scale`` pixels."""
    # A Gaussian blur of white noise, done in the Fourier domain: its cost does not grow with scale.
    field = np.fft.ifft2(ndimage.fourier_gaussian(np.fft.fft2(rng.normal(size=(size, size))), scale)).real
    low, high = field.min(), field.max()
    return ((field - low) / (high - low + 1e-12)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, size: int, scale: float, amplitude: float) -> np.ndarray:
    """A smooth random field with values of about +-``amplitude``."""
    return (amplitude * (2.0 * _unit_field(rng, size, scale) - 1.0)).astype(np.float32)
