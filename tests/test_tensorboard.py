"""TensorBoard logs, read back the way TensorBoard reads them: the per-epoch scalars (learning rate
included) and images of a run, its HParams session, and the HParams experiment of a sweep as the
dashboard's own handlers compute it (``tensorboard.plugins.hparams``)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups, metadata

import lab.runs.runner as runner
from lab.runs import tensorboard
from lab.config import RunConfig
from lab.runs.records import Run, load_run
from lab.studies.sweep import run_sweep
from lab.runs.training import train

MLP = dict(dataset="digits", limit=60, model="mlp", hidden_units=[8], batch_size=16, early_stopping_patience=None,
           verbose=0, save_model=False)


# -- reading logs back -------------------------------------------------------------------------------

def _events(logdir) -> event_multiplexer.EventMultiplexer:
    multiplexer = event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return multiplexer


def _scalars(events, run: str, tag: str) -> dict[int, float]:
    return {event.step: float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(run, tag)}


def _session(events, run: str):
    content = events.PluginRunToTagToContent(metadata.PLUGIN_NAME)[run]
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    return start, end


def _dashboard(logdir) -> tuple[api_pb2.Experiment, list[api_pb2.SessionGroup]]:
    """The experiment and the session groups, from the HParams plugin's own request handlers."""
    events = _events(logdir)
    tb_context = base_plugin.TBContext(logdir=str(logdir), multiplexer=events,
                                       data_provider=data_provider.MultiplexerDataProvider(events, str(logdir)))
    backend = backend_context.Context(tb_context)
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "",
                                        api_pb2.GetExperimentRequest(include_metrics=True)).run()
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    groups = list_session_groups.Handler(request, backend, "", api_pb2.ListSessionGroupsRequest(
        allowed_statuses=statuses, include_metrics=True, slice_size=1000)).run()
    return experiment, list(groups.session_groups)


def _value(value):
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


# -- a run ---------------------------------------------------------------------------------------------

def test_a_run_logs_every_epoch_metric_the_learning_rate_its_figures_and_its_hparams_session():
    result = train(RunConfig(epochs=2, learning_rate=0.002, **MLP))
    logdir = result.run_dir / "tensorboard"
    events = _events(logdir)
    history = pd.read_csv(result.run_dir / "history.csv")
    # Per epoch, numbered from 0 like history.csv: every logged value, training and validation.
    for column in ("loss", "accuracy", "epoch_seconds"):
        assert _scalars(events, "train", f"epoch_{column}") == pytest.approx(dict(enumerate(history[column])))
    for column in ("loss", "accuracy"):
        assert _scalars(events, "validation", f"epoch_{column}") == pytest.approx(
            dict(enumerate(history[f"val_{column}"])))
    # Read from the optimizer, whether or not history.csv has a learning_rate column.
    assert _scalars(events, "train", "epoch_learning_rate") == pytest.approx({0: 0.002, 1: 0.002})
    # The figures the task saved, as images of the image plugin (the saved PNG itself), at the last epoch.
    tags = events.Runs()["."]["tensors"]
    for image in ("confusion_matrix", "sample_predictions"):
        assert image in tags
        assert events.SummaryMetadata(".", image).plugin_data.plugin_name == "images"
        [event] = events.Tensors(".", image)
        width, height, png = tf.make_ndarray(event.tensor_proto)
        saved = (result.run_dir / "plots" / f"{image}.png").read_bytes()
        assert png == saved and event.step == 1
        assert tf.io.decode_png(png).shape[:2] == (int(height), int(width))
    # The HParams session: the configuration's values, the run id as its group, success, the metrics.
    start, end = _session(events, ".")
    assert start.group_name == result.run_dir.name
    values = {name: _value(value) for name, value in start.hparams.items()}
    assert values["learning_rate"] == 0.002 and values["optimizer"] == "adam" and values["epochs"] == 2
    assert values["hidden_units"] == "[8]" and values["deterministic"] is True and values["task"] == "classification"
    # Not the name: it differs in every run and would take one of the columns TensorBoard shows first.
    assert not {"name", "tags", "reports_dir", "verbose", "tensorboard"} & set(values)
    assert "dropout_rate" not in values  # None (the builder's default) is left unset
    assert end.status == api_pb2.STATUS_SUCCESS
    for metric in ("test_accuracy", "val_loss", "best_epoch"):
        assert _scalars(events, ".", metric) == pytest.approx({1: result.metrics[metric]})
    assert "stopped_early" not in tags  # flags are not numbers


