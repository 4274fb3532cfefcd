"""keras-tuner pieces: objectives named as in the run records, oracles by name, and a tuner
whose trials are ordinary runs of any task (``lab.run``).

keras-tuner does the searching (its RandomSearch, Hyperband and BayesianOptimization oracles,
its resumable project folder, its chief/worker mode); the kit only supplies what a trial is:

* ``RunHyperModel.build(hp)`` declares the space's hyperparameters and returns the trial's
  configuration (the base configuration with the trial's values), not a Keras model.
* ``RunTuner.run_trial`` trains that configuration with ``lab.run``, which writes the run
  record, and reports the record's metrics to the oracle.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import keras_tuner

from lab.runs import training
from lab.config import BaseConfig
from lab.data.datasets import data_key
from lab.runs.records import RESULT_STATUSES, Run, load_run, load_runs
from lab.tasks import TASKS
from lab.system.tf_memory import released_graphs
from lab.studies.tuning.space import LAB_PREFIX, TUNER_PREFIX, Entry, declare, space_values

TUNERS = ("random", "hyperband", "bayesian")
SEARCH_ID = LAB_PREFIX + "search_id"  # a Fixed hyperparameter: how workers learn the chief's search


# What every run record holds besides its task's scores: how the fit went and what it cost.
RUN_FACTS = ("best_epoch", "epochs_run", "seconds_per_epoch", "seconds_first_epoch", "train_seconds", "params",
             "trainable_params")


def record_metrics(task: str = "classification") -> list[str]:
    """The numeric metrics a run record of the task holds (its ``metrics.json``), the names an
    objective may use: the task's monitors (``lab.tasks.TASKS``) and their training-split
    twins, the same at the best epoch, its summary columns and the facts of every run."""
    entry = TASKS[task]
    twins = [f"train_{m[len('val_'):]}" for m in entry.monitors if m.startswith("val_")]
    best_epoch = [f"best_epoch_{m}" for m in (*twins, *entry.monitors)]
    scores = [c for c in entry.summary_columns if c not in ("status", "all_background")]
    names = [*entry.monitors, *twins, *best_epoch, *scores, *RUN_FACTS]
    return list(dict.fromkeys(name.replace("best_epoch_train_", "best_epoch_") for name in names))


def infer_direction(name: str) -> str | None:
    """"min" for losses, times and sizes, "max" for accuracies and scores, None when unsure."""
    if name.endswith("loss") or "seconds" in name or name.endswith("params") or name == "epochs_run":
        return "min"
    if any(word in name for word in ("accuracy", "auc", "f1", "precision", "recall", "iou", "dice")):
        return "max"
    return None


def make_objective(objective: str | tuple | keras_tuner.Objective, task: str = "classification"
                   ) -> keras_tuner.Objective:
    """An objective from a record metric's name, ``(name, "min"|"max")`` or a keras_tuner.Objective,
    for a search of runs of ``task``.

    Raises:
        ValueError: a name that is not a metric of the run records (they are listed), a test
            metric (choosing hyperparameters on the test split makes its score optimistic), an
            unknown direction, or a name whose direction cannot be inferred.
    """
    if isinstance(objective, keras_tuner.Objective):
        name, direction = objective.name, objective.direction
    elif isinstance(objective, (tuple, list)) and len(objective) == 2:
        name, direction = objective
    elif isinstance(objective, str):
        # A monitor's direction is its task's (lab.tasks); other names are read by their form.
        name, direction = objective, TASKS[task].monitors.get(objective) or infer_direction(objective)
    else:
        raise ValueError(f"objective must be a metric name, (name, 'min' or 'max') or a keras_tuner.Objective; "
                         f"received {objective!r}.")
    known = record_metrics(task)
    if name.startswith("test_"):
        validation = ", ".join(m for m in known if m.startswith("val_"))
        raise ValueError(f"The objective {name!r} would choose hyperparameters on the test split, which then no "
                         f"longer measures unseen data. Use a validation metric: {validation}.")
    if name not in known:
        raise ValueError(f"The objective {name!r} is not a metric of {task} run records. Metrics: {', '.join(known)}.")
    if direction is None:
        raise ValueError(f"Cannot tell whether {name!r} should be minimised or maximised: pass "
                         f"objective=({name!r}, 'min') or ({name!r}, 'max').")
    if direction not in ("min", "max"):
        raise ValueError(f"An objective's direction is 'min' or 'max', received {direction!r} for {name!r}.")
    return keras_tuner.Objective(name, direction)


def make_oracle(tuner: str, objective: keras_tuner.Objective, *, max_trials: int, seed: int, search_id: str,
                max_epochs: int, factor: int = 3, hyperband_iterations: int = 1,
                max_consecutive_failed_trials: int = 3) -> keras_tuner.Oracle:
    """keras-tuner's oracle for a tuner name ("random", "hyperband" or "bayesian").

    Hyperband decides its own number of trials from ``max_epochs`` and ``factor``;
    ``max_trials`` caps it as it caps the others.
    """
    if tuner not in TUNERS:
        raise ValueError(f"Unknown tuner {tuner!r}. Available tuners: {', '.join(TUNERS)}.")
    hyperparameters = keras_tuner.HyperParameters()
    hyperparameters.Fixed(SEARCH_ID, search_id)
    # keras-tuner treats seed 0 as "no seed" (a random one), so the oracle gets seed + 1.
    common = dict(objective=objective, seed=seed + 1, hyperparameters=hyperparameters,
                  max_consecutive_failed_trials=max_consecutive_failed_trials)
    if tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor,
                                                 hyperband_iterations=hyperband_iterations, **common)
    oracle.max_trials = max_trials
    return oracle


class RunHyperModel(keras_tuner.HyperModel):
    """A hypermodel whose ``build(hp)`` returns the trial's configuration.

    Args:
        base: the configuration every trial starts from.
        entries: the parsed search space (``lab.studies.tuning.space.parse_space``).
    """

    def __init__(self, base: BaseConfig, entries: list[Entry]):
        super().__init__(name="run_config")
        self.base = base
        self.entries = entries

    def build(self, hp: keras_tuner.HyperParameters) -> BaseConfig:
        values = declare(hp, self.entries)
        if f"{TUNER_PREFIX}epochs" in hp.values:
            # Hyperband's budget for this round. The trial trains from scratch for that many
            # epochs (it does not continue the previous round's model), so every trial's record
            # is a complete run of its own.
            values["epochs"] = int(hp.values[f"{TUNER_PREFIX}epochs"])
        return self.base.replace(**values)


class RunTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials are runs (``lab.run``), one record each.

    Each trial's record is tagged ``search:<name>``, ``search-id:<id>`` (one per fresh start),
    ``trial:<trial id>`` and ``tuner:<tuner id>`` (``KERASTUNER_TUNER_ID``: the worker), so
    ``lab.runs.records.load_runs(tags=[...])`` finds them and they appear in any results table.
    The oracle receives the record's numeric metrics, except the test split's.

    A run that fails (an exception) or ends without a finite value of the objective (a loss
    that was NaN from the start) is reported to keras-tuner as a failed trial; its record
    says why.
    A stalled or diverged run with a finite objective (its best epoch's weights were restored) is
    a completed trial with that (poor) score. keras-tuner stops the search after
    ``max_consecutive_failed_trials`` failures in a row (usually a broken setup).
    """

    def __init__(self, oracle: keras_tuner.Oracle, hypermodel: RunHyperModel, *, name: str, data: Any,
                 directory: str, overwrite: bool = False):
        self.search_name = name
        self.data = data
        self._loaded: dict[tuple, Any] = {}
        self.search_id: str | None = None
        super().__init__(oracle, hypermodel, directory=directory, project_name="keras_tuner", overwrite=overwrite)

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        self.search_id = hp.values.get(SEARCH_ID)
        foreign = sorted(set(space_values(hp.values, [])) - {e.name for e in self.hypermodel.entries})
        if foreign:
            # A worker started with another spec than the chief's would train other configurations.
            raise keras_tuner.errors.FatalError(
                f"Trial {trial.trial_id} sets {foreign}, which this process's search space does not have: "
                f"run the chief and every worker with the same spec.")
        try:
            config = self.hypermodel.build(hp)
        except ValueError as error:  # a combination the per-value checks could not see
            raise keras_tuner.errors.FailedTrialError(f"invalid configuration: {error}") from error
        tags = [*config.tags, f"search:{self.search_name}", f"search-id:{self.search_id}", f"trial:{trial.trial_id}",
                f"tuner:{self.tuner_id}"]
        config = config.replace(name=f"{self.search_name}-trial{trial.trial_id}", tags=tags)
        run = self._recorded_run(config, trial.trial_id)
        if run is None:
            # released_graphs: without it every trial's traced graphs stay in TensorFlow's
            # gradient registry and a long search grows by megabytes per trial (lab.system.tf_memory).
            with released_graphs():
                result = training.run(config, data=self._data_for(config), raise_on_error=False)
            run = load_run(result.run_dir)
            del result  # the trial's model goes now, not when the next trial replaces it
        else:
            print(f"Trial {trial.trial_id}: reusing its finished run {run.run_id} (the search was stopped before "
                  "keras-tuner recorded it)")
        return self._report(run)

    def _recorded_run(self, config: BaseConfig, trial_id: str):
        """A finished record of this trial already on disk: the process stopped after the run
        wrote it and before the oracle saved the trial. Reusing it keeps one record per trial."""
        runs = load_runs(config.reports_dir, tags=[f"search-id:{self.search_id}", f"trial:{trial_id}"],
                         config_hash=config.config_hash(self._data_for(config)), status=RESULT_STATUSES)
        return runs[-1] if runs else None

    def _data_for(self, config: BaseConfig) -> Any:
        if self.data is not None:
            return self.data
        key = data_key(config)
        if key not in self._loaded:
            # Keep one: a space may vary the data (limit...).
            self._loaded = {key: TASKS[config.task].runner_task.load_data(config)}
        return self._loaded[key]

    def _report(self, run) -> dict[str, float]:
        metrics = run.metrics
        if run.status == "failed":
            raise keras_tuner.errors.FailedTrialError(f"run {run.run_id} failed: {metrics.get('error')}")
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("test_")
                  and math.isfinite(v)}
        name = self.oracle.objective.name
        if name not in values:
            reason = metrics.get("divergence_reason") or "the record has no value for it"
            raise keras_tuner.errors.FailedTrialError(f"run {run.run_id} ({run.status}) has no finite {name}: {reason}")
        return values

    def search(self, *args: Any, **kwargs: Any) -> None:
        """keras-tuner's search; as the chief, serves the oracle until the workers are done."""
        from keras_tuner.src.distribute import utils as dist_utils

        if not dist_utils.is_chief_oracle():
            return super().search(*args, **kwargs)
        self.oracle.verbose = kwargs.get("verbose", 1)
        self.save()
        serve_oracle(self.oracle)

    def on_search_begin(self) -> None:
        # Workers in chief/worker mode say who they are, so their logs can be told apart.
        if os.environ.get("KERASTUNER_ORACLE_IP"):
            print(f"{self.tuner_id}: asking the chief at {os.environ['KERASTUNER_ORACLE_IP']}:"
                  f"{os.environ.get('KERASTUNER_ORACLE_PORT')} for trials", flush=True)

    def save_model(self, trial_id, model, step=0):  # the run record holds the model
        pass

    def load_model(self, trial):
        """The best model file of a trial's run (``model.keras`` in its record)."""
        import keras

        run = trial_run(self.search_name, self.search_id, trial.trial_id, self.hypermodel.base.reports_dir)
        if run is None or not (run.path / "model.keras").exists():
            raise FileNotFoundError(f"Trial {trial.trial_id} has no saved model (save_model=False or no record).")
        return keras.models.load_model(run.path / "model.keras")


def trial_run(name: str, search_id: str | None, trial_id: str, reports_dir: str | None = None) -> Run | None:
    """The run record of one trial of a search (the last, if a trial ran more than once)."""
    runs = load_runs(reports_dir, tags=[f"search:{name}", f"search-id:{search_id}", f"trial:{trial_id}"])
    return runs[-1] if runs else None


def serve_oracle(oracle: keras_tuner.Oracle, poll_seconds: float = 1.0) -> None:
    """Serves ``oracle`` to the workers with keras-tuner's gRPC OracleServicer until the search
    is over and every worker has been told so.

    This is keras-tuner's ``oracle_chief.start_server`` with two changes: a port that cannot
    be bound is an error (rather than a chief that waits forever), and the end is checked every
    ``poll_seconds`` (keras-tuner sleeps 20 s between checks once the last trial was handed out).
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise RuntimeError(f"The chief cannot listen on {address} (KERASTUNER_ORACLE_IP/PORT): the port is in use "
                           "or the address is not this machine's.")
    server.start()
    print(f"chief: serving the oracle on {address}", flush=True)
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=2)
