"""The learning-rate finder: fastai's valley rule, a sane suggestion, a valid record written by the
runner (failed, discarded and chief-only as every run is), for every Keras task."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

import lab.runs.runner as runner
from lab.config import SegmentationConfig
from lab.runs.lr_finder import LRRamp, find_learning_rate, suggest_valley
from lab.runs.records import load_run, load_runs
from lab.studies.sweep import run_sweep

TINY = dict(dataset="digits", limit=60, model="mlp", hidden_units=[8], batch_size=16, verbose=0)


def test_valley_is_two_thirds_down_the_longest_fall():
    rates = np.logspace(-6, 0, 40)
    # Flat, then a steady fall over points 10..29, then a blow-up.
    losses = np.concatenate([np.full(10, 2.0), np.linspace(2.0, 0.5, 20), np.linspace(0.6, 5.0, 10)])
    suggestion = suggest_valley(rates, losses, planned_steps=40)
    # After trimming the first 4 and last 5 points the fall spans trimmed indices 5..25 (the
    # flat point before it starts the chain): 5 + int(20/3) + int(20/6) = 14, i.e. point 18.
    assert suggestion == pytest.approx(rates[18])
    assert rates[10] < suggestion < rates[29]
    assert math.isnan(suggest_valley(rates[:6], losses[:6], planned_steps=6))


def test_the_finder_suggests_a_sane_rate_and_records_it(tmp_path):
    # Several steps per call are configured: the ramp still changes the rate, and reads the loss, every step.
    result = find_learning_rate(dataset="digits", model="mlp", hidden_units=[32], batch_size=32, verbose=0,
                                steps_per_execution=4, steps=60, min_lr=1e-6, max_lr=10.0)
    # Adam on a small MLP: the usual working range. A rate outside it would be a broken rule.
    assert 1e-4 <= result.suggestion <= 1e-1
    run = load_run(result.run_dir)
    assert run.status == "completed" and run.metrics["kind"] == "lr_finder"
    assert run.metrics["suggested_learning_rate"] == pytest.approx(result.suggestion)
    assert run.metrics["suggestion_rule"] == "valley"
    curve = pd.read_csv(result.run_dir / "lr_finder.csv")
    assert list(curve.columns) == ["step", "learning_rate", "loss", "smoothed_loss"]
    assert len(curve) == run.metrics["steps_run"] <= 60
    assert np.all(np.diff(curve["learning_rate"]) > 0) and curve["learning_rate"].iloc[0] == pytest.approx(1e-6)
    assert (result.run_dir / "plots" / "lr_finder.png").exists()
    assert not (result.run_dir / "model.keras").exists(), "the finder keeps no weights"
    # A valid record: indexed, with its configuration; its hash is not a training run's.
    assert [r.run_id for r in load_runs()] == [run.run_id]
    assert run.config["config_hash"] != run.config["run_config_hash"]
    assert run.config["lr_finder"]["steps"] == 60 and run.config["model"] == "mlp"
    assert run.config["steps_per_execution"] == 4, "the record keeps the configuration as given"
    assert run.metrics["tags"] == ["lr-finder"] and run.run_id.split("-", 2)[2].startswith("lr-finder-mlp-digits")


def test_a_sweep_does_not_mistake_a_finder_record_for_its_run():
    config = dict(dataset="digits", limit=60, model="mlp", hidden_units=[8], batch_size=16, epochs=1, verbose=0,
                  early_stopping_patience=None, save_model=False)
    find_learning_rate(config, steps=12)
    sweep = run_sweep(config, [{"name": "only"}], name="after-finder")
    assert sweep.runs[0].metrics.get("kind") != "lr_finder" and "epochs_run" in sweep.runs[0].metrics


def test_the_finder_stops_when_the_loss_explodes():
    result = find_learning_rate(dataset="digits", limit=60, model="mlp", hidden_units=[8], batch_size=16, verbose=0,
                                optimizer="sgd", steps=80, min_lr=1e-3, max_lr=1e4)
    assert result.metrics["stopped_early"] and result.metrics["steps_run"] < 80


def test_a_ramp_stopped_at_once_by_its_loss_says_so_instead_of_asking_for_more_steps():
    """Rates too high from the start: the loss is not finite (or explodes) within a few steps, and
    more steps would not help; the note names the step and its rate instead of "run more steps"."""
    result = find_learning_rate(dataset="digits", limit=60, model="mlp", hidden_units=[8], batch_size=16, verbose=0,
                                optimizer="sgd", steps=40, min_lr=1e6, max_lr=1e8)
    assert math.isnan(result.suggestion) and result.metrics["stopped_early"] and result.metrics["steps_run"] < 10
    note = result.metrics["note"]
    assert re.search(rf"the loss (was not finite|diverged) at step {result.metrics['steps_run']} of 40 \(learning "
                     r"rate 1\.\d+e\+06\).*Lower min_lr and max_lr", note), note
    assert "run more steps" not in note


@pytest.mark.parametrize("settings, message", [
    (dict(min_lr=1.0, max_lr=0.1), "min_lr must be below max_lr"),
    (dict(max_lr=math.inf), "max_lr must be a finite positive number, received max_lr=inf"),
    (dict(min_lr=math.nan), "min_lr must be a finite positive number, received min_lr=nan"),
    (dict(steps=1), "steps must be an integer of at least 2"),
    (dict(smoothing=1.0), "smoothing must be in"),
    (dict(diverge_factor=1.0), "diverge_factor must be above 1"),
])
def test_bad_settings_are_refused_before_anything_is_written(settings, message):
    with pytest.raises(ValueError, match=message):
        find_learning_rate(dataset="digits", model="mlp", verbose=0, **settings)
    assert load_runs() == []


def test_the_ramp_raises_the_rate_each_step_and_stops_when_the_loss_diverges():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ramp = LRRamp(min_lr=1e-4, max_lr=1e-2, steps=3, smoothing=0.0, diverge_factor=4.0)
    ramp.set_model(model)
    ramp.on_train_begin()
    for step, loss in enumerate([2.0, 1.0, 5.0]):
        ramp.on_train_batch_begin(step)
        assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(ramp.rate(step))
        ramp.on_train_batch_end(step, {"loss": loss})
        assert model.stop_training == (loss == 5.0), "5 > 4 times the lowest loss (1): diverged"
    curve = ramp.curve()
    assert list(curve["learning_rate"]) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert list(curve["smoothed_loss"]) == [2.0, 1.0, 5.0] and list(curve["step"]) == [1, 2, 3]
    ramp.on_train_begin()
    assert ramp.curve().empty, "state is reset: an instance can ramp again"
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=4)
    with pytest.raises(ValueError, match="one step per call; received steps_per_execution=4"):
        ramp.on_train_begin()


@pytest.mark.parametrize("config", [
    SegmentationConfig(dataset="shapes", dataset_size=32, limit=24, model="unet", depth=2, filters=4, batch_size=8,
                       verbose=0),
    SegmentationConfig(dataset="shapes", dataset_size=32, limit=24, model="autoencoder", filters=[4, 8],
                       batch_size=8, verbose=0),
], ids=["segmentation", "reconstruction"])
def test_the_finder_ramps_every_keras_task(config):
    result = find_learning_rate(config, steps=12, min_lr=1e-5, max_lr=1.0)
    run = load_run(result.run_dir)
    assert run.status == "completed" and run.metrics["kind"] == "lr_finder" and run.config["task"] == config.task
    assert run.metrics["steps_run"] == len(result.curve) and (result.run_dir / "lr_finder.csv").exists()
    assert np.isfinite(result.curve["loss"].iloc[0])


@pytest.mark.parametrize("settings", [dict(feature_cache="memory", augment=True, feature_cache_passes=2),
                                      dict(feature_cache=None, unfreeze_schedule=[0, 1], phase_epochs=[1, 1])],
                         ids=["feature-cache", "unfreezing"])
def test_the_finder_ramps_what_a_transfer_run_would_fit(settings):
    from lab.data.datasets import load_dataset

    data = load_dataset("digits", limit=120)
    config = dict(model="transfer", backbone="resnet18", weights=None, backbone_input_size=32, batch_size=32,
                  verbose=0, **settings)
    result = find_learning_rate(config, data=data, steps=None, max_lr=1e-1)  # one pass over the training split
    one_pass = math.ceil(len(data.y_train) / 32)
    assert result.metrics["steps_planned"] == one_pass and 2 <= len(result.curve) <= one_pass
    # The first phase's policy (or the cached head's): the backbone is frozen, only the head trains.
    assert 0 < result.metrics["trainable_params"] < result.metrics["params"] / 10


def test_a_failing_ramp_is_recorded_as_failed_by_the_runner(monkeypatch):
    published = []

    class Writer(runner.RunWriter):  # the runner's writer, watched
        def publish(self, metrics):
            published.append(metrics["status"])
            return super().publish(metrics)

    def fail(self, batch, logs=None):
        raise RuntimeError("ramp broke")

    monkeypatch.setattr(runner, "RunWriter", Writer)
    monkeypatch.setattr(LRRamp, "on_train_batch_end", fail)
    with pytest.raises(RuntimeError, match="ramp broke"):
        find_learning_rate(steps=12, **TINY)
    assert published == ["failed"], "the record is published by the runner's life, not a copy of it"
    [run] = load_runs()
    assert run.status == "failed" and "RuntimeError: ramp broke" in run.metrics["error"]
    assert run.metrics["kind"] == "lr_finder" and run.config["kind"] == "lr_finder"
    assert "traceback" in run.metrics and run.config["config_hash"] != run.config["run_config_hash"]


def test_ctrl_c_during_the_ramp_leaves_nothing(monkeypatch, isolated_dirs):
    def interrupt(self, batch, logs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(LRRamp, "on_train_batch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        find_learning_rate(steps=12, **TINY)
    runs = isolated_dirs / "reports" / "runs"
    assert load_runs() == [] and list(runs.glob(".partial-*")) == [], "the partial folder is discarded"


def test_only_the_chief_keeps_a_finder_record(monkeypatch, tmp_path):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(runner.hardware, "is_chief", lambda: False)
    result = find_learning_rate(steps=12, **TINY)
    assert result.run_dir is None and len(result.curve) > 0
    assert load_runs() == [] and list(scratch.glob("lab-worker-*")) == []


def test_the_finder_has_no_record_logic_of_its_own():
    """Its record is the runner's: it neither writes one (RunWriter) nor reaches into the runner."""
    import ast
    import inspect

    import lab.runs.lr_finder

    tree = ast.parse(inspect.getsource(lab.runs.lr_finder))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if node.module and node.module.startswith("lab")}
    assert not {name for name in imported if name.startswith("_")}, "no private names of other modules"
    assert not imported & {"RunWriter", "seed_everything", "data_record", "environment", "finite_metrics"}


def test_a_configuration_of_another_kind_is_refused_clearly():
    from lab.config import InstanceConfig

    with pytest.raises(TypeError, match="does not take an instance-segmentation configuration"):
        find_learning_rate(InstanceConfig())
