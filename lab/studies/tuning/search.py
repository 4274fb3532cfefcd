"""``search(...)``: a keras-tuner search whose trials are run records, resumable on request.

A search lives in ``reports/searches/<name>/``:

    collection.json            the collection record (``lab.runs.collection``): the space, the base
                               configuration, the trials' runs with their scores, and what was
                               asked (tuner, objective, seed, data: what resuming checks)
    keras_tuner/               keras-tuner's own project (oracle state, one folder per trial)
    trials.csv, trials.md      one row per trial: its values, status, score and run record
    best_hyperparameters.json  the best trial's values, score, run id and configuration
    best_model.keras           a copy of the best trial's model
    curves.png                 every trial's learning curves, overlaid
    tensorboard/               the HParams dashboard: the space's values and the metrics of every trial

The trials' run records are in ``reports/runs/`` like any other run, tagged
``search:<name>``, ``search-id:<id>``, ``trial:<trial id>`` and ``tuner:<worker id>``.

Resuming is explicit. ``resume=True`` continues the saved search of that name (keras-tuner
reloads its oracle; finished trials are kept, the trial that was running when the process
died runs again) and refuses if the tuner, objective, space, base configuration, data or seed
differ from the saved ones (with no saved search it starts one). ``resume=False`` starts a new search; a saved one is moved aside
to ``searches/.replaced/`` (nothing is deleted: its run records keep their own search id).
Left at None, a search starts when none of that name exists and otherwise asks which.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import keras_tuner
import pandas as pd

from lab.system import atomic, paths
from lab.runs import collection, plots, tensorboard
from lab.config import BaseConfig, config_for
from lab.data.datasets import data_fields
from lab.runs.records import Run, load_collection, load_runs, results_table, to_markdown
from lab.studies.sweep import SweepResult, run_sweep
from lab.tasks import TASKS
from lab.studies.tuning.space import check_against, parse_space, space_values
from lab.studies.tuning.tuner import (SEARCH_ID, TUNERS, RunHyperModel, RunTuner, make_objective, make_oracle,
                              trial_run)

# The facts of a search's collection record (its ``details``) that resuming compares with the
# saved search: trials set up differently would not be comparable.
RESUME_CHECKS = ("tuner", "objective", "space", "base_hash", "seed", "data", "tuner_options")


@dataclasses.dataclass
class SearchResult:
    """A finished (or, on a worker, this worker's part of a) search.

    Attributes:
        name: the search's name.
        directory: ``reports/searches/<name>/``.
        search_id: the id of this start of the search (its run records carry ``search-id:<id>``).
        objective: the metric and its direction.
        trials: one row per trial (values, keras-tuner status, score, run id, run metrics).
        best: the best trial's values, score, run id and configuration (None on a worker or
            when no trial completed).
        runs: the run records of the trials, in trial order.
    """

    name: str
    directory: Path
    search_id: str
    objective: keras_tuner.Objective
    trials: pd.DataFrame
    best: dict[str, Any] | None
    runs: list[Run]

    @property
    def best_hyperparameters(self) -> dict[str, Any]:
        return dict(self.best["hyperparameters"]) if self.best else {}

    @property
    def best_run(self) -> Run | None:
        return next((r for r in self.runs if self.best and r.run_id == self.best["run_id"]), None)

    def best_config(self, **changes: Any) -> BaseConfig:
        """The best trial's configuration, e.g. to train it again for longer:
        ``lab.run(result.best_config(epochs=60))``."""
        if not self.best:
            raise ValueError(f"Search {self.name!r} has no completed trial to take a configuration from.")
        config = {k: v for k, v in self.best["config"].items() if k not in ("name", "tags")}
        return config_for({**config, **changes})

    def retrain(self, seeds: int | str | list[int] | None = None, *, name: str | None = None, data: Any = None,
                resume: bool = True, **changes: Any) -> SweepResult:
        """The final retraining: the best trial's configuration trained again (``changes``: e.g.
        ``epochs=60``), once per seed, as a sweep of its own.

        Args:
            seeds: a count from the configuration's ``seed``, or a list (``lab.studies.seeds``); None: once.
            name: the sweep's name (default ``<search>-final``), in ``reports/sweeps/``.
            data: a dataset shared by the runs (default: loaded once per seed, whose splits differ).
            resume: reuse the seeds already retrained with this configuration, run only the others.
            **changes: configuration fields to change (``best_config``).

        Returns:
            A ``lab.studies.sweep.SweepResult``: one run per seed, each named ``<search>-best`` and
            tagged ``search-final:<search>``; its collection record groups them.
        """
        config = self.best_config(**changes)
        variant = {"name": f"{self.name}-best", "tags": [*config.tags, f"search-final:{self.name}"]}
        return run_sweep(config, [variant], name=name or f"{self.name}-final", data=data, resume=resume,
                         seeds=seeds)

    def table(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The trials' run records as a results table (``lab.runs.records.results_table``)."""
        return results_table(self.runs, columns)


