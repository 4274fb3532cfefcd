"""The plots that go into reports. Each function returns a matplotlib Figure; ``save`` writes it.

Matplotlib is switched to the non-interactive Agg backend unless a notebook already chose one,
so plots render on headless machines and in papermill batches. pyplot lets go of each figure as
it is made (``_subplots``), so a notebook shows it once: where the cell returns or displays it.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Sequence

import matplotlib

# In a notebook the kernel has chosen the inline backend; elsewhere draw off-screen.
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns

from lab.system import atomic
from lab.runs.evaluation import metric_key

RIGHT, WRONG = "#1a7f37", "#cf222e"


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **kwargs):
    """Returns ``(figure, axes)`` like ``plt.subplots``, with a figure that pyplot no longer holds.

    A notebook's inline backend shows, at the end of a cell, every figure pyplot holds; a plot
    function that returned a pyplot figure was therefore shown twice (as the cell's value or by
    ``display``, then by the backend). The figure is made by pyplot (which loads the notebook's
    backend and with it the formatter that draws a returned figure) and closed at once, so it is
    shown only where the cell returns or displays it, and freed like any object (no pile of open
    figures over a sweep). A closed figure still draws, saves and displays.

    Args:
        nrows, ncols: the grid of axes.
        figsize: width and height in inches (matplotlib's default when None).
        **kwargs: passed to ``Figure.subplots`` (``squeeze``, ``sharex``...).

    Returns:
        The figure and its axes (one Axes, or an array of them as ``plt.subplots`` gives).
    """
    figure = plt.figure(figsize=figsize)
    plt.close(figure)
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save(figure: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Saves a figure atomically (PNG by the suffix) and closes it."""
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(figure)


def learning_curves(history: pd.DataFrame, title: str = "", best_epoch: int | None = None, *,
                    metric: str = "accuracy") -> plt.Figure:
    """Loss and a metric (accuracy; E7: "mask_ap") per epoch, train and validation, whichever
    the history has, with the best epoch marked."""
    figure, axes = _subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history) + 1)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], metric, metric.replace("_", " "))):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                ax.plot(epochs, history[key], style, marker="o", markersize=3,
                        label="train" if key == metric else "validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


# A confusion matrix writes its counts in the cells up to this many classes; beyond, the colours
# alone (a 100-class matrix of numbers is unreadable at any size a page shows).
ANNOTATED_CLASSES = 20
CONFUSION_MAX_INCHES = 14.0  # the side of the largest matrix (100 classes: 0.14 inch, 10 px, per class)


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], *, normalize: bool = False,
                     title: str = "Confusion matrix") -> plt.Figure:
    """A labelled heatmap, rows = true class; ``normalize`` shows each row as shares.

    It stays legible from 2 to 100+ classes: the figure grows with the classes up to
    ``CONFUSION_MAX_INCHES``, the counts are written in the cells up to ``ANNOTATED_CLASSES``
    classes (smaller from 10), the tick labels shrink with the cells and the predicted classes'
    labels turn upright from 10 classes so that long names do not overlap.
    """
    values = matrix.astype(float)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.nan_to_num(values / values.sum(axis=1, keepdims=True))
    classes = len(class_names)
    size = min(max(4.5, 0.55 * classes + 2), CONFUSION_MAX_INCHES)
    cell_points = 72 * (size - 2) / max(classes, 1)  # a cell's side in points, about
    tick_size = float(np.clip(cell_points * 0.7, 4, 10))
    figure, ax = _subplots(figsize=(size + 1, size))
    annotated = classes <= ANNOTATED_CLASSES
    sns.heatmap(values, annot=annotated, fmt=".2f" if normalize else "g", cmap="Blues",
                annot_kws={"fontsize": float(np.clip(cell_points * 0.35, 5, 10))} if annotated else None,
                xticklabels=class_names, yticklabels=class_names, square=True, cbar=True, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.tick_params(labelsize=tick_size, length=2)
    plt.setp(ax.get_xticklabels(), rotation=90 if classes >= 10 else 45, ha="center" if classes >= 10 else "right")
    plt.setp(ax.get_yticklabels(), rotation=0)
    figure.tight_layout()
    return figure


def _show(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low + 1e-12)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray")
    else:
        ax.imshow(image)
    ax.axis("off")


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, per_class: int = 6,
                seed: int = 0, title: str = "Samples") -> plt.Figure:
    """A grid with one row per class, ``per_class`` random images each, labelled by class name."""
    rng = np.random.default_rng(seed)
    rows = len(class_names)
    figure, axes = _subplots(rows, per_class, figsize=(1.3 * per_class, 1.3 * rows), squeeze=False)
    for c, name in enumerate(class_names):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(chosen):
                _show(ax, images[chosen[j]])
        axes[c, 0].set_title(name, fontsize=8, loc="left")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def sample_predictions(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
                       *, count: int = 24, columns: int = 8, seed: int = 0) -> plt.Figure:
    """Test images titled with the predicted class, green when right and red when wrong (E5)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
    rows = int(np.ceil(len(chosen) / columns))
    figure, axes = _subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        _show(ax, images[i])
        right = y_pred[i] == y_true[i]
        label = class_names[y_pred[i]] if right else f"{class_names[y_pred[i]]}\n(true: {class_names[y_true[i]]})"
        ax.set_title(label, color=RIGHT if right else WRONG, fontsize=7)
    figure.tight_layout()
    return figure


def top_losses(images: np.ndarray, y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], *,
               count: int = 16, columns: int = 8, title: str = "Highest-loss test images") -> plt.Figure:
    """The test images the model is most wrong about (fastai's ``plot_top_losses``): the ``count``
    with the highest cross-entropy, highest first, each titled with its predicted class and that
    class' probability, its true class and its loss; red when wrong, green when right (a model
    with no error still shows the images it was least sure of).

    Args:
        images: the test images (or only some, with the same rows of ``y_true`` and ``y_prob``:
            those of ``top_loss_order``, read alone from streamed data).
        y_true: their true classes.
        y_prob: the predicted probabilities, one row per image.
        class_names: the class names, by index.
        count: how many images to show.
        columns: images per row.
        title: the figure's title.
    """
    y_true, y_prob = np.asarray(y_true).astype(np.int64), np.asarray(y_prob)
    losses = _cross_entropy(y_true, y_prob)
    chosen = top_loss_order(y_true, y_prob, count)
    rows = max(int(np.ceil(len(chosen) / columns)), 1)
    figure, axes = _subplots(rows, columns, figsize=(1.6 * columns, 2.0 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        _show(ax, images[i])
        predicted = int(np.argmax(y_prob[i]))
        ax.set_title(f"{class_names[predicted]} {y_prob[i, predicted]:.2f}\ntrue: {class_names[y_true[i]]}\n"
                     f"loss {losses[i]:.2f}", color=RIGHT if predicted == y_true[i] else WRONG, fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def top_loss_order(y_true: np.ndarray, y_prob: np.ndarray, count: int) -> np.ndarray:
    """The indices of the ``count`` predictions with the highest cross-entropy, highest first
    (ties in index order), so that a caller reading images from disk reads only those."""
    losses = _cross_entropy(np.asarray(y_true).astype(np.int64), np.asarray(y_prob))
    return np.argsort(-losses, kind="stable")[:count]


def _cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Each prediction's loss, ``-log p(true class)`` (a zero probability counted as 1e-12)."""
    return -np.log(np.clip(y_prob[np.arange(len(y_true)), y_true], 1e-12, 1.0))


