"""The learning-rate finder: fastai's valley rule, a sane suggestion, a valid record."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lab.lr_finder import find_learning_rate, suggest_valley
from lab.records import load_run, load_runs
from lab.sweep import run_sweep


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
    result = find_learning_rate(dataset="digits", model="mlp", hidden_units=[32], batch_size=32, verbose=0,
                                steps=60, min_lr=1e-6, max_lr=10.0)
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


@pytest.mark.parametrize("settings, message", [
    (dict(min_lr=1.0, max_lr=0.1), "min_lr must be below max_lr"),
    (dict(steps=1), "steps must be an integer of at least 2"),
    (dict(smoothing=1.0), "smoothing must be in"),
    (dict(diverge_factor=1.0), "diverge_factor must be above 1"),
])
def test_bad_settings_are_refused_before_anything_is_written(settings, message):
    with pytest.raises(ValueError, match=message):
        find_learning_rate(dataset="digits", model="mlp", verbose=0, **settings)
    assert load_runs() == []