def test_tensorboard_false_writes_no_logs_and_does_not_change_the_hash():
    result = train(RunConfig(epochs=1, tensorboard=False, **MLP))
    assert result.status != "failed" and not (result.run_dir / "tensorboard").exists()
    assert RunConfig(tensorboard=False).config_hash() == RunConfig().config_hash()
    with pytest.raises(ValueError, match="tensorboard must be True .* received tensorboard='no'"):
        RunConfig(tensorboard="no")


def test_a_run_that_fails_mid_fit_keeps_its_epochs_and_says_it_failed(monkeypatch):
    original = runner.RestoreBestWeights.on_epoch_end

    def fail_on_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("boom")
        return original(self, epoch, logs)

    monkeypatch.setattr(runner.RestoreBestWeights, "on_epoch_end", fail_on_second_epoch)
    result = train(RunConfig(epochs=3, **MLP), raise_on_error=False)
    assert result.status == "failed"
    events = _events(result.run_dir / "tensorboard")
    # The first epoch reached the event file: the writers were closed although fit raised.
    assert set(_scalars(events, "train", "epoch_loss")) == {0}
    start, end = _session(events, ".")
    assert end.status == api_pb2.STATUS_FAILURE and start.group_name == result.run_dir.name


def test_the_callback_numbers_epochs_across_fits_and_logs_each_phases_learning_rate(tmp_path):
    # What the runner does with progressive unfreezing: one callback, fits continued with
    # initial_epoch, each phase compiled with a fresh optimizer (a smaller learning rate).
    keras.utils.set_random_seed(0)
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    callback = tensorboard.epoch_callback(tmp_path)
    for first, epochs, rate in ((0, 2, 0.01), (2, 1, 0.001)):
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy")
        model.fit(x, y, validation_data=(x, y), initial_epoch=first, epochs=first + epochs, callbacks=[callback],
                  verbose=0)
    events = _events(tmp_path / "tensorboard")
    assert _scalars(events, "train", "epoch_learning_rate") == pytest.approx({0: 0.01, 1: 0.01, 2: 0.001})
    assert set(_scalars(events, "validation", "epoch_loss")) == {0, 1, 2}
    assert events.Runs()["validation"]["tensors"] == ["epoch_loss"]  # no per-iteration duplicate
    assert not events.Runs()["train"]["graph"]
    # No batch hooks: Keras then passes each step's values to the callbacks asynchronously,
    # without a conversion to Python numbers per step (keras.callbacks.CallbackList reads this mark).
    for hook in ("on_batch_end", "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
                 "on_test_batch_end"):
        assert getattr(getattr(callback, hook), "_is_default", False), hook


# -- experiments -----------------------------------------------------------------------------------------

def test_a_sweep_writes_its_hparams_experiment_with_the_varied_values(isolated_dirs):
    base = RunConfig(epochs=1, **MLP)
    result = run_sweep(base, [{"name": "fast", "learning_rate": 0.01, "hidden_units": [8]},
                              {"name": "slow", "learning_rate": 0.001, "hidden_units": [4, 4]}], name="lr")
    experiment, groups = _dashboard(result.summary_dir)
    infos = {info.name: info for info in experiment.hparam_infos}
    # What the sweep varied, marked as differing; not the runs' names.
    assert [(info.name, info.differs) for info in experiment.hparam_infos] == [("hidden_units", True),
                                                                               ("learning_rate", True)]
    assert list(infos["learning_rate"].domain_discrete) == [0.001, 0.01]
    assert infos["learning_rate"].type == api_pb2.DATA_TYPE_FLOAT64
    assert sorted(infos["hidden_units"].domain_discrete) == ["[4, 4]", "[8]"]
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert {"val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_macro_f1"} <= set(metrics)
    # One row per run, named by its run id, with the run's values and its recorded metrics.
    by_id = {group.name: group for group in groups}
    assert set(by_id) == {run.run_id for run in result.runs}
    for run in result.runs:
        group = by_id[run.run_id]
        assert "name" not in group.hparams
        assert _value(group.hparams["learning_rate"]) == run.config["learning_rate"]
        assert _value(group.hparams["hidden_units"]) == json.dumps(run.config["hidden_units"])
        values = {value.name.tag: value.value for value in group.metric_values}
        assert values["val_accuracy"] == pytest.approx(run.metrics["val_accuracy"])
        # The sweep's copy holds the run's curves too.
        copy = _events(result.summary_dir / "tensorboard" / run.run_id)
        assert set(_scalars(copy, "train", "epoch_learning_rate")) == {0}
    # From the whole reports folder each run is one row: its own session and the sweep's copy
    # share the run id as their group.
    _, everything = _dashboard(isolated_dirs / "reports")
    assert sorted(group.name for group in everything) == sorted(run.run_id for run in result.runs)
    assert all(len(group.sessions) == 2 for group in everything)


