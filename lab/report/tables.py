"""The report's tables, read from run records: the settings that varied and those fixed, the
results, the best run and why, per-class scores, and the environments.

Each returns a pandas DataFrame (or a run and a sentence); ``lab.report.rendering`` formats them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lab.runs.records import Collection, Run, results_table, summary_columns
from lab.tasks import TASKS

# Bookkeeping that is no setting of the run (or has its own section): left out of "what varied".
NOT_SETTINGS = {"name", "tags", "config_hash", "reports_dir", "verbose", "record_version", "environment", "data"}
DATA_SETTINGS = ("name", "input_shape", "num_classes", "sizes", "content_sha256")
# Where a record may hold per-class classification scores (precision/recall/F1/support per class);
# the report prefers these to recomputing them from predictions.npz.
PER_CLASS_KEYS = ("test_per_class", "per_class")
# Varied config entries that are consequences of other settings, not choices: never repeated in
# the results table (they stay in the table of what varied).
DERIVED = {"params", "input_shape", "num_classes", "steps_per_execution"}


def settings(run: Run, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's configuration as compared across runs: every field but bookkeeping, plus the data's
    name, shape, sizes and content hash, plus ``parameters`` (a batch member's notebook
    parameters) where the configuration has no field of that name."""
    values = {k: v for k, v in run.config.items() if k not in NOT_SETTINGS}
    data = run.config.get("data") or {}
    values |= {f"data.{k}": data[k] for k in DATA_SETTINGS if k in data}
    return {**{k: v for k, v in (parameters or {}).items() if k not in NOT_SETTINGS}, **values}


def run_settings(runs: Sequence[Run], collection: Collection | None = None) -> list[dict[str, Any]]:
    """Each run's ``settings``, with its collection member's own parameters (a batch's) where it has some."""
    parameters = {m["run_id"]: m.get("parameters") or {} for m in collection.members if m.get("run_id")} \
        if collection is not None else {}
    return [settings(run, parameters.get(run.run_id)) for run in runs]


def varied_and_fixed(runs: Sequence[Run], collection: Collection | None = None) -> tuple[list[str], dict[str, Any]]:
    """The settings that differ between the runs and the values of the others.

    Args:
        runs: the runs, in order.
        collection: their collection record (``lab.runs.records.load_collection``), when they are a
            sweep's, batch's, search's or ablation's: what it varied (in its order) and what it
            fixed are then the record's, as the study declared them, not guessed from the runs.
            A batch's record names the notebooks' parameters, and one notebook may make several
            runs: the settings in which the runs differ beyond those follow the record's.

    Returns:
        (the varied settings, in the record's or first-seen order; the fixed ones with their values).
    """
    if collection is not None:
        varied = [key for key in collection.varied if key not in NOT_SETTINGS]
        if collection.kind == "batch":
            varied += [key for key in _differing(run_settings(runs, collection)) if key not in varied]
        return varied, {k: v for k, v in collection.fixed.items() if k not in NOT_SETTINGS and k not in varied}
    all_settings = run_settings(runs)
    varied = _differing(all_settings)
    first = all_settings[0] if all_settings else {}
    return varied, {k: v for k, v in first.items() if k not in varied}


def _differing(all_settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The settings whose values differ between runs, in first-seen order (one that some runs
    lack differs from any value)."""
    keys = list(dict.fromkeys(k for values in all_settings for k in values))
    missing = dataclasses.MISSING
    return [key for key in keys if len({_canonical(values.get(key, missing)) for values in all_settings}) > 1]


def unused_by_the_models(runs: Sequence[Run]) -> list[str]:
    """The settings that no run's model uses (``weights`` and the backbone's options when every
    run trains a CNN from scratch), by the configuration's own rule (``BaseConfig.unused_fields``)."""
    unused = [set(TASKS[run.task].config_class.unused_fields(run.config)) for run in runs]
    return sorted(set.intersection(*unused)) if unused else []


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if value is not dataclasses.MISSING else "<missing>"


