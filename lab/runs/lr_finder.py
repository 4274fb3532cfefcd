"""The learning-rate finder (Smith's range test, as fastai's ``lr_find``): a mode of the runner.

``find_learning_rate(config)`` runs the configuration through the runner (``lab.runs.runner.run``)
in the ``LRFinder`` mode: the task plans the run as a training run would (the model built and
compiled, its pipelines with augmentation, class weights, a feature cache), then one ramp phase
trains it for ``steps`` steps while the learning rate grows exponentially from ``min_lr`` to
``max_lr``:

    rate_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1))

The ramp (``LRRamp``, a Keras callback) records each step's training loss and an exponentially
smoothed, bias-corrected loss (``smoothing`` = 0.98, fastai's), and stops once the smoothed loss
exceeds ``diverge_factor`` (4, fastai's) times its minimum or stops being finite. In place of
evaluation, the suggestion is fastai's default rule, ``valley``: along the smoothed curve
(without its first tenth of the planned steps and its last 5 points, as fastai trims it), find
the longest run of falling loss and take the point two thirds of the way down it. It is a rate
to start from, not a result: check it with a run.

Every task of the runner whose model is a Keras 3 model can be ramped: classification
(``RunConfig``), segmentation and reconstruction (``SegmentationConfig``).

The record is the runner's (published whole, recorded as ``failed`` on an error, discarded on
Ctrl-C, kept by the chief only): config.json (the configuration, the data, the finder's settings
under ``lr_finder``), ``lr_finder.csv`` (step, learning_rate, loss, smoothed_loss),
``plots/lr_finder.png`` and metrics.json (``kind`` "lr_finder", ``suggested_learning_rate``,
``suggestion_rule`` "valley", ``steps_run``, ``stopped_early``). The model's weights are not
kept. Its ``config_hash`` covers the finder's settings too, so a sweep that resumes by hash never
mistakes it for a training run of the same configuration (``lab.runs.runner.Mode``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import pandas as pd

from lab.system import atomic
from lab.runs import plots
from lab.config import BaseConfig, config_for
from lab.runs.runner import FitPlan, Task, run
from lab.config.schedules import steps_per_epoch
from lab.tasks import TASKS

SUGGESTION_RULE = "valley"
CURVE_COLUMNS = ["step", "learning_rate", "loss", "smoothed_loss"]


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


def find_learning_rate(config: BaseConfig | dict[str, Any] | None = None, *, data: Any = None,
                       min_lr: float = 1e-7, max_lr: float = 10.0, steps: int | None = 100,
                       smoothing: float = 0.98, diverge_factor: float = 4.0, **overrides: Any) -> LRFinderResult:
    """Runs the learning-rate range test for a configuration and records it.

    Args:
        config: a RunConfig (classification), a SegmentationConfig (segmentation or
            reconstruction), a flat dict of their fields (its model names the task), or None
            for a classifier's defaults.
        data: already loaded data (otherwise the configuration's dataset is loaded).
        min_lr, max_lr: the ramp's first and last rate (finite and positive).
        steps: training steps of the ramp, cycling through the training data as needed
            (fastai's default 100); None: one pass over the training split.
        smoothing: the exponential moving average's factor for the loss (0 = no smoothing).
        diverge_factor: stop when the smoothed loss exceeds this times its minimum.
        **overrides: configuration fields to change, as for ``lab.runs.training.train``.

    Returns:
        An LRFinderResult.

    Raises:
        ValueError: invalid finder settings or configuration (before anything is written).
        TypeError: a configuration of a task the ramp cannot drive (E7's Mask R-CNN).
        Exception: whatever failed during the ramp, after the run is recorded as ``failed``.
    """
    finder = LRFinder(min_lr=min_lr, max_lr=max_lr, steps=steps, smoothing=smoothing, diverge_factor=diverge_factor)
    config, task = _config_and_task(config, overrides)
    result = run(config, task, data=data, mode=finder)  # a finder is run by hand: an error is raised
    suggestion = result.metrics.get("suggested_learning_rate")  # None in the record when NaN
    return LRFinderResult(result.run_dir, math.nan if suggestion is None else suggestion, result.history,
                          result.metrics)


@dataclasses.dataclass(frozen=True)
class LRFinder:
    """The range test as a mode of the runner (``lab.runs.runner.Mode``): one ramp phase in place of
    the fit phases, the curve and its suggestion in place of evaluation.

    Args:
        min_lr, max_lr, steps, smoothing, diverge_factor: as for ``find_learning_rate``.

    Raises:
        ValueError: an invalid setting, saying what was received.
    """

    min_lr: float = 1e-7
    max_lr: float = 10.0
    steps: int | None = 100
    smoothing: float = 0.98
    diverge_factor: float = 4.0

    kind: ClassVar[str] = "lr_finder"

    def __post_init__(self) -> None:
        _check_settings(self.min_lr, self.max_lr, self.steps, self.smoothing, self.diverge_factor)

    @property
    def settings(self) -> dict[str, Any]:
        """What config.json keeps under ``lr_finder`` (and the record's hash covers)."""
        return {**dataclasses.asdict(self), "suggestion_rule": SUGGESTION_RULE}

    def planned(self, config: BaseConfig) -> BaseConfig:
        """One step per compiled call: the rate changes every step, and every step's loss is read."""
        return config if config.steps_per_execution == 1 else config.replace(steps_per_execution=1)

    def fit(self, config: BaseConfig, task: Task, data: Any, plan: FitPlan, strategy, run_path: Path
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The ramp phase: the plan's first phase, trained ``steps`` steps on the repeated
        training pipeline with ``LRRamp``; returns the curve and the facts of the ramp."""
        phase = plan.phases[0]
        if phase.prepare is not None:
            with strategy.scope():
                phase.prepare()  # the first phase's trainable stages (progressive unfreezing)
        steps = self.steps if self.steps is not None else _one_pass(plan.train, phase.steps_per_epoch)
        ramp = LRRamp(min_lr=self.min_lr, max_lr=self.max_lr, steps=steps, smoothing=self.smoothing,
                      diverge_factor=self.diverge_factor)
        started = time.perf_counter()
        phase.fitted.fit(plan.train.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[ramp], verbose=0,
                         shuffle=False, class_weight=plan.class_weight)
        curve = ramp.curve()
        return curve, {"status": "completed", "steps_planned": steps, "steps_run": len(curve),
                       "stopped_early": len(curve) < steps, "seconds": time.perf_counter() - started}

    def evaluate(self, plan: FitPlan, config: BaseConfig, task: Task, data: Any, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """The suggestion (fastai's valley rule), ``lr_finder.csv`` and ``plots/lr_finder.png``."""
        curve = history
        suggestion = suggest_valley(curve["learning_rate"].to_numpy(), curve["smoothed_loss"].to_numpy(),
                                    planned_steps=fit_info["steps_planned"])
        with atomic.atomic_path(run_path / "lr_finder.csv") as tmp:
            curve.to_csv(tmp, index=False)
        plots.save(plots.lr_finder_curve(curve["learning_rate"], curve["smoothed_loss"], suggestion=suggestion,
                                         raw_losses=curve["loss"],
                                         title=f"Learning-rate finder: {config.name or config.model} on {data.name}"),
                   run_path / "plots" / "lr_finder.png")
        finite = curve[np.isfinite(curve["smoothed_loss"])]
        lowest = finite.loc[finite["smoothed_loss"].idxmin()] if len(finite) else None
        results = {"suggested_learning_rate": suggestion, "suggestion_rule": SUGGESTION_RULE,
                   "min_smoothed_loss": math.nan if lowest is None else float(lowest["smoothed_loss"]),
                   "learning_rate_at_min_loss": math.nan if lowest is None else float(lowest["learning_rate"])}
        if not math.isfinite(suggestion):
            results["note"] = _no_suggestion_note(curve, fit_info)
        return results


class LRRamp(keras.callbacks.Callback):
    """Raises the learning rate exponentially, one step at a time, records each step's loss,
    and stops the fit when the smoothed loss diverges.

    Step ``i`` (from 0) trains at ``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. The loss
    recorded is the step's own (the metrics are reset before each step, so Keras' running mean
    is that batch alone); it needs one step per compiled call. The fit stops after the step whose
    smoothed loss is not finite or exceeds ``diverge_factor`` times the lowest before it.

    Args:
        min_lr, max_lr: the first and last rate.
        steps: the ramp's planned length (the fit's ``steps_per_epoch``).
        smoothing: the exponential moving average's factor (the average is bias-corrected).
        diverge_factor: the divergence threshold, a multiple of the lowest smoothed loss.

    Example:
        >>> ramp = LRRamp(min_lr=1e-6, max_lr=1.0, steps=50)
        >>> model.fit(train.repeat(), epochs=1, steps_per_epoch=50, callbacks=[ramp])  # doctest: +SKIP
        >>> ramp.curve()  # step, learning_rate, loss, smoothed_loss  # doctest: +SKIP
    """

    def __init__(self, *, min_lr: float, max_lr: float, steps: int, smoothing: float = 0.98,
                 diverge_factor: float = 4.0):
        super().__init__()
        self.min_lr, self.max_lr, self.steps = min_lr, max_lr, steps
        self.smoothing, self.diverge_factor = smoothing, diverge_factor
        self.rows: list[dict[str, float]] = []
        self._average, self._best = 0.0, math.inf

    def rate(self, step: int) -> float:
        """The learning rate of step ``step`` (from 0)."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(self.steps - 1, 1))

    def on_train_begin(self, logs: dict | None = None) -> None:
        per_call = getattr(self.model, "steps_per_execution", 1)
        if per_call != 1:  # the hooks would run once per call: one rate, one loss for several steps
            raise ValueError(f"LRRamp needs a model compiled with one step per call; received "
                             f"steps_per_execution={per_call}. Compile it with steps_per_execution=1.")
        self.rows, self._average, self._best = [], 0.0, math.inf  # an instance can ramp again

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)  # under loss scaling
        optimizer.learning_rate.assign(self.rate(len(self.rows)))
        self.model.reset_metrics()  # the logged loss is then this batch's alone, not the running mean

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = len(self.rows)
        loss = float((logs or {})["loss"])
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        smoothed = self._average / (1.0 - self.smoothing ** (step + 1))  # bias-corrected, as fastai's
        self.rows.append({"step": step + 1, "learning_rate": self.rate(step), "loss": loss,
                          "smoothed_loss": smoothed})
        if not math.isfinite(smoothed) or smoothed > self.diverge_factor * self._best:
            self.model.stop_training = True
        self._best = min(self._best, smoothed)

    def curve(self) -> pd.DataFrame:
        """One row per step run: step, learning_rate, loss, smoothed_loss."""
        return pd.DataFrame(self.rows, columns=CURVE_COLUMNS)


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


def _no_suggestion_note(curve: pd.DataFrame, fit_info: dict[str, Any]) -> str:
    """Why ``suggest_valley`` gave no rate: a ramp stopped by its loss before the valley could show
    (not finite, or past ``diverge_factor``: the rates start too high, and more steps would only
    reach them later), or a ramp that ran every step and was too short (run more steps)."""
    if fit_info["stopped_early"] and len(curve):
        last = curve.iloc[-1]
        how = "was not finite" if not math.isfinite(float(last["smoothed_loss"])) else "diverged"
        return (f"no suggestion: the loss {how} at step {int(last['step'])} of {fit_info['steps_planned']} "
                f"(learning rate {float(last['learning_rate']):.3g}), before the curve could show a valley. "
                f"Lower min_lr and max_lr, or look for NaN in the data or the model")
    return ("no suggestion: the curve has too few points once its first tenth and last 5 points are left "
            "out; run more steps")


def _one_pass(dataset, declared: int | None) -> int:
    steps = steps_per_epoch(dataset, declared)
    if not steps:
        raise ValueError("steps=None runs one pass over the training split, but its length is unknown; give steps.")
    return steps


def _config_and_task(config: Any, overrides: dict[str, Any]) -> tuple[BaseConfig, Task]:
    """The configuration (overrides applied, prepared as its task prepares it: offline weights
    resolved) and its task's runner plug-in (``lab.tasks.TASKS``)."""
    config = config_for(config, overrides)
    if config.task == "instance":
        raise TypeError("find_learning_rate does not take an instance-segmentation configuration: E7's Mask R-CNN "
                        "trains through tf_keras, which the ramp does not drive.")
    entry = TASKS[config.task]
    return entry.prepared(config), entry.runner_task


def _check_settings(min_lr: float, max_lr: float, steps: int | None, smoothing: float, diverge_factor: float) -> None:
    for key, value in (("min_lr", min_lr), ("max_lr", max_lr), ("diverge_factor", diverge_factor)):
        # Finite too: a ramp to inf is inf (or NaN) from its first steps, and would be recorded
        # as a completed ramp that only needed more steps.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{key} must be a finite positive number, received {key}={value!r}.")
    if not min_lr < max_lr:
        raise ValueError(f"min_lr must be below max_lr, received min_lr={min_lr}, max_lr={max_lr}.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
        raise ValueError(f"steps must be an integer of at least 2 (or None for one pass), received steps={steps!r}.")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), received smoothing={smoothing!r}.")
    if diverge_factor <= 1.0:
        raise ValueError(f"diverge_factor must be above 1 (4: stop when the loss is 4 times its minimum), received "
                         f"diverge_factor={diverge_factor!r}.")


__all__ = ["LRFinder", "LRFinderResult", "LRRamp", "SUGGESTION_RULE", "find_learning_rate", "suggest_valley"]
