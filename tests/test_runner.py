"""The runner's shared policies, for every task: data keyed by every field that chooses it, the
chief-only record without leftovers, the steps-per-call policy, and old names refused clearly.

Each of these drifted apart while classification and segmentation had their own training code.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

import lab.runs.runner as runner
from lab.config import RunConfig, SegmentationConfig
from lab.data.datasets import DATA_FIELDS, data_key, load_dataset
from lab.data.datasets.folders import write_image_folder
from lab.runs.records import load_run, load_runs, read_index
from lab.tasks.segmentation import train_autoencoder, train_segmentation
from lab.studies.sweep import run_sweep
from lab.runs.training import train

MLP = dict(model="mlp", hidden_units=[8], epochs=1, batch_size=16, early_stopping_patience=None, verbose=0,
           save_model=False)
SEGMENTER = dict(dataset="shapes", dataset_size=32, limit=24, model="unet", depth=2, filters=4, epochs=1,
                 batch_size=8, early_stopping_patience=None, verbose=0, save_model=False)


def test_every_data_field_is_in_the_data_key():
    base = RunConfig(dataset="folder:/x", dataset_size=16)
    changes = {"dataset": "folder:/y", "dataset_size": 24, "dataset_resize": 40, "num_classes": 3, "limit": 9,
               "val_fraction": 0.2, "split_fractions": [0.6, 0.2, 0.2], "color_mode": "grayscale", "seed": 1}
    assert set(changes) == set(DATA_FIELDS)
    for key, value in changes.items():
        assert data_key(base.replace(**{key: value})) != data_key(base), key
    assert data_key(base.replace(learning_rate=0.1, name="other")) == data_key(base)
    # Segmentation and autoencoder runs read the same images and masks; classification does not.
    assert data_key(SegmentationConfig(model="unet")) == data_key(SegmentationConfig(model="autoencoder"))
    assert data_key(SegmentationConfig(dataset="shapes")) != data_key(RunConfig(dataset="shapes"))


def test_a_sweep_over_dataset_resize_loads_each_variants_data(tmp_path):
    # One image folder, two resize-then-crop settings: the crops differ, so each run must load its own.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 48, 48, 3), dtype=np.uint8)
    folder = write_image_folder(images, np.repeat(np.arange(3), 10), ["a", "b", "c"], tmp_path / "folder")
    base = RunConfig(dataset=f"folder:{folder}", dataset_size=16, **MLP)
    result = run_sweep(base, [{"name": "resize-16", "dataset_resize": 16}, {"name": "resize-48", "dataset_resize": 48}],
                       name="resize")
    # The record names the data the run trained on: each variant's own resize.
    assert [run.config["data"]["source"]["resize_to"] for run in result.runs] == [16, 48]
    first, second = (load_dataset(f"folder:{folder}", size=16, resize_to=r) for r in (16, 48))
    assert not np.array_equal(first.x_train, second.x_train), "the two settings give different images"


@pytest.mark.parametrize("trainer, config", [(train, dict(dataset="digits", limit=60, **MLP)),
                                             (train_segmentation, SEGMENTER),
                                             (train_autoencoder, {**{k: v for k, v in SEGMENTER.items() if k != "depth"},
                                                                  "model": "autoencoder", "filters": [4, 8]})],
                         ids=["classification", "segmentation", "reconstruction"])
def test_only_the_chief_keeps_a_record_and_workers_leave_nothing(trainer, config, monkeypatch, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where a worker's temporary folder goes
    monkeypatch.setattr(runner.hardware, "is_chief", lambda: False)
    worker = trainer(config)
    assert worker.status != "failed" and worker.run_dir is None
    assert load_runs() == [], "a worker's record is not kept"
    assert list(scratch.glob("lab-worker-*")) == [], "a worker's temporary run folder is deleted"
    monkeypatch.setattr(runner.hardware, "is_chief", lambda: True)
    chief = trainer(config)
    assert [run.run_id for run in load_runs()] == [chief.run_dir.name]
    assert load_run(chief.run_dir).config["task"] == chief.config.task


def test_one_replica_keeps_the_configured_steps_per_call():
    result = train(dataset="digits", limit=60, steps_per_execution=4, **MLP)
    assert result.metrics["steps_per_execution"] == 4


def test_several_replicas_compile_one_step_per_call(monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(runner.tf.distribute, "get_strategy", lambda: TwoReplicas())
    assert runner.steps_per_execution(RunConfig(steps_per_execution=16)) == 1
    assert runner.compile_options(SegmentationConfig(steps_per_execution=8))["steps_per_execution"] == 1


@pytest.mark.parametrize("old, new", [("image_size", "pipeline_size"), ("input_size", "backbone_input_size"),
                                      ("resize_to", "dataset_resize"), ("trainable", "unfreeze"),
                                      ("run_name", "name"), ("run_tags", "tags")])
def test_an_old_name_is_refused_with_its_new_name(old, new):
    for make in (lambda: RunConfig(**{old: 1}), lambda: RunConfig.from_dict({old: 1})):
        with pytest.raises(ValueError, match=f"'{old}' is now called {new}"):
            make()
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        RunConfig(learnig_rate=0.1)


def test_an_empty_history_is_recorded_for_a_run_that_fails_before_its_first_epoch(monkeypatch):
    class Broken(RuntimeError):
        pass

    def fail(*args, **kwargs):
        raise Broken("no epoch")

    monkeypatch.setattr(runner, "_run_phases", fail)
    result = train(dataset="digits", limit=60, raise_on_error=False, **MLP)
    assert result.status == "failed" and result.history.empty
    assert "Broken: no epoch" in load_run(result.run_dir).metrics["error"]


def test_old_records_are_read_under_the_new_names(tmp_path):
    import json

    folder = tmp_path / "old-run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"image_size": 16, "input_size": 64, "trainable": "head",
                                                    "model": "cnn"}))
    (folder / "metrics.json").write_text(json.dumps({"status": "completed"}))
    config = load_run(folder).config
    assert (config["pipeline_size"], config["backbone_input_size"], config["unfreeze"]) == (16, 64, 0)
    assert "image_size" not in config and Path(folder / "config.json").read_text().count("image_size") == 1


def test_the_record_names_the_data_the_run_trained_on_and_its_hash_covers_it():
    from lab.data.datasets import from_arrays

    rng = np.random.default_rng(0)

    def arrays(seed_shift: int):
        x = rng.integers(0, 256, size=(80, 8, 8, 1), dtype=np.uint8)
        y = (np.arange(80) + seed_shift) % 2
        return from_arrays(x[:60], y[:60], x[60:], y[60:], x_val=x[40:60], y_val=y[40:60], name="coins")

    first, second = arrays(0), arrays(1)
    assert first.task == "binary-class" and first.source["class_names"] == "inferred"
    a = train(data=first, **MLP)
    b = train(data=second, **MLP)
    record = load_run(a.run_dir).config
    assert record["dataset"] == "coins" and a.config.dataset == "coins", "not the config's default 'digits'"
    assert record["data"]["content_sha256"] == first.content_hash() and record["data"]["task"] == "binary-class"
    assert record["config_hash"] != load_run(b.run_dir).config["config_hash"], "different data, different hash"
    assert record["config_hash"] == a.config.config_hash(first) != a.config.config_hash()
    # Data loaded from the registry by hand keeps the configuration's name for it.
    digits = load_dataset("digits", limit=60)
    assert load_run(train(data=digits, **MLP).run_dir).config["dataset"] == "digits"


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_swept_by_the_next_run(isolated_dirs):
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = isolated_dirs / "reports" / "runs"
    code = ("from lab.runs.training import train; train(dataset='digits', model='mlp', hidden_units=[8], epochs=200, "
            "early_stopping_patience=None, verbose=0)")
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.time() + 120
        while not (runs.exists() and any((p / "history.csv").exists() for p in runs.glob(".partial-*"))):
            assert process.poll() is None and time.time() < deadline, "the run should be training"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    [left] = list(runs.glob(".partial-*"))
    assert load_runs() == [], "a killed run is not in the index"
    result = train(dataset="digits", limit=60, **MLP)
    assert not left.exists(), "the next run removed the killed run's folder"
    assert [run.run_id for run in load_runs()] == [result.run_dir.name]


# -- how a run ended: its status, recorded whatever happened (lab.runs.records.STATUSES) --------------

def _blank(digits, val_images=None):
    """Digits with every image blank: no model can tell the classes apart, so none beats chance."""
    from lab.data.datasets import from_arrays

    blank = np.zeros_like(digits.x_train)
    x_val, y_val = np.zeros_like(digits.x_val), digits.y_val
    if val_images is not None:
        x_val, y_val = x_val[:val_images], np.arange(val_images)
    return from_arrays(blank, digits.y_train, np.zeros_like(digits.x_test), digits.y_test, x_val=x_val, y_val=y_val,
                       class_names=digits.class_names, name="blank")


@pytest.mark.parametrize("learning_rate, status, reason", [
    (1e-2, "completed", None),
    (50.0, "diverged", "training loss grew to "),  # finite, thousands of times ln 10
    (1e30, "diverged", "training loss became nan"),
], ids=["learns", "loss-grows", "loss-nan"])
def test_a_run_is_recorded_as_it_ended(digits, learning_rate, status, reason):
    result = train(data=digits, learning_rate=learning_rate, **{**MLP, "epochs": 2, "hidden_units": [16]})
    recorded = load_run(result.run_dir)
    assert result.status == recorded.status == status and [e["status"] for e in read_index()] == [status]
    assert (recorded.metrics["divergence_reason"] or "").startswith(reason or "")
    assert "status_note" not in recorded.metrics
    if status == "completed":
        assert recorded.metrics["test_accuracy"] > 0.5 and recorded.metrics["divergence_reason"] is None


def test_a_run_that_never_beats_chance_is_recorded_stalled_not_diverged(digits):
    result = train(data=_blank(digits), learning_rate=1e-2, **{**MLP, "epochs": 4, "divergence_patience": 2})
    recorded = load_run(result.run_dir)
    assert result.status == recorded.status == "stalled" and result.model is not None, "recorded, not raised"
    assert recorded.metrics["divergence_reason"].startswith("never learned: in 2 epochs")
    assert recorded.metrics["epochs_run"] == 2 and not recorded.metrics["stopped_early"], "stalled, not early stopping"
    assert recorded.metrics["chance"]["best_val_accuracy"] <= recorded.metrics["chance"]["threshold"]
    assert [r.run_id for r in load_runs(status="stalled")] == [recorded.run_id] and not load_runs(status="diverged")


def test_a_validation_split_too_small_to_judge_is_said_instead_of_a_stalled_label(digits):
    # The same blank images, validated on two: chance 0.5 plus three standard errors is above 1.
    result = train(data=_blank(digits, val_images=2), learning_rate=1e-2, **{**MLP, "epochs": 2})
    recorded = load_run(result.run_dir)
    assert recorded.status == "completed" and recorded.metrics["divergence_reason"] is None
    assert recorded.metrics["status_note"].startswith("the validation split (2 examples) is too small to judge")
    assert recorded.metrics["chance"]["threshold"] > 1
