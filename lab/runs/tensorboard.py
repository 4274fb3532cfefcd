"""TensorBoard logs for every run, and the HParams dashboard for sweeps, batches and searches.

Every run (``lab.runs.runner.run``) writes, inside its run folder, so that a discarded run discards
its logs too:

    <run>/tensorboard/              the run's HParams session: its configuration values, its final
                                    metrics as scalars, its status; the confusion matrix and
                                    sample-prediction figures as images
    <run>/tensorboard/train/        per-epoch scalars of training: epoch_loss, epoch_accuracy...,
                                    epoch_learning_rate (read from the optimizer), epoch_epoch_seconds
    <run>/tensorboard/validation/   per-epoch scalars of validation: epoch_loss, epoch_accuracy...

Epochs are numbered across the phases of a run (progressive unfreezing) as in history.csv:
step 0 is the first epoch. A sweep, a batch or a search also writes its experiment into its own
folder (``reports/sweeps/<name>/tensorboard/`` and so on): the HParams ``hparams_config`` (the
parameters that varied first, with their domains, and the metrics, test metrics included) and
one session per run, with the run's values, final metrics and curves, so that opening that folder
compares the runs; the runs of one configuration that differ only in their seed form one group,
named after the configuration, whose metrics TensorBoard averages (``write_experiment``).

How the HParams dashboard reads this (``tensorboard.plugins.hparams``): a TensorBoard run that
holds a session-start summary (``hp.hparams``) is a session; the scalars of the session's
folder and of its subfolders are its metrics (a metric's ``group`` is the subfolder); the
experiment is the first ``hparams_config`` summary found under the log directory, and without
one TensorBoard infers the parameters and metrics from the sessions. So
``tensorboard --logdir reports/runs`` compares every run by every configuration value, and
``tensorboard --logdir reports/sweeps/<name>`` one sweep by what it varied. With
``--logdir reports/`` every run is listed once (a run's session and its copy in an experiment
share the run id as their group, which TensorBoard shows as one row; seeds grouped in an
experiment are listed in their group and on their own), and TensorBoard takes the
columns of one of the experiments found. (Opened on its own, one run's ``tensorboard`` folder
shows its curves and images; its HParams row needs a parent folder such as ``reports/runs``,
since TensorBoard finds no metrics for a session at the root of the log directory.)

Only scalars and, at the end, a few images are written: no histograms, no graph, no profiler,
so logging costs next to nothing per epoch (``tensorboard=False`` in the configuration turns it
off). TensorFlow, Keras and TensorBoard are imported when something is written, not when this
module is (a batch imports it without TensorFlow).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lab.config import NOT_HASHED
from lab.runs.records import Collection, Run, summary_columns
from lab.tasks import TASKS

LOG_DIR = "tensorboard"  # a run's (and an experiment's) logs, inside its folder
CURVES = ("train", "validation")  # the per-epoch subfolders Keras' TensorBoard callback writes
HParamValue = bool | float | int | str


def log_dir(folder: str | os.PathLike) -> Path:
    """The TensorBoard folder of a run or an experiment folder."""
    return Path(folder) / LOG_DIR


# -- per-epoch scalars ---------------------------------------------------------------------------

def epoch_callback(run_path: str | os.PathLike) -> Any:
    """Keras' TensorBoard callback, limited to per-epoch scalars, writing into ``<run>/tensorboard``.

    Every value of the epoch's logs becomes a scalar (training under ``train/``, the ``val_``
    ones under ``validation/``), plus ``epoch_learning_rate``, which Keras reads from the
    optimizer itself (the rate in force at the end of the epoch, whatever schedule or callback
    set it). The step is the epoch's index as Keras numbers it across several ``fit`` calls
    (``initial_epoch``), so the phases of one run continue one curve. The same callback may be
    passed to several fits: each opens its own event files and closes them when it ends.

    Args:
        run_path: the run's folder (its partial folder while it trains).

    Returns:
        A ``keras.callbacks.TensorBoard`` without histograms, graph, images or profiler.
    """
    return _epoch_scalars_class()(log_dir=str(log_dir(run_path)))


@functools.cache
def _epoch_scalars_class() -> type:
    """The callback class, made on first use so that importing this module needs no Keras."""
    import keras

    class EpochScalars(keras.callbacks.TensorBoard):
        """Keras' TensorBoard callback writing only per-epoch scalars; ``close()`` ends its files."""

        def __init__(self, log_dir: str):
            super().__init__(log_dir=log_dir, histogram_freq=0, write_graph=False, write_images=False,
                             write_steps_per_second=False, update_freq="epoch", profile_batch=0,
                             embeddings_freq=0)

        # Keras' callback also has batch hooks (batch summaries, the profiler, the graph), idle
        # with these settings. Keras hands a batch's values to the callbacks asynchronously, and
        # without turning them into Python numbers at every step, only when no callback has batch
        # hooks (keras.callbacks.CallbackList): the base class' empty hooks keep it that way.
        on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
        on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
        on_test_batch_begin = keras.callbacks.Callback.on_test_batch_begin
        on_epoch_begin = keras.callbacks.Callback.on_epoch_begin  # steps per second only
        # Keras also writes each validation pass against the optimizer's step count
        # ("evaluation_loss_vs_iterations"). Every phase of a run compiles a fresh optimizer
        # whose count starts again at 0, which would draw those curves backwards; the epoch
        # scalars already hold the same values.
        on_test_begin = keras.callbacks.Callback.on_test_begin
        on_test_end = keras.callbacks.Callback.on_test_end

        def close(self) -> None:
            """Closes the event files (a fit that raised never reaches ``on_train_end``)."""
            for writer in self._writers.values():
                writer.close()
            self._writers = {}

    return EpochScalars


