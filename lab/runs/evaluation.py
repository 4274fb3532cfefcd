"""Scores computed from saved predictions: classification and segmentation.

Every metric in a run record comes from ``classification_metrics(y_true, y_prob)`` or
``segmentation_metrics(y_true, y_pred, class_names)``, so a run can be re-scored later from its
``predictions.npz`` and give the same numbers.

Segmentation: from the pixel confusion matrix C (rows = true class, columns = predicted
class), for class c:

    IoU_c  = C[c, c] / (sum of row c + sum of column c - C[c, c])
    Dice_c = 2 C[c, c] / (sum of row c + sum of column c)

A class neither present nor predicted has no IoU or Dice (NaN) and is left out of the means,
as Keras' MeanIoU does.

E6: a network can reach a high pixel accuracy by predicting background everywhere. Every run
record therefore carries the share of pixels predicted as foreground (every class but the
stated ``background_class``, 0 unless said otherwise) next to the true share,
and ``all_background`` is set, with a warning, when the prediction covers less than
``flag_ratio`` (default a tenth) of the true foreground.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def macro_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over classes (MedMNIST's AUC), NaN if undefined.

    Binary problems use the positive class's probability. Classes absent from ``y_true`` have
    no AUC; the average is then taken over the classes present, with a warning.
    """
    y_true = np.asarray(y_true)
    num_classes = y_prob.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if num_classes == 2:
        return float(skm.roc_auc_score(y_true, y_prob[:, 1]))
    if len(present) < num_classes:
        warnings.warn(f"Only {len(present)} of {num_classes} classes occur in y_true; "
                      "macro AUC is averaged over those.", stacklevel=2)
        scores = [skm.roc_auc_score(y_true == c, y_prob[:, c]) for c in present]
        return float(np.mean(scores))
    return float(skm.roc_auc_score(y_true, y_prob, multi_class="ovr", average="macro",
                                   labels=np.arange(num_classes)))


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and macro AUC of predicted probabilities.

    Args:
        y_true: integer labels, shape (n,).
        y_prob: class probabilities, shape (n, k).
        prefix: prepended to every key (``"test_"``).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.argmax(y_prob, axis=1)
    labels = np.arange(y_prob.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy warns about classes never predicted
        values = {
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        }
    values["macro_auc"] = macro_auc(y_true, y_prob)
    return {prefix + k: v for k, v in values.items()}


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of every class, keyed by class name.

    scikit-learn's ``precision_recall_fscore_support`` over all classes (a class never
    predicted has precision 0, one absent from ``y_true`` recall 0: ``zero_division=0``).

    Args:
        y_true, y_pred: integer labels, shape (n,).
        class_names: the name of each class id (unique).

    Returns:
        ``{class_name: {"precision", "recall", "f1", "support"}}`` in class order.
    """
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique to key per-class metrics, received {names}.")
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64), labels=np.arange(len(names)),
        zero_division=0)
    return {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(names, precision, recall, f1, support)}


THRESHOLD_RULE = "youden_j"


def youden_threshold(y_true: np.ndarray, positive_prob: np.ndarray) -> float:
    """The decision threshold on the positive class's probability that maximises Youden's J
    (sensitivity + specificity - 1, i.e. TPR - FPR) on these labels: a binary task's operating
    point chosen on the validation split. A sample is positive when its probability is >= it.

    Returns:
        The threshold (clipped to [0, 1]); NaN when ``y_true`` holds one class only.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    fpr, tpr, thresholds = skm.roc_curve(y_true, positive_prob)
    # roc_curve's first threshold is +inf (nothing positive); clip it to a probability.
    return float(np.clip(thresholds[int(np.argmax(tpr - fpr))], 0.0, 1.0))


