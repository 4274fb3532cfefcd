"""Learning-rate schedules: the rate of every epoch in history.csv equals the schedule's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.config import RunConfig
from lab.runs.records import load_run
from lab.config.schedules import cosine_rate, decay_epochs, epoch_multiplier
from lab.runs.training import train

# 120 training images in batches of 16: 8 steps per epoch.
TINY = dict(dataset="digits", limit=120, model="mlp", hidden_units=[8], batch_size=16, early_stopping_patience=None,
            verbose=0, save_model=False, learning_rate=0.01)


def _steps(result) -> int:
    return math.ceil(result.config.limit / result.config.batch_size)


def test_every_run_logs_the_constant_rate():
    result = train(epochs=2, **TINY)
    history = load_run(result.run_dir).history()
    assert np.allclose(history["learning_rate"], 0.01)


def test_cosine_with_warmup_follows_the_formula_per_step():
    result = train(epochs=5, lr_schedule="cosine", warmup_epochs=1, **TINY)
    steps = _steps(result)
    history = load_run(result.run_dir).history()
    expected = [cosine_rate(0.01, (epoch + 1) * steps - 1, warmup_steps=steps, total_steps=5 * steps)
                for epoch in range(5)]
    assert np.allclose(history["learning_rate"], expected, rtol=1e-5, atol=1e-9)
    # The warm-up rises, the decay falls to (almost) nothing at the last step.
    assert expected[0] < 0.01 and expected[1] > expected[2] > expected[3] > expected[4] >= 0


def test_step_decay_divides_by_ten_at_half_and_three_quarters():
    assert decay_epochs([0.5, 0.75], 100) == [50, 75]
    assert decay_epochs([0.5, 0.75], 4) == [2, 3]
    assert decay_epochs([0.5], 1) == []
    result = train(epochs=4, lr_schedule="step", **TINY)
    history = load_run(result.run_dir).history()
    assert np.allclose(history["learning_rate"], [0.01, 0.01, 0.001, 0.0001], rtol=1e-5)
    assert [epoch_multiplier(result.config, e, 4) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.01])


def test_plateau_lowers_the_rate_when_the_monitor_stalls():
    # A rate of 0 never improves the validation loss after the first epoch: the plateau halves it.
    result = train(epochs=4, lr_schedule="plateau", plateau_patience=1, lr_decay_factor=0.5,
                   **{**TINY, "learning_rate": 1e-12})
    rates = load_run(result.run_dir).history()["learning_rate"].tolist()
    assert rates[0] == pytest.approx(1e-12) and rates[-1] < rates[0]
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_a_phased_run_continues_the_schedule_across_phases(monkeypatch, schedule):
    # Two phases of 2 epochs: the second phase's fresh optimizer carries on the run-long
    # schedule at its own base rate (a tenth of the first's, as progressive unfreezing does).
    from lab.tasks import classification
    from lab.runs.runner import Phase

    original = classification.Classification.plan

    def two_phases(self, config, data):
        plan = original(self, config, data)
        model = plan.model

        def second():
            classification.compile_model(model, config, learning_rate=config.learning_rate * 0.1)
            return {"learning_rate": config.learning_rate * 0.1}

        plan.phases = [Phase(2, model), Phase(2, model, prepare=second)]
        return plan

    monkeypatch.setattr(classification.Classification, "plan", two_phases)
    result = train(epochs=4, lr_schedule=schedule, **{**TINY, "save_model": True})
    steps = _steps(result)
    history = load_run(result.run_dir).history()
    bases = (0.01, 0.01, 0.001, 0.001)
    if schedule == "cosine":
        expected = [base * cosine_rate(1.0, (epoch + 1) * steps - 1, warmup_steps=0, total_steps=4 * steps)
                    for epoch, base in zip(range(4), bases)]
    else:  # x0.1 from epoch 2 (50%) and again from epoch 3 (75%), on each phase's base rate
        expected = [base * epoch_multiplier(result.config, epoch, 4) for epoch, base in zip(range(4), bases)]
        assert expected == pytest.approx([0.01, 0.01, 1e-4, 1e-5])
    assert np.allclose(history["learning_rate"], expected, rtol=1e-5)
    # The checkpoint (saved with its optimizer) loads again.
    import keras

    from lab.config.schedules import register

    register()
    assert keras.models.load_model(result.run_dir / "model.keras").optimizer is not None


@pytest.mark.parametrize("values, message", [
    (dict(lr_schedule="cosin"), "lr_schedule must be one of"),
    (dict(warmup_epochs=1), "warmup_epochs goes with lr_schedule='cosine'"),
    (dict(lr_schedule="cosine", warmup_epochs=30), "leaves no epoch"),
    (dict(lr_schedule="step", lr_decay_at=[0.75, 0.5]), "increasing fractions"),
    (dict(lr_schedule="step", lr_decay_at=[1.5]), "increasing fractions"),
    (dict(lr_decay_at=[0.5]), "lr_decay_at goes with lr_schedule='step'"),
    (dict(lr_schedule="step", lr_decay_factor=2.0), "lr_decay_factor must be between 0 and 1"),
    (dict(lr_decay_factor=0.5), "goes with lr_schedule='step' or 'plateau'"),
    (dict(lr_schedule="plateau", plateau_patience=0), "plateau_patience must be a positive integer"),
    (dict(plateau_patience=3), "plateau_patience goes with lr_schedule='plateau'"),
])
def test_bad_schedule_fields_are_refused_clearly(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**values)
