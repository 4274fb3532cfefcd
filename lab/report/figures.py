"""The report's figures drawn from records: every run's learning curves overlaid (y-axes fitted
to the completed runs when a diverged run's values would flatten them), and a confusion matrix
drawn from ``predictions.npz`` for an older record without its plot. The best run's own plots
(its task's ``figures``, ``lab.tasks.TASKS``) are copied as they are.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import pandas as pd

from lab.runs.records import Run
from lab.tasks import TASKS


def _histories(runs: Sequence[Run]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Each run's history under a unique legend label (its status added unless completed), and
    the labels of the completed runs."""
    names = collections.Counter(run.name for run in runs)
    histories, completed = {}, []
    for run in runs:
        history = run.history()
        if history.empty:
            continue
        label = run.name if names[run.name] == 1 else f"{run.name} ({run.run_id[-6:]})"
        if run.status == "completed":
            completed.append(label)
        else:
            label += f" [{run.status}]"
        histories[label] = history
    return histories, completed


def _fit_axes_to_completed(figure, completed: list[str], reach: float = 10.0) -> bool:
    """Cuts the outliers off each panel's y-axis when a diverged run's values (a loss of 1e9)
    would flatten the other curves into one line: the axis spans every value within ``reach``
    times the completed runs' range of that range. Returns whether any axis was limited."""
    limited = False
    for ax in figure.axes:
        values = {True: [], False: []}
        for line in ax.get_lines():
            data = np.asarray(line.get_ydata(), dtype=float)
            values[line.get_label() in completed].append(data[np.isfinite(data)])
        if not values[True] or not values[False]:
            continue
        inside, outside = np.concatenate(values[True]), np.concatenate(values[False])
        if not inside.size or not outside.size:
            continue
        low, high = float(inside.min()), float(inside.max())
        span = max(high - low, 1e-3 * max(abs(high), 1.0))
        window = (low - reach * span, high + reach * span)
        kept = outside[(outside >= window[0]) & (outside <= window[1])]
        if kept.size == outside.size:
            continue  # nothing extreme: matplotlib's own limits show every curve
        low, high = min(low, *kept) if kept.size else low, max(high, *kept) if kept.size else high
        margin = 0.05 * max(high - low, span)
        ax.set_ylim(low - margin, high + margin)
        limited = True
    return limited


def _confusion_from_predictions(run: Run):
    """The test confusion matrix drawn from ``predictions.npz`` when the record has no plot of it."""
    plot = run.path / "plots" / "confusion_matrix.png"
    drawn_by_task = "confusion_matrix.png" in TASKS[run.task].figures
    if not drawn_by_task or plot.exists() or not (run.path / "predictions.npz").exists():
        return None
    predictions = run.predictions()
    if "y_prob" not in predictions or not np.isfinite(predictions["y_prob"]).all():
        return None
    from lab.runs import plots
    from lab.runs.evaluation import confusion_matrix

    y_prob = predictions["y_prob"]
    names = [str(n) for n in predictions.get("class_names", range(y_prob.shape[1]))]
    matrix = confusion_matrix(predictions["y_true"], y_prob.argmax(axis=1), y_prob.shape[1])
    return plots.confusion_matrix(matrix, names, title=f"Test confusion matrix: {run.name}")
