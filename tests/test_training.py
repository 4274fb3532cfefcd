import json
import math
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

from lab.config import RunConfig
from lab.data.datasets import from_arrays
from lab.runs.records import INDEX_NAME, load_run, read_index
from lab.runs.training import train

# A small, fast configuration: the real digits data, the E1 CNN with two narrow blocks.
FAST = dict(dataset="digits", model="cnn", depth=2, filters=8, dense_units=32, epochs=3,
            batch_size=64, verbose=0)


@pytest.fixture(scope="module")
def small_digits():
    from lab.data.datasets import load_dataset

    return load_dataset("digits", limit=300)


def test_a_run_writes_a_complete_record(small_digits, isolated_dirs, capsys):
    result = train(RunConfig(**{**FAST, "verbose": 1}), data=small_digits, name="smoke")
    assert result.status == "completed"
    run = load_run(result.run_dir)
    for name in ("config.json", "history.csv", "metrics.json", "predictions.npz", "model.keras",
                 "plots/learning_curves.png", "plots/confusion_matrix.png", "plots/sample_predictions.png",
                 "plots/class_distribution.png", "plots/top_losses.png"):
        assert (result.run_dir / name).stat().st_size > 0, name
    metrics = run.metrics
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                "test_macro_auc", "best_epoch", "epochs_run", "seconds_per_epoch", "status", "params"):
        assert metrics[key] is not None, key
    assert metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    history = run.history()
    assert list(history.columns[:1]) == ["epoch"] and {"loss", "val_accuracy", "epoch_seconds"} <= set(history.columns)
    assert run.config["learning_rate"] == 1e-3 and run.config["data"]["name"] == "digits"
    assert run.config["environment"]["tensorflow"]
    # the recorded test metrics can be recomputed from the saved predictions
    assert run.rescore()["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # the evaluated model is the best epoch's: its val loss is the history's minimum
    assert metrics["val_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-4)
    # the run is indexed, and the E4 line was printed
    assert read_index()[-1]["run_id"] == result.run_dir.name
    assert "Epoch 1/3 | TrainLoss:" in capsys.readouterr().out
    # the checkpoint is a loadable Keras model
    assert keras.models.load_model(result.run_dir / "model.keras").count_params() == metrics["params"]


@pytest.mark.slow
def test_same_seed_same_data_same_metrics(small_digits):
    first = train(RunConfig(**FAST), data=small_digits)
    second = train(RunConfig(**FAST), data=small_digits)
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy", "test_macro_auc"):
        assert first.metrics[key] == second.metrics[key], key
    pd.testing.assert_frame_equal(first.history.drop(columns="epoch_seconds"),
                                  second.history.drop(columns="epoch_seconds"))
    other = train(RunConfig(**{**FAST, "seed": 1}), data=small_digits)
    assert other.metrics["val_loss"] != first.metrics["val_loss"]


def test_a_slow_run_that_learns_is_completed_and_one_that_never_learns_is_stalled(digits):
    # The quick E4 setting: Adam at 1e-4 learns slowly (its loss stays near ln 10 for 3 epochs).
    common = dict(pipeline_size=18, model="simple", epochs=3, batch_size=128, early_stopping_patience=None,
                  verbose=0, save_model=False)
    slow = train(data=digits, learning_rate=1e-4, **common)
    assert slow.status == "completed" and slow.metrics["divergence_reason"] is None
    assert slow.metrics["best_epoch_loss"] > 0.98 * math.log(10), "a loss-only rule would call it diverged"
    assert slow.metrics["test_accuracy"] > 0.3
    # Labels shuffled, Adam at 1e-2 as in E4: nothing is learned, validation accuracy stays at chance.
    rng = np.random.default_rng(0)
    noise = from_arrays(digits.x_train, rng.permutation(digits.y_train), digits.x_test, digits.y_test,
                        x_val=digits.x_val, y_val=digits.y_val, class_names=digits.class_names, name="noise")
    never = train(data=noise, learning_rate=1e-2, **common)
    assert never.status == "stalled" and never.metrics["divergence_reason"].startswith("never learned")


def test_divergence_is_recorded_not_raised(small_digits):
    result = train(RunConfig(**{**FAST, "learning_rate": 50.0, "epochs": 6, "divergence_patience": 2}),
                   data=small_digits)
    assert result.status == "diverged"
    assert result.metrics["divergence_reason"]
    assert result.metrics["epochs_run"] < 6
    assert json.loads((result.run_dir / "metrics.json").read_text())["status"] == "diverged"


class _Boom(keras.callbacks.Callback):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        raise self.error


def test_failure_is_recorded_then_raised_or_returned(small_digits, monkeypatch):
    import lab.runs.runner as runner

    monkeypatch.setattr(runner, "EpochTimer", lambda: _Boom(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        train(RunConfig(**FAST), data=small_digits)
    result = train(RunConfig(**FAST), data=small_digits, raise_on_error=False)
    assert result.status == "failed" and "disk full" in result.metrics["error"]
    assert [e["status"] for e in read_index()] == ["failed", "failed"]


def test_interrupted_run_leaves_nothing_to_trust(small_digits, monkeypatch, isolated_dirs):
    import lab.runs.runner as runner

    monkeypatch.setattr(runner, "EpochTimer", lambda: _Boom(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train(RunConfig(**FAST), data=small_digits)
    runs = isolated_dirs / "reports" / "runs"
    assert [p.name for p in runs.iterdir() if p.name != INDEX_NAME] == []
    assert read_index() == []


def test_label_smoothing_raises_the_loss_of_confident_predictions(small_digits):
    plain = train(RunConfig(**FAST), data=small_digits)
    smoothed = train(RunConfig(**{**FAST, "label_smoothing": 0.1}), data=small_digits)
    assert smoothed.metrics["train_loss"] > plain.metrics["train_loss"]


def test_options_that_change_the_run(small_digits):
    result = train(RunConfig(**{**FAST, "epochs": 2, "optimizer": "sgd", "momentum": 0.9, "augment": True,
                                "aug_flip": None, "aug_rotation": 0.05, "class_weighting": "balanced",
                                "pipeline_size": 12, "early_stopping_patience": 1}), data=small_digits)
    assert result.status != "failed"  # two epochs may not learn yet: the options are the point here
    assert result.model.input_shape == (None, 12, 12, 1)


@pytest.mark.slow
def test_mixed_precision_and_xla_switches_work_on_cpu(small_digits):
    with pytest.raises(ValueError, match="jit_compile=True needs deterministic=False"):
        RunConfig(**{**FAST, "jit_compile": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when it silently drops XLA
        result = train(RunConfig(**{**FAST, "epochs": 1, "mixed_precision": True, "jit_compile": True,
                                    "deterministic": False}), data=small_digits)
    assert result.status != "failed"  # one epoch need not learn: the switches are the point
    assert result.model.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored after the run"


def test_overrides_and_dict_configs():
    mlp = {k: v for k, v in FAST.items() if k not in ("depth", "filters", "dense_units")}
    result = train({**mlp, "epochs": 1, "limit": 100}, model="mlp", hidden_units=[16])
    assert result.config.model == "mlp" and result.metrics["params"] == 64 * 16 + 16 + 16 * 10 + 10
    with pytest.raises(ValueError, match="has no option 'depth'"):
        train({**FAST, "model": "mlp"})


def test_last_layer_training_from_a_saved_run(small_digits):
    # E5 with a stand-in for a pretrained network: pretrain on five digit classes, then train only
    # a new 10-class output layer on all digits.
    pretrained = train(RunConfig(**FAST), data=small_digits.subset_classes(5, seed=0))
    target = small_digits
    result = train(RunConfig(**{**FAST, "init_from": str(pretrained.run_dir), "unfreeze": 0}), data=target)
    model = result.model
    assert model.output_shape == (None, 10)
    assert [l.name for l in model.layers if l.trainable_weights] == ["predictions"]
    assert result.metrics["trainable_params"] == 32 * 10 + 10
    # the frozen layers kept the pretrained weights
    before = keras.models.load_model(pretrained.run_dir / "model.keras", compile=False)
    np.testing.assert_array_equal(before.get_layer("block1_conv1").get_weights()[0],
                                  model.get_layer("block1_conv1").get_weights()[0])
    with pytest.raises(ValueError, match="'trainable' is now called unfreeze"):
        RunConfig(trainable="head")
    with pytest.raises(ValueError, match="has no stages to count: unfreeze must be 0"):
        RunConfig(init_from=str(pretrained.run_dir), unfreeze=2)
    with pytest.raises(FileNotFoundError, match="No saved model"):
        train(RunConfig(**{**FAST, "init_from": "/nonexistent"}), data=target)


def test_training_can_stream_from_tfrecords(small_digits, tmp_path):
    in_memory = train(RunConfig(**FAST), data=small_digits)
    streamed = train(RunConfig(**{**FAST, "tfrecord_dir": str(tmp_path / "records")}), data=small_digits)
    assert (tmp_path / "records" / "train.manifest.json").exists()
    assert streamed.status == "completed" and streamed.metrics["epochs_run"] == 3
    # the same images, in a different shuffle order: close, not identical, results
    assert abs(streamed.metrics["test_accuracy"] - in_memory.metrics["test_accuracy"]) < 0.25
    other = small_digits.limit(100)
    with pytest.raises(ValueError, match="point tfrecord_dir at an empty one"):
        train(RunConfig(**{**FAST, "tfrecord_dir": str(tmp_path / "records")}), data=other)
    # The same dataset split with another seed would put test images into training: refused,
    # naming both seeds, before a run folder exists.
    runs_before = len(read_index())
    with pytest.raises(ValueError, match=r"seed.*1.*0|seed.*0.*1"):
        train(RunConfig(**{**FAST, "seed": 1, "limit": 300, "tfrecord_dir": str(tmp_path / "records")}))
    assert len(read_index()) == runs_before


def test_mirrored_strategy_runs_on_a_single_cpu(small_digits):
    result = train(RunConfig(**{**FAST, "epochs": 1, "distribute": "mirrored"}), data=small_digits)
    assert result.status != "failed" and result.metrics["test_accuracy"] is not None