def _cell(value: Any) -> Any:
    """A setting as a table cell: lists and dicts as JSON, floats as written (``1e-05``, not a
    rounded ``0.0000``), the rest as is."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return repr(value)
    return value


def best_run(runs: Sequence[Run], objective: tuple[str, str] | None = None) -> tuple[Run | None, str]:
    """The best completed run by the metric the runs monitor (or a search's objective).

    The value compared is the record's ``best_epoch_<metric>`` (what the monitor saw at the
    restored epoch), else ``<metric>``. Diverged and failed runs are not candidates.

    Returns:
        (run or None, a sentence saying which metric chose it, in which direction, among how many).
    """
    if objective is not None:
        metric, mode = objective
        why = f"the search's objective {metric} ({'lowest' if mode == 'min' else 'highest'})"
    else:
        monitors = collections.Counter(str(run.config.get("monitor", "val_loss")) for run in runs)
        metric = monitors.most_common(1)[0][0]
        task = next((run.task for run in runs if run.config.get("monitor", "val_loss") == metric), "classification")
        mode = TASKS[task].monitors.get(metric) or ("min" if "loss" in metric else "max")
        others = "" if len(monitors) == 1 else \
            f" ({monitors[metric]} of {len(runs)} runs monitor it; others: {', '.join(m for m in monitors if m != metric)})"
        why = f"the metric the runs monitor, {metric} ({'lowest' if mode == 'min' else 'highest'}){others}"
    scored = [(value, run) for run in runs if run.status == "completed"
              and (value := _metric(run, metric)) is not None]
    if not scored:
        return None, f"No completed run has a value of {metric}, so there is no best run (chosen by {why})."
    value, best = (min if mode == "min" else max)(scored, key=lambda pair: pair[0])
    return best, (f"Best run: {best.name} ({best.run_id}), chosen by {why} at its best epoch: {value:.4f}, "
                  f"among {len(scored)} completed run(s) of {len(runs)}.")


def _metric(run: Run, metric: str) -> float | None:
    value = run.metrics.get(f"best_epoch_{metric}", run.metrics.get(metric))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def per_class_scores(run: Run) -> tuple[pd.DataFrame | None, str]:
    """Per-class scores of a run's test set and where they come from, as its task gives them
    (``lab.tasks.TaskEntry.per_class``: ``segmentation_per_class``, ``classification_per_class``).

    Returns:
        (table or None, a sentence naming the source, or why there is none).
    """
    return TASKS[run.task].per_class_scores(run)


def segmentation_per_class(run: Run) -> tuple[pd.DataFrame | None, str]:
    """IoU and Dice per class from a segmentation record's metrics (``test_iou_<class>``...)."""
    from lab.runs.evaluation import metric_key

    names = run.metrics.get("class_names") or (run.config.get("data") or {}).get("class_names") or []
    rows = [{"class": name, "iou": run.metrics.get(f"test_iou_{metric_key(name)}"),
             "dice": run.metrics.get(f"test_dice_{metric_key(name)}")} for name in names]
    rows = [row for row in rows if row["iou"] is not None or row["dice"] is not None]
    if not rows:
        return None, "The record holds no per-class IoU or Dice (a diverged run is not scored)."
    return pd.DataFrame(rows), "Test IoU and Dice per class, from the record's metrics (test_iou_*, test_dice_*)."


