"""Every model builder by name, in one registry: ``build_model("cnn", input_shape, num_classes)``.

Each builder returns an uncompiled ``keras.Model`` whose defaults are the course's values. The
registry says, for each name, which task trains it (a classifier, a per-pixel segmentation
network or an autoencoder that reconstructs its input) and where its builder lives; builders
are imported only when used, so reading the registry (as the configuration does to check a
model name) does not load TensorFlow.

    name                    task            builder
    simple, basic           classification  lab.models.cnn (E9's two CNNs)
    cnn                     classification  lab.models.cnn (E1's configurable CNN)
    mlp                     classification  lab.models.mlp (E10)
    resnet18, resnet50      classification  lab.models.resnet (MedMNIST's baselines, from scratch)
    transfer                classification  lab.models.transfer (a pretrained backbone + head)
    unet, pretrained_unet   segmentation    lab.models.unet
    deeplab                 segmentation    lab.models.deeplab (DeepLabV3+)
    fcn                     segmentation    lab.models.fcn
    autoencoder, denoising_autoencoder, vae
                            reconstruction  lab.models.autoencoder
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Sequence

from lab.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered builder: the task that trains it (``lab.tasks.TASKS``) and where it lives."""

    task: str
    module: str
    function: str

    @property
    def builder(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.function)


MODELS: dict[str, ModelEntry] = {
    "simple": ModelEntry("classification", "lab.models.cnn", "simple_cnn"),
    "basic": ModelEntry("classification", "lab.models.cnn", "basic_cnn"),
    "cnn": ModelEntry("classification", "lab.models.cnn", "cnn"),
    "mlp": ModelEntry("classification", "lab.models.mlp", "mlp"),
    "resnet18": ModelEntry("classification", "lab.models.resnet", "resnet18"),
    "resnet50": ModelEntry("classification", "lab.models.resnet", "resnet50"),
    "transfer": ModelEntry("classification", "lab.models.transfer", "transfer_model"),
    "unet": ModelEntry("segmentation", "lab.models.unet", "unet"),
    "pretrained_unet": ModelEntry("segmentation", "lab.models.unet", "pretrained_unet"),
    "deeplab": ModelEntry("segmentation", "lab.models.deeplab", "deeplab_v3_plus"),
    "fcn": ModelEntry("segmentation", "lab.models.fcn", "fcn"),
    "autoencoder": ModelEntry("reconstruction", "lab.models.autoencoder", "conv_autoencoder"),
    "denoising_autoencoder": ModelEntry("reconstruction", "lab.models.autoencoder", "denoising_autoencoder"),
    "vae": ModelEntry("reconstruction", "lab.models.autoencoder", "vae"),
    # Instance segmentation: TensorFlow Model Garden's Mask R-CNN, an optional extra (lab.tasks.instance).
    "maskrcnn": ModelEntry("instance", "lab.tasks.instance.model", "maskrcnn_experiment"),
}

__all__ = ["MODELS", "ModelEntry", "build_model", "model_entry", "model_options", "models_for"]


def models_for(*tasks: str) -> list[str]:
    """The registered names of the models the given tasks train, in registry order."""
    return [name for name, entry in MODELS.items() if entry.task in tasks]


def model_entry(name: str, *tasks: str) -> ModelEntry:
    """The registry entry of ``name``; with ``tasks``, only a model of one of those tasks.

    Raises:
        ValueError: an unknown name (the valid ones are listed), or a model of another task
            (with the entry point that trains it).
    """
    if name not in MODELS:
        valid = models_for(*tasks) if tasks else list(MODELS)
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(valid)}.")
    entry = MODELS[name]
    if tasks and entry.task not in tasks:
        raise ValueError(f"{name!r} is a {entry.task} model: train it with {TASKS[entry.task].entry_point}. "
                         f"Models here: "
                         f"{', '.join(models_for(*tasks))}.")
    return entry


def model_options(name: str) -> dict[str, Any]:
    """Returns the keyword options a model takes, with their defaults."""
    return {p.name: p.default for p in inspect.signature(model_entry(name).builder).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "name"}


def build_model(name: str, input_shape: Sequence[int], num_classes: int | None = None, **options: Any):
    """Builds a registered model (uncompiled).

    Args:
        name: one of ``MODELS``.
        input_shape: (height, width, channels).
        num_classes: number of classes (segmentation: including the background); autoencoders
            take none.
        **options: the builder's keyword options (see ``model_options(name)``).

    Raises:
        ValueError: an unknown model or option, listing the valid ones.
    """
    entry = model_entry(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Model {name!r} has no option(s) {unknown}. Its options: {', '.join(accepted) or 'none'}.")
    if entry.task == "reconstruction":
        if num_classes is not None:
            raise ValueError(f"{name!r} is an autoencoder: it reconstructs its input and takes no num_classes "
                             f"(received num_classes={num_classes}).")
        return entry.builder(tuple(input_shape), **options)
    if num_classes is None:
        raise ValueError(f"Model {name!r} needs num_classes (the number of classes it predicts).")
    return entry.builder(tuple(input_shape), num_classes, **options)
