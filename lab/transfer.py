"""Transfer-learning studies in one call: unfreezing comparisons (E2) and efficiency tables (E8).

The models themselves are in ``lab.models.transfer`` and runs go through ``lab.training.train``
(``model="transfer"``); this module holds what sits around them: a smaller learning rate for
the pretrained part, the E2 comparison of freeze policies with its table and overlaid curves,
and E8's "seconds of training per 1% of accuracy".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import keras
import pandas as pd

from lab.atomic import atomic_path
from lab.config import RunConfig
from lab.datasets import Dataset
from lab.paths import data_dir


def with_learning_rate_factor(optimizer: keras.optimizers.Optimizer, variables: Iterable,
                              factor: float) -> keras.optimizers.Optimizer:
    """Makes ``optimizer`` update ``variables`` with ``factor`` times its learning rate.

    E12's "smaller learning rates for the pretrained part than for the head". Keras optimizers
    take one rate; scaling gradients instead would do nothing for Adam (its steps do not depend
    on the gradient's scale), so the rate itself is scaled in ``update_step``, per variable.

    Args:
        optimizer: a fresh (not yet built) Keras optimizer.
        variables: the variables that get the scaled rate (the backbone's).
        factor: the multiplier, e.g. 0.1.

    Returns:
        The same optimizer object, now of a subclass that applies the factor.
    """
    if factor == 1.0:
        return optimizer
    base = type(optimizer)
    keys = {optimizer._var_key(variable) for variable in variables}

    class ScaledLearningRate(base):
        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in keys:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    ScaledLearningRate.__name__ = ScaledLearningRate.__qualname__ = f"{base.__name__}WithBackboneFactor"
    optimizer.__class__ = ScaledLearningRate
    optimizer.backbone_lr_factor = factor
    return optimizer


def pretrain_offline(backbone: str = "resnet18", *, dataset: str = "shapes", input_size: int = 32,
                     epochs: int = 4, limit: int | None = 600, learning_rate: float = 1e-3, seed: int = 0,
                     reports_dir: str | None = None) -> Path:
    """Pretrains a backbone from scratch on an offline dataset and returns its saved model.

    ImageNet weights cannot be downloaded without network, so notebooks and tests prove
    transfer this way: pretrain here (every layer trains, BatchNorm included), then pass the
    returned path as ``weights=`` of a transfer model on another dataset.

    The pretraining run is recorded like any other (tag ``pretrain``), and its model is kept
    under ``data/pretrained/`` by configuration hash, so a second call with the same arguments
    reuses it instead of training again (same seed, same data: the same weights).

    Returns:
        The path of the saved ``.keras`` model.
    """
    config = RunConfig(model="transfer", backbone=backbone, weights=None, unfreeze="all", input_size=input_size,
                       dataset=dataset, dataset_size=input_size if dataset == "shapes" else None, limit=limit,
                       epochs=epochs, learning_rate=learning_rate, early_stopping_patience=None, seed=seed,
                       verbose=0, name=f"pretrain-{backbone}-{dataset}", tags=["pretrain"], reports_dir=reports_dir)
    target = data_dir() / "pretrained" / f"{backbone}-{dataset}-{config.config_hash()}.keras"
    if target.exists():
        return target
    from lab.training import train

    result = train(config)
    if result.status != "completed":
        raise RuntimeError(f"Pretraining {backbone} on {dataset} ended {result.status}: "
                           f"{result.metrics.get('divergence_reason')}. See {result.run_dir}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temporary:
        shutil.copyfile(result.run_dir / "model.keras", temporary)
    return target


def compare_unfreezing(config: RunConfig | dict[str, Any], unfreeze: Sequence[int | str] = (0, 1, 2, 3), *,
                       data: Dataset | None = None, name: str = "unfreezing", **overrides: Any):
    """Trains one run per freeze policy and returns E2's table and overlaid curves.

    Args:
        config: the transfer run's configuration (model="transfer", backbone, weights, ...).
        unfreeze: the policies to compare: 0 is head only, n the last n stages, "all" everything.
        data: the dataset (loaded once from ``config.dataset`` if not given).
        name: a name for the runs (``<name>-<policy>``) and their tag.
        **overrides: config fields to change for every run.

    Returns:
        (table, figure, results): a DataFrame with one row per policy (trainable stages and
        parameters, best epoch, train/val accuracy, val loss, test accuracy, seconds per
        epoch, status), the loss/accuracy curves of all policies overlaid, and the RunResults.
    """
    from lab import plots
    from lab.training import load_data, train

    base = RunConfig.from_dict(config) if isinstance(config, dict) else config
    base = base.replace(model="transfer", **overrides)
    data = data if data is not None else load_data(base)
    results, rows, histories = [], [], {}
    for policy in unfreeze:
        label = "head only" if policy == 0 else ("all" if policy == "all" else f"head + last {policy}")
        result = train(base.replace(unfreeze=policy, name=f"{name}-{policy}", tags=[*base.tags, name]),
                       data=data, raise_on_error=False)
        results.append(result)
        histories[label] = result.history
        metrics = result.metrics
        rows.append({
            "policy": label,
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
    figure.suptitle(f"{base.backbone}: freeze policies on {data.name}")
    return table, figure, results


def efficiency_table(runs: Iterable, *, accuracy: str = "val_accuracy") -> pd.DataFrame:
    """E8's efficiency table: seconds per epoch and seconds of training per 1% of accuracy.

    Args:
        runs: RunResults (from ``train``) or Runs (from ``lab.records.load_runs``).
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
