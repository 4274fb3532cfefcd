"""E7's run task end to end: a tiny Mask R-CNN run on the generated shapes, its record, its
honesty (the saved predictions re-score to the recorded AP, the saved weights predict the recorded
detections), its reproducibility, and a refused configuration writing nothing (lab.tasks.instance.task)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("official")
pytest.importorskip("pycocotools")

from lab.config import InstanceConfig  # noqa: E402
from lab.tasks.instance import load_data, train_instance  # noqa: E402

# The quick setting at its smallest: 8 images per split, 2 epochs of 4 steps (about 30 s a run on
# two cores, most of it tracing). A cosine schedule, so that the per-step schedule is exercised.
TINY = dict(dataset="shapes", backbone="resnet18", pipeline_size=128, fpn_filters=64, head_convs=1, head_filters=64,
            fc_dims=256, sampled_rois=64, norm_momentum=0.9, weights=None, epochs=2, batch_size=2,
            learning_rate=0.01, lr_schedule="cosine", limit=8, verbose=0)
CLASSES = ["circle", "square", "triangle"]
LOSSES = ["loss", "rpn_score_loss", "rpn_box_loss", "frcnn_cls_loss", "frcnn_box_loss", "mask_loss", "model_loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same configuration, each in a fresh process (the second reuses the
    TFRecords), read back from their records.

    Fresh processes, because on a CPU a Mask R-CNN run repeats exactly only from a fresh process:
    what ran before in a process (another Model Garden model, an earlier run) changes the last
    digits of a later run's losses (oneDNN's kernels; with TF_ENABLE_ONEDNN_OPTS=0 they agree)."""
    root = tmp_path_factory.mktemp("instance-runs")
    env = {**os.environ, "LAB_DATA_DIR": str(root / "data"), "LAB_REPORTS_DIR": str(root / "reports")}
    folders = []
    for name in ("first", "second"):
        script = (f"from lab.tasks.instance import train_instance\n"
                  f"print(train_instance(**{TINY!r}, reports_dir={str(root / name)!r}).run_dir)\n")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        folders.append(_read(Path(done.stdout.strip().splitlines()[-1])))
    yield folders[0], folders[1], root


def _read(run_dir: Path) -> SimpleNamespace:
    """A run's record as the tests read it: its folder, metrics and history."""
    return SimpleNamespace(run_dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()),
                           history=pd.read_csv(run_dir / "history.csv"))


