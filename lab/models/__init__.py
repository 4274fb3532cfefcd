"""Model builders by name: ``build_model("cnn", input_shape, num_classes, **options)``.

Each builder returns an uncompiled ``keras.Model`` whose defaults are the course's values.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import keras

from lab.models.cnn import basic_cnn, cnn, simple_cnn
from lab.models.mlp import mlp
from lab.models.transfer import transfer_model

MODELS: dict[str, Callable[..., keras.Model]] = {
    "simple": simple_cnn,
    "basic": basic_cnn,
    "cnn": cnn,
    "mlp": mlp,
    "transfer": transfer_model,
}

__all__ = ["MODELS", "basic_cnn", "build_model", "cnn", "mlp", "model_options", "simple_cnn", "transfer_model"]


def model_options(name: str) -> dict[str, Any]:
    """Returns the keyword options a model takes, with their defaults."""
    builder = _builder(name)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "name"
    }


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options: Any) -> keras.Model:
    """Builds a registered model.

    Args:
        name: one of ``MODELS`` (``"simple"``, ``"basic"``, ``"cnn"``, ``"mlp"``, ``"transfer"``).
        input_shape: (height, width, channels).
        num_classes: number of classes.
        **options: the builder's keyword options (see ``model_options(name)``).

    Raises:
        ValueError: an unknown model or option, listing the valid ones.
    """
    builder = _builder(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Model {name!r} has no option(s) {unknown}. Its options: {', '.join(accepted) or 'none'}."
        )
    return builder(input_shape, num_classes, **options)


def _builder(name: str) -> Callable[..., keras.Model]:
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(MODELS)}.")
    return MODELS[name]
