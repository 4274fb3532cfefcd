"""The dense-prediction builders by name: segmentation networks and autoencoders.

    build_segmentation_model("unet", (128, 128, 3), 3, depth=4)
    build_autoencoder("vae", (32, 32, 3), latent_dim=2)

Kept apart from ``lab.models.MODELS`` (the classifiers) because these builders return
per-pixel outputs and are trained by ``lab.segmentation.train_segmentation`` /
``train_autoencoder`` with their own losses and metrics.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import keras

from lab.models.autoencoder import conv_autoencoder, denoising_autoencoder, vae
from lab.models.deeplab import deeplab_v3_plus
from lab.models.fcn import fcn
from lab.models.unet import pretrained_unet, unet

SEGMENTATION_MODELS: dict[str, Callable[..., keras.Model]] = {
    "unet": unet,
    "pretrained_unet": pretrained_unet,
    "deeplab": deeplab_v3_plus,
    "fcn": fcn,
}

AUTOENCODERS: dict[str, Callable[..., keras.Model]] = {
    "autoencoder": conv_autoencoder,
    "denoising_autoencoder": denoising_autoencoder,
    "vae": vae,
}


def model_options(name: str) -> dict[str, Any]:
    """The keyword options a segmentation model or autoencoder takes, with their defaults."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "name"}


def build_segmentation_model(name: str, input_shape: Sequence[int], num_classes: int, **options: Any) -> keras.Model:
    """Builds a registered segmentation model (uncompiled).

    Args:
        name: one of ``SEGMENTATION_MODELS`` (unet, pretrained_unet, deeplab, fcn).
        input_shape: (height, width, channels).
        num_classes: classes including the background.
        **options: the builder's keyword options (see ``model_options(name)``).

    Raises:
        ValueError: an unknown model or option, listing the valid ones.
    """
    if name not in SEGMENTATION_MODELS:
        hint = " It is an autoencoder: use build_autoencoder." if name in AUTOENCODERS else ""
        raise ValueError(f"Unknown segmentation model {name!r}.{hint} Available: {', '.join(SEGMENTATION_MODELS)}.")
    _check_options(name, options)
    return SEGMENTATION_MODELS[name](tuple(input_shape), num_classes, **options)


def build_autoencoder(name: str, input_shape: Sequence[int], **options: Any) -> keras.Model:
    """Builds a registered autoencoder (uncompiled): autoencoder, denoising_autoencoder or vae."""
    if name not in AUTOENCODERS:
        hint = " It is a segmentation model: use build_segmentation_model." if name in SEGMENTATION_MODELS else ""
        raise ValueError(f"Unknown autoencoder {name!r}.{hint} Available: {', '.join(AUTOENCODERS)}.")
    _check_options(name, options)
    return AUTOENCODERS[name](tuple(input_shape), **options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Model {name!r} has no option(s) {unknown}. Its options: {', '.join(accepted) or 'none'}.")


def _builder(name: str) -> Callable[..., keras.Model]:
    builders = {**SEGMENTATION_MODELS, **AUTOENCODERS}
    if name not in builders:
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(builders)}.")
    return builders[name]