# -- hyperparameter values -------------------------------------------------------------------------

@functools.cache
def _field_names() -> frozenset[str]:
    """The configuration fields of every task (``lab.tasks.TASKS``)."""
    return frozenset(field.name for task in TASKS.values() for field in dataclasses.fields(task.config_class))


def _as_hparam(value: Any) -> HParamValue | None:
    """A value as TensorBoard can hold it: a bool, a number or a string (a list or a mapping as
    its JSON text), or None for "unset" (None, NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def hparam_values(config: Mapping[str, Any]) -> dict[str, HParamValue]:
    """The values of a run that the HParams dashboard shows.

    Args:
        config: a run's flat configuration (``config.to_dict()`` or a record's config.json).
            The fields that affect results are kept (not its name, tags, place or verbosity:
            a name differs in every run and would take one of the few columns TensorBoard
            shows at first); None means "the builder's default" and is left out (TensorBoard
            has no null).

    Returns:
        Name to a bool, number or string (lists as JSON text). A field that takes values of
        several kinds (``unfreeze``: 2 or "all") keeps each value's own kind here; an
        experiment writes such a field as text in all its runs (``write_experiment``), and
        TensorBoard does the same when it infers the parameters from the runs.
    """
    values: dict[str, HParamValue] = {}
    if config.get("task"):
        values["task"] = str(config["task"])
    for key, value in config.items():
        if key in _field_names() and key not in NOT_HASHED:
            converted = _as_hparam(value)
            if converted is not None:
                values[key] = converted
    return values


# -- the end of a run ------------------------------------------------------------------------------

def write_run_end(run_path: str | os.PathLike, *, run_id: str, config: Mapping[str, Any],
                  metrics: Mapping[str, Any], images: bool = True) -> Path:
    """Writes a run's HParams session, final metrics and figures into ``<run>/tensorboard``.

    Args:
        run_path: the run's folder (its partial folder, before it is published).
        run_id: the run's id (its published folder's name): the session's group, so that the
            copy of this session in a sweep's experiment is shown as the same run.
        config: the run's flat configuration (see ``hparam_values``).
        metrics: the run's metrics; every finite number becomes a scalar (``status`` says
            whether the session succeeded: "failed" is a failure, "stalled" and "diverged" results).
        images: also write the task's figures (``lab.tasks.TaskEntry.images``) found in
            ``<run>/plots``.

    Returns:
        The run's TensorBoard folder.
    """
    folder = log_dir(run_path)
    shown = TASKS[config["task"]].images if images and config.get("task") in TASKS else {}
    _write_session(folder, hparam_values(config), metrics, trial_id=run_id,
                   plots=Path(run_path) / "plots", images=shown)
    return folder


def _write_session(folder: Path, values: Mapping[str, HParamValue], metrics: Mapping[str, Any], *, trial_id: str,
                   plots: Path | None = None, images: Mapping[str, str] | None = None,
                   start_time: float | None = None) -> None:
    """Writes one HParams session into ``folder``: its values, its numeric metrics at the last
    epoch, the ``images`` (name: description) found in ``plots`` and its end status."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    step = _last_epoch(metrics)
    folder.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(folder))
    try:
        with writer.as_default():
            hp.hparams(dict(values), trial_id=trial_id, start_time_secs=start_time)
            for key, value in _numbers(metrics).items():
                tf.summary.scalar(key, value, step=step)
            for image, description in (images or {}).items():
                if plots is not None and (plots / f"{image}.png").exists():
                    _write_png(image, plots / f"{image}.png", step=step, description=description)
            status = api_pb2.STATUS_FAILURE if metrics.get("status") == "failed" else api_pb2.STATUS_SUCCESS
            tf.summary.experimental.write_raw_pb(hparams_summary.session_end_pb(status).SerializeToString(), step=0)
    finally:
        writer.close()


