"""Transfer-learning studies in one call: unfreezing comparisons (E2) and efficiency tables (E8).

The transfer model is built by ``lab.models.transfer`` and trained by ``lab.runs.training.train``
(``model="transfer"``); this module holds the studies around it: the E2 comparison of freeze
policies with its table and overlaid curves, and E8's "seconds of training per 1% of accuracy".
``seeds`` repeats every policy once per seed (``lab.studies.seeds``): a row and a curve per seed.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from lab.runs import plots
from lab.tasks.classification import CLASSIFICATION
from lab.config import RunConfig
from lab.data.datasets import Dataset
from lab.studies.seeds import seed_list
from lab.runs.training import train


def compare_unfreezing(config: RunConfig | dict[str, Any], unfreeze: Sequence[int | str] = (0, 1, 2, 3), *,
                       data: Dataset | None = None, name: str = "unfreezing",
                       seeds: int | str | Sequence[int] | None = None, **overrides: Any):
    """Trains one run per freeze policy and returns E2's table and overlaid curves.

    Args:
        config: the transfer run's configuration (model="transfer", backbone, weights, ...).
        unfreeze: the policies to compare: 0 is head only, n the last n stages, "all" everything.
        data: the dataset (loaded once from ``config.dataset`` if not given: once per seed with
            ``seeds``, as each seed draws its own splits; a given dataset serves every seed).
        name: a name for the runs (``<name>-<policy>``, whatever the seed) and their tag.
        seeds: train each policy once per seed: a count from the configuration's ``seed``, or a
            list (``lab.studies.seeds``); None: once.
        **overrides: config fields to change for every run.

    Returns:
        (table, figure, results): a DataFrame with one row per policy (per policy and seed with
        ``seeds``, then with a ``seed`` column: trainable stages and parameters, best epoch,
        train/val accuracy, val loss, test accuracy, seconds per epoch, status), the
        loss/accuracy curves of all runs overlaid, and the RunResults.
    """
    base = RunConfig.from_any(config, {"model": "transfer", **overrides})
    runs = [(policy, seed) for policy in unfreeze for seed in seed_list(seeds, base_seed=base.seed)]
    loaded: dict[int, Dataset] = {}  # by seed: each seed draws its own splits
    results, rows, histories = [], [], {}
    for policy, seed in runs:
        label = "head only" if policy == 0 else ("all" if policy == "all" else f"head + last {policy}")
        run_config = base.replace(unfreeze=policy, seed=seed, name=f"{name}-{policy}", tags=[*base.tags, name])
        if seed not in loaded:
            loaded[seed] = data if data is not None else CLASSIFICATION.load_data(run_config)
        result = train(run_config, data=loaded[seed], raise_on_error=False)
        results.append(result)
        histories[label if seeds is None else f"{label} (seed {seed})"] = result.history
        metrics = result.metrics
        rows.append({
            "policy": label,
            **({"seed": seed} if seeds is not None else {}),
            "trainable stages": ", ".join(metrics.get("transfer", {}).get("trainable_stages", [])) or "-",
            "trainable params": metrics.get("trainable_params"),
            "best epoch": metrics.get("best_epoch"),
            "train acc": metrics.get("best_epoch_accuracy"),
            "val acc": metrics.get("best_epoch_val_accuracy"),
            "val loss": metrics.get("best_epoch_val_loss"),
            "test acc": metrics.get("test_accuracy"),
            "s/epoch": metrics.get("seconds_per_epoch"),
            "status": metrics.get("status"),
        })
    table = pd.DataFrame(rows)
    figure = plots.compare_curves(histories)
    figure.suptitle(f"{base.backbone}: freeze policies on {next(iter(loaded.values())).name}")
    return table, figure, results


def efficiency_table(runs: Iterable, *, accuracy: str = "val_accuracy") -> pd.DataFrame:
    """E8's efficiency table: seconds per epoch and seconds of training per 1% of accuracy.

    Args:
        runs: RunResults (from ``train``) or Runs (from ``lab.runs.records.load_runs``).
        accuracy: the metric the accuracy comes from: "val_accuracy" (the best epoch's) or
            "test_accuracy".

    Returns:
        One row per run: model, epochs, seconds per epoch, training seconds (feature extraction
        included when a feature cache was filled), accuracy in %, and seconds per 1% accuracy.
    """
    rows = []
    for run in runs:
        metrics = run.metrics
        config = run.config if isinstance(run.config, dict) else run.config.to_dict()
        # The best epoch's validation accuracy where the run has one, else the final evaluation.
        value = metrics.get(f"best_epoch_{accuracy}")
        if value is None:
            value = metrics.get(accuracy)
        seconds = metrics.get("train_seconds")
        percent = None if value is None else 100.0 * value
        rows.append({
            "model": metrics.get("name") or config.get("name"),
            "backbone": config.get("backbone") or config.get("model"),
            "epochs": metrics.get("epochs_run"),
            "s/epoch": metrics.get("seconds_per_epoch"),
            "train s": seconds,
            f"{accuracy} %": percent,
            "s per 1% acc": None if not percent or seconds is None else seconds / percent,
        })
    return pd.DataFrame(rows)
