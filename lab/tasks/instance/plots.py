"""E7's figures and tables: predicted instances next to the truth, and per-class COCO AP.

Like ``lab.runs.plots``, each plot returns a matplotlib Figure that pyplot no longer holds (shown once
in a notebook, where the cell returns it); ``lab.runs.plots.save`` writes it. Nothing here needs the
instance-segmentation extra.
"""

from __future__ import annotations

from typing import Any, Sequence

from lab.runs.plots import _subplots  # first: it selects the Agg backend outside notebooks

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from lab.tasks.instance.types import Instances

# tab10 without its grey (index 7), which reads as "no instance" on a grey image.
_PALETTE = [plt.get_cmap("tab10")(i)[:3] for i in range(10) if i != 7]


def instance_colors(count: int) -> np.ndarray:
    """``count`` RGB colours in [0, 1], one per instance: tab10 (less its grey), repeating after 9."""
    return np.asarray([_PALETTE[i % len(_PALETTE)] for i in range(count)], dtype=float).reshape(-1, 3)


def _rgb(image: np.ndarray) -> np.ndarray:
    """An image as float RGB in [0, 1]: uint8 divided by 255, any other range stretched to [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"Images must be [H, W], [H, W, 1] or [H, W, 3]; received shape {image.shape}.")
    if image.dtype == np.uint8:
        image = image.astype(float) / 255.0
    else:
        image = image.astype(float)
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low + 1e-12)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def _draw(ax, image: np.ndarray, instances: Instances, labels: Sequence[str], alpha: float = 0.45) -> None:
    """The image with each instance's mask tinted and outlined in its own colour, its box, its label."""
    colors = instance_colors(len(instances))
    picture = image.copy()
    for mask, color in zip(instances.masks, colors):
        inside = mask.astype(bool)
        picture[inside] = (1 - alpha) * picture[inside] + alpha * color
    ax.imshow(picture, interpolation="nearest")
    height = image.shape[0]
    for mask, box, label, color in zip(instances.masks, instances.boxes, labels, colors):
        if mask.any() and not mask.all():
            ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.5)
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        # imshow puts pixel centres on integers, so a pixel's edge is at -0.5 and xmax is exclusive.
        ax.add_patch(Rectangle((xmin - 0.5, ymin - 0.5), xmax - xmin, ymax - ymin, fill=False, edgecolor=color,
                               linewidth=1.5))
        above = ymin > 0.08 * height  # the label sits above the box unless that leaves the image
        ax.text(xmin - 0.5, ymin - 0.5 if above else ymin + 0.5, label, fontsize=7, color="white",
                va="bottom" if above else "top", ha="left", clip_on=True,
                bbox={"facecolor": color, "edgecolor": "none", "alpha": 0.85, "pad": 1.0})
    ax.set_xticks([])
    ax.set_yticks([])


def _check_masks(instances: Instances, image: np.ndarray, what: str) -> None:
    if len(instances) and instances.masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"The {what} masks are {instances.masks.shape[1]}x{instances.masks.shape[2]} but their image "
                         f"is {image.shape[0]}x{image.shape[1]}; masks must have their image's full size.")


def _name(class_names: Sequence[str], label: int) -> str:
    if not 1 <= label <= len(class_names):
        raise ValueError(f"Class id {label} has no name: ids are 1 to {len(class_names)} (class_names[i] names "
                         f"id i + 1).")
    return str(class_names[label - 1])


