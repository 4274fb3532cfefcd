"""The instance data every part of E7 shares: one image's instances (truth or predictions)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Instances:
    """The instances of one image, as ground truth or as a model's detections.

    Attributes:
        boxes: ``[n, 4]`` float32 boxes in pixels of the image, ``(ymin, xmin, ymax, xmax)``
            (Model Garden's order), ``ymax``/``xmax`` exclusive.
        classes: ``[n]`` int64 class ids, 1 to K (0 is Model Garden's background; the dataset's
            ``class_names[i]`` names id ``i + 1``).
        masks: ``[n, H, W]`` uint8 binary masks at the image's full size.
        scores: ``[n]`` float32 detection scores, or None for ground truth.
    """

    boxes: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.masks = np.asarray(self.masks, np.uint8)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        count = len(self.classes)
        if len(self.boxes) != count or self.masks.ndim != 3 or len(self.masks) != count or (
                self.scores is not None and len(self.scores) != count):
            raise ValueError(f"Instances need as many boxes, classes, masks (and scores) as instances; received "
                             f"boxes {self.boxes.shape}, classes {self.classes.shape}, masks {self.masks.shape}"
                             f"{'' if self.scores is None else f', scores {self.scores.shape}'}.")

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def from_masks(cls, masks: np.ndarray, classes: np.ndarray) -> "Instances":
        """Ground truth from binary masks alone: each box is its mask's tight bounding box."""
        masks = np.asarray(masks, np.uint8)
        boxes = np.zeros((len(masks), 4), np.float32)
        for i, mask in enumerate(masks):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if len(rows) == 0:
                raise ValueError(f"Instance {i} has an empty mask; drop it before making Instances.")
            boxes[i] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
        return cls(boxes=boxes, classes=classes, masks=masks)