def class_distribution(counts: dict[str, Sequence[int]], class_names: Sequence[str],
                       title: str = "Class distribution") -> plt.Figure:
    """Bars of images per class for each split, to show imbalance."""
    frame = pd.DataFrame(
        [{"class": class_names[i], "split": split, "images": int(n)}
         for split, values in counts.items() for i, n in enumerate(values)]
    )
    figure, ax = _subplots(figsize=(max(6, 0.6 * len(class_names) + 2), 3.8))
    sns.barplot(data=frame, x="class", y="images", hue="split", ax=ax)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    figure.tight_layout()
    return figure


def roc_curve(y_true: np.ndarray, positive_prob: np.ndarray, *, threshold: float | None = None,
              title: str = "ROC curve") -> plt.Figure:
    """A binary task's ROC curve (scikit-learn's ``roc_curve``) with its AUC, the 0.5 operating
    point and, if given, the point of ``threshold`` (chosen on the validation split).

    Args:
        y_true: 0/1 labels.
        positive_prob: the positive class's probability.
        threshold: a decision threshold to mark (positive when the probability is >= it).
        title: the axes title.
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(np.int64)
    positive_prob = np.asarray(positive_prob, dtype=float)
    fpr, tpr, _ = skm.roc_curve(y_true, positive_prob)
    figure, ax = _subplots(figsize=(4.6, 4.4))
    ax.plot(fpr, tpr, label=f"ROC (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    points = [(0.5, "o", "threshold 0.5")]
    if threshold is not None and np.isfinite(threshold):
        points.append((threshold, "s", f"validation threshold {threshold:.3f}"))
    positives, negatives = max((y_true == 1).sum(), 1), max((y_true == 0).sum(), 1)
    for value, marker, label in points:
        predicted = positive_prob >= value
        ax.plot([(predicted & (y_true == 0)).sum() / negatives], [(predicted & (y_true == 1)).sum() / positives],
                marker, markersize=8, label=label)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    return figure


def lr_finder_curve(learning_rates: Sequence[float], losses: Sequence[float], *, suggestion: float | None = None,
                    raw_losses: Sequence[float] | None = None, title: str = "Learning-rate finder") -> plt.Figure:
    """The learning-rate finder's loss against the learning rate (log x), the suggestion marked.

    Args:
        learning_rates: the rate of each step.
        losses: the smoothed training loss of each step.
        suggestion: the suggested rate (a vertical line).
        raw_losses: the unsmoothed losses, drawn faintly.
        title: the axes title.
    """
    figure, ax = _subplots(figsize=(6, 3.8))
    if raw_losses is not None:
        ax.plot(learning_rates, raw_losses, color="grey", alpha=0.3, label="loss per step")
    ax.plot(learning_rates, losses, label="smoothed loss")
    if suggestion is not None and np.isfinite(suggestion):
        ax.axvline(suggestion, color=WRONG, linestyle="--", label=f"suggestion {suggestion:.2e}")
    ax.set_xscale("log")
    # The smoothed curve sets the scale: single diverging steps would flatten it to a line.
    finite = np.asarray(losses, dtype=float)[np.isfinite(np.asarray(losses, dtype=float))]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        span = (high - low) or max(abs(high), 1.0) * 0.1
        ax.set_ylim(low - 0.1 * span, high + 0.25 * span)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    figure.tight_layout()
    return figure


def compare_curves(histories: dict[str, pd.DataFrame],
                   metrics: Iterable[str] = ("loss", "accuracy", "val_loss", "val_accuracy")) -> plt.Figure:
    """Overlays the curves of several runs, one panel per metric (E1, E2, E4 comparisons)."""
    metrics = list(metrics)
    columns = 2 if len(metrics) > 1 else 1
    rows = int(np.ceil(len(metrics) / columns))
    figure, axes = _subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    titles = {"loss": "train loss", "accuracy": "train accuracy", "val_loss": "validation loss",
              "val_accuracy": "validation accuracy"}
    for ax, metric in zip(axes.flat, metrics):
        for label, history in histories.items():
            if metric in history and len(history):
                ax.plot(np.arange(1, len(history) + 1), history[metric], marker="o", markersize=2, label=label)
        ax.set_title(titles.get(metric, metric))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.tight_layout()
    if handles:  # one legend for all panels, to the right (saved with bbox_inches="tight")
        figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return figure


# -- segmentation and autoencoders ------------------------------------------------------------------


def segmentation_curves(history: pd.DataFrame, title: str = "", best_epoch: int | None = None,
                        metrics: Sequence[str] = ("loss", "accuracy", "mean_iou", "mean_dice")) -> plt.Figure:
    """Train and validation curves of a segmentation run, one panel per metric (pixel accuracy,
    mean IoU, mean Dice), with the best epoch marked: accuracy rising while IoU stays flat is E6."""
    labels = {"loss": "loss", "accuracy": "pixel accuracy", "mean_iou": "mean IoU", "mean_dice": "mean Dice"}
    metrics = [m for m in metrics if m in history or f"val_{m}" in history]
    figure, axes = _subplots(1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.6), squeeze=False)
    epochs = np.arange(1, len(history) + 1)
    for ax, metric in zip(axes.flat, metrics):
        for key, style, label in ((metric, "-", "train"), (f"val_{metric}", "--", "validation")):
            if key in history:
                ax.plot(epochs, history[key], style, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_title(labels.get(metric, metric))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def mask_colors(num_classes: int, background_class: int = 0) -> np.ndarray:
    """RGB colours in [0, 1] per class: the background class black, the others from tab10/tab20."""
    palette = plt.get_cmap("tab10" if num_classes <= 11 else "tab20")
    colors = [palette(i % palette.N)[:3] for i in range(num_classes - 1)]
    colors.insert(background_class, (0.0, 0.0, 0.0))
    return np.asarray(colors, dtype=float)


def overlay_mask(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5,
                 background_class: int = 0) -> np.ndarray:
    """The image (grayscale or RGB, any range) with the classes other than ``background_class``
    tinted by ``mask``."""
    image = np.asarray(image, dtype=float)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low + 1e-12)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    colors = mask_colors(num_classes, background_class)[np.asarray(mask, dtype=int)]
    foreground = (np.asarray(mask) != background_class)[..., None]
    return np.where(foreground, (1 - alpha) * image + alpha * colors, image)


def mask_overlays(images: np.ndarray | Sequence[np.ndarray], y_true: np.ndarray | Sequence[np.ndarray],
                  y_pred: np.ndarray | Sequence[np.ndarray] | None, class_names: Sequence[str],
                  *, count: int = 6, seed: int = 0, title: str = "Predicted masks",
                  background_class: int = 0) -> plt.Figure:
    """One row per image: the image, the true mask overlaid, the predicted mask overlaid, and the
    pixels the prediction gets wrong (red). Without ``y_pred`` only the image and its true mask.
    A legend names the colour of every class; ``background_class`` is left untinted (black in
    the legend). Images, masks and predictions may be lists of images of several sizes."""
    from matplotlib.patches import Patch

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    num_classes = len(class_names)
    columns = 2 if y_pred is None else 4
    figure, axes = _subplots(len(chosen), columns, figsize=(2.1 * columns, 2.1 * len(chosen) + 0.6), squeeze=False)
    for row, i in enumerate(chosen):
        panels = [_unit_image(images[i]), overlay_mask(images[i], y_true[i], num_classes,
                                                       background_class=background_class)]
        if y_pred is not None:
            wrong = np.asarray(y_true[i]) != np.asarray(y_pred[i])
            panels += [overlay_mask(images[i], y_pred[i], num_classes, background_class=background_class), wrong]
        for column, panel in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(panel, cmap="Reds" if column == 3 else ("gray" if panel.ndim == 2 else None), vmin=0, vmax=1,
                      interpolation="nearest")
            ax.axis("off")
        if y_pred is not None:
            axes[row, 3].set_title(f"{1.0 - wrong.mean():.1%} of pixels right", fontsize=7)
    headers = ("image", "truth", "prediction", "errors")
    for column, ax in enumerate(axes[0]):
        ax.set_title(headers[column] + (f"\n{ax.get_title()}" if ax.get_title() else ""), fontsize=8)
    colors = mask_colors(num_classes, background_class)
    handles = [Patch(color=colors[c], label=name) for c, name in enumerate(class_names)]
    figure.legend(handles=handles, loc="lower center", ncol=min(num_classes, 7), fontsize=7, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def _unit_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=float)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def per_class_scores(metrics: dict, class_names: Sequence[str], *, prefix: str = "test_",
                     title: str = "IoU and Dice per class") -> plt.Figure:
    """Bars of each class's IoU and Dice from a segmentation record's metrics (``<prefix>iou_<class>``)."""
    rows = []
    for name in class_names:
        for score in ("iou", "dice"):
            value = metrics.get(f"{prefix}{score}_{metric_key(name)}")
            rows.append({"class": name, "score": "IoU" if score == "iou" else "Dice",
                         "value": np.nan if value is None else value})
    frame = pd.DataFrame(rows)
    figure, ax = _subplots(figsize=(max(5, 0.8 * len(class_names) + 2), 3.6))
    sns.barplot(data=frame, x="class", y="value", hue="score", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    figure.tight_layout()
    return figure


def reconstructions(images: np.ndarray, reconstructed: np.ndarray, *, noisy: np.ndarray | None = None,
                    count: int = 8, title: str = "Reconstructions") -> plt.Figure:
    """Rows: the original images, the noisy inputs (denoising), and the reconstructions."""
    rows = [("original", images)] + ([("noisy input", noisy)] if noisy is not None else []) + \
        [("reconstruction", reconstructed)]
    count = min(count, len(images))
    figure, axes = _subplots(len(rows), count, figsize=(1.3 * count, 1.45 * len(rows)), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(count):
            ax = axes[r, c]
            image = np.clip(np.asarray(batch[c], dtype=float), 0, 1)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                      vmin=0, vmax=1)
            ax.axis("off")
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def latent_grid(decoder, *, steps: int = 8, span: float = 2.0, title: str = "Decoded latent grid") -> plt.Figure:
    """A VAE decoder's images over a steps x steps grid of its 2-d latent space (-span..span)."""
    if decoder.input_shape[-1] != 2:
        raise ValueError(f"latent_grid draws a 2-d latent space; this decoder takes {decoder.input_shape[-1]} values.")
    values = np.linspace(-span, span, steps, dtype=np.float32)
    grid = np.array([[x, y] for y in values[::-1] for x in values], dtype=np.float32)
    decoded = np.asarray(decoder.predict(grid, verbose=0))
    figure, axes = _subplots(steps, steps, figsize=(0.9 * steps, 0.9 * steps))
    for ax, image in zip(axes.flat, decoded):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
