"""E7, instance segmentation: a Mask R-CNN from TensorFlow Model Garden, fine-tuned on instance
data (COCO-format JSON with an image folder, or the embedded generated shapes).

Model Garden (``tf-models-official``) is an optional extra: ``make setup-instance`` installs it
(``requirements-instance.txt``), and ``install_extra()`` in a notebook (Colab), beside the kit
without touching TensorFlow, Keras or NumPy. The
data types, loaders of the generated set and this module import without it; everything that
needs it calls ``require_model_garden()`` first, which says how to install it.
"""

from __future__ import annotations

from typing import Any

from lab.tasks.instance.extra import INSTALL_HINT, install_extra, missing_extra, require_model_garden

__all__ = ["INSTALL_HINT", "install_extra", "load_data", "missing_extra", "require_model_garden", "train_instance"]


def train_instance(config: Any = None, *, data: Any = None, raise_on_error: bool = True, **overrides: Any) -> Any:
    """Trains one Mask R-CNN as the configuration says and writes its run record (E7).

    Args:
        config: an ``InstanceConfig``, a flat dict of its fields, or None for the defaults
            (E7's real setting: meant for a GPU).
        data: an already loaded ``lab.tasks.instance.data.InstanceDataset`` (otherwise the one
            ``config.dataset`` names is loaded).
        raise_on_error: re-raise an exception during training after recording the run as
            ``failed`` (sweeps pass False to go on with the next run).
        **overrides: config fields to change, e.g. ``train_instance(learning_rate=5e-3)``.

    Returns:
        A ``lab.runs.runner.RunResult`` whose metrics hold the validation and test COCO box and mask
        AP (``test_mask_ap``, ``test_box_ap50``...), per class, and ``seconds_per_step``.

    Raises:
        ValueError: an invalid configuration (before anything is trained or written).
        ImportError: the instance-segmentation extra is not installed (how to install it).
    """
    from lab.runs.training import run

    return run(config, data=data, raise_on_error=raise_on_error, task="instance", **overrides)


def load_data(config: Any) -> Any:
    """The instance data a configuration names (``InstanceConfig`` or its flat dict), as a run
    loads it: pass it to ``train_instance(config, data=...)`` and to a sweep to load it once."""
    from lab.config import InstanceConfig
    from lab.tasks.instance.task import INSTANCE

    return INSTANCE.load_data(InstanceConfig.from_any(config))
