"""Dice, cross-entropy, IoU and pixel accuracy against values computed by hand on tiny masks."""

import math

import keras
import numpy as np
import pytest

from lab.tasks.segmentation.losses import CombinedLoss, DiceLoss, WeightedCrossentropy, make_loss, soft_dice_per_class
from lab.runs.evaluation import background_flag, per_class_table, pixel_confusion_matrix, segmentation_metrics
from lab.tasks.segmentation.metrics import MeanDice, MeanIoU, PixelAccuracy

# One 2x2 image, two classes: truth [[0, 1], [1, 1]], foreground probabilities [[.2, .6], [.9, .5]].
TRUTH = np.array([[[0, 1], [1, 1]]])
P1 = np.array([[[0.2, 0.6], [0.9, 0.5]]], np.float32)
PROBS = np.stack([1 - P1, P1], axis=-1)
# By hand (E12's formula): class 1: 2 * (.6 + .9 + .5) / (3 + (.04 + .36 + .81 + .25)) = 4 / 4.46
#                          class 0: 2 * .8 / (1 + (.64 + .16 + .01 + .25)) = 1.6 / 2.06
DICE = np.array([1.6 / 2.06, 4 / 4.46])


def test_soft_dice_per_class_and_loss_by_hand():
    np.testing.assert_allclose(soft_dice_per_class(TRUTH, PROBS, smooth=0.0), DICE, rtol=1e-6)
    assert float(DiceLoss(smooth=0.0)(TRUTH, PROBS)) == pytest.approx(1 - DICE.mean(), rel=1e-6)
    weighted = 1 - (1 * DICE[0] + 3 * DICE[1]) / 4
    assert float(DiceLoss(class_weights=[1, 3], smooth=0.0)(TRUTH, PROBS)) == pytest.approx(weighted, rel=1e-6)
    # One sigmoid channel holding the foreground probability is the same two-class problem.
    assert float(DiceLoss(smooth=0.0)(TRUTH, P1[..., None])) == pytest.approx(1 - DICE.mean(), rel=1e-6)
    assert float(DiceLoss(smooth=0.0)(TRUTH[..., None], PROBS)) == pytest.approx(1 - DICE.mean(), rel=1e-6)


def test_weighted_crossentropy_and_combined_loss_by_hand():
    logs = np.log([0.8, 0.6, 0.9, 0.5])  # probability of each pixel's true class
    assert float(WeightedCrossentropy()(TRUTH, PROBS)) == pytest.approx(-logs.mean(), rel=1e-5)
    weighted = -(2 * logs[0] + logs[1:].sum()) / 4  # background weight 2, foreground 1
    assert float(WeightedCrossentropy([2, 1])(TRUTH, PROBS)) == pytest.approx(weighted, rel=1e-5)
    combined = CombinedLoss(crossentropy_weight=0.5, dice_weight=2.0, smooth=0.0)(TRUTH, PROBS)
    assert float(combined) == pytest.approx(0.5 * -logs.mean() + 2.0 * (1 - DICE.mean()), rel=1e-5)


def test_perfect_and_absent_class_dice():
    perfect = np.eye(3, dtype=np.float32)[TRUTH]
    assert float(DiceLoss()(TRUTH, perfect)) == pytest.approx(0.0, abs=1e-6), "absent and never predicted: Dice 1"
    stray = perfect.copy()
    stray[0, 0, 0] = [0.9, 0.0, 0.1]  # a little probability on class 2, which is absent
    assert float(DiceLoss()(TRUTH, stray)) > 1 / 3, "class 2's Dice drops to 0"
    assert float(DiceLoss(class_weights=[1, 1, 0])(TRUTH, stray)) < 0.01


def test_losses_round_trip_through_keras_serialisation():
    for loss in (DiceLoss([1.0, 2.0]), WeightedCrossentropy([0.5, 1.0]), make_loss("combined", dice_weight=3.0)):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
        assert float(restored(TRUTH, PROBS)) == pytest.approx(float(loss(TRUTH, PROBS)))
    with pytest.raises(ValueError, match="Available losses: crossentropy, dice, combined"):
        make_loss("focal")
    with pytest.raises(ValueError, match="one weight per class"):
        DiceLoss([1, 2, 3])(TRUTH, PROBS)


