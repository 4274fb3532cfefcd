"""Entry points for dense prediction: ``train_segmentation`` and ``train_autoencoder``.

Both are ``lab.run`` (``lab.runs.training.run``) restricted to their task: the life of a run is the
runner's (``lab.runs.runner``), what segmentation and reconstruction add is
``lab.tasks.segmentation.tasks``'.
"""

from __future__ import annotations

from typing import Any

from lab.config import SegmentationConfig
from lab.data.datasets.segmentation import SegmentationDataset
from lab.runs.runner import RunResult
from lab.runs.training import run


def train_segmentation(config: SegmentationConfig | dict[str, Any] | None = None, *,
                       data: SegmentationDataset | None = None, raise_on_error: bool = True,
                       **overrides: Any) -> RunResult:
    """Trains one segmentation model as the configuration says and writes its run record.

    Args:
        config: a SegmentationConfig, a flat dict of its fields, or None for the defaults.
        data: an already loaded SegmentationDataset (otherwise ``config.dataset`` is loaded).
        raise_on_error: re-raise an exception after recording the run as ``failed``.
        **overrides: config fields to change, e.g. ``train_segmentation(loss="dice")``.

    Returns:
        A RunResult; ``metrics["all_background"]`` is E6's flag, with ``metrics["warning"]``
        saying why when it is set.

    Raises:
        ValueError: an invalid configuration, or an autoencoder's (before anything is trained or
            written).
    """
    return run(config, data=data, raise_on_error=raise_on_error, task="segmentation", **overrides)


def train_autoencoder(config: SegmentationConfig | dict[str, Any] | None = None, *,
                      data: SegmentationDataset | None = None, raise_on_error: bool = True,
                      **overrides: Any) -> RunResult:
    """Trains an autoencoder (plain, denoising or VAE) to reconstruct the images; records the run.

    Same arguments as ``train_segmentation`` (the masks are not used; the model defaults to
    "autoencoder"). The record holds the test reconstruction error (MSE, PSNR); a denoising
    autoencoder is also scored on test images noised with its ``noise_stddev``, against the
    noisy images themselves.
    """
    return run(config, data=data, raise_on_error=raise_on_error, task="reconstruction", **overrides)
