"""COCO box/mask AP through pycocotools (lab.tasks.instance.metrics) and E7's plots (lab.tasks.instance.plots).

The metric tests need pycocotools (the instance-segmentation extra) and skip without it, through
the ``coco`` fixture; the plot tests need nothing from the extra and always run.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lab.tasks.instance.plots import ap_table, instance_predictions
from lab.tasks.instance.types import Instances

NAMES = ["circle", "square", "triangle"]
H, W = 48, 64


@pytest.fixture
def coco():
    """pycocotools (skips without the extra) and the module under test."""
    pytest.importorskip("pycocotools")
    from lab.tasks.instance import metrics

    return metrics


def _box_mask(ymin: int, xmin: int, ymax: int, xmax: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[ymin:ymax, xmin:xmax] = 1
    return mask


def _truth() -> Instances:
    """Two circles' worth of class 1 and one class 2 instance, well apart (no class 3)."""
    masks = np.stack([_box_mask(2, 2, 14, 14), _box_mask(20, 30, 40, 50), _box_mask(30, 2, 44, 20)])
    return Instances.from_masks(masks, [1, 1, 2])


def _as_detections(truth: Instances, scores=(0.9, 0.8, 0.7), **changes) -> Instances:
    fields = {"boxes": truth.boxes.copy(), "classes": truth.classes.copy(), "masks": truth.masks.copy(),
              "scores": np.asarray(scores[:len(truth)], np.float32)}
    fields.update(changes)
    return Instances(**fields)


def _empty(scores: bool = True) -> Instances:
    return Instances(np.zeros((0, 4)), [], np.zeros((0, H, W)), scores=[] if scores else None)


def test_perfect_predictions_score_one(coco):
    truth = _truth()
    scores = coco.coco_scores([truth, truth], [_as_detections(truth)] * 2, NAMES)
    for key in ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75"):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["box_ap_per_class"]["circle"] == pytest.approx(1.0)
    assert scores["mask_ap_per_class"]["square"] == pytest.approx(1.0)
    assert (scores["num_images"], scores["num_instances"], scores["num_detections"]) == (2, 6, 6)
    json.dumps(scores)  # the record stores it as JSON


def test_a_class_without_ground_truth_is_none_not_a_number(coco):
    truth = _truth()
    scores = coco.coco_scores([truth], [_as_detections(truth)], NAMES)
    assert scores["box_ap_per_class"]["triangle"] is None and scores["mask_ap_per_class"]["triangle"] is None
    # The 20x20-pixel instances are all "small" in COCO's ranges: the other ranges are undefined.
    assert scores["mask_ap_large"] is None and scores["mask_ap_small"] == pytest.approx(1.0)
    assert np.isnan(ap_table(scores).loc["triangle", "box AP"])


def test_a_prediction_of_the_wrong_class_scores_zero_for_that_class(coco):
    truth = _truth()
    wrong = _as_detections(truth, classes=np.array([1, 1, 3]))  # the square called a triangle
    scores = coco.coco_scores([truth], [wrong], NAMES)
    assert scores["box_ap_per_class"]["square"] == 0.0 and scores["mask_ap_per_class"]["square"] == 0.0
    assert scores["box_ap_per_class"]["circle"] == pytest.approx(1.0)
    # The triangle class has a detection but no ground truth: still undefined, not 0.
    assert scores["box_ap_per_class"]["triangle"] is None


def test_shifted_boxes_lower_box_ap_only_and_shifted_masks_mask_ap_only(coco):
    truth = _truth()
    shifted_boxes = truth.boxes + np.array([0, 4, 0, 4], np.float32)  # IoU about 0.5-0.6 with the truth
    boxes_off = coco.coco_scores([truth], [_as_detections(truth, boxes=shifted_boxes)], NAMES)
    assert boxes_off["box_ap"] < 0.9 and boxes_off["mask_ap"] == pytest.approx(1.0)
    shifted_masks = np.roll(truth.masks, 4, axis=2)
    masks_off = coco.coco_scores([truth], [_as_detections(truth, masks=shifted_masks)], NAMES)
    assert masks_off["mask_ap"] < 0.9 and masks_off["box_ap"] == pytest.approx(1.0)
    assert boxes_off["box_ap"] == pytest.approx(masks_off["mask_ap"])  # the same shift of the same boxes


def test_no_detections_at_all_score_zero(coco):
    truth = _truth()
    scores = coco.coco_scores([truth, truth], [_empty(), _empty()], NAMES)
    assert scores["box_ap"] == 0.0 and scores["mask_ap"] == 0.0 and scores["mask_ap50"] == 0.0
    assert scores["box_ap_per_class"] == {"circle": 0.0, "square": 0.0, "triangle": None}
    assert scores["num_detections"] == 0


