"""Overlap-tile prediction of whole images (Ronneberger et al., U-Net, 2015, figure 2).

A network trained on tiles of side T sees, near a tile's border, only part of the context it
would see inside a whole image: predicted tile by tile and pasted side by side, the masks show
seams along the tile borders. The overlap-tile strategy predicts windows of side T that
overlap, keeps only each window's centre (T - 2 * tile_margin on a side), and lays the centres
edge to edge; the image is mirror-padded by ``tile_margin`` (plus what fills the last row and
column) so that the border pixels get mirrored context too.

    windows, layout = overlap_tile_windows(image, tile_size=64, tile_margin=8)
    probabilities = stitch(predict(windows), layout)          # the whole image's (H, W, classes)

A tile_margin at least the network's receptive-field radius makes the stitched prediction equal to
the prediction of the whole mirror-padded image; with tile_margin 0 this is naive tiling.

Pure NumPy; ``predict`` is any function from a batch of windows to per-pixel outputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from lab.config.segmentation import check_tiles


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """Where the windows of one image lie.

    Attributes:
        height, width: the image's size.
        tile_size: the window side (the network's input).
        tile_margin: the context kept around each window's centre.
        rows, columns: the number of windows down and across.
    """

    height: int
    width: int
    tile_size: int
    tile_margin: int
    rows: int
    columns: int

    @property
    def core(self) -> int:
        """The side of the centre of a window that is kept (the stride between windows)."""
        return self.tile_size - 2 * self.tile_margin

    @property
    def count(self) -> int:
        return self.rows * self.columns


def tile_layout(height: int, width: int, tile_size: int, tile_margin: int) -> TileLayout:
    """The windows that cover a height x width image with centres of ``tile_size - 2 * tile_margin``.

    Raises:
        ValueError: a tile size or tile_margin that leaves no centre.
    """
    if tile_margin is None:
        raise ValueError("tile_margin must be given: the context pixels kept around each window's centre (0: naive "
                         "tiling).")
    check_tiles(tile_size, tile_margin)
    if height < 1 or width < 1:
        raise ValueError(f"Cannot tile an empty image of {height}x{width} pixels.")
    core = tile_size - 2 * tile_margin
    return TileLayout(int(height), int(width), int(tile_size), int(tile_margin), math.ceil(height / core),
                      math.ceil(width / core))


def mirror_pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Pads the first two axes by mirroring the image at its borders (the border pixel itself is
    not repeated); pads wider than the image mirror again, as far as needed."""
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (image.ndim - 2)
    # "reflect" needs two pixels to mirror; a side of one pixel can only repeat itself.
    mode = "reflect" if min(image.shape[:2]) > 1 else "symmetric"
    return np.pad(image, widths, mode=mode)


def overlap_tile_windows(image: np.ndarray, tile_size: int, tile_margin: int) -> tuple[np.ndarray, TileLayout]:
    """Cuts an image into the overlapping windows of the overlap-tile strategy.

    Args:
        image: (H, W) or (H, W, C); any size, also smaller than a tile.
        tile_size: the window side, the size the network was trained on.
        tile_margin: context pixels on each side of a window's kept centre.

    Returns:
        The windows, (rows * columns, tile_size, tile_size[, C]) in row-major order, and
        their layout (for ``stitch``).
    """
    image = np.asarray(image)
    layout = tile_layout(image.shape[0], image.shape[1], tile_size, tile_margin)
    core = layout.core
    padded = mirror_pad(image, tile_margin, tile_margin + layout.rows * core - layout.height,
                        tile_margin, tile_margin + layout.columns * core - layout.width)
    windows = [padded[row * core:row * core + tile_size, column * core:column * core + tile_size]
               for row in range(layout.rows) for column in range(layout.columns)]
    return np.stack(windows), layout


def stitch(predictions: np.ndarray, layout: TileLayout) -> np.ndarray:
    """Lays the centres of the windows' predictions edge to edge and crops to the image.

    Args:
        predictions: one output per window, (count, tile_size, tile_size[, K]), in the order
            ``overlap_tile_windows`` gave the windows.
        layout: the windows' layout.

    Returns:
        (height, width[, K]): the prediction of the whole image.
    """
    predictions = np.asarray(predictions)
    expected = (layout.count, layout.tile_size, layout.tile_size)
    if predictions.shape[:3] != expected:
        raise ValueError(f"stitch expects one {layout.tile_size}x{layout.tile_size} output per window, "
                         f"shape {expected} + (channels,), received {predictions.shape}.")
    core, tile_margin = layout.core, layout.tile_margin
    centres = predictions[:, tile_margin:tile_margin + core, tile_margin:tile_margin + core]
    grid = centres.reshape(layout.rows, layout.columns, core, core, *predictions.shape[3:])
    # (rows, core, columns, core, ...) then merged: row-major windows become one image.
    whole = np.swapaxes(grid, 1, 2).reshape(layout.rows * core, layout.columns * core, *predictions.shape[3:])
    return whole[:layout.height, :layout.width]


def predict_whole_images(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], tile_size: int,
                         tile_margin: int) -> list[np.ndarray]:
    """Predicts every image whole by overlap-tile: windows in, stitched per-pixel outputs out.

    Args:
        predict: a batch of windows (n, tile_size, tile_size, C) -> outputs (n, tile_size,
            tile_size, K), e.g. a Keras model's ``predict`` behind the evaluation pipeline.
        images: (H, W, C) images; sizes may differ.
        tile_size, tile_margin: as in ``overlap_tile_windows``.

    Returns:
        One (H, W, K) output per image, in order.
    """
    outputs = []
    for image in images:
        windows, layout = overlap_tile_windows(image, tile_size, tile_margin)
        outputs.append(stitch(predict(windows), layout))
    return outputs
