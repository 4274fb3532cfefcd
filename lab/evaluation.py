"""Classification metrics computed with scikit-learn from saved predictions.

Every metric in a run record comes from ``classification_metrics(y_true, y_prob)``, so a run
can be re-scored later from its ``predictions.npz`` and give the same numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
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