def _write_png(tag: str, path: Path, *, step: int, description: str) -> None:
    """Writes a saved PNG as an image summary, its bytes as they are.

    ``tf.summary.image`` would decode and encode the figure again (about 0.1 s per figure on
    a CPU); the image plugin stores ``[width, height, PNG bytes]`` (``tensorboard.plugins.image``),
    so the record's own file is written in that form: the dashboard shows exactly that figure.
    """
    import tensorflow as tf
    from PIL import Image
    from tensorboard.plugins.image import metadata as image_metadata

    with Image.open(path) as opened:  # reads the header only
        width, height = opened.size
    tensor = tf.constant([str(width).encode(), str(height).encode(), path.read_bytes()])
    tf.summary.write(tag, tensor, step=step,
                     metadata=image_metadata.create_summary_metadata(display_name=None, description=description))


def _last_epoch(metrics: Mapping[str, Any]) -> int:
    """The step of the final values: the last epoch's index (0 when no epoch ran)."""
    epochs = metrics.get("epochs_run")
    return max(int(epochs) - 1, 0) if isinstance(epochs, (int, float)) and math.isfinite(epochs) else 0


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric metrics (not flags such as ``stopped_early``)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# -- experiments: sweeps, batches, searches ---------------------------------------------------------

def write_hparams(collection: Collection) -> Path | None:
    """Writes the HParams experiment of a collection (a sweep, batch, search or ablation as
    ``lab.runs.records.load_collection`` reads it) into ``<its folder>/tensorboard``.

    What it varied are the parameters, first, with their values (a search: its space's domains)
    as declared domains; a member's own ``parameters`` that are not configuration fields (a
    batch's notebook switches) are shown too; a search's objective is the first metric.

    Returns:
        ``<folder>/tensorboard``, or None when no member run logged to TensorBoard.
    """
    domains = {key: (values["min"], values["max"]) if isinstance(values, dict) else list(values)
               for key, values in collection.varied.items()}
    parameters = {m["run_id"]: {k: v for k, v in m["parameters"].items() if k in collection.varied}
                  for m in collection.members if m.get("run_id") and m.get("parameters")}
    return write_experiment(collection.folder, collection.runs(), hparams=list(collection.varied), domains=domains,
                            parameters=parameters, metrics=[collection.objective[0]] if collection.objective else [])


