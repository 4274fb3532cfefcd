"""Backbones pretrained here, offline: ``weights="pretrain-offline"``.

ImageNet weights cannot be downloaded without network, so notebooks and tests prove transfer
this way: a backbone is pretrained from scratch on an embedded dataset (every layer trains,
BatchNorm included), and its saved model becomes the ``weights`` of a transfer model on other
data. ``train`` resolves ``weights="pretrain-offline"`` itself, so a notebook only names it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lab.atomic import atomic_path
from lab.classification import CLASSIFICATION
from lab.config import RunConfig
from lab.paths import data_dir
from lab.runner import run

PRETRAIN_OFFLINE = "pretrain-offline"


def pretrain_offline(backbone: str = "resnet18", *, dataset: str = "shapes", input_size: int = 32,
                     epochs: int = 4, limit: int | None = 600, learning_rate: float = 1e-3, seed: int = 0,
                     reports_dir: str | None = None) -> Path:
    """Pretrains a backbone from scratch on an offline dataset and returns its saved model.

    The pretraining run is recorded like any other (tag ``pretrain``), and its model is kept
    under ``data/pretrained/`` by configuration hash, so a second call with the same arguments
    reuses it instead of training again (same seed, same data: the same weights).

    Returns:
        The path of the saved ``.keras`` model.
    """
    config = RunConfig(model="transfer", backbone=backbone, weights=None, unfreeze="all",
                       backbone_input_size=input_size, dataset=dataset,
                       dataset_size=input_size if dataset == "shapes" else None, limit=limit, epochs=epochs,
                       learning_rate=learning_rate, early_stopping_patience=None, seed=seed, verbose=0,
                       name=f"pretrain-{backbone}-{dataset}", tags=["pretrain"], reports_dir=reports_dir)
    target = data_dir() / "pretrained" / f"{backbone}-{dataset}-{config.config_hash()}.keras"
    if target.exists():
        return target
    result = run(config, CLASSIFICATION)
    if result.status != "completed":
        raise RuntimeError(f"Pretraining {backbone} on {dataset} ended {result.status}: "
                           f"{result.metrics.get('divergence_reason')}. See {result.run_dir}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temporary:
        shutil.copyfile(result.run_dir / "model.keras", temporary)
    return target


def resolve_weights(config: RunConfig) -> RunConfig:
    """The configuration with ``weights="pretrain-offline"`` replaced by the saved model's path
    (pretrained now, or reused): the record names the file the weights came from."""
    if config.weights != PRETRAIN_OFFLINE:
        return config
    path = pretrain_offline(config.backbone, input_size=config.backbone_input_size or 32, seed=config.seed,
                            reports_dir=config.reports_dir)
    return config.replace(weights=str(path))
