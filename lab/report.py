"""``python -m lab.report SOURCE``: one report of a batch, sweep, search or set of runs.

    python -m lab.report e4-adam-learning-rate            # a sweep, batch or search by name
    python -m lab.report reports/batches/e1-ablation-quick --out /tmp/e1-report
    python -m lab.report tag:e4                           # every run tagged e4
    python -m lab.report 20261127-153830-cnn-digits-8ddd21 20261127-154002-mlp-digits-1a2b3c

SOURCE is a batch folder or name (``reports/batches/<name>``), a sweep (``reports/sweeps/<name>``),
a search (``reports/searches/<name>``), one run folder, one or more run ids, or ``tag:NAME``; a name
found in several places is chosen with ``batch:``, ``sweep:`` or ``search:``. An unknown source is
refused with a list of what exists.

The report holds what a course report holds: what varied between the runs and what was fixed, the
results table (status with diverged and failed runs marked, best epoch, train/val/test metrics of
the runs' tasks), the overlaid learning curves, the best run (by the metric the runs monitor, or a
search's objective) with its confusion matrix, green/red sample predictions (or masks) and
per-class scores, the efficiency table when several models are compared, the environment, and the
run ids behind every number. It is written twice with the same content: ``report.html``, one
self-contained file with its figures embedded as PNG data URIs, and ``report.md`` with the figures
in ``figures/`` beside it. Every number comes from a run record (``config.json``, ``metrics.json``,
``history.csv``, ``predictions.npz``, ``plots/``), and every table row names its run id.

A notebook calls the same function: ``build_report(sweep.summary_dir)``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from lab import atomic, paths
from lab.records import Run, load_run, load_runs, read_index, results_table, summary_columns

KINDS = ("batch", "sweep", "search")
# The file that marks each kind of source folder (written by lab.batch, lab.sweep, lab.tuning).
MARKERS = {"batch": "batch.jsonl", "sweep": "sweep.json", "search": "search.json"}
FOLDERS = {"batch": "batches", "sweep": "sweeps", "search": "searches"}
HTML_NAME, MARKDOWN_NAME, FIGURES = "report.html", "report.md", "figures"
# Bookkeeping that is no setting of the run (or has its own section): left out of "what varied".
NOT_SETTINGS = {"name", "tags", "config_hash", "reports_dir", "verbose", "record_version", "environment", "data"}
DATA_SETTINGS = ("name", "input_shape", "num_classes", "sizes", "content_sha256")
# The best run's figures its record holds (lab.classification, lab.segmentation.tasks), in order.
RUN_FIGURES = {
    "learning_curves.png": "Learning curves of the best run (best epoch marked)",
    "iou_dice_curves.png": "Pixel accuracy, IoU and Dice per epoch",
    "confusion_matrix.png": "Test confusion matrix of the best run (rows: true class)",
    "sample_predictions.png": "Test predictions of the best run: green right, red wrong (with the true class)",
    "predicted_masks.png": "Test images, true and predicted masks, wrong pixels in red",
    "per_class_scores.png": "IoU and Dice per class on the test set",
    "reconstructions.png": "Test reconstructions",
}
# Where a record may hold per-class classification scores (precision/recall/F1/support per class);
# the report prefers these to recomputing them from predictions.npz.
PER_CLASS_KEYS = ("test_per_class", "per_class")
MARKED = {"diverged": "background-color: #ffebe9;", "failed": "background-color: #eaeef2;"}
SHOWN_VARIED = 3  # varied settings repeated in the results table (all of them are in their own table)
# Varied config entries that are consequences of other settings, not choices: never repeated there.
DERIVED = {"params", "input_shape", "num_classes", "steps_per_execution"}


class UnknownSourceError(ValueError):
    """A SOURCE that names no batch, sweep, search, run or tag; the message lists what exists."""


@dataclasses.dataclass
class Source:
    """The runs a report is built from, and where they came from.

    Attributes:
        kind: "batch", "sweep", "search", "run", "runs" (run ids) or "tag".
        name: the batch, sweep, search or tag name (or the run ids).
        runs: the run records, in the source's order.
        reports_dir: the reports directory holding ``runs/``.
        folder: the batch, sweep, search or run folder (None for run ids and tags).
        objective: a search's objective (metric, "min" or "max"); None elsewhere.
        notes: facts about the source the runs do not say (a batch job that failed before training).
    """

    kind: str
    name: str
    runs: list[Run]
    reports_dir: Path
    folder: Path | None = None
    objective: tuple[str, str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return {"runs": "Runs", "run": "Run", "tag": "Runs tagged"}.get(self.kind, self.kind.capitalize()) \
            + f" {self.name}"


@dataclasses.dataclass
class Text:
    text: str
    kind: str = "text"


@dataclasses.dataclass
class Table:
    """A table block; ``marked`` maps a row position to the status that shades it."""

    frame: pd.DataFrame
    caption: str = ""
    marked: dict[int, str] = dataclasses.field(default_factory=dict)
    kind: str = "table"
    html: str = ""
    markdown: str = ""


@dataclasses.dataclass
class Figure:
    name: str  # its file under figures/
    caption: str
    kind: str = "figure"
    data_uri: str = ""


@dataclasses.dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Text | Table | Figure]


@dataclasses.dataclass
class Report:
    """A written report.

    Attributes:
        source: what it was built from.
        html: the self-contained HTML file.
        markdown: the Markdown file (its figures in ``figures/`` beside it).
        figures: the figure files.
        sections: the content both files hold.
        best: the best run (None when no run completed with a value of the metric).
        results: the results table, one row per run with its run id.
    """

    source: Source
    html: Path
    markdown: Path
    figures: list[Path]
    sections: list[Section]
    best: Run | None
    results: pd.DataFrame


# -- sources ----------------------------------------------------------------------------------------


def resolve_source(source: str | os.PathLike | Sequence[str | os.PathLike], *,
                   reports_dir: str | os.PathLike | None = None) -> Source:
    """Finds the runs a SOURCE names.

    Args:
        source: a batch, sweep or search folder or name (optionally ``batch:``, ``sweep:`` or
            ``search:`` + name), a run folder, ``tag:NAME``, a run id, or a list of run ids/tags.
        reports_dir: the reports directory (default: the kit's, ``$LAB_REPORTS_DIR``); a source
            folder given as a path carries its own (the folder two levels up).

    Returns:
        A Source with its runs, read from their records.

    Raises:
        UnknownSourceError: nothing of that name, or a name that is several things; the message
            lists the batches, sweeps, searches, tags and latest runs that exist.
        ValueError: a source that exists but holds no run record.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise UnknownSourceError("No source given. " + _listing(_root(reports_dir)))
    if len(items) == 1:
        return _resolve_one(str(items[0]), _root(reports_dir))
    root = _root(reports_dir)
    runs: dict[str, Run] = {}
    for item in map(str, items):
        if item.startswith("tag:"):
            found = _resolve_one(item, root).runs
        else:
            found = _run_ids([item], root)
        runs.update((run.run_id, run) for run in found)
    return Source("runs", ", ".join(map(str, items)), list(runs.values()), root)


def _root(reports_dir: str | os.PathLike | None) -> Path:
    return Path(reports_dir).expanduser().resolve() if reports_dir else paths.reports_dir()


def _resolve_one(item: str, root: Path) -> Source:
    prefix, _, rest = item.partition(":")
    if prefix == "tag" and rest:
        runs = load_runs(root, tags=[rest])
        if not runs:
            raise UnknownSourceError(f"No run carries the tag {rest!r}. " + _listing(root))
        return Source("tag", rest, runs, root)
    if prefix in KINDS and rest:
        folder = root / FOLDERS[prefix] / rest
        if not (folder / MARKERS[prefix]).exists():
            raise UnknownSourceError(f"There is no {prefix} named {rest!r} ({folder / MARKERS[prefix]} does not "
                                     f"exist). " + _listing(root))
        return _from_folder(folder, prefix)
    path = Path(item).expanduser()
    if path.is_dir():
        for kind, marker in MARKERS.items():
            if (path / marker).exists():
                return _from_folder(path.resolve(), kind)
        if (path / "metrics.json").exists():
            run = load_run(path.resolve())
            return Source("run", run.run_id, [run], path.resolve().parent.parent, folder=path.resolve())
        raise UnknownSourceError(f"{path} is a folder but neither a batch ({MARKERS['batch']}), a sweep "
                                 f"({MARKERS['sweep']}), a search ({MARKERS['search']}) nor a run (metrics.json). "
                                 + _listing(root))
    named = [kind for kind in KINDS if (root / FOLDERS[kind] / item / MARKERS[kind]).exists()]
    if len(named) > 1:
        raise UnknownSourceError(f"{item!r} names a {' and a '.join(named)}; say which with "
                                 + " or ".join(f"'{kind}:{item}'" for kind in named) + ".")
    if named:
        return _from_folder(root / FOLDERS[named[0]] / item, named[0])
    if any(entry["run_id"] == item for entry in read_index(root)):
        runs = _run_ids([item], root)
        return Source("run", item, runs, root, folder=runs[0].path)
    raise UnknownSourceError(f"{item!r} is no batch, sweep, search, run folder, run id or tag:NAME under {root}. "
                             + _listing(root))


def _run_ids(run_ids: list[str], root: Path) -> list[Run]:
    runs = load_runs(root, run_ids=run_ids)
    missing = sorted(set(run_ids) - {run.run_id for run in runs})
    if missing:
        raise UnknownSourceError(f"No run record {', '.join(map(repr, missing))} in {root / 'runs'}. "
                                 + _listing(root))
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    return sorted(runs, key=lambda run: order[run.run_id])


def _from_folder(folder: Path, kind: str) -> Source:
    """The runs of a batch, sweep or search folder (``reports/<kind>s/<name>``), from its records."""
    root = folder.parent.parent
    runs_root = root / "runs"
    notes: list[str] = []
    objective = None
    if kind == "batch":
        runs, notes = _batch_runs(folder, runs_root)
    elif kind == "sweep":
        manifest = json.loads((folder / MARKERS["sweep"]).read_text(encoding="utf-8"))
        runs = []
        for entry in manifest.get("runs", []):
            path = runs_root / entry["run_id"]
            if (path / "metrics.json").exists():
                runs.append(load_run(path))
            else:
                notes.append(f"Run {entry['run_id']} of the sweep has no record in {runs_root} (deleted?).")
    else:
        manifest = json.loads((folder / MARKERS["search"]).read_text(encoding="utf-8"))
        # The trials' records carry the search's name and id as tags (lab.tuning.search).
        runs = load_runs(root, tags=[f"search:{manifest['name']}", f"search-id:{manifest.get('search_id')}"])
        if manifest.get("objective"):
            objective = (str(manifest["objective"][0]), str(manifest["objective"][1]))
    if not runs:
        raise ValueError(f"The {kind} {folder} holds no finished run record yet; nothing to report. "
                         + " ".join(notes))
    return Source(kind, folder.name, runs, root, folder=folder, objective=objective, notes=notes)


def _batch_runs(folder: Path, runs_root: Path) -> tuple[list[Run], list[str]]:
    # The last commit of each job (lab.batch.latest_records; read here without importing the batch
    # runner and its Jupyter machinery).
    committed = {record["key"]: record for record in atomic.read_lines(folder / MARKERS["batch"])}
    order = []
    spec = folder / "spec.json"
    if spec.exists():  # the spec's job order, as the batch summary has it
        order = [job["key"] for job in json.loads(spec.read_text(encoding="utf-8")).get("jobs", [])]
    keys = [key for key in order if key in committed] + [key for key in committed if key not in order]
    runs, notes = [], []
    for key in keys:
        record = committed[key]
        present = [load_run(runs_root / rid) for rid in record["run_ids"] if (runs_root / rid / "metrics.json").exists()]
        if len(present) < len(record["run_ids"]):
            notes.append(f"Batch job {record['name']!r}: {len(record['run_ids']) - len(present)} of its runs have no "
                         f"record in {runs_root}.")
        if record["status"] == "failed":
            error = (record.get("error") or "no error recorded").strip().splitlines()[-1][:300]
            what = "failed before training any run" if not present else "failed (its notebook raised)"
            notes.append(f"Batch job {record['name']!r} {what}: {error}")
        runs += present
    return runs, notes


def available(reports_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """What a SOURCE can name: batches, sweeps, searches, tags (with run counts) and the latest runs."""
    root = _root(reports_dir)
    found = {FOLDERS[kind]: sorted(p.parent.name for p in (root / FOLDERS[kind]).glob(f"*/{MARKERS[kind]}"))
             for kind in KINDS}
    entries = read_index(root) if (root / "runs").exists() else []
    tags = collections.Counter(tag for entry in entries for tag in entry.get("tags") or [])
    found["tags"] = [f"{tag} ({count} runs)" for tag, count in sorted(tags.items())]
    found["latest runs"] = [entry["run_id"] for entry in entries[-10:]]
    return found


def _listing(root: Path) -> str:
    lines = [f"  {kind}: {', '.join(names) if names else '(none)'}" for kind, names in available(root).items()]
    return f"What exists under {root}:\n" + "\n".join(lines)


# -- content ----------------------------------------------------------------------------------------


def settings(run: Run) -> dict[str, Any]:
    """The run's configuration as compared across runs: every field but bookkeeping, plus the data's
    name, shape, sizes and content hash."""
    values = {k: v for k, v in run.config.items() if k not in NOT_SETTINGS}
    data = run.config.get("data") or {}
    values |= {f"data.{k}": data[k] for k in DATA_SETTINGS if k in data}
    return values


def varied_and_fixed(runs: Sequence[Run]) -> tuple[list[str], dict[str, Any]]:
    """The settings that differ between the runs (in first-seen order) and the values of the others."""
    all_settings = [settings(run) for run in runs]
    keys = list(dict.fromkeys(k for values in all_settings for k in values))
    missing = dataclasses.MISSING  # a setting some runs lack differs from any value
    varied, fixed = [], {}
    for key in keys:
        seen = {_canonical(values.get(key, missing)) for values in all_settings}
        if len(seen) > 1:
            varied.append(key)
        else:
            fixed[key] = all_settings[0][key]
    return varied, fixed


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
    from lab.config import MONITORS

    if objective is not None:
        metric, mode = objective
        why = f"the search's objective {metric} ({'lowest' if mode == 'min' else 'highest'})"
    else:
        monitors = collections.Counter(str(run.config.get("monitor", "val_loss")) for run in runs)
        metric = monitors.most_common(1)[0][0]
        task = next((run.task for run in runs if run.config.get("monitor", "val_loss") == metric), "classification")
        mode = MONITORS.get(task, {}).get(metric) or ("min" if "loss" in metric else "max")
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
    """Per-class scores of a run's test set and where they come from.

    Segmentation: IoU and Dice per class from the record's metrics (``test_iou_<class>``...).
    Classification: precision, recall, F1 and support per class, from the record when it holds
    them (``PER_CLASS_KEYS``), else computed from ``predictions.npz`` with scikit-learn's
    ``classification_report``.

    Returns:
        (table or None, a sentence naming the source, or why there is none).
    """
    if run.task == "segmentation":
        from lab.evaluation import metric_key

        names = run.metrics.get("class_names") or (run.config.get("data") or {}).get("class_names") or []
        rows = [{"class": name, "iou": run.metrics.get(f"test_iou_{metric_key(name)}"),
                 "dice": run.metrics.get(f"test_dice_{metric_key(name)}")} for name in names]
        rows = [row for row in rows if row["iou"] is not None or row["dice"] is not None]
        if not rows:
            return None, "The record holds no per-class IoU or Dice (a diverged run is not scored)."
        return pd.DataFrame(rows), "Test IoU and Dice per class, from the record's metrics (test_iou_*, test_dice_*)."
    if run.task != "classification":
        return None, f"A {run.task} run has no classes."
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


def _models(runs: Sequence[Run]) -> set[tuple]:
    return {(run.config.get("model"), run.config.get("backbone")) for run in runs}


def results(runs: Sequence[Run], varied: Sequence[str] = ()) -> pd.DataFrame:
    """The results table: name, up to ``SHOWN_VARIED`` varied settings (those with the most
    distinct values), the summary columns of the runs' tasks that any run has
    (``records.summary_columns``), and the run id."""
    present = {key for run in runs for key in run.metrics}
    metrics = [c for c in summary_columns(runs) if c in present]
    configs = {key for run in runs for key in run.config}
    candidates = [k for k in varied if k in configs and k not in metrics and k not in DERIVED | {"name", "run_id"}]
    # The settings with the most distinct values, then those every run sets (stable: ties keep their order).
    rank = {k: (-len({_canonical(run.config.get(k)) for run in runs}),
                -sum(run.config.get(k) is not None for run in runs)) for k in candidates}
    shown = sorted(candidates, key=rank.__getitem__)[:SHOWN_VARIED]
    frame = results_table(runs, ["name", *shown, *metrics, "run_id"])
    for column in shown:  # as recorded (object cells), not as floats padded to four decimals
        frame[column] = pd.Series([_cell(run.config.get(column)) for run in runs], dtype=object)
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


def build_sections(source: Source) -> tuple[list[Section], list[tuple[str, Any]], Run | None, pd.DataFrame]:
    """The report's content from the source's records.

    Returns:
        (sections, figures to write as ``(file name, matplotlib figure or record PNG path)``,
        the best run, the results table).
    """
    from lab import plots

    runs = source.runs
    figures: list[tuple[str, Any]] = []
    sections = []
    varied, fixed = varied_and_fixed(runs)

    # What varied and what was fixed.
    blocks: list[Text | Table | Figure] = []
    if len(runs) == 1:
        blocks.append(Text("One run: nothing varied."))
    elif varied:
        frame = pd.DataFrame([{"run_id": run.run_id, "name": run.name,
                               **{k: _cell(settings(run).get(k)) for k in varied}} for run in runs], dtype=object)
        blocks += [Text(f"{len(varied)} setting(s) differ between the {len(runs)} runs: {', '.join(varied)}."),
                   Table(frame, "Settings that varied, per run")]
    else:
        blocks.append(Text(f"The {len(runs)} runs share every setting (repeats of one configuration)."))
    unset = sorted(k for k, v in fixed.items() if v is None)
    shown = {k: _cell(v) for k, v in fixed.items() if v is not None}
    blocks.append(Table(pd.DataFrame({"setting": list(shown), "value": list(shown.values())}, dtype=object),
                        "Settings shared by every run"))
    if unset:
        blocks.append(Text(f"Unset (None) in every run: {', '.join(unset)}."))
    sections.append(Section("What varied and what was fixed", "settings", blocks))

    # Results.
    table = results(runs, varied)
    marked = {i: run.status for i, run in enumerate(runs) if run.status in MARKED}
    counts = collections.Counter(run.status for run in runs)
    blocks = [Text(f"{len(runs)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items())
                   + ". Metrics at each run's best epoch (its restored weights); diverged runs shaded red "
                   "and their status in bold, failed runs grey.")]
    blocks.append(Table(table, "Results (from each run's metrics.json)", marked))
    problems = [{"run_id": run.run_id, "name": run.name, "status": run.status,
                 "reason": _shorten(run.metrics.get("divergence_reason") or run.metrics.get("error") or "not recorded")}
                for run in runs if run.status in MARKED]
    if problems:
        blocks.append(Table(pd.DataFrame(problems), "Why runs diverged or failed",
                            {i: row["status"] for i, row in enumerate(problems)}))
    blocks += [Text(note) for note in source.notes]
    sections.append(Section("Results", "results", blocks))

    # Learning curves.
    histories, completed = _histories(runs)
    if histories:
        names = ("loss", "accuracy", "val_loss", "val_accuracy", "val_mean_iou", "val_mean_dice")
        metrics = [m for m in names if any(m in history for history in histories.values())]
        figure = plots.compare_curves(histories, metrics=metrics)
        caption = "Learning curves of every run, overlaid (from each run's history.csv)"
        if _fit_axes_to_completed(figure, completed):
            caption += ("; the y-axes leave out the diverged or failed runs' extreme values (beyond ten times the "
                        "completed runs' range)")
        figures.append(("curves.png", figure))
        blocks = [Figure("curves.png", caption + ".")]
    else:
        blocks = [Text("No run has a history (every run failed before its first epoch).")]
    sections.append(Section("Learning curves", "curves", blocks))

    # The best run.
    best, why = best_run(runs, source.objective)
    blocks = [Text(why)]
    if best is not None:
        for name, caption in RUN_FIGURES.items():
            if (best.path / "plots" / name).exists():
                figures.append((f"best-{name}", best.path / "plots" / name))
                blocks.append(Figure(f"best-{name}", f"{caption} ({best.run_id})"))
        drawn = _confusion_from_predictions(best)
        if drawn is not None:  # an older record without its plot: drawn from its predictions
            figures.append(("best-confusion_matrix.png", drawn))
            blocks.append(Figure("best-confusion_matrix.png", f"{RUN_FIGURES['confusion_matrix.png']} ({best.run_id}, "
                                                              "drawn from predictions.npz)"))
        scores, note = per_class_scores(best)
        blocks.append(Text(note))
        if scores is not None:
            blocks.append(Table(scores, f"Per-class test scores of {best.name} ({best.run_id})"))
    sections.append(Section("Best run", "best", blocks))

    # Efficiency, when several models are compared (E8).
    classified = [run for run in runs if run.task == "classification"]
    if len(_models(classified)) > 1:
        from lab.transfer_studies import efficiency_table

        frame = efficiency_table(classified)
        frame.insert(1, "status", [run.status for run in classified])
        frame["run_id"] = [run.run_id for run in classified]
        sections.append(Section("Efficiency", "efficiency", [
            Text("Seconds of training per 1% of validation accuracy (best epoch), from each record's train_seconds "
                 "and best_epoch_val_accuracy (lab.transfer_studies.efficiency_table)."),
            Table(_integers(frame), "Efficiency of the models compared",
                  {i: run.status for i, run in enumerate(classified) if run.status in MARKED})]))

    sections.append(Section("Environment", "environment", [
        Text("Versions and device as each run's config.json records them."),
        Table(environment_table(runs), "Environments")]))
    runs_frame = pd.DataFrame([{"run_id": run.run_id, "name": run.name, "status": run.status,
                                "created": run.metrics.get("created"), "config_hash": run.config.get("config_hash"),
                                "record": _relative(run.path, source.reports_dir)} for run in runs])
    sections.append(Section("Runs behind every number", "runs", [
        Text(f"Every number above comes from these run records under {source.reports_dir}."),
        Table(runs_frame, "Run records", {i: run.status for i, run in enumerate(runs) if run.status in MARKED})]))
    return sections, figures, best, table


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
    if run.task != "classification" or (run.path / "plots" / "confusion_matrix.png").exists() \
            or not (run.path / "predictions.npz").exists():
        return None
    predictions = run.predictions()
    if "y_prob" not in predictions or not np.isfinite(predictions["y_prob"]).all():
        return None
    from lab import plots
    from lab.evaluation import confusion_matrix

    y_prob = predictions["y_prob"]
    names = [str(n) for n in predictions.get("class_names", range(y_prob.shape[1]))]
    matrix = confusion_matrix(predictions["y_true"], y_prob.argmax(axis=1), y_prob.shape[1])
    return plots.confusion_matrix(matrix, names, title=f"Test confusion matrix: {run.name}")


def _shorten(text: str, width: int = 400) -> str:
    """A reason cut to fit a table cell (the whole error stays in the run's metrics.json)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -- rendering --------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       margin: 0; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2rem; }
p.meta { color: #59636e; margin-top: 0; }
nav a { margin-right: 1rem; }
figure { margin: 1rem 0; }
figcaption { color: #59636e; font-size: 0.9rem; margin: 0.3rem 0; }
figure.image img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.75rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.4rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; text-align: center; font-weight: 600; }
td { white-space: nowrap; }
@media print {
  main { max-width: none; padding: 0; }
  nav { display: none; }
  .table-wrap { overflow: visible; }
  table { font-size: 7pt; }
  figure, table { break-inside: avoid; }
  h2 { break-after: avoid; }
  th, td[style] { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
<p class="meta">{{ subtitle }}</p>
<nav>{% for section in sections %}<a href="#{{ section.anchor }}">{{ section.title }}</a>{% endfor %}</nav>
{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block.kind == "text" %}<p>{{ block.text }}</p>
{% elif block.kind == "table" %}<figure class="table"><figcaption>{{ block.caption }}</figcaption><div class="table-wrap">{{ block.html }}</div></figure>
{% else %}<figure class="image"><img src="{{ block.data_uri }}" alt="{{ block.caption }}"><figcaption>{{ block.caption }}</figcaption></figure>
{% endif %}
{% endfor %}
</section>
{% endfor %}
</main>
</body>
</html>
"""

MARKDOWN_TEMPLATE = """# {{ title }}

{{ subtitle }}
{% for section in sections %}

## {{ section.title }}
{% for block in section.blocks %}

{% if block.kind == "text" %}{{ block.text }}
{% elif block.kind == "table" %}*{{ block.caption }}*

{{ block.markdown }}
{% else %}![{{ block.caption }}]({{ figures }}/{{ block.name }})
{% endif %}
{% endfor %}
{% endfor %}
"""


def number(value: Any) -> str:
    """How both files show a float: four decimals, or four in scientific notation from a million
    up (a diverged run's loss of 3.8e+08 would otherwise widen its column by half)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4e}" if abs(value) >= 1e6 else f"{value:.4f}"


def _float_columns(frame: pd.DataFrame) -> list:
    return [c for c in frame.columns if frame[c].dtype.kind == "f"]


def _table_html(table: Table, uuid: str) -> str:
    """A pandas Styler table: numbers to 4 decimals and right-aligned, cells HTML-escaped, long
    texts wrapped, marked rows shaded with their status in bold."""
    frame = table.frame

    def shade(row: pd.Series) -> list[str]:
        status = table.marked.get(row.name)
        style = MARKED.get(status, "")
        return [style + (" font-weight: bold;" if column == "status" and status else "") for column in row.index]

    numeric = [c for c in frame.columns if frame[c].dtype.kind in "iuf" or str(frame[c].dtype) == "Int64"]
    styler = (frame.style.set_uuid(uuid).hide(axis="index")
              .format(escape="html", na_rep="")
              .format(number, subset=_float_columns(frame), na_rep="")
              # A break opportunity after each underscore lets long column names wrap in a narrow column.
              .format_index(lambda name: str(name).replace("_", "_\u200b"), escape="html", axis=1)
              .map(lambda value: "white-space: normal; min-width: 14rem;"
                   if isinstance(value, str) and len(value) > 40 else ""))
    ids = [c for c in ("run_id", "run_ids") if c in frame.columns]
    if ids:  # a run id may break at its hyphens when the table is wide
        styler = styler.set_properties(subset=ids, **{"white-space": "normal", "min-width": "9rem"})
    if numeric:
        styler = styler.set_properties(subset=numeric, **{"text-align": "right"})
    if table.marked:
        styler = styler.apply(shade, axis=1)
    return styler.to_html()


def _table_markdown(table: Table) -> str:
    """The same table for Markdown (pandas' to_markdown: tabulate), numbers as in the HTML
    (``number``), the status of marked rows in bold."""
    frame = table.frame.copy()
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "iuf" or str(frame[c].dtype) == "Int64"]
    for column in _float_columns(frame):
        frame[column] = frame[column].map(number)
    if table.marked and "status" in frame:
        frame["status"] = [f"**{status}**" if i in table.marked else status
                           for i, status in enumerate(frame["status"])]
    # The numbers are already formatted: tabulate must not parse and reformat them.
    return frame.to_markdown(index=False, disable_numparse=True, missingval="",
                             colalign=["right" if c in numeric else "left" for c in frame.columns])


def render(sections: list[Section], *, title: str, subtitle: str, figure_dir: Path) -> tuple[str, str]:
    """The HTML (figures embedded as base64 PNG data URIs) and Markdown (figures linked) of a report."""
    count = 0
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Table):
                count += 1
                block.html = Markup(_table_html(block, f"t{count}"))  # Styler escaped every cell
                block.markdown = _table_markdown(block)
            elif isinstance(block, Figure):
                data = (figure_dir / block.name).read_bytes()
                block.data_uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    html = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(HTML_TEMPLATE)
    markdown = jinja2.Environment(autoescape=False, trim_blocks=True, lstrip_blocks=True,
                                  keep_trailing_newline=True).from_string(MARKDOWN_TEMPLATE)
    values = dict(title=title, subtitle=subtitle, sections=sections)
    return html.render(css=Markup(CSS), **values), markdown.render(figures=FIGURES, **values)


# -- the report -------------------------------------------------------------------------------------


def build_report(source: str | os.PathLike | Sequence[str | os.PathLike] | Source, *,
                 out: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None) -> Report:
    """Builds the report of a batch, sweep, search, run ids or a tag, and writes it.

    Args:
        source: what to report on (see ``resolve_source``), or a resolved Source.
        out: the folder for ``report.html``, ``report.md`` and ``figures/`` (default: ``report/``
            inside the batch, sweep, search or run folder; ``reports/run-reports/<name>/`` for
            run ids and tags).
        reports_dir: the reports directory (default: the kit's, ``$LAB_REPORTS_DIR``).

    Returns:
        A Report with the paths written and the content. Each file is written to a temporary
        name and renamed, the figures first and the HTML last, so an interrupted build leaves
        the previous report's files whole.

    Raises:
        UnknownSourceError: a source that names nothing (the message lists what exists).

    Example:
        >>> report = build_report("e4-adam-learning-rate")
        >>> report.html   # reports/sweeps/e4-adam-learning-rate/report/report.html
    """
    from lab import plots

    resolved = source if isinstance(source, Source) else resolve_source(source, reports_dir=reports_dir)
    folder = Path(out).expanduser().resolve() if out else _default_out(resolved)
    figure_dir = folder / FIGURES
    sections, figures, best, table = build_sections(resolved)
    written = []
    for name, figure in figures:
        target = figure_dir / name
        if isinstance(figure, Path):  # the record's own plot, copied as it is
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(figure.read_bytes())
        else:
            plots.save(figure, target)
        written.append(target)
    counts = collections.Counter(run.status for run in resolved.runs)
    title = f"{resolved.label}: report"
    subtitle = (f"{len(resolved.runs)} run(s) ({', '.join(f'{n} {s}' for s, n in counts.items())}) from the run "
                f"records under {resolved.reports_dir / 'runs'}; written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    html, markdown = render(sections, title=title, subtitle=subtitle, figure_dir=figure_dir)
    atomic.write_text(folder / MARKDOWN_NAME, markdown)
    atomic.write_text(folder / HTML_NAME, html)
    for stale in figure_dir.glob("*.png"):  # figures of an earlier report in this folder that this one lacks
        if stale not in written:
            stale.unlink()
    return Report(resolved, folder / HTML_NAME, folder / MARKDOWN_NAME, written, sections, best, table)


def _default_out(source: Source) -> Path:
    if source.folder is not None:
        return source.folder / "report"
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in source.name)[:80]
    return source.reports_dir / "run-reports" / slug


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="+", help="a batch, sweep or search (name or folder), a run folder, "
                                                  "run ids, or tag:NAME")
    parser.add_argument("--out", type=Path, help="folder for report.html, report.md and figures/")
    parser.add_argument("--reports-dir", type=Path, help="the reports directory (default: $LAB_REPORTS_DIR or ./reports)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.source if len(args.source) > 1 else args.source[0], out=args.out,
                              reports_dir=args.reports_dir)
    except (UnknownSourceError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.source.label}: {len(report.source.runs)} run(s)")
    print(f"  HTML:     {report.html}")
    print(f"  Markdown: {report.markdown} (figures in {report.markdown.parent / FIGURES})")
    if report.best is not None:
        print(f"  best run: {report.best.name} ({report.best.run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
