"""Evaluation recipes: test-time augmentation, per-class scores, a binary task's ROC and threshold."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn import metrics as skm

from lab.tasks.classification import tta_flips
from lab.config import RunConfig
from lab.data.datasets import load_dataset
from lab.runs.evaluation import binary_threshold_metrics, per_class_metrics, youden_threshold
from lab.data.pipeline import make_pipeline
from lab.runs.records import load_run
from lab.runs.training import train

TINY = dict(dataset="digits", limit=120, model="mlp", hidden_units=[8], batch_size=16, epochs=2,
            early_stopping_patience=None, verbose=0, save_model=False, learning_rate=0.01)


def _test_images(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("digits", limit=config.limit, num_classes=config.num_classes)
    return data.x_test, data.y_test


def test_per_class_metrics_equal_sklearns_on_the_predictions():
    result = train(**TINY)
    run = load_run(result.run_dir)
    predictions = run.predictions()
    y_pred = predictions["y_prob"].argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        predictions["y_true"], y_pred, labels=np.arange(10), zero_division=0)
    recorded = run.metrics["test_per_class"]
    assert list(recorded) == [str(d) for d in range(10)]  # keyed by class name, in class order
    assert [recorded[str(d)]["precision"] for d in range(10)] == pytest.approx(precision)
    assert [recorded[str(d)]["recall"] for d in range(10)] == pytest.approx(recall)
    assert [recorded[str(d)]["f1"] for d in range(10)] == pytest.approx(f1)
    assert [recorded[str(d)]["support"] for d in range(10)] == list(support)
    assert "tta" not in run.metrics and "val_threshold" not in run.metrics  # neither TTA nor binary


def test_per_class_metrics_refuse_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        per_class_metrics([0, 1], [0, 1], ["a", "a"])


def test_tta_flips_are_the_image_and_its_mirrors():
    batch = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
    views = [np.asarray(f(batch)) for f in tta_flips("horizontal_and_vertical")]
    assert len(views) == 4 and np.array_equal(views[0], batch)
    assert np.array_equal(views[1], batch[:, :, ::-1]) and np.array_equal(views[2], batch[:, ::-1])
    assert np.array_equal(views[3], batch[:, ::-1, ::-1])
    assert len(tta_flips("horizontal")) == 2
    with pytest.raises(ValueError, match="tta must be one of"):
        RunConfig(tta="flip")


def test_tta_predictions_are_the_mean_over_the_flips(tmp_path):
    result = train(**{**TINY, "save_model": True}, tta="horizontal")
    run = load_run(result.run_dir)
    assert run.metrics["tta"] == "horizontal" and run.metrics["tta_views"] == 2
    assert {"test_accuracy_no_tta", "test_macro_auc_no_tta"} <= set(run.metrics)
    model = keras.models.load_model(result.run_dir / "model.keras", compile=False)
    x_test, _ = _test_images(result.config)
    scaled = np.concatenate(list(make_pipeline(x_test, None, training=False, cache=False, batch_size=512)))
    expected = (model.predict(scaled, verbose=0) + model.predict(scaled[:, :, ::-1], verbose=0)) / 2
    assert np.allclose(run.predictions()["y_prob"], expected, atol=1e-5)
    assert run.metrics["test_accuracy"] == pytest.approx(float(np.mean(expected.argmax(1) == _test_images(result.config)[1])))


def test_tta_changes_nothing_for_a_flip_invariant_model(tmp_path):
    # Global average pooling first: the model cannot tell an image from its mirror.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs).save(tmp_path / "invariant.keras")
    config = {**TINY, "model": "cnn", "hidden_units": None, "init_from": str(tmp_path / "invariant.keras")}
    metrics = train(config, tta="horizontal_and_vertical").metrics
    assert metrics["tta_views"] == 4
    assert metrics["test_accuracy"] == metrics["test_accuracy_no_tta"]
    assert metrics["test_macro_auc"] == pytest.approx(metrics["test_macro_auc_no_tta"], abs=1e-6)


def test_youden_threshold_maximises_tpr_minus_fpr():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.9])
    # At 0.8: TPR 2/3, FPR 0 (J 0.67); at 0.4: TPR 1, FPR 1/4 (J 0.75), the best.
    assert youden_threshold(y, p) == pytest.approx(0.4)
    assert np.isnan(youden_threshold(np.zeros(4), np.linspace(0, 1, 4)))
    values = binary_threshold_metrics(y, np.stack([1 - p, p], 1), y, np.stack([1 - p, p], 1))
    assert values["threshold_rule"] == "youden_j" and values["val_threshold"] == pytest.approx(0.4)
    assert values["test_accuracy_at_val_threshold"] == pytest.approx(6 / 7)  # only the 0.7 negative is wrong
    assert values["test_accuracy_at_0_5"] == pytest.approx(5 / 7)  # the 0.4 positive is wrong too


def test_a_binary_run_records_its_roc_and_validation_threshold():
    result = train(**{**TINY, "num_classes": 2, "limit": 60})
    run = load_run(result.run_dir)
    metrics, predictions = run.metrics, run.predictions()
    assert (result.run_dir / "plots" / "roc.png").exists()
    assert metrics["threshold_rule"] == "youden_j" and 0.0 <= metrics["val_threshold"] <= 1.0
    assert metrics["test_accuracy_at_0_5"] == pytest.approx(metrics["test_accuracy"])
    at_threshold = np.mean((predictions["y_prob"][:, 1] >= metrics["val_threshold"]) == predictions["y_true"])
    assert metrics["test_accuracy_at_val_threshold"] == pytest.approx(at_threshold)
