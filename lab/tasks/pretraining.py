"""Backbones pretrained here, offline: ``weights="pretrain-offline"``.

ImageNet weights cannot be downloaded without network, so notebooks and tests prove transfer
this way: a backbone is pretrained from scratch on an embedded dataset (every layer trains,
BatchNorm included), and its saved model becomes the ``weights`` of a transfer model on other
data. ``train`` resolves ``weights="pretrain-offline"`` itself, so a notebook only names it.

Provenance. The model is kept as ``data/pretrained/<backbone>-<dataset>-<config hash>.keras``
beside a sidecar ``<same name>.json`` that says what it was made from: the pretraining
configuration (``RunConfig.to_dict()`` without name, tags, reports_dir and verbose), its hash,
the id of the run that trained it, the lab, Keras and TensorFlow versions, and the sha256 and
size of the ``.keras`` file. A later call with the same arguments reuses the file only after
``check_pretrained`` has compared it with the sidecar: a sidecar of another configuration (a
file renamed or copied under this name) or a file whose sha256 has changed since it was saved
is refused with a ``ValueError`` naming the file and what differs; deleting the file makes the
kit pretrain again. A file without a sidecar (saved by an older kit) cannot be checked, so it is
pretrained again, with a note, rather than trusted. The check reads the file once (a ResNet-18 model, 45 MB: about 0.05 s).

Writing. The sidecar is written (atomically) just before the model is renamed into place, so a
model that exists always has its sidecar. Two processes asking for the same backbone at once
(parallel jobs of a batch) take turns on ``<name>.keras.lock`` (POSIX ``flock``; no lock on
Windows): the second waits, then reuses what the first saved instead of training again and
overwriting it with a model whose bytes (and sha256) differ.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from lab.system.atomic import atomic_path, exclusive, write_json
from lab.tasks.classification import CLASSIFICATION
from lab.config import RunConfig
from lab.system.download import file_hash
from lab.system.paths import data_dir
from lab.runs.runner import run

PRETRAIN_OFFLINE = "pretrain-offline"
SIDECAR_FORMAT = "lab.pretrained"
SIDECAR_VERSION = 1
# What a refused check tells the user to do.
_PRETRAIN_AGAIN = "Delete it; the kit pretrains the backbone again on the next run that asks for it."


# The recipe: enough generated images and epochs that the backbone clearly learns the shapes (its
# validation accuracy at least 0.1 above the divergence rule's threshold for seeds 0 and 1), so that
# the quick transfer runs built on it have features to learn from. With 600 images and 4 epochs
# ResNet-18 passed the threshold by 0.06-0.09 and DeiT-tiny by 0.01. A transformer trained from
# scratch needs the smaller rate (at 1e-3 DeiT-tiny never passed chance), more epochs and flips and
# rotations against overfitting (10 epochs without them: 0.07-0.11 above the threshold; 14 with
# them: 0.17-0.18). ResNet-18's recipe: 0.27-0.47 above it.
PRETRAIN_LIMIT = 1200
PRETRAIN_RECIPES = {  # by backbone family (lab.models.backbones.BackboneSpec.family)
    "transformer": {"epochs": 14, "learning_rate": 1e-4, "augment": True, "aug_flip": "horizontal",
                    "aug_rotation": 0.1},
}
DEFAULT_RECIPE = {"epochs": 10, "learning_rate": 1e-3}


def pretraining_recipe(backbone: str) -> dict[str, Any]:
    """The pretraining settings of a backbone's family (``PRETRAIN_RECIPES``, else ``DEFAULT_RECIPE``);
    an unknown backbone is refused with the list of valid ones."""
    from lab.models.backbones import backbone_spec

    return dict(PRETRAIN_RECIPES.get(backbone_spec(backbone).family, DEFAULT_RECIPE))


def pretraining_config(backbone: str = "resnet18", *, dataset: str = "shapes", input_size: int = 32,
                       epochs: int | None = None, limit: int | None = PRETRAIN_LIMIT,
                       learning_rate: float | None = None, seed: int = 0, reports_dir: str | None = None) -> RunConfig:
    """The run configuration ``pretrain_offline`` trains with these arguments (see there)."""
    recipe = pretraining_recipe(backbone)
    recipe |= {key: value for key, value in (("epochs", epochs), ("learning_rate", learning_rate)) if value is not None}
    return RunConfig(model="transfer", backbone=backbone, weights=None, unfreeze="all",
                     backbone_input_size=input_size, dataset=dataset,
                     dataset_size=input_size if dataset == "shapes" else None, limit=limit,
                     early_stopping_patience=None, seed=seed, verbose=0,
                     name=f"pretrain-{backbone}-{dataset}", tags=["pretrain"], reports_dir=reports_dir, **recipe)


def pretrained_path(config: RunConfig) -> Path:
    """Where the model of a pretraining configuration is kept: ``data/pretrained/<backbone>-<dataset>-<hash>.keras``."""
    return data_dir() / "pretrained" / f"{config.backbone}-{config.dataset}-{config.config_hash()}.keras"


def sidecar_path(model_path: str | Path) -> Path:
    """The provenance sidecar of a pretrained model: the same name with ``.json`` for ``.keras``."""
    return Path(model_path).with_suffix(".json")


def pretrain_offline(backbone: str = "resnet18", *, dataset: str = "shapes", input_size: int = 32,
                     epochs: int | None = None, limit: int | None = PRETRAIN_LIMIT,
                     learning_rate: float | None = None, seed: int = 0, reports_dir: str | None = None) -> Path:
    """Pretrains a backbone from scratch on an offline dataset and returns its saved model.

    The pretraining run is recorded like any other (tag ``pretrain``), and its model is kept
    under ``data/pretrained/`` by configuration hash with a provenance sidecar, so a second call
    with the same arguments reuses it instead of training again (same seed, same data: the
    same weights), once ``check_pretrained`` has found that it is the file that was saved.

    Args:
        backbone: a name from ``lab.models.backbones.BACKBONES``.
        dataset: the registry dataset it is pretrained on.
        input_size: the backbone's input size (and the shapes set's image size).
        epochs, limit, learning_rate, seed: of the pretraining run (epochs and learning_rate
            None: the backbone family's, ``pretraining_recipe``).
        reports_dir: where the pretraining run is recorded (not part of the hash).

    Returns:
        The path of the saved ``.keras`` model.

    Raises:
        ValueError: a kept model that does not match its sidecar (see ``check_pretrained``);
            one without a sidecar (an older kit's) is pretrained again.
        RuntimeError: the pretraining run did not complete (stalled or diverged).
    """
    config = pretraining_config(backbone, dataset=dataset, input_size=input_size, epochs=epochs, limit=limit,
                                learning_rate=learning_rate, seed=seed, reports_dir=reports_dir)
    target = pretrained_path(config)
    if _kept(target, config):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target):
        # Another process may have saved it while this one waited for the lock.
        if _kept(target, config):
            return target
        result = run(config, CLASSIFICATION)
        if result.status != "completed":
            raise RuntimeError(f"Pretraining {backbone} on {dataset} ended {result.status}: "
                               f"{result.metrics.get('divergence_reason')}. See {result.run_dir}.")
        with atomic_path(target) as temporary:
            shutil.copyfile(result.run_dir / "model.keras", temporary)
            # Committed before the model is renamed into place: a model never exists without it.
            write_json(sidecar_path(target), _sidecar(config, temporary, run_id=result.run_dir.name))
    return target


def _kept(target: Path, config: RunConfig) -> bool:
    """True when ``target`` is a kept model of ``config`` (checked; a mismatch raises). A model an
    older kit saved without a sidecar cannot be checked: the kit made it and remakes it exactly
    (same configuration, same seed), so it is pretrained again, with a note, rather than trusted."""
    if not target.exists():
        return False
    if not sidecar_path(target).is_file():
        print(f"{target} has no provenance sidecar (an older kit saved it): pretraining it again.")
        return False
    check_pretrained(target, config)
    return True


def check_pretrained(path: str | Path, config: RunConfig) -> dict[str, Any]:
    """Checks that a kept pretrained model was made by ``config`` and is unchanged since.

    Compared with the sidecar: the configuration (and its hash) and the sha256 of the file.

    Args:
        path: the ``.keras`` model.
        config: the pretraining configuration asked for (``pretraining_config``).

    Returns:
        The sidecar's contents.

    Raises:
        ValueError: no sidecar, a sidecar that cannot be read, another configuration, or a
            file modified since it was saved; the message names the file, both sides of each
            difference and what to do.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ValueError(
            f"The pretrained backbone {path} has no sidecar {sidecar.name}: it was saved by an older kit (or "
            f"copied without it), so it cannot be told what it was pretrained from or whether it changed "
            f"since. {_PRETRAIN_AGAIN}")
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"The sidecar {sidecar} of the pretrained backbone {path} is not valid JSON ({error}). "
                         f"{_PRETRAIN_AGAIN}") from error
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{sidecar} is not a pretrained-backbone sidecar (no \"format\": \"{SIDECAR_FORMAT}\"), "
                         f"so {path} cannot be checked. {_PRETRAIN_AGAIN}")
    differences = []
    expected, expected_hash = pretraining_facts(config), config.config_hash()
    stored, stored_hash = record.get("config") or {}, record.get("config_hash")
    changed = _changed_entries(stored, expected)
    if changed or stored_hash != expected_hash:
        entries = "".join(f"{key} {old} in the sidecar, {new} asked; " for key, old, new in changed[:6])
        more = f"{len(changed) - 6} more entries differ; " if len(changed) > 6 else ""
        differences.append(f"it was pretrained with another configuration ({entries}{more}config hash "
                           f"{stored_hash} in {sidecar.name}, {expected_hash} asked)")
    sha256 = file_hash(path, "sha256")
    if sha256 != record.get("sha256"):
        differences.append(f"the file changed after it was saved (sha256 {str(record.get('sha256'))[:16]}... in "
                           f"{sidecar.name}, {sha256[:16]}... now)")
    if differences:
        raise ValueError(f"The pretrained backbone {path} does not match what this run asks for: "
                         f"{'; '.join(differences)}. {_PRETRAIN_AGAIN}")
    return record


def pretraining_facts(config: RunConfig) -> dict[str, Any]:
    """The configuration as the sidecar records it: what the hash covers, as it reads back from JSON."""
    return json.loads(json.dumps(config.hashed_values(), sort_keys=True))


def resolve_weights(config: RunConfig) -> RunConfig:
    """The configuration with ``weights="pretrain-offline"`` replaced by the saved model's path
    (pretrained now, or reused after ``check_pretrained``): the record names the file the
    weights came from."""
    if config.weights != PRETRAIN_OFFLINE:
        return config
    path = pretrain_offline(config.backbone, input_size=config.backbone_input_size or 32, seed=config.seed,
                            reports_dir=config.reports_dir)
    return config.replace(weights=str(path))


def _sidecar(config: RunConfig, model_file: Path, *, run_id: str) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from lab import __version__

    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "config": pretraining_facts(config),
            "config_hash": config.config_hash(), "run_id": run_id,
            "versions": {"lab": __version__, "keras": keras.__version__, "tensorflow": tf.__version__},
            "sha256": file_hash(model_file, "sha256"), "bytes": model_file.stat().st_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _changed_entries(stored: dict[str, Any], expected: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, stored value, expected value)`` for each configuration entry that differs."""
    def show(values: dict[str, Any], key: str) -> str:
        return json.dumps(values[key]) if key in values else "unset"

    keys = [*stored, *(key for key in expected if key not in stored)]
    return [(key, show(stored, key), show(expected, key)) for key in keys
            if show(stored, key) != show(expected, key)]
