"""``train(config)``: one classification run, one record.

The life of the run (data, seeding, fit, best weights, evaluation, the record) is the
runner's (``lab.runner``); what a classifier adds is ``lab.classification``'s. Segmentation
and autoencoder runs have their own entry points in ``lab.segmentation``.
"""

from __future__ import annotations

from typing import Any

from lab.classification import CLASSIFICATION
from lab.config import RunConfig
from lab.datasets import Dataset
from lab.pretraining import resolve_weights
from lab.runner import RunResult, run

__all__ = ["RunResult", "train"]


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
        A RunResult. ``status`` is ``"completed"``, ``"diverged"`` (NaN loss, or a loss that
        never fell below chance level; recorded, not raised) or ``"failed"``.

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
    """
    config = resolve_weights(RunConfig.from_any(config, overrides))
    return run(config, CLASSIFICATION, data=data, raise_on_error=raise_on_error)