def test_against_pycocotools_called_directly_on_json_files(coco, tmp_path):
    """One image, two true class-1 instances; one exact detection (0.9) and one false positive
    (0.8). Precision is 1 up to recall 0.5 and 0 beyond: 51 of COCO's 101 recall points, at every
    IoU threshold, so AP = 51/101 for boxes and masks alike."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = Instances.from_masks(np.stack([_box_mask(2, 2, 14, 14), _box_mask(20, 30, 40, 50)]), [1, 1])
    false_positive = _box_mask(30, 2, 44, 20)
    predicted = Instances.from_masks(np.stack([truth.masks[0], false_positive]), [1, 1])
    predicted.scores = np.array([0.9, 0.8], np.float32)
    ours = coco.coco_scores([truth], [predicted], ["circle"])
    assert ours["box_ap"] == pytest.approx(51 / 101) and ours["mask_ap"] == pytest.approx(51 / 101)
    assert ours["box_ap50"] == pytest.approx(51 / 101) and ours["mask_ar100"] == pytest.approx(0.5)

    (tmp_path / "truth.json").write_text(json.dumps(coco.coco_ground_truth([truth], ["circle"])))
    (tmp_path / "detections.json").write_text(json.dumps(coco.coco_detections([predicted])))
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        ground_truth = COCO(str(tmp_path / "truth.json"))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(tmp_path / "detections.json")), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert ours[f"{prefix}_ap"] == pytest.approx(evaluator.stats[0])
        assert ours[f"{prefix}_ap75"] == pytest.approx(evaluator.stats[2])


def test_rle_and_json_round_trip(coco):
    from pycocotools import mask as mask_api

    truth = _truth()
    dataset = json.loads(json.dumps(coco.coco_ground_truth([truth, _empty(scores=False)], NAMES)))
    assert [image["id"] for image in dataset["images"]] == [1, 2]
    assert dataset["images"][1] == {"id": 2, "width": W, "height": H}
    assert [c["name"] for c in dataset["categories"]] == NAMES and dataset["categories"][0]["id"] == 1
    for annotation, mask, box in zip(dataset["annotations"], truth.masks, truth.boxes):
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode("ascii"))
        np.testing.assert_array_equal(mask_api.decode(rle), mask)
        ymin, xmin, ymax, xmax = box
        assert annotation["bbox"] == [xmin, ymin, xmax - xmin, ymax - ymin]
        assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
    detections = json.loads(json.dumps(coco.coco_detections([_as_detections(truth)])))
    assert [d["score"] for d in detections] == pytest.approx([0.9, 0.8, 0.7])
    assert [d["category_id"] for d in detections] == [1, 1, 2] and {d["image_id"] for d in detections} == {1}


def test_bad_predictions_are_refused_with_a_clear_error(coco):
    truth = _truth()
    small = Instances(truth.boxes, truth.classes, truth.masks[:, :24, :32], scores=[0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match="24x32 but the image is 48x64"):
        coco.coco_scores([truth], [small], NAMES)
    with pytest.raises(ValueError, match="same images"):
        coco.coco_scores([truth, truth], [_as_detections(truth)], NAMES)
    with pytest.raises(ValueError, match="ids must be 1 to 3"):
        coco.coco_scores([truth], [_as_detections(truth, classes=np.array([1, 4, 2]))], NAMES)
    with pytest.raises(ValueError, match="binary 0/1"):
        coco.coco_scores([truth], [_as_detections(truth, masks=truth.masks * 255)], NAMES)
    with pytest.raises(ValueError, match="no scores"):
        coco.coco_scores([truth], [Instances(truth.boxes, truth.classes, truth.masks)], NAMES)
    with pytest.raises(ValueError, match="distinct names"):
        coco.coco_scores([truth], [_as_detections(truth)], ["a", "a", "b"])


def test_instance_plot_has_two_rows_per_image_and_leaves_no_pyplot_figure():
    truth = _truth()
    images = [np.full((H, W, 3), 90, np.uint8), np.linspace(0, 1, H * W).reshape(H, W)]  # RGB and grey
    predictions = [_as_detections(truth, scores=(0.9, 0.3, 0.6)), _empty()]
    figure = instance_predictions(images, [truth, truth], predictions, NAMES, score_threshold=0.5, count=4)
    assert len(figure.axes) == 4 and plt.get_fignums() == []
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[2] == "prediction: 2 shown, 1 below 0.5 hidden"
    assert titles[3] == "prediction: 0 shown, 0 below 0.5 hidden"
    labels = sorted(text.get_text() for text in figure.axes[2].texts)
    assert labels == ["circle 0.90", "square 0.60"]
    assert len(instance_predictions(images, [truth, truth], predictions, NAMES, count=1).axes) == 2
    with pytest.raises(ValueError, match="full size"):
        instance_predictions([np.zeros((10, 10, 3))], [truth], [_as_detections(truth)], NAMES)


def test_ap_table_has_one_row_per_class():
    scores = {"box_ap_per_class": {"circle": 0.5, "square": None},
              "mask_ap_per_class": {"circle": 0.25, "square": None}}
    table = ap_table(scores)
    assert list(table.index) == ["circle", "square"] and list(table.columns) == ["box AP", "mask AP"]
    assert table.loc["circle", "mask AP"] == 0.25 and table.loc["square"].isna().all()
    with pytest.raises(ValueError, match="per-class"):
        ap_table({"box_ap": 0.1})


def test_per_class_ap_marks_a_class_without_ground_truth_instead_of_a_zero_bar():
    from lab.tasks.instance.plots import per_class_ap

    scores = {"box_ap_per_class": {"circle": 0.5, "square": 0.0, "triangle": None},
              "mask_ap_per_class": {"circle": 0.25, "square": 0.0, "triangle": None}}
    figure = per_class_ap(scores, NAMES)
    ax = figure.axes[0]
    assert plt.get_fignums() == []
    assert [t.get_text() for t in ax.texts] == ["0.50", "0.00", "0.25", "0.00", "no ground truth"]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == NAMES
    with pytest.raises(ValueError, match="no AP for classes"):
        per_class_ap(scores, ["circle", "hexagon"])
