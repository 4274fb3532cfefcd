"""The report's content, section by section, from the source's run records: the results, what
varied and what was fixed, the learning curves, the best run, the efficiency of the models compared, the
environment, and the run records behind every number.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from lab.runs.confidence import column_decimals
from lab.runs.records import Run
from lab.report.comparisons import comparison_section
from lab.report.document import MARKED, Figure, Section, Table, Text
from lab.report.figures import _confusion_from_predictions, _fit_axes_to_completed, _histories
from lab.report.sources import Source
from lab.tasks import TASKS
from lab.report.tables import (_cell, _integers, best_run, environment_table, per_class_scores, results, run_settings,
                               unused_by_the_models, varied_and_fixed)


def build_sections(source: Source, *, baseline: str | None = None
                   ) -> tuple[list[Section], list[tuple[str, Any]], Run | None, pd.DataFrame]:
    """The report's content from the source's records (``baseline``: the configuration the
    comparison section compares the others with; default: the first).

    Returns:
        (sections, figures to write as ``(file name, matplotlib figure or record PNG path)``,
        the best run, the results table).
    """
    from lab.runs import plots

    runs = source.runs
    figures: list[tuple[str, Any]] = []
    sections = []
    varied, fixed = varied_and_fixed(runs, source.collection)
    values_per_run = run_settings(runs, source.collection)

    # Results.
    table = results(runs, varied, values_per_run)
    marked = {i: run.status for i, run in enumerate(runs) if run.status in MARKED}
    counts = collections.Counter(run.status for run in runs)
    blocks = [Text(f"{len(runs)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items())
                   + ". Metrics at each run's best epoch (its restored weights); diverged runs shaded red, "
                   "stalled runs yellow and failed runs grey, with their status in bold.")]
    # Each split's scores with the digits that split supports (lab.runs.confidence.column_decimals).
    digits = column_decimals(list(table.columns), [run.split_sizes for run in runs])
    blocks.append(Table(table, "Results (from each run's metrics.json)", marked, digits=digits))
    problems = [{"run_id": run.run_id, "name": run.name, "status": run.status,
                 "reason": _shorten(run.metrics.get("divergence_reason") or run.metrics.get("error") or "not recorded")}
                for run in runs if run.status in MARKED]
    if problems:
        blocks.append(Table(pd.DataFrame(problems), "Why runs stalled, diverged or failed",
                            {i: row["status"] for i, row in enumerate(problems)}))
    blocks += [Text(note) for note in source.notes]
    sections.append(Section("Results", "results", blocks))
    sections.append(comparison_section(runs, baseline))

    # What varied and what was fixed (the collection record's, when the runs are a collection's).
    blocks = []
    if len(runs) == 1:
        blocks.append(Text("One run: nothing varied."))
    elif varied:
        frame = pd.DataFrame([{"run_id": run.run_id, "name": run.name, **{k: _cell(values.get(k)) for k in varied}}
                              for run, values in zip(runs, values_per_run)], dtype=object)
        blocks += [Text(f"{len(varied)} setting(s) differ between the {len(runs)} runs: {', '.join(varied)}."),
                   Table(frame, "Settings that varied, per run")]
    else:
        blocks.append(Text(f"The {len(runs)} runs share every setting (repeats of one configuration)."))
    unused = [k for k in unused_by_the_models(runs) if k in fixed]
    unset = sorted(k for k, v in fixed.items() if v is None and k not in unused)
    shown = {k: _cell(v) for k, v in fixed.items() if v is not None and k not in unused}
    blocks.append(Table(pd.DataFrame({"setting": list(shown), "value": list(shown.values())}, dtype=object),
                        "Settings shared by every run", collapsed=True))
    if unset:
        blocks.append(Text(f"Unset (None) in every run: {', '.join(unset)}."))
    if unused:
        blocks.append(Text(f"Not shown, as no run's model uses them: {', '.join(unused)}."))
    sections.append(Section("What varied and what was fixed", "settings", blocks))

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
        run_figures = TASKS[best.task].figures
        for name, caption in run_figures.items():
            if (best.path / "plots" / name).exists():
                figures.append((f"best-{name}", best.path / "plots" / name))
                blocks.append(Figure(f"best-{name}", f"{caption} ({best.run_id})"))
        drawn = _confusion_from_predictions(best)
        if drawn is not None:  # an older record without its plot: drawn from its predictions
            figures.append(("best-confusion_matrix.png", drawn))
            blocks.append(Figure("best-confusion_matrix.png", f"{run_figures['confusion_matrix.png']} ({best.run_id}, "
                                                              "drawn from predictions.npz)"))
        scores, note = per_class_scores(best)
        blocks.append(Text(note))
        if scores is not None:
            blocks.append(Table(scores, f"Per-class test scores of {best.name} ({best.run_id})"))
    sections.append(Section("Best run", "best", blocks))

    # Efficiency, when several models are compared (E8).
    classified = [run for run in runs if TASKS[run.task].compares_efficiency]
    if len(_models(classified)) > 1:
        from lab.studies.transfer_studies import efficiency_table

        frame = efficiency_table(classified)
        frame.insert(1, "status", [run.status for run in classified])
        frame["run_id"] = [run.run_id for run in classified]
        sections.append(Section("Efficiency", "efficiency", [
            Text("Seconds of training per 1% of validation accuracy (best epoch), from each record's train_seconds "
                 "and best_epoch_val_accuracy (lab.studies.transfer_studies.efficiency_table)."),
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


def _models(runs: Sequence[Run]) -> set[tuple]:
    return {(run.config.get("model"), run.config.get("backbone")) for run in runs}


def _shorten(text: str, width: int = 400) -> str:
    """A reason cut to fit a table cell (the whole error stays in the run's metrics.json)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