def binary_threshold_metrics(y_val: np.ndarray, val_prob: np.ndarray, y_test: np.ndarray,
                             test_prob: np.ndarray) -> dict[str, Any]:
    """A binary task's accuracy at the threshold chosen on validation, beside the 0.5 one.

    Args:
        y_val, val_prob: validation labels and (n, 2) probabilities: the threshold is chosen here.
        y_test, test_prob: test labels and probabilities: the threshold is applied here.

    Returns:
        ``threshold_rule`` ("youden_j"), ``val_threshold``, ``test_accuracy_at_0_5`` (argmax)
        and ``test_accuracy_at_val_threshold`` (NaN without a threshold).
    """
    threshold = youden_threshold(y_val, np.asarray(val_prob)[:, 1])
    y_test = np.asarray(y_test).astype(np.int64)
    test_positive = np.asarray(test_prob)[:, 1]
    at_threshold = float(np.mean((test_positive >= threshold) == y_test)) if np.isfinite(threshold) else float("nan")
    return {"threshold_rule": THRESHOLD_RULE, "val_threshold": threshold,
            "test_accuracy_at_0_5": float(np.mean(np.argmax(test_prob, axis=1) == y_test)),
            "test_accuracy_at_val_threshold": at_threshold}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from y_true)."""
    matrix = confusion_matrix(y_true, y_pred, num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(matrix) / matrix.sum(axis=1)


def top_confusions(matrix: np.ndarray, class_names: list[str] | tuple[str, ...], k: int = 5):
    """The ``k`` most frequent confusions between two classes, both directions counted together.

    E8's "usual confusions" (cat/dog, deer/horse, automobile/truck, airplane/bird) read off a
    confusion matrix: a pandas DataFrame with the two classes, the count each way and the total.
    """
    import pandas as pd

    rows = []
    for i in range(len(matrix)):
        for j in range(i + 1, len(matrix)):
            total = int(matrix[i, j] + matrix[j, i])
            if total:
                # "first as second": true first class predicted as the second, and the reverse.
                rows.append({"classes": f"{class_names[i]} / {class_names[j]}", "first as second": int(matrix[i, j]),
                             "second as first": int(matrix[j, i]), "total": total})
    frame = pd.DataFrame(rows, columns=["classes", "first as second", "second as first", "total"])
    return frame.sort_values(["total", "classes"], ascending=[False, True]).head(k).reset_index(drop=True)


# -- segmentation ------------------------------------------------------------------------------

BACKGROUND_FLAG_RATIO = 0.1


def pixel_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts pixels, rows = true class, columns = predicted class (int64, num_classes square)."""
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must hold the same number of pixels, received {y_true.size} "
                         f"and {y_pred.size}.")
    for label, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{label} holds class ids from {values.min()} to {values.max()}, outside "
                             f"[0, {num_classes}) for {num_classes} classes.")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``iou`` and ``dice`` (NaN where a class is neither present nor predicted).

    ``matrix`` may be a stack of confusion matrices, shape (..., k, k): the scores then have shape
    (..., k), one row per matrix (``lab.runs.comparison`` scores bootstrap resamples of images so).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positives = np.diagonal(matrix, axis1=-2, axis2=-1)
    true_counts, predicted_counts = matrix.sum(axis=-1), matrix.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        union = true_counts + predicted_counts - true_positives
        iou = np.where(union > 0, true_positives / union, np.nan)
        dice = np.where(true_counts + predicted_counts > 0, 2 * true_positives / (true_counts + predicted_counts), np.nan)
    return {"iou": iou, "dice": dice}