def write_experiment(folder: str | os.PathLike, runs: Sequence[Run], *, hparams: Iterable[str] = (),
                     domains: Mapping[str, Any] | None = None,
                     parameters: Mapping[str, Mapping[str, Any]] | None = None,
                     metrics: Iterable[str] = ()) -> Path | None:
    """Writes an experiment's HParams dashboard into ``<folder>/tensorboard``, replacing it whole.

    The folder gets the ``hparams_config`` summary (the parameters that vary and the metrics)
    and one session per run, ``<folder>/tensorboard/<run_id>/``, written from the run's record
    (its values, final metrics and status) with a copy of its per-epoch curves where it has
    them. Opening the folder in TensorBoard therefore compares the runs on its own.

    The parameters are the declared ``hparams`` and the other configuration fields whose values
    differ, not the runs' names (a name differs in every run: TensorBoard shows only the first
    few parameters until more are chosen, differing ones first, then by name, so a name hid the
    fifth varied setting); those whose values differ are marked so. Runs that differ only in
    their seed (repeats of one configuration) share one session group, named after the
    configuration (the runs' name): TensorBoard shows the group as one row with its metrics
    averaged over the seeds, and ``seed`` is then not a parameter (a group row would show one
    seed of several). Other runs are each their own group, named by the run id.

    Nothing is written when no run logged to TensorBoard (``tensorboard=False`` in all of
    them, or records older than this module).

    Args:
        folder: the sweep's, batch's or search's folder.
        runs: its runs, in order.
        hparams: the parameters the experiment varies (a sweep's keys, a search's space).
            Configuration fields whose values differ between the runs are added after them.
        domains: a parameter's declared domain: ``(low, high)`` (an interval: of integers when
            both are ints) or a list of values; widened to the values the runs took (a
            conditional search value that was inactive takes the base configuration's).
            Default: the values the runs took.
        parameters: values that are not configuration fields, per run id (a batch's notebook
            parameters); a configuration field of the same name keeps the run's own value.
        metrics: metrics shown first (a search's objective); the runs' summary columns follow,
            then every other numeric test metric the runs recorded.

    Returns:
        ``<folder>/tensorboard``, or None when nothing was written.
    """
    runs = list(runs)
    if not any(run.config.get("tensorboard") for run in runs):
        return None
    from tensorboard.plugins.hparams import api as hp

    domains = dict(domains or {})
    parameters = parameters or {}
    sessions = {run.run_id: {**_parameter_values(parameters.get(run.run_id) or {}), **hparam_values(run.config)}
                for run in runs}
    groups = _configuration_groups(runs, sessions)
    differing = [key for key in sorted(_field_names() - set(NOT_HASHED))
                 if len({json.dumps(values.get(key), sort_keys=True) for values in sessions.values()}) > 1]
    seeds = ["seed"] if "seed" in differing and len(set(groups.values())) == len(runs) else []
    names = list(dict.fromkeys([*hparams, *(key for key in differing if key != "seed"), *seeds]))
    for name in names:
        declared = domains.get(name)
        choices = [_as_hparam(v) for v in declared] if isinstance(declared, list) else []
        taken = [values[name] for values in sessions.values() if name in values]
        if len({_kind_of(v) for v in [*taken, *choices] if v is not None}) > 1:
            # TensorBoard gives one type to a parameter: values of several kinds (unfreeze 2 or
            # "all", a notebook switch 1 or "on") are all written as text.
            for values in sessions.values():
                if name in values and not isinstance(values[name], str):
                    values[name] = json.dumps(values[name])
            if choices:
                domains[name] = [v if isinstance(v, str) or v is None else json.dumps(v) for v in choices]
    config = [hp.HParam(name, _domain(hp, [values[name] for values in sessions.values() if name in values],
                                      domains.get(name)))
              for name in names]
    shown = _metric_names(runs, metrics)
    target = log_dir(folder)
    building = target.parent / f".{LOG_DIR}-new-{uuid.uuid4().hex[:8]}"
    try:
        _write_config(building, config, [hp.Metric(name, display_name=name) for name in shown],
                      differ=[name for name in names if len({json.dumps(values.get(name), sort_keys=True)
                                                             for values in sessions.values()}) > 1])
        for run in runs:
            session = building / run.run_id
            _write_session(session, sessions[run.run_id], run.metrics, trial_id=groups[run.run_id],
                           start_time=_created(run.metrics))
            for curves in CURVES:
                source = log_dir(run.path) / curves
                if source.is_dir():
                    shutil.copytree(source, session / curves)
        _replace_folder(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # a half-built experiment is never left behind
        raise
    return target


def _configuration_groups(runs: Sequence[Run], sessions: Mapping[str, Mapping[str, HParamValue]]) -> dict[str, str]:
    """Each run's session group: its configuration's name when other runs differ from it only in
    the seed (TensorBoard then averages them in one row), else its run id."""
    def configuration(run: Run) -> str:
        return json.dumps({k: v for k, v in sessions[run.run_id].items() if k != "seed"}, sort_keys=True)

    members: dict[str, list[Run]] = {}
    for run in runs:
        members.setdefault(configuration(run), []).append(run)
    groups = {}
    for repeats in members.values():
        for run in repeats:
            groups[run.run_id] = repeats[0].name if len(repeats) > 1 else run.run_id
    return groups


def _parameter_values(parameters: Mapping[str, Any]) -> dict[str, HParamValue]:
    """An experiment's own values that are not configuration fields, as TensorBoard holds them."""
    values = {key: _as_hparam(value) for key, value in parameters.items() if key not in _field_names()}
    return {key: value for key, value in values.items() if value is not None}


def _kind_of(value: HParamValue) -> str:
    return "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "number"


def _domain(hp: Any, taken: list[HParamValue], declared: Any) -> Any:
    """The HParams domain of one parameter: the declared one widened to the values taken."""
    if isinstance(declared, tuple) and len(declared) == 2 and all(isinstance(v, (int, float)) for v in declared) \
            and all(_kind_of(v) == "number" for v in taken):  # an interval holds numbers only
        low, high = min([declared[0], *taken]), max([declared[1], *taken])
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            return hp.IntInterval(int(low), int(high))
        return hp.RealInterval(float(low), float(high))
    choices = [_as_hparam(v) for v in declared] if isinstance(declared, list) else []
    values = [v for v in choices if v is not None] + list(taken)
    if not values:
        return None
    if {_kind_of(v) for v in values} == {"number"}:
        values = [float(v) for v in values]  # ints and floats in one domain
    return hp.Discrete(list(dict.fromkeys(values)))


def _metric_names(runs: Sequence[Run], first: Iterable[str]) -> list[str]:
    """The metrics of the experiment: ``first``, then the runs' summary columns that are numbers,
    then the other numeric test metrics (balanced accuracy, macro F1, per-class IoU...)."""
    numeric = {key for run in runs for key in _numbers(run.metrics)}
    tests = sorted(key for key in numeric if key.startswith("test_"))
    return [name for name in dict.fromkeys([*first, *summary_columns(runs), *tests]) if name in numeric]


def _write_config(folder: Path, hparams: list, metrics: list, differ: Iterable[str] = ()) -> None:
    """Writes the experiment's ``hparams_config``, the parameters named in ``differ`` marked as
    differing between the runs.

    TensorBoard lists an experiment's parameters differing first, then by name, and shows the
    first few until more are chosen; ``hp.hparams_config`` cannot mark a parameter as differing
    (TensorBoard computes the mark only for parameters it infers), so the summary is written
    from its protocol buffer with the mark set.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2, summary_v2

    differ = set(differ)
    summary = summary_v2.hparams_config_pb(hparams=hparams, metrics=metrics)
    value = summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in differ
    value.metadata.plugin_data.content = data.SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(folder))
    try:
        with writer.as_default(), tf.summary.experimental.summary_scope("hparams_config"):
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
    finally:
        writer.close()


def _created(metrics: Mapping[str, Any]) -> float | None:
    """When the run started, from its ``created`` metric (local time), as seconds since the epoch."""
    try:
        return time.mktime(time.strptime(str(metrics.get("created")), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _replace_folder(new: Path, target: Path) -> None:
    """Puts the complete ``new`` folder at ``target``; the previous one is removed afterwards.

    A folder cannot be renamed over a non-empty one, so the old one is first moved aside: at
    every moment ``target`` is either the old complete folder, absent, or the new complete one.
    """
    for leftover in target.parent.glob(f".{LOG_DIR}-old-*"):  # an earlier swap that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    aside = target.parent / f".{LOG_DIR}-old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)