def classification_per_class(run: Run) -> tuple[pd.DataFrame | None, str]:
    """Precision, recall, F1 and support per class, from the record when it holds them
    (``PER_CLASS_KEYS``), else computed from ``predictions.npz`` with scikit-learn's
    ``classification_report``."""
    for key in PER_CLASS_KEYS:
        if isinstance(run.metrics.get(key), (dict, list)):
            frame = _per_class_frame(run.metrics[key], (run.config.get("data") or {}).get("class_names"))
            return frame, f"Per-class test scores from the record (metrics.json {key!r})."
    if not (run.path / "predictions.npz").exists():
        return None, "The record holds neither per-class scores nor predictions.npz."
    predictions = run.predictions()
    if "y_prob" not in predictions:
        return None, "The record's predictions.npz holds no class probabilities."
    y_prob = predictions["y_prob"]
    if not np.isfinite(y_prob).all():
        return None, "The run's test predictions are not finite (it diverged): no per-class scores."
    from sklearn.metrics import classification_report

    y_true = np.asarray(predictions["y_true"]).astype(np.int64)
    names = [str(name) for name in predictions.get("class_names", range(y_prob.shape[1]))]
    report = classification_report(y_true, y_prob.argmax(axis=1), labels=np.arange(y_prob.shape[1]),
                                   target_names=names, output_dict=True, zero_division=0)
    accuracy = report.pop("accuracy", None)
    frame = _per_class_frame(report).rename(columns={"f1-score": "f1"})  # the record's name for it
    note = "Per-class test scores computed from the record's predictions.npz (scikit-learn classification_report)."
    recorded = run.metrics.get("test_accuracy")
    if accuracy is not None and recorded is not None and not math.isclose(accuracy, recorded, abs_tol=1e-9):
        # The same predictions must give the same accuracy; a mismatch means the file is not the
        # one the metrics were computed from, and the table must not pass for the record's.
        note += (f" WARNING: their accuracy {accuracy:.4f} differs from the record's test_accuracy "
                 f"{recorded:.4f}; predictions.npz may not belong to this record.")
    return frame, note


def _per_class_frame(scores: dict | list, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """``{class: {precision, recall, f1, support}}`` or a list of row dicts as one table, in the
    order of ``class_names`` where given (metrics.json is written with sorted keys, which puts
    class "10" before "2")."""
    if isinstance(scores, dict):
        order = {str(name): i for i, name in enumerate(class_names or [])}
        names = sorted(scores, key=lambda name: (order.get(str(name), len(order)), list(scores).index(name)))
        frame = pd.DataFrame([{"class": name, **scores[name]} for name in names if isinstance(scores[name], dict)])
    else:
        frame = pd.DataFrame(scores)
    if "support" in frame:
        frame["support"] = frame["support"].astype("Int64")
    return frame


def environment_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per distinct environment (versions, device) the runs' records name, with their run ids."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_canonical(run.config.get("environment") or {}), []).append(run)
    rows = []
    for key, members in groups.items():
        environment = json.loads(key) or {"environment": "not recorded"}
        rows.append({**environment, "runs": len(members), "run_ids": ", ".join(run.run_id for run in members)})
    return pd.DataFrame(rows)


def results(runs: Sequence[Run], varied: Sequence[str] = (), values: Sequence[Mapping[str, Any]] | None = None) \
        -> pd.DataFrame:
    """The results table: name, every varied setting (but those ``DERIVED`` from others), the
    summary columns of the runs' tasks that any run has (``records.summary_columns``), and the
    run id.

    Args:
        runs: the runs, in order.
        varied: the settings that varied (``varied_and_fixed``).
        values: each run's settings (``run_settings``; default: read from the runs' configurations).
    """
    values = list(values) if values is not None else run_settings(runs)
    present = {key for run in runs for key in run.metrics}
    metrics = [c for c in summary_columns(runs) if c in present]
    shown = [k for k in varied if k not in metrics and k not in DERIVED | {"name", "run_id"}
             and any(k in settings for settings in values)]
    frame = results_table(runs, ["name", *metrics, "run_id"])
    for position, column in enumerate(shown, start=1):  # as recorded (object cells), not floats padded to four decimals
        frame.insert(position, column, pd.Series([_cell(settings.get(column)) for settings in values], dtype=object))
    return _integers(frame)


def _integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding only whole numbers (a best epoch beside a run without one) as integers."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind == "f" and values.notna().any() and (values.dropna() % 1 == 0).all() \
                and column in ("best_epoch", "epochs_run", "epochs", "support", "runs", "params", "trainable_params"):
            frame[column] = values.astype("Int64")
    return frame
