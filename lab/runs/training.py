"""``run(config)``: one run of any task, one record; ``train(config)``: one classification run.

The life of the run (data, seeding, fit, best weights, evaluation, the record) is the runner's
(``lab.runs.runner``); what a task adds is its plug-in's, which the task registry names
(``lab.tasks.TASKS``). ``lab.run`` is this ``run``; ``train``, ``lab.tasks.segmentation``'s
``train_segmentation`` and ``train_autoencoder`` and ``lab.tasks.instance.train_instance`` are ``run``
restricted to their task.
"""

from __future__ import annotations

from typing import Any

from lab.config import RunConfig, config_for
from lab.data.datasets import Dataset
from lab.runs.runner import RunResult
from lab.runs.runner import run as run_life
from lab.tasks import TASKS

__all__ = ["RunResult", "run", "train"]


def run(config: Any = None, *, data: Any = None, raise_on_error: bool = True, task: str | None = None,
        **overrides: Any) -> RunResult:
    """Trains one model of any task as the configuration says and writes its run record.

    Args:
        config: a configuration (``RunConfig``, ``SegmentationConfig``, ``InstanceConfig``), a
            flat dict of its fields (its model names the task), or None for a classifier's
            defaults.
        data: already loaded data (otherwise the one ``config.dataset`` names is loaded; pass
            it to share it between runs).
        raise_on_error: re-raise an exception during training after recording the run as
            ``failed`` (sweeps pass False to go on with the next run).
        task: refuse a configuration of another task (the ``train_*`` entry points pass theirs).
        **overrides: config fields to change, e.g. ``run(config, learning_rate=1e-4)``.

    Returns:
        A RunResult; ``status`` is "completed", "stalled" or "diverged" (recorded, not
        raised) or "failed" (``lab.runs.records.STATUSES``).

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
        ImportError: the task's optional extra is not installed (how to install it).
    """
    config = config_for(config, overrides, task=task)
    entry = TASKS[config.task]
    entry.require()
    return run_life(entry.prepared(config), entry.runner_task, data=data, raise_on_error=raise_on_error)


def train(config: RunConfig | dict[str, Any] | None = None, *, data: Dataset | None = None,
          raise_on_error: bool = True, **overrides: Any) -> RunResult:
    """Trains one classifier as the configuration says and writes its run record.

    Args:
        config: a RunConfig, a flat dict of its fields, or None for the defaults.
        data: an already loaded dataset (otherwise the one ``config.dataset`` names is loaded;
            pass one to share it between the runs of a sweep).
        raise_on_error: re-raise an exception during training after recording the run as
            ``failed`` (sweeps pass False to go on with the next run).
        **overrides: config fields to change, e.g. ``train(learning_rate=1e-4)``.

    Returns:
        A RunResult. ``status`` is ``"completed"``, ``"stalled"`` (a finite loss, but a validation
        accuracy never clearly above chance), ``"diverged"`` (a NaN loss, or one that grew; both
        recorded, not raised) or ``"failed"``.

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
    """
    return run(config, data=data, raise_on_error=raise_on_error, task="classification", **overrides)