def _quiet(function, *args):
    """Calls a pycocotools function without its printing."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


@pytest.mark.slow
def test_run_writes_the_whole_record(runs):
    first, _, root = runs
    run_dir = first.run_dir
    assert first.metrics["status"] == "completed" and run_dir.parent == root / "first" / "runs"
    for name in ("config.json", "metrics.json", "history.csv", "model_weights.h5", "plots/learning_curves.png",
                 "plots/instances.png", "plots/per_class_ap.png", "predictions/val_truth.json",
                 "predictions/val_detections.json", "predictions/test_truth.json",
                 "predictions/test_detections.json"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    for plot in (run_dir / "plots").iterdir():
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert any(path.name.startswith("events.out.tfevents") for path in (run_dir / "tensorboard").rglob("*"))
    assert [p.name for p in (root / "first" / "runs").iterdir() if p.is_dir()] == [run_dir.name]  # nothing partial

    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == 2
    for column in [*LOSSES, "val_box_ap", "val_box_ap50", "val_mask_ap", "val_mask_ap50", "learning_rate",
                   "epoch_seconds"]:
        assert column in history.columns, column
        assert np.isfinite(history[column]).all(), column
    assert (history["loss"] > 0).all() and history["loss"].iloc[1] < history["loss"].iloc[0]
    # The cosine schedule reached Model Garden's optimizer: the rate falls from the configured one.
    assert 0 < history["learning_rate"].iloc[1] < history["learning_rate"].iloc[0] < TINY["learning_rate"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.keys() == first.metrics.keys() and metrics["test_mask_ap"] == first.metrics["test_mask_ap"]
    assert (metrics["status"], metrics["epochs_run"], metrics["steps_per_epoch"]) == ("completed", 2, 4)
    assert metrics["best_epoch"] in (1, 2) and metrics["model"] == "maskrcnn" and metrics["task"] == "instance"
    assert metrics["seconds_per_step"] > 0 and metrics["params"] > 1_000_000
    assert metrics["tfrecords_reused"] is False and metrics["weights"] is None
    for split in ("val", "test"):
        for key in ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75", "mask_ar100",
                    *(f"mask_ap_{name}" for name in CLASSES), *(f"box_ap_{name}" for name in CLASSES)):
            assert f"{split}_{key}" in metrics, f"{split}_{key}"
        assert metrics[f"{split}_num_images"] == 8
    scores = {key: value for key, value in metrics.items() if "_ap" in key or "_ar" in key}
    assert len(scores) > 30
    for key, value in scores.items():
        assert value is None or 0.0 <= value <= 1.0, (key, value)
    # The history's last validation AP is the recorded one when the last epoch is the best.
    if metrics["best_epoch"] == 2:
        assert history["val_mask_ap"].iloc[-1] == pytest.approx(metrics["val_mask_ap"])

    config = json.loads((run_dir / "config.json").read_text())
    data = load_data(InstanceConfig(**TINY))
    assert config["task"] == "instance" and config["class_names"] == CLASSES
    assert config["data"]["content_sha256"] == data.content_hash()
    assert config["data"]["class_names"] == CLASSES and config["data"]["images"] == {"train": 8, "val": 8, "test": 8}
    assert config["model_options"] == {key: TINY[key] for key in ("backbone", "pipeline_size", "fpn_filters",
                                                                   "head_convs", "head_filters", "fc_dims",
                                                                   "sampled_rois", "norm_momentum", "weights")} | {
        "unfreeze": "all"}
    assert config["config_hash"] == InstanceConfig(**TINY).config_hash(data)


@pytest.mark.slow
def test_saved_predictions_rescore_to_the_recorded_ap(runs):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    first, _, _ = runs
    folder, metrics = first.run_dir / "predictions", first.metrics
    for split in ("val", "test"):
        truth = COCO()
        truth.dataset = json.loads((folder / f"{split}_truth.json").read_text())
        _quiet(truth.createIndex)
        detections = json.loads((folder / f"{split}_detections.json").read_text())
        assert len(detections) == metrics[f"{split}_num_detections"] > 0
        assert len(truth.dataset["annotations"]) == metrics[f"{split}_num_instances"]
        for iou_type, drop, prefix in (("segm", "bbox", "mask"), ("bbox", "segmentation", "box")):
            # As lab.tasks.instance.metrics (and detectron2) score: a mask's area is its own, not its box's.
            results = _quiet(truth.loadRes, [{k: v for k, v in d.items() if k != drop} for d in detections])
            evaluator = COCOeval(truth, results, iouType=iou_type)
            _quiet(evaluator.evaluate)
            _quiet(evaluator.accumulate)
            _quiet(evaluator.summarize)
            assert metrics[f"{split}_{prefix}_ap"] == pytest.approx(evaluator.stats[0], abs=1e-12)
            assert metrics[f"{split}_{prefix}_ap50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
            assert metrics[f"{split}_{prefix}_ar100"] == pytest.approx(evaluator.stats[8], abs=1e-12)
    # The truth file, read as detections, scores a perfect 1: its ids and categories are those of
    # the detections' file, so an AP of 0 would mean a poor model, not files that do not match.
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 1.0} for a in truth.dataset["annotations"]]
    evaluator = COCOeval(truth, _quiet(truth.loadRes, perfect), iouType="segm")
    for step in (evaluator.evaluate, evaluator.accumulate, evaluator.summarize):
        _quiet(step)
    assert evaluator.stats[0] == pytest.approx(1.0)
    assert {d["image_id"] for d in detections} <= {image["id"] for image in truth.dataset["images"]}
    assert {d["category_id"] for d in detections} <= {1, 2, 3}


@pytest.mark.slow
def test_same_seed_same_run_and_the_records_are_reused(runs):
    first, second, root = runs
    assert first.run_dir != second.run_dir
    # Same seed, same initial weights, same batches: the first epoch repeats to 1e-3 (a seeding
    # bug, such as tf_keras initialisers drawing from their own generator, changed it by 1%).
    # Not exactly: on a CPU two runs of the same configuration differ in the last digits of a
    # loss (oneDNN kernels; CI saw 8e-5 in the first epoch's frcnn_cls_loss), growing to the
    # third digit by the second epoch, even each from a fresh process; a known limit of E7 on
    # CPU, said in docs/instance-segmentation.md.
    losses = [c for c in first.history.columns if c.endswith("loss")]
    pd.testing.assert_frame_equal(first.history[losses].iloc[:1], second.history[losses].iloc[:1], rtol=1e-3)
    pd.testing.assert_frame_equal(first.history[losses], second.history[losses], rtol=0.1)
    assert second.metrics["tfrecords_reused"] is True
    assert first.metrics["tfrecords"] == second.metrics["tfrecords"]
    assert Path(first.metrics["tfrecords"]).parent == root / "data" / "instance-records"


@pytest.mark.slow
def test_saved_weights_predict_the_recorded_detections(runs):
    import tf_keras

    from lab.tasks.instance.model import build, maskrcnn_experiment
    from lab.tasks.instance.task import _set_inputs
    from lab.tasks.instance.tfrecords import export_instances
    from lab.tasks.instance.training import GardenModel

    first, _, _ = runs
    recorded = json.loads((first.run_dir / "config.json").read_text())
    config = InstanceConfig(**{key: value for key, value in recorded.items() if key in InstanceConfig.field_names()})
    experiment = maskrcnn_experiment(len(recorded["class_names"]), **recorded["model_options"])
    tf_keras.backend.clear_session()
    task, model, _ = build(experiment, None)
    model.load_weights(str(first.run_dir / GardenModel.WEIGHTS_FILE))
    records = export_instances(load_data(config), first.metrics["tfrecords"])
    assert records.reused  # the run's own test images
    _set_inputs(experiment, config, records, "float32")
    test_input = task.build_inputs(experiment.task.validation_data.replace(input_path=records.input_path("test")))
    predicted = GardenModel(task, model, tf_keras.optimizers.SGD()).predict(test_input, 8)

    saved = json.loads((first.run_dir / "predictions" / "test_detections.json").read_text())
    for index in (0, 5):
        mine = [d for d in saved if d["image_id"] == index + 1]
        again = predicted[index]
        assert len(again) == len(mine) > 0
        np.testing.assert_allclose(again.scores, [d["score"] for d in mine], atol=1e-3)
        np.testing.assert_array_equal(again.classes, [d["category_id"] for d in mine])
        np.testing.assert_allclose(again.boxes[:, [1, 0]], [d["bbox"][:2] for d in mine], atol=1e-2)


def test_a_refused_configuration_writes_nothing(isolated_dirs):
    reports = isolated_dirs / "refused"
    with pytest.raises(ValueError, match="distribute='mirrored': Mask R-CNN runs train on one device"):
        train_instance(**{**TINY, "epochs": 1, "limit": 2}, distribute="mirrored", reports_dir=str(reports))
    assert not reports.exists()
    assert not (isolated_dirs / "data" / "instance-records").exists()