def _fake_run(root, run_id, config, metrics) -> Run:
    """A run record written by hand (no training): what an experiment reads."""
    path = root / "runs" / run_id
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"tensorboard": True, "task": "classification", **config}))
    (path / "metrics.json").write_text(json.dumps({"status": "completed", "epochs_run": 3, **metrics}))
    return load_run(path)


def test_an_experiment_takes_declared_domains_widened_to_the_values_taken_and_one_type_per_parameter(tmp_path):
    runs = [_fake_run(tmp_path, "a", {"learning_rate": 0.05, "epochs": 3, "dropout_rate": None, "unfreeze": 0,
                                      "filters": 16, "depth": 2}, {"name": "a", "val_accuracy": 0.5}),
            _fake_run(tmp_path, "b", {"learning_rate": 0.001, "epochs": 9, "dropout_rate": 0.3, "unfreeze": "all",
                                      "filters": 16, "depth": 3}, {"name": "b", "val_accuracy": 0.7, "status": "failed"})]
    folder = tensorboard.write_experiment(
        tmp_path / "search", runs,
        hparams=["learning_rate", "epochs", "dropout_rate", "filters", "depth", "switch", "note"],
        domains={"learning_rate": (1e-4, 1e-2), "epochs": (1, 5), "dropout_rate": [None, 0.1, 0.3],
                 "filters": [16, [16, 32]], "depth": [2, 3, 4]},
        parameters={"a": {"switch": 1, "note": None}, "b": {"switch": "on", "note": {"k": 1}}},
        metrics=["val_accuracy"])
    experiment, groups = _dashboard(folder)
    infos = {info.name: info for info in experiment.hparam_infos}
    # A range stays a range, widened to a value taken outside it (a conditional search value).
    assert (infos["learning_rate"].domain_interval.min_value, infos["learning_rate"].domain_interval.max_value) \
        == (1e-4, 0.05)
    assert (infos["epochs"].domain_interval.min_value, infos["epochs"].domain_interval.max_value) == (1, 9)
    assert list(infos["dropout_rate"].domain_discrete) == [0.1, 0.3]  # None is "unset"
    assert list(infos["depth"].domain_discrete) == [2, 3, 4] and infos["depth"].type == api_pb2.DATA_TYPE_FLOAT64
    # A choice between a number and a list is text, in the domain and in every run.
    assert sorted(infos["filters"].domain_discrete) == ["16", "[16, 32]"]
    # unfreeze (0 or "all") differs between the runs: added, as text in every run.
    assert sorted(infos["unfreeze"].domain_discrete) == ["0", "all"]
    # A parameter that is 1 in one job and "on" in another is text in both.
    assert sorted(infos["switch"].domain_discrete) == ["1", "on"]
    assert experiment.metric_infos[0].name.tag == "val_accuracy"
    by_name = {group.name: group for group in groups}
    assert _value(by_name["a"].hparams["switch"]) == "1" and _value(by_name["b"].hparams["unfreeze"]) == "all"
    assert _value(by_name["a"].hparams["filters"]) == "16" and _value(by_name["a"].hparams["depth"]) == 2
    # A batch's notebook parameter: None is unset, a mapping its JSON text.
    assert "note" not in by_name["a"].hparams and _value(by_name["b"].hparams["note"]) == '{"k": 1}'
    assert "dropout_rate" not in by_name["a"].hparams
    assert [session.status for session in by_name["b"].sessions] == [api_pb2.STATUS_FAILURE]
    assert {v.name.tag: v.value for v in by_name["b"].metric_values}["val_accuracy"] == pytest.approx(0.7)


