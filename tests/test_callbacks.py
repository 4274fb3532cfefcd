import math

import keras
import numpy as np
import pytest

from lab.runs.callbacks import (DivergenceMonitor, EpochLogLine, EpochTimer, RestoreBestWeights, can_judge,
                           format_epoch_line)


def test_epoch_line_is_the_e4_format():
    lines = []
    callback = EpochLogLine(epochs=5, print_fn=lines.append)
    callback.on_epoch_end(1, {"loss": 3.25951, "val_loss": 2.80281, "accuracy": 0.19081, "val_accuracy": 0.28259})
    assert lines == ["Epoch 2/5 | TrainLoss: 3.2595 | ValLoss: 2.8028 | TrainAcc: 19.08% | ValAcc: 28.26%"]
    assert format_epoch_line(1, 1, {"loss": 1.0, "epoch_seconds": 2.34}) == "Epoch 1/1 | TrainLoss: 1.0000 | 2.3s"


def test_epoch_timer_adds_seconds_to_logs():
    timer = EpochTimer()
    timer.on_train_begin()
    logs = {}
    timer.on_epoch_begin(0)
    timer.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] >= 0 and timer.seconds == [logs["epoch_seconds"]]


class _FakeModel:
    stop_training = False


def _monitor(**kwargs):
    monitor = DivergenceMonitor(**kwargs)
    monitor.set_model(_FakeModel())
    monitor.on_train_begin()
    return monitor


def test_nan_loss_diverges_at_once():
    monitor = _monitor(baseline_loss=math.log(10))
    monitor.on_train_batch_end(3, {"loss": float("nan")})
    assert monitor.diverged and monitor.model.stop_training and "batch 4" in monitor.reason


def _epochs(monitor, logs):
    for epoch, (loss, accuracy) in enumerate(logs):
        monitor.on_epoch_end(epoch, {"loss": loss, "val_accuracy": accuracy})
    monitor.finish()


def test_a_run_stuck_at_chance_stalls_after_patience():
    # E4: Adam at lr 1e-2 on CIFAR-100: loss stays at ln(100) = 4.605, accuracy at 1%.
    monitor = _monitor(chance_accuracy=0.01, accuracy_margin=0.005, baseline_loss=math.log(100), patience=3)
    for epoch, loss in enumerate([4.62, 4.606, 4.605]):
        assert monitor.status is None
        monitor.on_epoch_end(epoch, {"loss": loss, "val_accuracy": 0.01})
    assert monitor.status == "stalled" and monitor.stalled and not monitor.diverged
    assert monitor.model.stop_training and monitor.reason.startswith("never learned")


def test_a_slow_run_whose_accuracy_is_above_chance_is_not_diverged():
    # The quick E4 batch's Adam at 1e-4: the loss is still near ln(10), the accuracy 0.41 on 10 classes.
    monitor = _monitor(chance_accuracy=0.1, accuracy_margin=0.06, baseline_loss=math.log(10), patience=2)
    _epochs(monitor, [(2.300, 0.12), (2.285, 0.30), (2.268, 0.41)])
    assert monitor.status is None and monitor.reason is None and not monitor.model.stop_training
    assert monitor.best_loss > 0.98 * math.log(10), "the old loss-only rule would have called this diverged"


def test_a_run_whose_training_accuracy_climbs_is_not_stopped_early():
    # E9's basic CNN in its quick setting: the loss starts far above ln 5 and is still above it after
    # three epochs, validation sits at chance (BatchNorm statistics not yet settled), but the
    # training accuracy climbs: it is learning, so it trains on (judged at the end).
    monitor = _monitor(chance_accuracy=0.2, accuracy_margin=0.12, baseline_loss=math.log(5), patience=3)
    for epoch, (loss, trained) in enumerate([(3.72, 0.35), (1.82, 0.53), (1.67, 0.57)]):
        monitor.on_epoch_end(epoch, {"loss": loss, "accuracy": trained, "val_accuracy": 0.21})
    assert monitor.status is None and not monitor.model.stop_training
    stuck = _monitor(chance_accuracy=0.2, accuracy_margin=0.12, baseline_loss=math.log(5), patience=3)
    for epoch in range(3):
        stuck.on_epoch_end(epoch, {"loss": 1.62, "accuracy": 0.21, "val_accuracy": 0.2})
    assert stuck.stalled and stuck.model.stop_training


def test_chance_is_judged_at_the_end_when_the_loss_falls():
    # The training loss falls (memorising) but validation never leaves chance: not stopped early,
    # stalled when training ends.
    monitor = _monitor(chance_accuracy=0.5, accuracy_margin=0.05, baseline_loss=math.log(2), patience=1)
    _epochs(monitor, [(0.6, 0.50), (0.4, 0.52), (0.2, 0.53)])
    assert not monitor.model.stop_training
    assert monitor.stalled and "not above chance (0.5000" in monitor.reason


def test_the_record_says_by_how_much_a_run_passed_chance():
    monitor = _monitor(chance_accuracy=0.1, accuracy_margin=0.06, baseline_loss=math.log(10), patience=2)
    _epochs(monitor, [(2.300, 0.12), (2.285, 0.30), (2.268, 0.41)])
    assert monitor.chance_record() == pytest.approx(
        {"accuracy": 0.1, "threshold": 0.16, "baseline_loss": math.log(10), "best_val_accuracy": 0.41})
    monitor.finish(best_accuracy=0.45, epochs=5)  # a run of several fits: the best over all of them
    assert monitor.chance_record()["best_val_accuracy"] == 0.45
    assert _monitor(patience=1).chance_record() is None


