"""The learning-rate finder (Smith's range test, as fastai's ``lr_find``), recorded like a run.

``find_learning_rate(config)`` builds and compiles the model the configuration describes, with
its pipelines (augmentation, class weights, a feature cache: whatever its run would use), then
trains it for ``steps`` steps while the learning rate grows exponentially from ``min_lr`` to
``max_lr``:

    rate_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1))

It records each step's training loss and an exponentially smoothed, bias-corrected loss
(``smoothing`` = 0.98, fastai's), and stops once the smoothed loss exceeds ``diverge_factor``
(4, fastai's) times its minimum or stops being finite. The suggestion is fastai's default rule,
``valley``: along the smoothed curve (without its first tenth of the planned steps and its last 5
points, as fastai trims it), find the longest run of falling loss and take the point two thirds
of the way down it. It is a rate to start from, not a result: check it with a run.

The finder writes a run folder (``lab.records.RunWriter``, published whole) with config.json
(the configuration, the data, the finder's settings), ``lr_finder.csv`` (step, learning_rate,
loss, smoothed_loss), ``plots/lr_finder.png`` and metrics.json (``kind`` "lr_finder",
``suggested_learning_rate``, ``suggestion_rule`` "valley", ``steps_run``, ``stopped_early``).
The model's weights are not kept. Its ``config_hash`` covers the finder's settings too, so a
sweep that resumes by hash never mistakes it for a training run of the same configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import atomic, hardware, plots, tf_memory
from lab.config import RunConfig
from lab.records import RECORD_VERSION, RunWriter

SUGGESTION_RULE = "valley"


@dataclasses.dataclass
class LRFinderResult:
    """What ``find_learning_rate`` returns.

    Attributes:
        run_dir: the published record (None on a multi-worker run's non-chief worker).
        suggestion: the suggested learning rate (NaN when the curve is too short to judge).
        curve: one row per step: step, learning_rate, loss, smoothed_loss.
        metrics: the record's metrics.
    """

    run_dir: Path | None
    suggestion: float
    curve: pd.DataFrame
    metrics: dict[str, Any]


def find_learning_rate(config: RunConfig | dict[str, Any] | None = None, *, data: Any = None,
                       min_lr: float = 1e-7, max_lr: float = 10.0, steps: int | None = 100,
                       smoothing: float = 0.98, diverge_factor: float = 4.0, **overrides: Any) -> LRFinderResult:
    """Runs the learning-rate range test for a classification configuration and records it.

    Args:
        config: a RunConfig, a flat dict of its fields, or None for the defaults.
        data: already loaded data (otherwise the configuration's dataset is loaded).
        min_lr, max_lr: the ramp's first and last rate.
        steps: training steps of the ramp, cycling through the training data as needed
            (fastai's default 100); None: one pass over the training split.
        smoothing: the exponential moving average's factor for the loss (0 = no smoothing).
        diverge_factor: stop when the smoothed loss exceeds this times its minimum.
        **overrides: configuration fields to change, as for ``lab.training.train``.

    Returns:
        An LRFinderResult.

    Raises:
        ValueError: invalid finder settings or configuration (before anything is written).
    """
    from lab.classification import CLASSIFICATION, compile_model
    from lab.pretraining import resolve_weights
    from lab.runner import data_record, environment, finite_metrics, seed_everything

    config = resolve_weights(RunConfig.from_any(config, overrides))
    _check_settings(min_lr, max_lr, steps, smoothing, diverge_factor)
    data = CLASSIFICATION.load_data(config) if data is None else _adopt(CLASSIFICATION, config, data)
    used = data.source.get("loaded_as", data.name)
    if used != config.dataset:
        config = config.replace(dataset=used)
    settings = {"min_lr": min_lr, "max_lr": max_lr, "steps": steps, "smoothing": smoothing,
                "diverge_factor": diverge_factor, "suggestion_rule": SUGGESTION_RULE}
    import keras

    keras.backend.clear_session()
    seed_everything(config.seed, config.deterministic)
    run_hash = config.config_hash(data)
    record_config = {
        **config.to_dict(),
        "record_version": RECORD_VERSION,
        "task": config.task,
        "kind": "lr_finder",
        "lr_finder": settings,
        "run_config_hash": run_hash,  # the hash a training run of this configuration has
        "config_hash": hashlib.sha256(json.dumps({"run": run_hash, "lr_finder": settings}, sort_keys=True)
                                      .encode()).hexdigest()[:12],
        "data": data_record(data),
        **CLASSIFICATION.describe(config, data),
        "environment": environment(),
    }
    strategy = hardware.get_strategy(config.distribute)
    with tf_memory.released_graphs(), hardware.precision(config.mixed_precision), strategy.scope():
        plan = CLASSIFICATION.plan(config, data)
        phase = plan.phases[0]
        if phase.prepare is not None:
            phase.prepare()  # the first phase's trainable stages (progressive unfreezing)
        # One step per call: the rate changes every step, and every step's loss is read.
        compile_model(phase.fitted, config.replace(steps_per_execution=1),
                      learning_rate=_base_rate(phase.fitted.optimizer))
    name = config.name or f"lr-finder-{config.model}-{data.name}"
    metrics: dict[str, Any] = {"name": name, "kind": "lr_finder", "dataset": data.name, "model": config.model,
                               "task": config.task, "tags": [*config.tags, "lr-finder"],
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    from lab.runner import _reports_dir

    with _reports_dir(config) as reports_dir:
        writer = RunWriter(record_config, name=name, reports_dir=reports_dir)
        try:
            started = time.perf_counter()
            with tf_memory.released_graphs(), strategy.scope():
                curve = _ramp(phase.fitted, plan.train, plan.class_weight, min_lr=min_lr, max_lr=max_lr,
                              steps=steps if steps is not None else _one_pass(plan.train, phase.steps_per_epoch),
                              smoothing=smoothing, diverge_factor=diverge_factor)
            planned = steps if steps is not None else _one_pass(plan.train, phase.steps_per_epoch)
            suggestion = suggest_valley(curve["learning_rate"].to_numpy(), curve["smoothed_loss"].to_numpy(),
                                        planned_steps=planned)
            with atomic.atomic_path(writer.path / "lr_finder.csv") as tmp:
                curve.to_csv(tmp, index=False)
            plots.save(plots.lr_finder_curve(curve["learning_rate"], curve["smoothed_loss"], suggestion=suggestion,
                                             raw_losses=curve["loss"], title=f"Learning-rate finder: {name}"),
                       writer.path / "plots" / "lr_finder.png")
            metrics |= {"status": "completed", "suggested_learning_rate": suggestion,
                        "suggestion_rule": SUGGESTION_RULE, "steps_planned": planned, "steps_run": len(curve),
                        "stopped_early": len(curve) < planned,
                        "min_smoothed_loss": float(curve["smoothed_loss"].min()),
                        "learning_rate_at_min_loss": float(curve["learning_rate"][curve["smoothed_loss"].idxmin()]),
                        "seconds": time.perf_counter() - started, "params": int(plan.model.count_params())}
            if not math.isfinite(suggestion):
                metrics["note"] = ("no suggestion: the curve has too few points once its first tenth and last 5 "
                                   "points are left out; run more steps")
        except KeyboardInterrupt:
            writer.discard()
            raise
        except Exception as error:  # recorded as failed, then raised: a finder is run by hand
            metrics |= {"status": "failed", "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc()}
            writer.publish(finite_metrics(metrics))
            raise
        run_dir = writer.publish(finite_metrics(metrics))
    kept = run_dir if reports_dir == config.reports_dir else None
    return LRFinderResult(kept, suggestion, curve, finite_metrics(metrics))


def suggest_valley(learning_rates: np.ndarray, smoothed_losses: np.ndarray, *, planned_steps: int) -> float:
    """fastai's ``valley`` suggestion: two thirds down the longest falling stretch of the curve.

    As fastai's ``LRFinder`` does, the first ``planned_steps // 10`` points and the last 5 are
    left out (the start is noise, the end is divergence). Then, for each point, the longest
    chain of earlier points whose losses it is below is counted (a longest decreasing
    subsequence ending there); the longest chain's span [start, end] is the valley, and the
    suggestion is the rate at ``start + span/3 + span/6``.

    Args:
        learning_rates: the rate of each step, increasing.
        smoothed_losses: the smoothed loss of each step.
        planned_steps: the ramp's planned length (fastai trims by it, not by the steps run).

    Returns:
        The suggested rate; NaN when fewer than 2 points remain after trimming.
    """
    start = planned_steps // 10
    rates = np.asarray(learning_rates, dtype=float)[start:len(learning_rates) - 5]
    losses = np.asarray(smoothed_losses, dtype=float)[start:len(smoothed_losses) - 5]
    count = len(losses)
    if count < 2:
        return float("nan")
    lengths = [1] * count
    max_start, max_end = 0, 0
    for i in range(1, count):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
            if lengths[max_end] < lengths[i]:
                max_end = i
                max_start = max_end - lengths[max_end]
    sections = (max_end - max_start) / 3
    index = max(0, min(count - 1, max_start + int(sections) + int(sections / 2)))
    return float(rates[index])


def _ramp(model, dataset, class_weight, *, min_lr: float, max_lr: float, steps: int, smoothing: float,
          diverge_factor: float) -> pd.DataFrame:
    """Trains ``steps`` steps at exponentially growing rates; returns the curve."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    batches = iter(dataset.repeat())
    rows, average, best = [], 0.0, math.inf
    for step in range(steps):
        rate = min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1))
        optimizer.learning_rate.assign(rate)
        images, labels = next(batches)
        model.reset_metrics()  # the logged loss is then this batch's alone, not the running mean
        loss = float(model.train_on_batch(images, labels, class_weight=class_weight, return_dict=True)["loss"])
        average = smoothing * average + (1.0 - smoothing) * loss
        smoothed = average / (1.0 - smoothing ** (step + 1))  # bias-corrected, as fastai's
        rows.append({"step": step + 1, "learning_rate": rate, "loss": loss, "smoothed_loss": smoothed})
        if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
            break
        best = min(best, smoothed)
    return pd.DataFrame(rows, columns=["step", "learning_rate", "loss", "smoothed_loss"])


def _one_pass(dataset, declared: int | None) -> int:
    from lab.schedules import steps_per_epoch

    steps = steps_per_epoch(dataset, declared)
    if not steps:
        raise ValueError("steps=None runs one pass over the training split, but its length is unknown; give steps.")
    return steps


def _base_rate(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(np.asarray(inner.learning_rate))


def _adopt(task, config: RunConfig, data: Any) -> Any:
    """Data passed in, read the way a run would read it (streamed from TFRecords if configured)."""
    return task.adopt_data(config, data) if hasattr(task, "adopt_data") else data


def _check_settings(min_lr: float, max_lr: float, steps: int | None, smoothing: float, diverge_factor: float) -> None:
    for key, value in (("min_lr", min_lr), ("max_lr", max_lr), ("diverge_factor", diverge_factor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{key} must be a positive number, received {key}={value!r}.")
    if not min_lr < max_lr:
        raise ValueError(f"min_lr must be below max_lr, received min_lr={min_lr}, max_lr={max_lr}.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
        raise ValueError(f"steps must be an integer of at least 2 (or None for one pass), received steps={steps!r}.")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), received smoothing={smoothing!r}.")
    if diverge_factor <= 1.0:
        raise ValueError(f"diverge_factor must be above 1 (4: stop when the loss is 4 times its minimum), received "
                         f"diverge_factor={diverge_factor!r}.")


__all__ = ["LRFinderResult", "SUGGESTION_RULE", "find_learning_rate", "suggest_valley"]
