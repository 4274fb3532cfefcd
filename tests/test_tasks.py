"""The task registry (``lab.tasks.TASKS``): every task is one entry, and every group-of-runs
feature works for every task through it: ``lab.run``, a 2-run sweep, a 2-trial keras-tuner
search and a report (instance segmentation where its extra is installed)."""

from __future__ import annotations

import importlib.util

import pytest

import lab
from lab.config import BaseConfig, InstanceConfig, RunConfig, SegmentationConfig, config_for
from lab.models import MODELS
from lab.runs.records import RESULT_STATUSES
from lab.runs.runner import Task
from lab.tasks import TASKS, task_entry, tasks_of

HAS_INSTANCE_EXTRA = all(importlib.util.find_spec(name) for name in ("official", "pycocotools"))

# Each task at its smallest, and a value to sweep and to search.
TINY = {
    "classification": dict(dataset="digits", model="cnn", depth=2, filters=4, dense_units=8, epochs=1, batch_size=64,
                           limit=60, early_stopping_patience=None, verbose=0),
    "segmentation": dict(dataset="shapes", model="unet", depth=2, filters=4, batch_size=8, epochs=1, limit=16,
                         verbose=0),
    "reconstruction": dict(dataset="shapes", model="autoencoder", filters=[4, 8], batch_size=8, epochs=1, limit=16,
                           verbose=0),
    "instance": dict(dataset="shapes", model="maskrcnn", backbone="resnet18", pipeline_size=128, fpn_filters=64,
                     head_convs=1, head_filters=64, fc_dims=256, sampled_rois=64, norm_momentum=0.9, weights=None,
                     epochs=1, batch_size=2, limit=4, verbose=0),
}
NEEDS_EXTRA = pytest.mark.skipif(not HAS_INSTANCE_EXTRA, reason="the instance extra is not installed")
PARAMS = [pytest.param(task, marks=[pytest.mark.slow, NEEDS_EXTRA]) if task == "instance" else task for task in TINY]


def test_every_model_is_trained_by_a_registered_task_whose_entry_is_whole():
    assert set(TINY) == set(TASKS)
    assert {entry.task for entry in MODELS.values()} <= set(TASKS)
    for name, entry in TASKS.items():
        assert entry.name == name and issubclass(entry.config_class, BaseConfig)
        assert name in tasks_of(entry.config_class)
        assert entry.summary_columns[0] == "status" and entry.default_monitor in entry.monitors
        assert set(entry.monitors.values()) <= {"min", "max"}
        assert "learning_curves.png" in entry.figures and set(entry.images) <= {f[:-4] for f in entry.figures}
    assert tasks_of(SegmentationConfig) == ("segmentation", "reconstruction")
    with pytest.raises(ValueError, match="Unknown task 'detection'. Tasks: classification, segmentation"):
        task_entry("detection")


@pytest.mark.parametrize("task", [t for t in TINY if t != "instance"])
def test_each_plugin_is_a_runner_task(task):
    plugin = TASKS[task].runner_task
    for method in (m for m in dir(Task) if not m.startswith("_")):
        assert callable(getattr(plugin, method, None)), f"{task}'s plug-in has no {method}"


def test_a_configuration_takes_its_class_and_monitor_from_its_models_task():
    assert type(config_for(TINY["classification"])) is RunConfig
    assert type(config_for({"model": "unet"})) is SegmentationConfig
    assert config_for({"model": "vae"}).task == "reconstruction"
    instance = config_for({"model": "maskrcnn"})
    assert type(instance) is InstanceConfig and instance.monitor == "val_mask_ap"  # it has no val_loss
    assert config_for(None, task="reconstruction").model == "autoencoder"  # the task's own default
    with pytest.raises(ValueError, match="'unet' is a segmentation model: train it with "
                                         "lab.tasks.segmentation.train_segmentation"):
        config_for({"model": "unet"}, task="reconstruction")
    with pytest.raises(ValueError, match="monitor must be one of 'val_loss', received monitor='val_accuracy'"):
        config_for({"model": "autoencoder", "monitor": "val_accuracy"})


def test_a_refused_configuration_writes_nothing_whatever_its_task(isolated_dirs):
    from lab.runs.records import read_index

    with pytest.raises(ValueError, match="Unknown model 'unet3d'"):
        lab.run({"model": "unet3d"})
    with pytest.raises(ValueError, match=r"'cnn' is a classification model: train it with lab\.runs\.training\.train"):
        lab.run({"model": "cnn"}, task="segmentation")
    assert read_index() == []


@pytest.mark.parametrize("task", PARAMS)
def test_every_task_runs_a_sweep_a_search_and_a_report(task, isolated_dirs):
    from lab.report import build_report
    from lab.studies.sweep import run_sweep
    from lab.studies.tuning import search

    entry = TASKS[task]
    base = config_for(TINY[task])
    assert base.task == task
    rates = [1e-3, 1e-2]
    result = lab.run(base, name=f"{task}-single")
    assert result.config.task == task and result.status in RESULT_STATUSES
    assert result.metrics["task"] == task and (result.run_dir / "metrics.json").exists()

    sweep = run_sweep(TINY[task], [{"learning_rate": rate} for rate in rates], name=f"{task}-sweep")
    assert [run.task for run in sweep.runs] == [task, task]
    assert [run.config["learning_rate"] for run in sweep.runs] == rates
    assert all(run.status in RESULT_STATUSES for run in sweep.runs)  # recorded, never failed
    table = sweep.table()
    assert [c for c in entry.summary_columns if c in table.columns], "no summary column of the task in its table"

    found = search(base, {"learning_rate": rates}, objective=entry.default_monitor, max_trials=2, name=f"{task}-search",
                   verbose=0)
    assert len(found.runs) == 2 and {run.task for run in found.runs} == {task}
    assert found.trials["run_id"].notna().all()
    if found.best is not None:
        assert type(found.best_config()) is entry.config_class

    for source in (f"sweep:{task}-sweep", f"search:{task}-search"):
        report = build_report(source)
        text = report.markdown.read_text(encoding="utf-8")
        assert report.html.exists() and "## Results" in text
        assert entry.summary_columns[1] in text or entry.summary_columns[2] in text
        if report.best is not None:  # the best run's own figures, as its task names them
            assert "best-learning_curves.png" in {path.name for path in report.figures}