def test_an_interrupted_experiment_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    runs = [_fake_run(tmp_path, run_id, {"learning_rate": rate}, {"name": run_id, "val_accuracy": 0.5})
            for run_id, rate in (("a", 0.1), ("b", 0.01))]
    folder = tensorboard.write_experiment(tmp_path / "sweep", runs, hparams=["learning_rate"])
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    original, calls = tensorboard._write_session, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(tensorboard, "_write_session", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tensorboard.write_experiment(tmp_path / "sweep", runs, hparams=["learning_rate"])
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["tensorboard"]  # no half-built folder


def test_runs_without_tensorboard_logs_make_no_experiment(tmp_path):
    run = _fake_run(tmp_path, "a", {"learning_rate": 0.1, "tensorboard": False}, {"name": "a"})
    assert tensorboard.write_experiment(tmp_path / "sweep", [run], hparams=["learning_rate"]) is None
    assert not (tmp_path / "sweep").exists()


def test_a_collections_experiment_is_read_from_its_record(tmp_path):
    """``write_hparams`` takes what varied (a search's ranges as intervals), a batch job's own
    parameters and a search's objective from the collection record, and its runs from its members."""
    from lab.runs.collection import write_collection
    from lab.runs.records import load_collection

    runs = [_fake_run(tmp_path, "a", {"learning_rate": 0.05}, {"name": "a", "val_accuracy": 0.5, "val_loss": 1.0}),
            _fake_run(tmp_path, "b", {"learning_rate": 0.001}, {"name": "b", "val_accuracy": 0.7, "val_loss": 0.9})]
    members = [{"run_id": run.run_id, "name": run.name, "status": run.status} for run in runs]
    search = load_collection(write_collection(tmp_path / "searches" / "s", kind="search", name="s",
                               varied={"learning_rate": {"min": 1e-4, "max": 1e-2}}, fixed={}, members=members,
                               started=None, details={"objective": ["val_loss", "min"]}))
    experiment, groups = _dashboard(tensorboard.write_hparams(search))
    infos = {info.name: info for info in experiment.hparam_infos}
    assert (infos["learning_rate"].domain_interval.min_value, infos["learning_rate"].domain_interval.max_value) \
        == (1e-4, 0.05)
    assert experiment.metric_infos[0].name.tag == "val_loss" and sorted(g.name for g in groups) == ["a", "b"]
    batch = load_collection(write_collection(tmp_path / "batches" / "b", kind="batch", name="b",
                              varied={"learning_rate": [0.05, 0.001], "switch": [1, "on"]}, fixed={},
                              members=[{**member, "job": member["name"], "parameters": {"switch": switch, "other": 3}}
                                       for member, switch in zip(members, (1, "on"))], started=None))
    experiment, groups = _dashboard(tensorboard.write_hparams(batch))
    infos = {info.name: info for info in experiment.hparam_infos}
    assert list(infos["learning_rate"].domain_discrete) == [0.001, 0.05] and "other" not in infos
    assert {group.name: _value(group.hparams["switch"]) for group in groups} == {"a": "1", "b": "on"}


def test_an_experiment_shows_what_varied_first_groups_the_seeds_of_a_configuration_and_its_test_metrics(tmp_path):
    """TensorBoard shows only the first few parameters until more are chosen: what the study
    varied comes first and the run's name is no parameter. Runs that differ only in their seed
    are one group (TensorBoard averages its metrics), named after the configuration."""
    runs = [_fake_run(tmp_path, f"{name}-seed{seed}", {"learning_rate": 1e-3, "l2": l2, "seed": seed, "epochs": 3,
                                                       "normalization": normalization},
                      {"name": name, "val_accuracy": 0.5 + seed / 10, "test_accuracy": 0.4 + seed / 10,
                       "test_macro_f1": 0.3, "test_balanced_accuracy": 0.35})
            for name, l2, normalization in (("1-plain", None, "none"), ("5-l2", 1e-4, "none"),
                                            ("2-batchnorm", None, "batch"))
            for seed in (0, 1)]
    experiment, groups = _dashboard(tensorboard.write_experiment(tmp_path / "seeds", runs, hparams=["normalization"]))
    # The declared parameter and the other one that differs, marked as differing (TensorBoard lists
    # those first); the seed is inside the groups.
    assert [(info.name, info.differs) for info in experiment.hparam_infos] == [("l2", True), ("normalization", True)]
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert {"test_accuracy", "test_macro_f1", "test_balanced_accuracy"} <= set(metrics)
    by_name = {group.name: group for group in groups}
    assert set(by_name) == {"1-plain", "5-l2", "2-batchnorm"}
    assert all(len(group.sessions) == 2 for group in groups)
    assert {v.name.tag: v.value for v in by_name["5-l2"].metric_values}["val_accuracy"] == pytest.approx(0.55)
    # Without repeats, each run is its own group and a seed that differs is a parameter, last.
    single = [runs[0], runs[3]]
    experiment, groups = _dashboard(tensorboard.write_experiment(tmp_path / "one-each", single, hparams=["l2"]))
    assert [(info.name, info.differs) for info in experiment.hparam_infos] == [("l2", True), ("seed", True)]
    # A declared parameter that took one value is listed after those that differ.
    experiment, _ = _dashboard(tensorboard.write_experiment(tmp_path / "fixed", single, hparams=["normalization"]))
    assert [(info.name, info.differs) for info in experiment.hparam_infos] == [("l2", True), ("seed", True),
                                                                               ("normalization", False)]
    assert sorted(group.name for group in groups) == sorted(run.run_id for run in single)