def search(
    base: BaseConfig | dict[str, Any],
    space: dict[str, Any],
    *,
    tuner: str = "random",
    objective: str | tuple | keras_tuner.Objective = "val_accuracy",
    max_trials: int = 10,
    name: str = "search",
    resume: bool | None = None,
    seed: int = 0,
    data: Any = None,
    max_epochs: int | None = None,
    factor: int = 3,
    hyperband_iterations: int = 1,
    max_consecutive_failed_trials: int = 3,
    verbose: int = 1,
) -> SearchResult:
    """Runs (or continues) a keras-tuner search over ``space`` around ``base``.

    Everything is checked before the first trial: the tuner name, the space (keys, forms, and
    that each value makes a valid configuration), the objective (a run-record metric).

    Args:
        base: the configuration every trial starts from, of any task (``lab.tasks.TASKS``), or a
            flat dict of its fields (``base.reports_dir`` is respected).
        space: the declarative search space (see ``lab.studies.tuning.space``), e.g. ``cnn_space()``.
        tuner: "random" (RandomSearch), "hyperband" (Hyperband) or "bayesian"
            (BayesianOptimization).
        objective: a run-record metric of the task (``lab.studies.tuning.record_metrics(task)``):
            "val_accuracy", "val_loss", "val_macro_auc", "val_mean_iou", "val_mask_ap"...
            (direction inferred: losses are minimised, accuracies and AUCs maximised), or
            ``(name, "min"|"max")``, or a ``keras_tuner.Objective``.
        max_trials: trials to run at most (Hyperband may stop earlier, when its brackets end).
        name: the search's folder under ``reports/searches/`` and its run records' tag.
        resume: True continues the saved search of this name (refused if it was set up
            differently); False starts a new one, moving a saved one aside; None starts one
            and refuses if one exists.
        seed: the oracle's seed (which hyperparameters are drawn); ``base.seed`` seeds training.
        data: a loaded dataset shared by every trial (otherwise loaded from the configuration).
        max_epochs: Hyperband's largest budget per trial (default: ``base.epochs``); each
            Hyperband trial trains from scratch for its round's epochs.
        factor, hyperband_iterations: Hyperband's reduction factor and repetitions.
        max_consecutive_failed_trials: keras-tuner stops after this many failed trials in a row.
        verbose: keras-tuner's trial tables (1) or quiet (0); ``base.verbose`` controls the
            epoch lines.

    Returns:
        A SearchResult. In keras-tuner's chief/worker mode (``KERASTUNER_TUNER_ID`` etc.) the
        chief serves the oracle, waits for the workers and writes the exports; a worker returns
        the trials it ran.

    Raises:
        ValueError: a bad search (empty space, unknown tuner or key, objective not among the
            record metrics, an existing search and resume=None, or resume=True with a different
            setup), before any trial runs.
    """
    base = config_for(base)
    TASKS[base.task].require()
    _check_arguments(tuner, max_trials, name)
    entries = parse_space(space, base.task)
    goal = make_objective(objective, base.task)
    check_against(base, entries)
    data = _shared_data(base, entries, data)
    directory = searches_dir(base.reports_dir) / name
    role = _role()
    manifest = {
        "name": name, "tuner": tuner, "objective": [goal.name, goal.direction], "space": _jsonable(space),
        "base": _jsonable({k: v for k, v in base.to_dict().items() if k not in ("name", "tags", "verbose")}),
        "base_hash": base.config_hash(), "seed": seed,
        "data": _data_fingerprint(data),
        "tuner_options": {"max_epochs": max_epochs or base.epochs, "factor": factor,
                          "hyperband_iterations": hyperband_iterations} if tuner == "hyperband" else {},
    }
    tuner_directory = directory
    if role == "worker":
        # A worker only runs trials: the chief decides what to resume and holds the oracle. Its
        # own keras-tuner folder stays out of the search's, which the chief alone manages.
        search_id, overwrite = "worker", True
        # One folder per worker: keras-tuner overwrites its project folder when it starts.
        tuner_directory = directory.parent / ".workers" / name / os.environ.get("KERASTUNER_TUNER_ID", "worker")
    else:
        search_id, overwrite = _start_or_resume(directory, manifest, resume)
    oracle = make_oracle(tuner, goal, max_trials=max_trials, seed=seed, search_id=search_id,
                         max_epochs=max_epochs or base.epochs, factor=factor,
                         hyperband_iterations=hyperband_iterations,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
    run_tuner = RunTuner(oracle, RunHyperModel(base, entries), name=name, data=data,
                         directory=str(tuner_directory), overwrite=overwrite)
    if role != "worker":
        # keras-tuner reloaded its own state: the id is the one its oracle holds (the saved one
        # on resume), which is also the one every trial carries to the workers.
        search_id = run_tuner.oracle.hyperparameters.get(SEARCH_ID)
        # Written before the first trial, so that a killed search can be checked and resumed; the
        # trials' runs are its members from the export on.
        previous = load_collection(directory) if overwrite is False else None
        collection.write_collection(
            directory, kind="search", name=name, varied=collection.space_domains(manifest["space"]),
            fixed=manifest["base"], members=previous.members if previous else [], started=collection.now(),
            command=collection.command("lab.studies.tuning.search", name=name, tuner=tuner, max_trials=max_trials,
                                       resume=resume, seed=seed),
            details={**{k: v for k, v in manifest.items() if k not in ("name", "base")}, "search_id": search_id,
                     "max_trials": max_trials})
        if resume and overwrite is False and run_tuner.oracle.trials:
            done = sum(t.status in ("COMPLETED", "FAILED") for t in run_tuner.oracle.trials.values())
            print(f"Resuming search {name!r}: {done} trial(s) finished, up to {max_trials} in all")
    run_tuner.search(verbose=verbose)
    if role == "worker":
        return _worker_result(run_tuner, name, directory, goal, base.reports_dir)
    return export(run_tuner, name, directory, goal, base.reports_dir)


def _check_arguments(tuner: str, max_trials: int, name: str) -> None:
    if tuner not in TUNERS:
        raise ValueError(f"Unknown tuner {tuner!r}. Available tuners: {', '.join(TUNERS)}.")
    if not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, received max_trials={max_trials!r}.")
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise ValueError(f"A search name is a plain folder name (no '/', ':' or leading '.'), received {name!r}.")


def _shared_data(base: BaseConfig, entries: list, data: Any) -> Any:
    """The dataset every trial shares (loaded once here), or None when the space tunes the data;
    with a dataset, each candidate model is built once so that a value only its builder refuses
    stops the search before its first trial."""
    data_entries = [e.name for e in entries if e.name in data_fields(base)]
    if data is not None and data_entries:
        raise ValueError(f"The space tunes {data_entries}, which choose the data each trial loads, so one dataset "
                         "cannot be passed as data=: leave data out.")
    plugin = TASKS[base.task].runner_task
    if data is None and not data_entries:
        data = plugin.load_data(base)  # streamed when the configuration says so
    if data is not None:
        check_against(base, entries, lambda config: plugin.check(config, data))
    return data


def searches_dir(reports_dir: str | os.PathLike | None = None) -> Path:
    """``reports/searches/`` (or under ``reports_dir``)."""
    root = Path(reports_dir).expanduser().resolve() if reports_dir else paths.reports_dir()
    return root / "searches"


def export(run_tuner: RunTuner, name: str, directory: Path, goal: keras_tuner.Objective,
           reports_dir: str | None) -> SearchResult:
    """Writes the trials table, the best hyperparameters and model, the curves, the collection
    record with the trials' runs, and the TensorBoard HParams experiment."""
    oracle = run_tuner.oracle
    search_id = oracle.hyperparameters.get(SEARCH_ID)
    entries = run_tuner.hypermodel.entries
    rows, runs, members = [], [], []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        run = trial_run(name, search_id, trial_id, reports_dir)
        row = {"trial": trial_id, "tuner_status": trial.status, "score": trial.score,
               **space_values(trial.hyperparameters.values, entries),
               "run_id": run.run_id if run else None, "tuner": _tag(run, "tuner:") if run else None}
        if run is not None:
            runs.append(run)
            members.append(collection.member(run, trial=trial_id, tuner_status=trial.status, score=trial.score,
                                             tuner=row["tuner"]))
            row |= {k: run.metrics.get(k) for k in TASKS[run.task].summary_columns}
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic.atomic_path(directory / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic.write_text(directory / "trials.md", (to_markdown(table) if len(table) else "No trials.") + "\n")
    best = None
    completed = oracle.get_best_trials(1)
    if completed and completed[0].status == "COMPLETED":
        trial = completed[0]
        run = trial_run(name, search_id, trial.trial_id, reports_dir)
        best = {"trial": trial.trial_id, "objective": goal.name, "direction": goal.direction, "score": trial.score,
                "hyperparameters": space_values(trial.hyperparameters.values, entries),
                "run_id": run.run_id if run else None, "run_path": str(run.path) if run else None,
                "config": {k: v for k, v in run.config.items() if k in _config_fields(run.task)} if run else None}
        atomic.write_json(directory / "best_hyperparameters.json", best)
        if run is not None and (run.path / "model.keras").exists():
            with atomic.atomic_path(directory / "best_model.keras") as tmp:
                shutil.copyfile(run.path / "model.keras", tmp)
    if runs:
        plots.save(plots.compare_curves({r.name: r.history() for r in runs}), directory / "curves.png")
    written = collection.rewrite(load_collection(directory), members=members, finished=collection.now())
    tensorboard.write_hparams(load_collection(written))
    return SearchResult(name, directory, search_id, goal, table, best, runs)


def _worker_result(run_tuner: RunTuner, name: str, directory: Path, goal: keras_tuner.Objective,
                   reports_dir: str | None) -> SearchResult:
    tags = [f"search:{name}", f"search-id:{run_tuner.search_id}", f"tuner:{run_tuner.tuner_id}"]
    runs = load_runs(reports_dir, tags=tags) if run_tuner.search_id else []
    table = pd.DataFrame([{"trial": _tag(r, "trial:"), "run_id": r.run_id,
                           **{k: r.metrics.get(k) for k in TASKS[r.task].summary_columns}} for r in runs])
    return SearchResult(name, directory, run_tuner.search_id or "", goal, table, None, runs)


def _start_or_resume(directory: Path, manifest: dict[str, Any], resume: bool | None) -> tuple[str, bool]:
    """Decides between a new search and the saved one; returns (new search id, overwrite)."""
    try:
        saved = load_collection(directory).details  # an older kit's search.json is read too
    except FileNotFoundError:
        saved = None
    exists = saved is not None or (directory / "keras_tuner").exists()
    new_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if not exists:
        return new_id, True
    if resume is None:
        raise ValueError(f"A search named {manifest['name']!r} already exists in {directory}. Pass resume=True to "
                         "continue it, or resume=False to start a new one (the saved one is moved to "
                         f"{directory.parent / '.replaced'}, nothing is deleted).")
    if resume is False:
        aside = directory.parent / ".replaced" / f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(directory, aside)
        print(f"Starting search {manifest['name']!r} afresh; the previous one was moved to {aside}")
        return new_id, True
    if saved is None:
        raise ValueError(f"{directory} holds a keras-tuner project but no collection record "
                         f"({collection.COLLECTION_NAME}), so it cannot be checked for resuming; pass resume=False to "
                         "start afresh (it is moved aside).")
    differences = [key for key in RESUME_CHECKS if saved.get(key) != manifest.get(key)]
    if differences:
        details = "; ".join(f"{k}: saved {_short(saved.get(k))}, now {_short(manifest.get(k))}" for k in differences)
        raise ValueError(f"resume=True, but search {manifest['name']!r} was set up differently ({details}). Its trials "
                         "would not be comparable with new ones. Restore the saved settings to continue it, or pass "
                         "resume=False (or another name) to start a new search.")
    return saved.get("search_id", new_id), False


def _role() -> str:
    """"standalone", "chief" or "worker" under keras-tuner's distribution variables."""
    from keras_tuner.src.distribute import utils as dist_utils

    if not dist_utils.has_chief_oracle():
        return "standalone"
    return "chief" if dist_utils.is_chief_oracle() else "worker"


def _data_fingerprint(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    summary = data.summary()
    return {k: summary.get(k) for k in ("name", "input_shape", "num_classes", "sizes", "class_counts")}


def _config_fields(task: str) -> set[str]:
    return {f.name for f in dataclasses.fields(TASKS[task].config_class)}


def _tag(run: Run, prefix: str) -> str | None:
    return next((t[len(prefix):] for t in run.config.get("tags") or [] if t.startswith(prefix)), None)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
