"""Sweeps: many runs that differ in a few values, one table and one comparison plot.

A run that stalls, diverges or fails is recorded with its status and the sweep goes on (E4's Adam
at lr 1e-2 "never learns": it appears in the table as ``stalled``, it does not crash the sweep).
With ``resume=True`` a sweep started again reuses every run already recorded with the same
configuration hash, so an interrupted sweep only redoes what was not finished.

``seeds`` (a count or a list, ``lab.studies.seeds``) runs every variant once per seed; the runs keep the
variant's name, and since the seed is part of the configuration hash, resuming with more seeds
runs only the seeds not yet recorded.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from lab.system import atomic, paths
from lab.runs import collection, plots, tensorboard
from lab.runs.comparison import check_baseline, write_comparison
from lab.config import config_for
from lab.data.datasets import data_key
from lab.runs.records import (RESULT_STATUSES, Run, load_collection, load_run, load_runs, results_table, summary_columns,
                         to_markdown)
from lab.studies.seeds import per_seed
from lab.tasks import TASKS
from lab.runs.training import run


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """The cartesian product of value lists, as a list of flat overrides.

    Example:
        >>> grid(optimizer=["adam", "sgd"], learning_rate=[1e-2, 1e-3])
        [{'optimizer': 'adam', 'learning_rate': 0.01}, {'optimizer': 'adam', ...}, ...]
    """
    keys = list(values)
    return [dict(zip(keys, combination)) for combination in itertools.product(*values.values())]


@dataclasses.dataclass
class SweepResult:
    """The runs of a sweep, in order, and where its summary was written."""

    name: str
    runs: list[Run]
    summary_dir: Path

    def table(self, columns: list[str] | None = None) -> pd.DataFrame:
        return results_table(self.runs, columns)


def run_sweep(
    base: Any,
    variants: Iterable[dict[str, Any]],
    *,
    name: str = "sweep",
    columns: list[str] | None = None,
    data: Any = None,
    resume: bool = False,
    kind: str = "sweep",
    baseline: str | None = None,
    seeds: int | str | Sequence[int] | None = None,
) -> SweepResult:
    """Runs one training per variant (base values overridden by the variant) and summarises.

    Args:
        base: the shared configuration of any task (``lab.tasks.TASKS``): a configuration, or a
            flat dict of its fields (its model names the task).
        variants: flat overrides, one dict per run; a ``name`` key names the run.
        name: the sweep's name; its summary goes to ``reports/sweeps/<name>/``.
        columns: columns of the results table (default: the varied keys and the main metrics).
        data: a dataset shared by every run (otherwise loaded once per distinct data setting).
        resume: reuse runs already recorded with the same configuration hash.
        kind: what its collection record calls it ("ablation" for ``lab.studies.ablation``).
        baseline: the variant (by name) the others are compared with in the summary (default: the
            first; ``lab.runs.comparison``).
        seeds: run each variant once per seed (a count from the base's ``seed``, or a list;
            ``lab.studies.seeds``); None: once, with its own seed.

    Returns:
        A SweepResult. ``summary_dir`` holds ``results.csv``, ``results.md`` (the table, then each
        configuration against the baseline: intervals, verdicts, warnings), ``comparison.csv``, ``curves.png``,
        ``collection.json`` (the collection record: what varied, what was fixed, the run behind
        every row, ``lab.runs.collection``) and ``tensorboard/`` (the HParams dashboard of the varied
        values: ``tensorboard --logdir <summary_dir>``).
    """
    started = collection.now()
    base_config = config_for(base)
    variants = [dict(v) for v in variants]
    if not variants:
        raise ValueError("A sweep needs at least one variant (received none).")
    # The runs of a variant are told apart by their seed, so each keeps the variant's name.
    variants = [{"name": v.get("name") or f"run{i}", **v} if seeds is not None else v
                for i, v in enumerate(variants, start=1)]
    variants = per_seed(variants, seeds, base_seed=base_config.seed)
    # Validate every configuration before the first run, so a typo in variant 7 does not
    # surface after six runs of training.
    configs = [base_config.replace(**{"tags": [*base_config.tags, name], **v}) for v in variants]
    if all(config.name for config in configs):  # unnamed runs get their names when they run
        check_baseline(baseline, list(dict.fromkeys(config.name for config in configs)))
    for task in dict.fromkeys(config.task for config in configs):
        TASKS[task].require()  # an optional extra missing: say how to install it, before any run
    # Runs that ended with a result (completed, stalled or diverged), by configuration hash: reused on resume.
    finished = {run.config.get("config_hash"): run for run in
                load_runs(configs[0].reports_dir, status=RESULT_STATUSES)} if resume else {}
    loaded: dict[tuple, Any] = {}

    def data_for(config) -> Any:  # one load per distinct data setting
        if data is not None:
            return data
        key = data_key(config)
        if key not in loaded:
            loaded[key] = TASKS[config.task].runner_task.load_data(config)  # streamed when the configuration says so
        return loaded[key]

    checked = set()
    for config in configs:  # and every model it will build (a refused configuration writes nothing)
        model = (config.model, repr(config.model_options()), data_key(config), getattr(config, "pipeline_size", None))
        if model not in checked:  # variants that change only training values share one build
            TASKS[config.task].runner_task.check(config, data_for(config))
            checked.add(model)
    runs: list[Run] = []
    for i, config in enumerate(configs, start=1):
        label = config.name or f"run{i}"
        label += f" (seed {config.seed})" if seeds is not None else ""
        previous = finished.get(config.config_hash(data_for(config)))
        if previous is not None:
            print(f"[{i}/{len(configs)}] {label}: reusing finished run {previous.run_id} ({previous.status})")
            runs.append(previous)
            continue
        print(f"[{i}/{len(configs)}] {label}")
        result = run(config, data=data_for(config), raise_on_error=False)
        # Why a run did not complete, or why its status could not judge it (a validation split too small).
        reason = result.metrics.get("divergence_reason") or result.metrics.get("error") \
            or result.metrics.get("status_note")
        if result.status != "completed" or reason:
            print(f"    -> {result.status}: {reason}")
        runs.append(load_run(result.run_dir))
    varied = {k for v in variants for k in v if k != "name"}
    if seeds is not None and len(collection.values_taken("seed", variants)) == 1:
        varied.discard("seed")  # seeds=1 or [s]: the seed did not vary
    varied = sorted(varied)
    made_by = collection.command("lab.studies.sweep.run_sweep", name=name, variants=variants, resume=resume, kind=kind,
                                 baseline=baseline, seeds=seeds)
    return SweepResult(name, runs, write_summary(name, runs, configs[0].reports_dir, columns=columns, varied=varied,
                                                 kind=kind, started=started, command=made_by, baseline=baseline))


def write_summary(name: str, runs: list[Run], reports_dir: str | None = None, *,
                  columns: list[str] | None = None, varied: Sequence[str] = (), kind: str = "sweep",
                  started: str | None = None, command: dict[str, Any] | None = None,
                  baseline: str | None = None) -> Path:
    """Writes a sweep's table (CSV and markdown, the markdown followed by each configuration against
    the baseline, ``lab.runs.comparison``; ``comparison.csv``), overlaid curves, collection record and its
    TensorBoard HParams experiment (``tensorboard/``: the varied values and the metrics).

    Args:
        name: the sweep's name (its folder under ``reports/sweeps/``).
        runs: its runs, in order.
        reports_dir: the reports folder (default: the kit's).
        columns: the table's columns (default: the name, the varied keys, the summary columns).
        varied: the configuration keys the sweep varies.
        kind: the collection record's kind ("sweep", or "ablation").
        started: when the sweep started (``lab.runs.collection.now()``; default: now).
        command: how it was made (``lab.runs.collection.command``; default: this call).
        baseline: the configuration the others are compared with (default: the first).
    """
    folder = (Path(reports_dir) if reports_dir else paths.reports_dir()) / "sweeps" / name
    present = {key for run in runs for key in (*run.config, *run.metrics)}
    columns = columns or ["name", *varied, *(c for c in summary_columns(runs) if c in present)]
    table = results_table(runs, columns)
    with atomic.atomic_path(folder / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic.write_text(folder / "results.md", to_markdown(table, runs=runs) + "\n" + write_comparison(folder, runs, baseline))
    repeated = len({run.name for run in runs}) < len(runs)  # several seeds of one configuration: say which
    plots.save(plots.compare_curves({f"{run.name} (seed {run.config.get('seed')})" if repeated else run.name:
                                     run.history() for run in runs}), folder / "curves.png")
    configs = [run.config for run in runs]
    written = collection.write_collection(
        folder, kind=kind, name=name, varied={key: collection.values_taken(key, configs) for key in varied},
        fixed=collection.split_configuration(configs)[1], members=[collection.member(run) for run in runs],
        started=started or collection.now(), finished=collection.now(),
        command=command or collection.command("lab.studies.sweep.write_summary", name=name, varied=list(varied)))
    tensorboard.write_hparams(load_collection(written))
    return folder
