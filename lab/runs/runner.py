"""The life of every run, whatever its task: ``run(config, task)``.

One run reads top to bottom: load the data, seed everything, let the task build, compile and
plan the fit (a configuration it refuses raises here, before anything is written), open a run
folder, fit with the kit's callbacks (timer, divergence, best weights,
early stopping, checkpoint, the epoch line), restore the best weights, let the task evaluate
and plot, then publish the record, or record the failure. The task (classification in
``lab.tasks.classification``, segmentation and reconstruction in ``lab.tasks.segmentation.tasks``) plugs in
only what differs: its builder, loss and metrics, pipelines, evaluation and plots.

What the run does with the planned model is its ``Mode``: ``TRAINING`` (the default) fits the
plan's phases and lets the task evaluate; the learning-rate finder (``lab.runs.lr_finder``) is another
mode of the same life, one ramp phase and the finder's own result in place of evaluation.

The policies every run shares live here, once:

* **Record or discard.** A run is written into a partial folder and published whole
  (``lab.runs.records.RunWriter``); an exception records it as ``failed`` (and re-raises unless the
  caller goes on); Ctrl-C discards the partial folder.
* **Chief only.** Every worker of a multi-worker run trains the same model; only the chief
  keeps the record. The others write into a temporary folder that is deleted when they end.
* **Steps per call.** Keras 3 fails with several replicas and more than one step per
  compiled call (keras-team/keras#19246), so such runs compile with one step per call; the
  record's ``steps_per_execution`` metric says which value was used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import shutil
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lab import __version__
from lab.system import hardware, tf_memory
from lab.config import schedules
from lab.runs import tensorboard
from lab.runs.callbacks import DivergenceMonitor, EpochLogLine, EpochTimer, RestoreBestWeights
from lab.config import BaseConfig
from lab.runs.records import RECORD_VERSION, RunWriter, read_history


@dataclasses.dataclass
class RunResult:
    """What a run returns: where its record is, and its contents in memory.

    ``run_dir`` is None on a worker of a multi-worker run that is not the chief (its record
    is not kept).
    """

    run_dir: Path | None
    config: BaseConfig
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model | None

    @property
    def status(self) -> str:
        return self.metrics["status"]


@dataclasses.dataclass
class Phase:
    """One ``fit`` call: what it trains, for how many epochs, and what to do before it.

    Args:
        epochs: epochs of this phase.
        fitted: the model ``fit`` trains: the run's model, or its head alone on cached features.
        prepare: called inside the strategy scope before the fit (set what trains, compile);
            returns facts recorded for the phase (stages, learning rate).
        steps_per_epoch: for datasets that hold several epochs (augmented feature passes).
    """

    epochs: int
    fitted: keras.Model
    prepare: Callable[[], dict[str, Any]] | None = None
    steps_per_epoch: int | None = None


@dataclasses.dataclass
class FitPlan:
    """What a task hands the runner to fit.

    Args:
        model: the run's model (evaluated, saved).
        train, val: the training and validation pipelines.
        phases: one or more fits in sequence (progressive unfreezing has several).
        class_weight: Keras' per-class loss weights, or None.
        checkpoint: save ``model`` at each best epoch while fitting; False when ``fitted`` is
            not ``model`` (a head on cached features): the model is saved after fitting.
        setup_seconds: time spent preparing the fit (filling a feature cache), counted as
            training time.
        facts: added to the run's metrics (how the fit was done).
        state: anything the task's evaluation needs from planning (cached features).
        model_file: the file ``model.save`` writes in the run folder (E7's tf_keras Mask R-CNN
            saves its weights alone).
    """

    model: keras.Model
    train: tf.data.Dataset
    val: tf.data.Dataset
    phases: list[Phase]
    class_weight: dict[int, float] | None = None
    checkpoint: bool = True
    setup_seconds: float = 0.0
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    state: Any = None
    model_file: str = "model.keras"


class Task(Protocol):
    """What differs between tasks: a task's plug-in (``lab.tasks.TASKS`` names each task's). The
    runner calls these in this order; sweeps and searches also call ``load_data`` and ``check``."""

    def check(self, config: BaseConfig, data: Any) -> None:
        """Builds the configuration's model once and throws it away, so that a value only the
        builder refuses stops a sweep or a search before its first run."""

    def load_data(self, config: BaseConfig) -> Any:
        """The data the configuration names."""

    def describe(self, config: BaseConfig, data: Any) -> dict[str, Any]:
        """Facts for the record's config.json besides the configuration (input shape...)."""

    def plan(self, config: BaseConfig, data: Any) -> FitPlan:
        """Builds and compiles the model (inside the strategy scope) and makes the pipelines."""

    def chance(self, config: BaseConfig, data: Any) -> dict[str, float]:
        """What an uninformed model scores, as ``DivergenceMonitor``'s ``chance_accuracy``,
        ``accuracy_margin``, ``baseline_loss`` and ``val_examples`` (empty: no run is judged
        stalled, only a loss that is not finite or grows is divergence)."""

    def log_line(self, epochs: int) -> keras.callbacks.Callback:
        """The per-epoch line printed when ``verbose``."""

    def evaluate(self, plan: FitPlan, config: BaseConfig, data: Any, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """Scores the restored best model on every split; writes predictions and plots."""


class Mode(Protocol):
    """What a run does with its planned model. The runner calls these in this order.

    ``TRAINING``, the default, fits the plan's phases with the kit's callbacks and lets the task
    evaluate. A mode of another ``kind`` (``lab.runs.lr_finder.LRFinder``) is recorded as such: its
    config.json and metrics.json say ``kind``, its tag is the kind (``lr_finder`` becomes
    ``lr-finder``) and prefixes its default name, config.json keeps its ``settings`` under the
    kind's name, and its ``config_hash`` covers them (the training run's hash is kept as
    ``run_config_hash``), so a sweep that resumes by hash never takes it for a training run.
    It writes no TensorBoard HParams session: that dashboard compares training runs.
    """

    kind: str | None
    settings: dict[str, Any]

    def planned(self, config: BaseConfig) -> BaseConfig:
        """The configuration the task plans with (the record keeps ``config`` itself)."""

    def fit(self, config: BaseConfig, task: Task, data: Any, plan: FitPlan, strategy, run_path: Path
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Trains the planned model; returns the run's history and the facts of the fit."""

    def evaluate(self, plan: FitPlan, config: BaseConfig, task: Task, data: Any, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        """The run's results, besides the fit's facts; writes its files into ``run_path``."""


class Training:
    """The default ``Mode``: fit the plan's phases, restore the best epoch, let the task evaluate."""

    kind = None
    settings: dict[str, Any] = {}

    def planned(self, config: BaseConfig) -> BaseConfig:
        return config

    def fit(self, config: BaseConfig, task: Task, data: Any, plan: FitPlan, strategy, run_path: Path
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
        return _fit(config, task, data, plan, strategy, run_path)

    def evaluate(self, plan: FitPlan, config: BaseConfig, task: Task, data: Any, history: pd.DataFrame,
                 fit_info: dict[str, Any], run_path: Path) -> dict[str, Any]:
        return task.evaluate(plan, config, data, history, fit_info, run_path)


TRAINING = Training()


def run(config: BaseConfig, task: Task, *, data: Any = None, raise_on_error: bool = True,
        mode: Mode = TRAINING) -> RunResult:
    """Trains one model as the configuration says and writes its run record.

    Args:
        config: a validated configuration.
        task: what differs for this kind of model (see ``Task``).
        data: already loaded data (otherwise ``task.load_data(config)``).
        raise_on_error: re-raise an exception during training after recording the run as
            ``failed`` (sweeps pass False to go on with the next run).
        mode: what the run does with the planned model (see ``Mode``): train it (the default)
            or, for instance, ramp its learning rate (``lab.runs.lr_finder``).

    Returns:
        A RunResult; ``status`` is one of ``lab.runs.records.STATUSES``: "completed", "stalled" or
        "diverged" (recorded, not raised: ``lab.runs.callbacks.DivergenceMonitor``), or "failed".
        Its ``history`` is what the mode's fit returns (per epoch; per step for the finder).

    Raises:
        ValueError, FileNotFoundError...: a configuration the task refuses while building the
            model, before anything is written (whatever ``raise_on_error`` says).
    """
    if data is None:
        data = task.load_data(config)
    elif hasattr(task, "adopt_data"):
        # Data passed in may still be read another way (classification: streamed from TFRecords).
        data = task.adopt_data(config, data)
    # The record names the data the run trains on. Data passed in (``from_arrays``, a dataset
    # loaded by hand) may not be what the configuration's ``dataset`` names: the record then
    # says what it is, and the hash covers its content, so runs on different data never share one.
    used = data.source.get("loaded_as", data.name)
    if used != config.dataset:
        config = config.replace(dataset=used)
    tag = None if mode.kind is None else mode.kind.replace("_", "-")
    name = config.name or "-".join(part for part in (tag, config.model, data.name) if part)
    keras.backend.clear_session()  # free the previous run's graphs and layers (long sweeps)
    seed_everything(config.seed, config.deterministic)
    run_hash = config.config_hash(data)
    record_config = {
        **config.to_dict(),
        "record_version": RECORD_VERSION,
        "task": config.task,
        "config_hash": run_hash,
        **_kind_record(mode, run_hash),
        "data": data_record(data),
        **task.describe(config, data),
        # What mixed_precision="auto" (or True) meant on this machine: float32, mixed_float16...
        "environment": {**environment(), "dtype_policy": hardware.policy_name(config.mixed_precision)},
    }
    # The model is built and compiled (and a feature cache filled) before the run folder exists:
    # a configuration the builder refuses (an unknown option value, a model too large for its
    # input, weights that cannot be had) raises here, and a refused configuration writes nothing.
    strategy = hardware.get_strategy(config.distribute)
    with tf_memory.released_graphs(), hardware.precision(config.mixed_precision), strategy.scope():
        planned = mode.planned(config)
        plan = task.plan(planned, data)
        plan.facts["steps_per_execution"] = steps_per_execution(planned)
    metrics: dict[str, Any] = {"name": name, "dataset": data.name, "model": config.model, "task": config.task,
                               "tags": [*config.tags, *([tag] if tag else [])],
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if mode.kind is not None:
        metrics["kind"] = mode.kind
    with _reports_dir(config) as reports_dir:
        writer = RunWriter(record_config, name=name, reports_dir=reports_dir)
        try:
            with tf_memory.released_graphs():  # TensorFlow would keep every run's traced graphs (lab.system.tf_memory)
                history, fit_info = mode.fit(config, task, data, plan, strategy, writer.path)
            metrics |= fit_info
            metrics |= mode.evaluate(plan, config, task, data, history, fit_info, writer.path)
            model = plan.model
            writer.config["params"] = metrics["params"] = int(model.count_params())
            metrics["trainable_params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            if mode.kind is None:
                _log_run_end(config, writer, metrics)
        except KeyboardInterrupt:
            writer.discard()  # nothing half-written is left for a later run to trust
            raise
        except Exception as error:  # recorded as a failed run; re-raised unless the caller goes on
            metrics |= {"status": "failed", "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc()}
            history = read_history(writer.path)
            if mode.kind is None:
                _log_failed_run_end(config, writer, metrics)
            run_dir = writer.publish(finite_metrics(metrics))
            if raise_on_error:
                raise
            return RunResult(_kept(run_dir, reports_dir, config), config, finite_metrics(metrics), history, None)
        run_dir = writer.publish(finite_metrics(metrics))
        return RunResult(_kept(run_dir, reports_dir, config), config, finite_metrics(metrics), history, model)


def _kind_record(mode: Mode, run_hash: str) -> dict[str, Any]:
    """What config.json says of a run of another kind than training (see ``Mode``)."""
    if mode.kind is None:
        return {}
    settings = {mode.kind: mode.settings}
    return {"kind": mode.kind, **settings, "run_config_hash": run_hash,
            "config_hash": hashlib.sha256(json.dumps({"run": run_hash, **settings}, sort_keys=True)
                                          .encode()).hexdigest()[:12]}


def data_record(data: Any) -> dict[str, Any]:
    """The record's ``data`` section: the data's summary, where it came from, its content hash,
    and whether it was read in memory or streamed from TFRecords (and why)."""
    return data.summary() | {"source": data.source, "content_sha256": data.content_hash(),
                             "access": getattr(data, "access", {"path": "memory"})}


def _fit(config: BaseConfig, task: Task, data: Any, plan: FitPlan, strategy, run_path: Path
         ) -> tuple[pd.DataFrame, dict]:
    """Runs the plan's phases with the kit's callbacks and restores the best epoch's weights;
    returns the history and the facts of the fit."""
    epochs = sum(phase.epochs for phase in plan.phases)
    watch = _Watch(config, task.chance(config, data))
    callbacks = watch.callbacks(config, run_path, checkpoint=plan.checkpoint)
    if config.verbose:
        callbacks.append(task.log_line(epochs))
    started = time.perf_counter()
    try:
        history, phases = _run_phases(plan, watch, callbacks, strategy, run_path, config)
    finally:
        watch.close()  # a fit that raised never closed its TensorBoard event files
    if config.save_model and not plan.checkpoint:
        plan.model.save(run_path / plan.model_file)  # the best weights, restored, in the whole model
    best, divergence, seconds = watch.best, watch.divergence, watch.seconds
    info = {
        "status": divergence.status or "completed",
        "divergence_reason": divergence.reason,
        "epochs_run": len(history),
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "stopped_early": len(history) < epochs and not divergence.status,
        # Honest timing: what preparing the fit cost (a feature cache) is part of training.
        "train_seconds": time.perf_counter() - started + plan.setup_seconds,
        # The first epoch includes tracing and compilation; the steady-state figure excludes it.
        "seconds_per_epoch": float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else None,
        "seconds_first_epoch": seconds[0] if seconds else None,
        **plan.facts,
    }
    if (chance := divergence.chance_record()) is not None:
        info["chance"] = chance
    if divergence.note is not None:  # a validation split too small to judge learning by
        info["status_note"] = divergence.note
    if phases:
        info["phases"] = phases
    if best.best_epoch is not None:
        row = history.iloc[best.best_epoch]
        info |= {f"best_epoch_{key}": float(row[key]) for key in history.columns
                 if key not in ("epoch", "epoch_seconds", "phase", "learning_rate")}
    return history, info


class _Watch:
    """The callbacks whose state the record reads: the epoch timer, divergence, the best epoch."""

    def __init__(self, config: BaseConfig, chance: dict[str, float]):
        self.timer = EpochTimer()
        self.divergence = DivergenceMonitor(**chance, patience=config.divergence_patience)
        self.best = RestoreBestWeights(monitor=config.monitor, mode=config.monitor_mode)
        self.seconds: list[float] = []
        self.tensorboard: keras.callbacks.TensorBoard | None = None

    def callbacks(self, config: BaseConfig, run_path: Path, *, checkpoint: bool) -> list[keras.callbacks.Callback]:
        """These three, plus early stopping, the best-model checkpoint and the TensorBoard
        scalars when configured."""
        callbacks: list[keras.callbacks.Callback] = [self.timer, self.divergence, self.best]
        if config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=config.monitor, mode=config.monitor_mode,
                                                           patience=config.early_stopping_patience))
        if config.save_model and checkpoint:
            callbacks.append(keras.callbacks.ModelCheckpoint(str(run_path / "model.keras"), monitor=config.monitor,
                                                             mode=config.monitor_mode, save_best_only=True))
        # Other workers of a multi-worker run write into a folder that is deleted: they log nothing.
        if config.tensorboard and hardware.is_chief():
            self.tensorboard = tensorboard.epoch_callback(run_path)
            callbacks.append(self.tensorboard)
        return callbacks

    def close(self) -> None:
        """Closes the TensorBoard event files, if any."""
        if self.tensorboard is not None:
            self.tensorboard.close()


def _run_phases(plan: FitPlan, watch: _Watch, callbacks: list, strategy, run_path: Path,
                config: BaseConfig) -> tuple[pd.DataFrame, list]:
    """Fits the plan's phases in turn (one history, epochs numbered across phases) and leaves
    the model at the best epoch of all; returns the history and, for several phases, their facts.

    The learning-rate schedule spans all phases: each phase's fresh optimizer gets the part of
    it that starts at the phase's first epoch (``lab.config.schedules``)."""
    histories, phases, epoch, best_accuracy = [], [], 0, -math.inf
    total_epochs = sum(phase.epochs for phase in plan.phases)
    overall = _Best(watch.best.mode)
    phased = len(plan.phases) > 1 or plan.phases[0].prepare is not None  # progressive unfreezing
    for index, phase in enumerate(plan.phases):
        facts = {}
        if phase.prepare is not None:
            with strategy.scope():
                facts = phase.prepare() or {}
        with strategy.scope():
            schedule = schedules.install(phase.fitted.optimizer, config, first_epoch=epoch, total_epochs=total_epochs,
                                         steps_per_epoch=schedules.steps_per_epoch(plan.train, phase.steps_per_epoch))
        csv = keras.callbacks.CSVLogger(str(run_path / "history.csv"), append=index > 0)
        fit = phase.fitted.fit(plan.train, validation_data=plan.val, initial_epoch=epoch, epochs=epoch + phase.epochs,
                               callbacks=[*ema_callbacks(phase.fitted), *callbacks,
                                          *schedules.schedule_callbacks(config, schedule), csv], verbose=0,
                               shuffle=False, class_weight=plan.class_weight, steps_per_epoch=phase.steps_per_epoch)
        history = pd.DataFrame(fit.history)
        if phased:
            history = history.assign(phase=index + 1)
            phases.append({"phase": index + 1, **facts, "epochs": len(history)})
        histories.append(history)
        watch.seconds += watch.timer.seconds
        overall.update(watch.best)  # Keras numbers epochs across fits, so best_epoch is the run's
        best_accuracy = max(best_accuracy, watch.divergence.best_accuracy)
        epoch += len(history)
        if watch.divergence.status:  # diverged or stalled: the next phase would not help
            break
    watch.divergence.finish(best_accuracy, epoch)  # "never learned" is judged over the whole run
    overall.restore(watch.best, plan.phases[-1].fitted if phased else None)
    return (pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()), phases


def ema_callbacks(model: keras.Model) -> list[keras.callbacks.Callback]:
    """Keras' ``SwapEMAWeights`` for a model whose optimizer averages its weights (``use_ema``),
    else none: a fresh one per fit, as each phase has a fresh optimizer.

    It goes before every other callback: with ``swap_on_epoch`` the averaged weights are in the
    model from validation through the end of the epoch, so the validation scores, the best
    epoch's weights (``RestoreBestWeights``), early stopping and the checkpoint are all the
    average's. When the fit ends, Keras' ``finalize_variable_values`` writes the averages into
    the model and ``RestoreBestWeights`` then loads the best epoch's averaged weights.
    """
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a loss scale
    if not getattr(optimizer, "use_ema", False):
        return []
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]


class _Best:
    """The best epoch over several fits (each fit restores only its own best)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.value, self.epoch, self.weights = (math.inf if mode == "min" else -math.inf), None, None

    def update(self, best: RestoreBestWeights) -> None:
        if best.best_epoch is not None and (best.best < self.value if self.mode == "min" else best.best > self.value):
            self.value, self.epoch, self.weights = best.best, best.best_epoch, best.best_weights

    def restore(self, best: RestoreBestWeights, model: keras.Model | None) -> None:
        """Makes ``best`` describe the overall best epoch and, after several fits, loads its weights."""
        best.best, best.best_epoch, best.best_weights = self.value, self.epoch, self.weights
        if model is not None and self.weights is not None:
            model.set_weights(self.weights)


def compile_options(config: BaseConfig) -> dict[str, Any]:
    """The ``model.compile`` arguments every task passes: XLA and steps per call. Call it
    inside the run's strategy scope."""
    return {"jit_compile": config.jit_compile, "steps_per_execution": steps_per_execution(config)}


def steps_per_execution(config: BaseConfig) -> int:
    """The configured steps per compiled call, or 1 under a strategy with several replicas
    (keras-team/keras#19246). Call it inside the run's strategy scope."""
    return config.steps_per_execution if tf.distribute.get_strategy().num_replicas_in_sync == 1 else 1


@contextlib.contextmanager
def _reports_dir(config: BaseConfig) -> Iterator[str | None]:
    """The chief's reports directory; a temporary one, deleted afterwards, on other workers."""
    if hardware.is_chief():
        yield config.reports_dir
        return
    scratch = tempfile.mkdtemp(prefix="lab-worker-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kept(run_dir: Path, reports_dir: str | None, config: BaseConfig) -> Path | None:
    """The published folder, or None where it is a worker's scratch copy about to be deleted."""
    return run_dir if reports_dir == config.reports_dir else None


def _log_run_end(config: BaseConfig, writer: RunWriter, metrics: dict[str, Any]) -> None:
    """Writes the run's HParams session, final metrics and figures into its TensorBoard folder
    (``lab.runs.tensorboard``), before the folder is published; the chief only."""
    if config.tensorboard and hardware.is_chief():
        tensorboard.write_run_end(writer.path, run_id=writer.run_id, config={**config.to_dict(), "task": config.task},
                                  metrics=finite_metrics(metrics))


def _log_failed_run_end(config: BaseConfig, writer: RunWriter, metrics: dict[str, Any]) -> None:
    """The same for a failed run, whose session says it failed. Writing the logs must not hide
    the error being recorded, so a failure here is a warning."""
    try:
        _log_run_end(config, writer, metrics)
    except Exception as error:  # the run's own error is what the record and the caller need
        warnings.warn(f"The TensorBoard logs of failed run {writer.run_id} could not be written: "
                      f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras; optionally makes TF ops deterministic.

    Determinism is what makes "same seed, same data, same result" hold on CPU. It is a
    process-wide switch, and Keras turns XLA off while it is on.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # Not public API, but the only way to switch determinism off again in a process
        # (a notebook that ran a deterministic run and now wants XLA).
        from tensorflow.python.framework import config as tf_config

        getattr(tf_config, "disable_op_determinism", lambda: None)()


def finite_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinity become None, so metrics.json is standard JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def environment() -> dict[str, str]:
    """The versions, device and CPU (``hardware.cpu_summary``) a run record names."""
    return {"lab": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "device": hardware.device_summary(),
            **hardware.cpu_summary()}


def epoch_line(epochs: int) -> keras.callbacks.Callback:
    """The E4 epoch line, the default ``Task.log_line``."""
    return EpochLogLine(epochs)
