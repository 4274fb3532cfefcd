"""COCO box and mask AP of instance predictions, computed by pycocotools (the reference
implementation that papers and Model Garden report), never by hand-written matching.

Images are numbered 1, 2, ... in the order of the sequences given; annotation ids also start at
1 (pycocotools' matcher treats id 0 as "unmatched"). Boxes enter COCO as ``[x, y, width,
height]`` in pixels, masks as compressed RLE (``pycocotools.mask.encode`` of a Fortran-ordered
array), with the RLE ``counts`` decoded to ``str`` so that every dict here is JSON-able.

pycocotools is part of the instance-segmentation extra; the functions here say how to install it
when it is missing.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Sequence

import numpy as np

from lab.tasks.instance.extra import INSTALL_HINT
from lab.tasks.instance.types import Instances

# COCOeval.stats positions of the numbers reported (its summarize() order at maxDets 100).
_STATS = {"ap": 0, "ap50": 1, "ap75": 2, "ap_small": 3, "ap_medium": 4, "ap_large": 5, "ar100": 8}


def _mask_api():
    """pycocotools.mask, or an ImportError saying how to install the extra."""
    try:
        from pycocotools import mask as mask_api
    except ImportError as error:
        raise ImportError(f"COCO evaluation needs pycocotools, which is not installed. {INSTALL_HINT}") from error
    return mask_api


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(name) for name in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be a non-empty list of distinct names (class_names[i] names class id "
                         f"i + 1); received {list(class_names)!r}.")
    return names


def _image_size(index: int, truth: Instances, image_sizes: Sequence[Sequence[int]] | None) -> tuple[int, int]:
    """The (height, width) of image ``index``: from ``image_sizes`` if given, else from its truth masks."""
    mask_size = tuple(int(s) for s in truth.masks.shape[1:])
    if image_sizes is None:
        if min(mask_size) <= 0:
            raise ValueError(f"Image {index} has no ground-truth instances and masks of shape {truth.masks.shape}, so "
                             f"its size is unknown; give its masks the shape [0, height, width] or pass image_sizes.")
        return mask_size
    height, width = (int(s) for s in image_sizes[index])
    if height <= 0 or width <= 0:
        raise ValueError(f"image_sizes[{index}] must be a positive (height, width); received {image_sizes[index]!r}.")
    if len(truth) and mask_size != (height, width):
        raise ValueError(f"The ground-truth masks of image {index} are {mask_size[0]}x{mask_size[1]} but image_sizes "
                         f"says {height}x{width}; masks must have their image's full size.")
    return height, width


def _check_instances(instances: Instances, what: str, num_classes: int | None) -> None:
    """Refuses what would make pycocotools compute a wrong number without saying so."""
    if len(instances) == 0:
        return
    values = np.unique(instances.masks)
    if not np.isin(values, (0, 1)).all():
        # RLE encoding toggles on every change of value, so a 0/255 mask would be encoded as stripes.
        raise ValueError(f"{what} has masks with values {values[:5].tolist()}...; masks must be binary 0/1 "
                         f"(convert with (mask > 0).astype(np.uint8)).")
    if not np.isfinite(instances.boxes).all():
        raise ValueError(f"{what} has boxes that are not finite: {instances.boxes.tolist()}.")
    if num_classes is not None and (instances.classes.min() < 1 or instances.classes.max() > num_classes):
        # COCOeval silently skips category ids it was not told about: refuse them instead.
        raise ValueError(f"{what} has class ids {sorted(set(instances.classes.tolist()))}; ids must be 1 to "
                         f"{num_classes} (class_names[i] names id i + 1, 0 is the background).")


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    """``(ymin, xmin, ymax, xmax)`` boxes as COCO's ``[x, y, width, height]``."""
    ymin, xmin, ymax, xmax = (boxes[:, i].astype(float) for i in range(4))
    return np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=1).tolist()


def _encode(masks: np.ndarray) -> list[dict]:
    """The compressed RLE of each ``[n, H, W]`` 0/1 mask, ``counts`` as str (JSON-able)."""
    if len(masks) == 0:
        return []
    rles = _mask_api().encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def coco_ground_truth(truth: Sequence[Instances], class_names: Sequence[str],
                      image_sizes: Sequence[Sequence[int]] | None = None) -> dict:
    """The COCO dataset dict of ground-truth instances (the content of an ``instances_*.json``).

    Args:
        truth: the ground truth of each image; image ``i`` gets COCO id ``i + 1``.
        class_names: ``class_names[i]`` names class id ``i + 1`` (COCO category ``i + 1``).
        image_sizes: ``(height, width)`` of each image; needed only for an image without instances
            whose masks do not carry its size (``[0, H, W]``).

    Returns:
        ``{"images", "annotations", "categories"}``: images with ``id``, ``width``, ``height``;
        annotations with an RLE ``segmentation``, ``bbox`` ``[x, y, w, h]`` from ``truth.boxes``,
        ``area`` = the mask's pixel count (COCO's convention, which sets small/medium/large),
        ``iscrowd`` 0; categories 1..K named by ``class_names``.
    """
    names = _check_class_names(class_names)
    if image_sizes is not None and len(image_sizes) != len(truth):
        raise ValueError(f"image_sizes must give one (height, width) per image; received {len(image_sizes)} sizes "
                         f"for {len(truth)} images.")
    images, annotations = [], []
    for index, instances in enumerate(truth):
        _check_instances(instances, f"Ground truth of image {index}", len(names))
        height, width = _image_size(index, instances, image_sizes)
        images.append({"id": index + 1, "width": width, "height": height})
        areas = instances.masks.sum(axis=(1, 2), dtype=np.int64)
        for rle, box, label, area in zip(_encode(instances.masks), _xywh(instances.boxes), instances.classes, areas):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(label),
                                "segmentation": rle, "bbox": box, "area": float(area), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(predictions: Sequence[Instances]) -> list[dict]:
    """COCO result entries (the content of a ``detections.json``) of each image's predictions.

    Args:
        predictions: the detections of each image, with scores; image ``i`` gets COCO id ``i + 1``.

    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` (the box
        head's box, not the mask's), ``score``, ``segmentation`` (RLE, ``counts`` as str).
    """
    results = []
    for index, instances in enumerate(predictions):
        if instances.scores is None:
            raise ValueError(f"The predictions of image {index} have no scores; detections need one score each "
                             f"(Instances(..., scores=...)).")
        _check_instances(instances, f"Predictions of image {index}", None)
        if len(instances) and not np.isfinite(instances.scores).all():
            raise ValueError(f"The predictions of image {index} have scores that are not finite: "
                             f"{instances.scores.tolist()}.")
        for rle, box, label, score in zip(_encode(instances.masks), _xywh(instances.boxes), instances.classes,
                                          instances.scores):
            results.append({"image_id": index + 1, "category_id": int(label), "bbox": box, "score": float(score),
                            "segmentation": rle})
    return results


