import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lab.runs.evaluation import classification_metrics, confusion_matrix, macro_auc, per_class_accuracy
from lab.models.losses import SparseCategoricalCrossentropy


def test_loss_without_smoothing_is_cross_entropy():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    loss = float(SparseCategoricalCrossentropy()(np.array([0, 2]), probs))
    assert loss == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2, rel=1e-5)


def test_label_smoothing_matches_hand_computation():
    probs = np.array([[0.7, 0.2, 0.1]], np.float32)
    s, k = 0.1, 3
    target = np.full(3, s / k) + np.array([1 - s, 0, 0])
    expected = -np.sum(target * np.log(probs[0]))
    assert float(SparseCategoricalCrossentropy(label_smoothing=s)(np.array([0]), probs)) == pytest.approx(expected, rel=1e-5)


def test_smoothing_is_validated_and_serialisable():
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        SparseCategoricalCrossentropy(label_smoothing=1.2)
    loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    assert SparseCategoricalCrossentropy.from_config(loss.get_config()).label_smoothing == 0.1


def test_macro_auc_is_sklearn_one_vs_rest():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    probs = rng.dirichlet(np.ones(4), size=40)
    assert macro_auc(y, probs) == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    perfect = np.eye(4)[y]
    assert macro_auc(y, perfect) == 1.0


def test_binary_auc_uses_positive_class():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert macro_auc(y, probs) == pytest.approx(0.75)


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 2]]
    metrics = classification_metrics(y, probs, prefix="test_")
    assert metrics["test_accuracy"] == 0.75
    assert metrics["test_balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert confusion_matrix(y, probs.argmax(1), 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    np.testing.assert_allclose(per_class_accuracy(y, probs.argmax(1), 3), [0.5, 1, 1])


def test_auc_with_a_missing_class_averages_present_ones():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(UserWarning, match="Only 2 of 3 classes"):
        assert macro_auc(y, probs) == 1.0