def instance_predictions(images: Sequence[np.ndarray], truth: Sequence[Instances], predictions: Sequence[Instances],
                         class_names: Sequence[str], *, score_threshold: float = 0.5, count: int = 4,
                         title: str = "Instance predictions") -> plt.Figure:
    """The first ``count`` images in two rows: the truth above, the predictions below.

    Each instance has its own colour (tinted mask, outline, box and label); the colours of the
    two rows do not correspond, since detections are not matched to the truth here (COCO AP
    does that). Predictions below ``score_threshold`` are hidden and counted in the panel's
    title; the most confident detections are drawn last, on top.

    Args:
        images: the images, [H, W], [H, W, 1] or [H, W, 3]; uint8 or any float range.
        truth: each image's ground truth.
        predictions: each image's detections, with scores.
        class_names: ``class_names[i]`` names class id ``i + 1``.
        score_threshold: the lowest score drawn.
        count: how many images (columns) to draw, from the first.
        title: the figure's title (the threshold is appended).

    Returns:
        The figure: 2 rows of ``min(count, len(images))`` axes.
    """
    if not len(images) == len(truth) == len(predictions):
        raise ValueError(f"images, truth and predictions must list the same images; received {len(images)} images, "
                         f"{len(truth)} ground truths and {len(predictions)} predictions.")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive number of images; received count={count!r}.")
    if not np.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a finite number; received score_threshold={score_threshold!r}.")
    if not len(images):
        raise ValueError("instance_predictions needs at least one image; received none.")
    columns = min(int(count), len(images))
    first = _rgb(images[0])
    aspect = first.shape[0] / first.shape[1]
    panel = 3.2
    figure, axes = _subplots(2, columns, figsize=(panel * columns, 2 * panel * aspect + 0.9), squeeze=False)
    for column in range(columns):
        image = _rgb(images[column])
        true, predicted = truth[column], predictions[column]
        if predicted.scores is None:
            raise ValueError(f"The predictions of image {column} have no scores; detections need one score each.")
        _check_masks(true, image, f"true (image {column})")
        _check_masks(predicted, image, f"predicted (image {column})")
        _draw(axes[0, column], image, true, [_name(class_names, int(c)) for c in true.classes])
        axes[0, column].set_title(f"truth, image {column}: {len(true)} instance{'s' * (len(true) != 1)}", fontsize=9)
        keep = np.flatnonzero(predicted.scores >= score_threshold)
        keep = keep[np.argsort(predicted.scores[keep], kind="stable")]  # ascending: the best on top
        shown = Instances(predicted.boxes[keep], predicted.classes[keep], predicted.masks[keep], predicted.scores[keep])
        labels = [f"{_name(class_names, int(c))} {s:.2f}" for c, s in zip(shown.classes, shown.scores)]
        _draw(axes[1, column], image, shown, labels)
        hidden = len(predicted) - len(shown)
        axes[1, column].set_title(f"prediction: {len(shown)} shown, {hidden} below {score_threshold:g} hidden",
                                  fontsize=9)
    figure.suptitle(f"{title} (top: truth; bottom: detections scoring >= {score_threshold:g})", fontsize=10)
    figure.tight_layout()
    return figure


def ap_table(scores: dict[str, Any]) -> pd.DataFrame:
    """Per-class COCO AP (IoU .50:.95) of boxes and masks from ``metrics.coco_scores``' result.

    Args:
        scores: the dict ``coco_scores`` returns (or a run record's metrics holding its keys).

    Returns:
        A DataFrame indexed by class name with columns ``box AP`` and ``mask AP``; a class without
        ground truth in the split has NaN (COCO cannot score it).
    """
    missing = [key for key in ("box_ap_per_class", "mask_ap_per_class") if key not in scores]
    if missing:
        raise ValueError(f"ap_table needs the per-class APs of coco_scores(); missing {missing} among the keys "
                         f"{sorted(scores)}.")
    box, mask = scores["box_ap_per_class"], scores["mask_ap_per_class"]
    names = list(dict.fromkeys([*box, *mask]))
    frame = pd.DataFrame({"box AP": [box.get(name) for name in names], "mask AP": [mask.get(name) for name in names]},
                         index=pd.Index(names, name="class"), dtype=float)
    return frame


def per_class_ap(scores: dict[str, Any], class_names: Sequence[str] | None = None, *,
                 title: str = "COCO AP per class") -> plt.Figure:
    """Bars of each class's box and mask AP (IoU .50:.95) from ``metrics.coco_scores``' result.

    Args:
        scores: the dict ``coco_scores`` returns.
        class_names: the classes to show, in this order (all of ``scores``' classes when None).
        title: the axes title.

    Returns:
        The figure; a class without ground truth in the split is marked "no ground truth"
        instead of a bar (COCO cannot score it; it is not a 0).
    """
    table = ap_table(scores)
    if class_names is not None:
        unknown = [name for name in class_names if name not in table.index]
        if unknown:
            raise ValueError(f"The scores have no AP for classes {unknown}; they score {list(table.index)}.")
        table = table.loc[list(class_names)]
    names = list(table.index)
    positions = np.arange(len(names))
    figure, ax = _subplots(figsize=(max(5.0, 0.9 * len(names) + 2.0), 3.6))
    width = 0.38
    for offset, column, color in ((-width / 2, "box AP", _PALETTE[0]), (width / 2, "mask AP", _PALETTE[1])):
        values = table[column].to_numpy(dtype=float)
        bars = ax.bar(positions + offset, np.nan_to_num(values), width, label=column, color=color)
        for bar, value in zip(bars, values):
            if np.isfinite(value):
                ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    for position, undefined in zip(positions, table.isna().all(axis=1)):
        if undefined:
            ax.text(position, 0.02, "no ground truth", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xticks(positions, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("AP @ IoU .50:.95")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