# Three classes on a 2x3 image. Confusion matrix (rows true, columns predicted):
#   [[1, 1, 0],
#    [0, 2, 0],
#    [1, 0, 1]]
Y_TRUE = np.array([[0, 0, 1], [1, 2, 2]])
Y_PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_iou_dice_and_pixel_accuracy_by_hand():
    np.testing.assert_array_equal(pixel_confusion_matrix(Y_TRUE, Y_PRED, 3), [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    m = segmentation_metrics(Y_TRUE, Y_PRED, ["background", "a", "b c"], prefix="test_")
    assert m["test_pixel_accuracy"] == pytest.approx(4 / 6)
    assert (m["test_iou_background"], m["test_iou_a"], m["test_iou_b_c"]) == pytest.approx((1 / 3, 2 / 3, 1 / 2))
    assert (m["test_dice_background"], m["test_dice_a"], m["test_dice_b_c"]) == pytest.approx((1 / 2, 4 / 5, 2 / 3))
    assert m["test_mean_iou"] == pytest.approx(0.5)
    assert m["test_mean_dice"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["test_foreground_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # A class neither present nor predicted has no score and does not drag the mean down.
    four = segmentation_metrics(Y_TRUE, Y_PRED, ["background", "a", "b", "absent"])
    assert four["iou_absent"] is None and four["mean_iou"] == pytest.approx(0.5)
    table = per_class_table(Y_TRUE, Y_PRED, ["background", "a", "b"])
    assert list(table["class"]) == ["background", "a", "b"]
    np.testing.assert_allclose(table["true_share"], [2 / 6, 2 / 6, 2 / 6])
    np.testing.assert_allclose(table["predicted_share"], [2 / 6, 3 / 6, 1 / 6])


def test_streaming_keras_metrics_agree_with_the_record():
    probabilities = np.eye(3, dtype=np.float32)[Y_PRED][None] * 0.8 + 0.2 / 3  # argmax = Y_PRED
    truth = Y_TRUE[None]
    for metric, expected in ((PixelAccuracy(), 4 / 6), (MeanIoU(3), 0.5), (MeanDice(3), (1 / 2 + 4 / 5 + 2 / 3) / 3)):
        metric.update_state(truth, probabilities)
        assert float(metric.result()) == pytest.approx(expected, rel=1e-5), metric.name
    sigmoid = MeanIoU(2)
    sigmoid.update_state(TRUTH, P1[..., None])  # thresholded at .5: [[0, 1], [1, 0]]
    assert float(sigmoid.result()) == pytest.approx((1 / 2 + 2 / 3) / 2, rel=1e-5)
    assert MeanIoU.from_config(MeanIoU(3).get_config()).num_classes == 3


def test_all_background_prediction_is_flagged_whatever_its_accuracy():
    truth = np.zeros((4, 10, 10), np.int64)
    truth[:, 3:8, 3:8] = 1  # a quarter of the pixels are foreground
    flagged = segmentation_metrics(truth, np.zeros_like(truth), ["background", "object"])
    assert flagged["pixel_accuracy"] == pytest.approx(0.75)
    assert flagged["all_background"] is True
    assert flagged["foreground_fraction_true"] == pytest.approx(0.25)
    assert flagged["foreground_fraction_predicted"] == 0.0
    assert "ALL BACKGROUND" in flagged["warning"] and "pixel accuracy 0.750" in flagged["warning"]
    honest = segmentation_metrics(truth, truth, ["background", "object"])
    assert honest["all_background"] is False and "warning" not in honest
    # "Almost" all background: below a tenth of the true foreground share.
    almost = np.zeros_like(truth)
    almost[0, 3, 3:5] = 1
    assert background_flag(pixel_confusion_matrix(truth, almost, 2))["all_background"] is True
    assert math.isclose(background_flag(pixel_confusion_matrix(truth, almost, 2), flag_ratio=0.001)["foreground_fraction_predicted"], 2 / 400)