def test_without_a_chance_level_only_the_loss_diverges():
    monitor = _monitor(patience=1)
    _epochs(monitor, [(5.0, 0.0), (5.0, 0.0)])
    assert monitor.status is None
    monitor = _monitor(patience=1)
    monitor.on_epoch_end(0, {"loss": float("inf")})
    assert monitor.diverged and "inf" in monitor.reason


def test_learning_run_does_not_diverge():
    monitor = _monitor(chance_accuracy=0.01, accuracy_margin=0.005, baseline_loss=math.log(100), patience=3)
    _epochs(monitor, [(4.3, 0.05), (3.9, 0.1), (3.5, 0.15), (3.2, 0.2), (3.3, 0.21)])
    assert monitor.status is None and monitor.reason is None and monitor.note is None
    monitor.on_train_begin()  # reusable: state is reset
    assert monitor.best_loss == math.inf and monitor.best_accuracy == -math.inf


def test_restore_best_weights_restores_even_without_early_stopping():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = RestoreBestWeights(monitor="val_loss")
    callback.set_model(model)
    callback.on_train_begin()
    best = [w.copy() for w in model.get_weights()]
    callback.on_epoch_end(0, {"val_loss": 0.5})
    model.set_weights([w + 1 for w in best])
    callback.on_epoch_end(1, {"val_loss": 0.9})
    callback.on_epoch_end(2, {"val_loss": float("nan")})
    callback.on_train_end()
    assert callback.best_epoch == 0
    for restored, expected in zip(model.get_weights(), best):
        np.testing.assert_array_equal(restored, expected)


def test_bad_callback_arguments():
    with pytest.raises(ValueError, match="patience must be at least 1"):
        DivergenceMonitor(patience=0)
    with pytest.raises(ValueError, match="loss_growth must be a factor above 1 .*received 0.5"):
        DivergenceMonitor(loss_growth=0.5)
    with pytest.raises(ValueError, match="mode must be"):
        RestoreBestWeights(mode="lowest")


def test_a_growing_loss_diverges_and_stops_at_once():
    # The loss starts at ln 10 and grows, finite, to 40: more than ten times where it started.
    monitor = _monitor(chance_accuracy=0.1, accuracy_margin=0.06, baseline_loss=math.log(10), patience=3)
    monitor.on_train_batch_end(0, {"loss": 2.31})
    monitor.on_epoch_end(0, {"loss": 9.0, "val_accuracy": 0.1})
    assert monitor.status is None, "grown, but not ten times"
    monitor.on_epoch_end(1, {"loss": 40.0, "val_accuracy": 0.1})
    assert monitor.diverged and not monitor.stalled and monitor.model.stop_training
    assert monitor.reason.startswith("training loss grew to 40 in epoch 2") and "(2.3100" in monitor.reason
    monitor.finish()
    assert monitor.diverged, "a diverged run is not judged stalled afterwards"
    # 16 steps per compiled call: the first batch hook already sees a mean over 16 steps of a loss that
    # exploded (lr 50 on digits), so the start is a uniform guess's loss, and the first epoch is judged.
    hidden = _monitor(chance_accuracy=0.1, accuracy_margin=0.06, baseline_loss=math.log(10), patience=1)
    hidden.on_train_batch_end(15, {"loss": 3.2e9})
    hidden.on_epoch_end(0, {"loss": 3.2e9, "val_accuracy": 0.085})
    assert hidden.diverged and "where it started (2.3026)" in hidden.reason


def test_a_loss_that_starts_high_and_falls_is_not_growth():
    # Without a chance level the start is the first batch's loss; a later spike under ten times it is no divergence.
    monitor = _monitor(patience=1)
    monitor.on_train_batch_end(0, {"loss": 30.0})
    _epochs(monitor, [(3.0, 0.0), (0.5, 0.0), (250.0, 0.0)])
    assert monitor.status is None
    monitor.on_epoch_end(3, {"loss": 301.0})
    assert monitor.diverged and "more than 10 times where it started (30.0000" in monitor.reason
    off = _monitor(patience=1, loss_growth=None)
    _epochs(off, [(1.0, 0.0), (1e9, 0.0)])
    assert off.status is None


def test_a_validation_split_too_small_to_judge_says_so_instead_of_stalling():
    # Two validation images of different classes: chance 0.5, three standard errors 1.06: not even a
    # perfect score would pass, so the run is not judged.
    margin = 3 * math.sqrt(0.5 * 0.5 / 2)
    monitor = _monitor(chance_accuracy=0.5, accuracy_margin=margin, baseline_loss=math.log(10), patience=1,
                       val_examples=2)
    _epochs(monitor, [(2.303, 0.5), (2.303, 0.5)])
    assert monitor.status is None and monitor.reason is None and not monitor.model.stop_training
    assert monitor.note.startswith("the validation split (2 examples) is too small to judge whether the run learned")
    assert monitor.chance_record()["threshold"] == pytest.approx(0.5 + margin)
    assert not can_judge(monitor.chance_record()["threshold"]) and can_judge(0.99)
    monitor.on_train_batch_end(0, {"loss": float("nan")})
    assert monitor.diverged, "a loss that is not finite is still divergence"
    judged = _monitor(chance_accuracy=0.1, accuracy_margin=0.285, baseline_loss=math.log(10), patience=1)
    assert judged.note is None