def _number(value: float) -> float | None:
    """A COCOeval number, or None for its -1 sentinel ("no ground truth to score against")."""
    return None if value <= -1 else float(value)


def _evaluate(ground_truth, detections: list[dict], iou_type: str, class_names: list[str]) -> dict[str, Any]:
    """Runs COCOeval for one IoU type; returns its summary numbers and the AP of each class."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # The masks are scored by their own area and shape: with a bbox present, loadRes would set a
    # result's area to its box's (as detectron2 does, the box is dropped for "segm"). loadRes also
    # writes into the dicts it gets, hence the copies.
    drop = "bbox" if iou_type == "segm" else "segmentation"
    entries = [{k: v for k, v in copy.deepcopy(d).items() if k != drop} for d in detections]
    if entries:
        results = ground_truth.loadRes(entries)
    else:
        # loadRes reads entries[0]; an empty result set is built as it would build one, and
        # COCOeval then scores every class that has ground truth 0 (nothing found).
        results = COCO()
        results.dataset = {"images": list(ground_truth.dataset["images"]),
                           "categories": copy.deepcopy(ground_truth.dataset["categories"]), "annotations": []}
        results.createIndex()
    evaluator = COCOeval(ground_truth, results, iouType=iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    scores: dict[str, Any] = {key: _number(evaluator.stats[i]) for key, i in _STATS.items()}
    # precision is [iou thresholds, recall thresholds, classes, area ranges, maxDets]; area "all"
    # is index 0 and maxDets 100 the last, as summarize() uses for AP.
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[class_names[category - 1]] = float(values.mean()) if values.size else None
    scores["per_class"] = per_class
    return scores


def coco_scores(truth: Sequence[Instances], predictions: Sequence[Instances], class_names: Sequence[str],
                image_sizes: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """COCO box and mask AP of the predictions against the truth, by pycocotools' COCOeval.

    COCOeval runs with its defaults: IoU thresholds .50:.05:.95, 101 recall points, area ranges
    small < 32², medium < 96², large (pixels of the image as given) and at most 100 detections per
    image and class (``maxDets`` 100; detections beyond the 100 best-scored are not counted).
    Its printed tables are silenced.

    Args:
        truth: the ground truth of each image.
        predictions: the detections of each image (with scores), in the same order; masks at the
            image's full size.
        class_names: ``class_names[i]`` names class id ``i + 1``.
        image_sizes: ``(height, width)`` of each image, when an image without ground truth has
            masks that do not carry its size.

    Returns:
        A flat JSON-able dict: ``box_ap``, ``box_ap50``, ``box_ap75``, ``box_ap_small``,
        ``box_ap_medium``, ``box_ap_large``, ``box_ar100`` and the same with ``mask_``;
        ``box_ap_per_class`` and ``mask_ap_per_class`` ({class name: AP at IoU .50:.95});
        ``num_images``, ``num_instances`` (ground truth) and ``num_detections``. A number COCO
        cannot define (no ground truth in that class or area range) is None, never its -1.
        Predictions with no detections at all score 0.0 wherever there is ground truth.
    """
    _mask_api()
    from pycocotools.coco import COCO

    names = _check_class_names(class_names)
    if len(truth) != len(predictions):
        raise ValueError(f"truth and predictions must list the same images in the same order; received "
                         f"{len(truth)} ground truths and {len(predictions)} predictions.")
    dataset = coco_ground_truth(truth, names, image_sizes)
    for index, (image, instances) in enumerate(zip(dataset["images"], predictions)):
        if len(instances) and instances.masks.shape[1:] != (image["height"], image["width"]):
            raise ValueError(f"The predicted masks of image {index} are {instances.masks.shape[1]}x"
                             f"{instances.masks.shape[2]} but the image is {image['height']}x{image['width']}; "
                             f"resize the masks to the image's full size (Model Garden's masks are per box, "
                             f"pasted into the image by official.vision.ops.mask_ops.paste_instance_masks).")
        _check_instances(instances, f"Predictions of image {index}", len(names))
    detections = coco_detections(predictions)
    scores: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its tables
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        for prefix, iou_type in (("box", "bbox"), ("mask", "segm")):
            result = _evaluate(ground_truth, detections, iou_type, names)
            per_class = result.pop("per_class")
            scores.update({f"{prefix}_{key}": value for key, value in result.items()})
            scores[f"{prefix}_ap_per_class"] = per_class
    scores.update(num_images=len(truth), num_instances=len(dataset["annotations"]), num_detections=len(detections))
    return scores