def segmentation_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], *, prefix: str = "",
                         flag_ratio: float = BACKGROUND_FLAG_RATIO, background_class: int = 0) -> dict[str, Any]:
    """Every number a segmentation run record holds, from true and predicted class-id masks.

    Args:
        y_true, y_pred: integer masks of the same shape (or both flattened, e.g. the pixels of
            images of several sizes one after the other).
        class_names: the name of each class id.
        prefix: prepended to every key (``"test_"``).
        flag_ratio: ``all_background`` is set when the predicted foreground share is below this
            fraction of the true foreground share.
        background_class: the class id that is background; every other class is foreground.

    Returns:
        A flat dict: ``pixel_accuracy``, ``mean_iou``, ``mean_dice``, ``foreground_iou`` (mean
        over the non-background classes), ``iou_<class>`` and ``dice_<class>`` for every class,
        ``foreground_fraction_true`` and ``foreground_fraction_predicted``, ``all_background``
        and, when it is set, ``warning``.
    """
    num_classes = len(class_names)
    matrix = pixel_confusion_matrix(y_true, y_pred, num_classes)
    scores = scores_from_confusion(matrix)
    total = matrix.sum()
    values: dict[str, Any] = {
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "mean_iou": _nanmean(scores["iou"]),
        "mean_dice": _nanmean(scores["dice"]),
        "foreground_iou": _nanmean(np.delete(scores["iou"], _background_index(background_class, num_classes))),
    }
    for index, name in enumerate(class_names):
        key = metric_key(name)
        values[f"iou_{key}"] = _float(scores["iou"][index])
        values[f"dice_{key}"] = _float(scores["dice"][index])
    values |= background_flag(matrix, flag_ratio=flag_ratio, pixel_accuracy=values["pixel_accuracy"],
                              mean_iou=values["mean_iou"], background_class=background_class)
    return {prefix + k: v for k, v in values.items()}


def background_flag(matrix: np.ndarray, *, flag_ratio: float = BACKGROUND_FLAG_RATIO,
                    pixel_accuracy: float | None = None, mean_iou: float | None = None,
                    background_class: int = 0) -> dict[str, Any]:
    """E6's check: did the model predict (almost) only background?

    Args:
        matrix: the pixel confusion matrix (rows true, columns predicted).
        flag_ratio, pixel_accuracy, mean_iou: as in ``segmentation_metrics``.
        background_class: the class id that is background; the foreground is every other class.

    Returns ``foreground_fraction_true``, ``foreground_fraction_predicted``, ``all_background``
    and, when set, a ``warning`` sentence that says why pixel accuracy misleads here.
    """
    matrix = np.asarray(matrix)
    background = _background_index(background_class, len(matrix))
    total = matrix.sum()
    true_share = float((total - matrix[background, :].sum()) / total) if total else 0.0
    predicted_share = float((total - matrix[:, background].sum()) / total) if total else 0.0
    flagged = bool(true_share > 0 and predicted_share < flag_ratio * true_share)
    result: dict[str, Any] = {"foreground_fraction_true": true_share,
                              "foreground_fraction_predicted": predicted_share, "all_background": flagged}
    if flagged:
        accuracy = "" if pixel_accuracy is None else f"pixel accuracy {pixel_accuracy:.3f} "
        iou = "" if mean_iou is None else f" (mean IoU {mean_iou:.3f})"
        result["warning"] = (
            f"ALL BACKGROUND: the model predicts foreground on {predicted_share:.1%} of the pixels, although "
            f"{true_share:.1%} are foreground. Its {accuracy}comes from the background alone and says nothing "
            f"about the objects{iou}; look at the per-class IoU and Dice. Try a Dice or combined loss, class "
            "weights, more epochs or a higher learning rate."
        )
    return result


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: IoU, Dice, its share of the true pixels and of the predicted pixels."""
    matrix = pixel_confusion_matrix(y_true, y_pred, len(class_names))
    scores = scores_from_confusion(matrix)
    total = max(int(matrix.sum()), 1)
    return pd.DataFrame({
        "class": list(class_names),
        "iou": scores["iou"],
        "dice": scores["dice"],
        "true_share": matrix.sum(axis=1) / total,
        "predicted_share": matrix.sum(axis=0) / total,
    })


def metric_key(class_name: str) -> str:
    """A class name as it appears in metric keys: lower case, non-alphanumerics as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in str(class_name).lower())


def _background_index(background_class: int, num_classes: int) -> int:
    if isinstance(background_class, bool) or not isinstance(background_class, (int, np.integer)) \
            or not 0 <= background_class < num_classes:
        raise ValueError(f"background_class must be a class id from 0 to {num_classes - 1}, received "
                         f"background_class={background_class!r}.")
    return int(background_class)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
