"""Optimizers by name, a warm-up for the average of the weights, and a smaller learning rate for part of a model.

Keras is imported when an optimizer is made, not when this module is: the configuration reads
``OPTIMIZERS`` to check a name without loading TensorFlow.
"""

from __future__ import annotations

from typing import Any, Iterable

# The names a configuration may use, and the Keras class each one makes.
OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW"}


def make_optimizer(name: str, learning_rate: float, *, momentum: float = 0.0, weight_decay: float = 4e-3,
                   scaled_variables: Iterable | None = None, factor: float = 1.0, ema: bool = False,
                   ema_momentum: float = 0.99) -> Any:
    """Returns a fresh Keras optimizer.

    Args:
        name: one of ``OPTIMIZERS`` (adam, sgd, rmsprop, adamw).
        learning_rate: the base learning rate.
        momentum: for sgd and rmsprop.
        weight_decay: for adamw.
        scaled_variables, factor: these variables train at ``factor`` times the learning rate
            (a pretrained backbone under a new head, E12); see ``with_learning_rate_factor``.
        ema, ema_momentum: keep an exponential moving average of the weights (Keras'
            ``use_ema``, with a warm-up: ``with_ema_warmup``); the runner evaluates with it
            (``keras.callbacks.SwapEMAWeights``).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    import keras

    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}. Available optimizers: {', '.join(OPTIMIZERS)}.")
    options: dict[str, Any] = {"use_ema": True, "ema_momentum": ema_momentum} if ema else {}
    if name in ("sgd", "rmsprop"):
        options["momentum"] = momentum
    if name == "adamw":
        options["weight_decay"] = weight_decay
    optimizer = getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate, **options)
    if ema:
        optimizer = with_ema_warmup(optimizer)
    if scaled_variables is not None and factor != 1.0:
        optimizer = with_learning_rate_factor(optimizer, scaled_variables, factor)
    return optimizer


def ema_decay(step: Any, momentum: float) -> Any:
    """The decay of the weights' moving average at optimizer step ``step`` (0 for the first).

    ``min(momentum, (1 + step) / (10 + step))``, the warm-up of timm's and TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``; 0 at the first step, where Keras copies the
    weights. Without a warm-up (Keras' own ``use_ema``: the full momentum from the second step)
    the first step's (nearly random) weights keep ``momentum ** (steps - 1)`` of the average:
    0.99 ** 59 = 55% after the 60 steps of 20 epochs on 138 images, which left the strong
    recipe's averaged model answering the majority class of an imbalanced binary task for every
    image (benchmarks/README.md, recipes.py). With the warm-up their share after 60 steps is
    about 2e-10; from step 890 on (momentum 0.99) the decay is ``momentum``, as without it.

    Args:
        step: the number of optimizer steps already applied (a tensor or a number).
        momentum: the decay the warm-up ends at (``ema_momentum``).

    Returns:
        The decay, as a float32 tensor.
    """
    from keras import ops

    step = ops.cast(step, "float32")
    warm = ops.minimum(ops.cast(momentum, "float32"), (1.0 + step) / (10.0 + step))
    return ops.where(ops.equal(step, 0.0), ops.zeros_like(warm), warm)


def with_ema_warmup(optimizer: Any) -> Any:
    """Makes an optimizer with ``use_ema`` warm its moving average up (``ema_decay``).

    Args:
        optimizer: a fresh (not yet built) Keras optimizer with ``use_ema=True``.

    Returns:
        The same optimizer object, now of a subclass whose average uses ``ema_decay``.
    """
    from keras import ops

    base = type(optimizer)

    class EMAWarmup(base):
        def _update_model_variables_moving_average(self, trainable_variables):
            decay = ema_decay(self.iterations, self.ema_momentum)
            for variable, average in zip(trainable_variables, self._model_variables_moving_average):
                if average is not None:
                    momentum = ops.cast(decay, variable.dtype)
                    average.assign(momentum * average + (1 - momentum) * variable)

    # Saved as the Keras class it extends (a loaded model averages without the warm-up, which
    # only matters for its first steps of training).
    EMAWarmup.__name__, EMAWarmup.__qualname__, EMAWarmup.__module__ = base.__name__, base.__name__, base.__module__
    optimizer.__class__ = EMAWarmup
    return optimizer


def with_learning_rate_factor(optimizer: Any, variables: Iterable, factor: float) -> Any:
    """Makes ``optimizer`` update ``variables`` with ``factor`` times its learning rate.

    E12's "smaller learning rates for the pretrained part than for the head". Keras optimizers
    take one rate; scaling gradients instead would do nothing for Adam (its steps do not depend
    on the gradient's scale), so the rate itself is scaled in ``update_step``, per variable.

    Args:
        optimizer: a fresh (not yet built) Keras optimizer.
        variables: the variables that get the scaled rate (the backbone's).
        factor: the multiplier, e.g. 0.1.

    Returns:
        The same optimizer object, now of a subclass that applies the factor.
    """
    if factor == 1.0:
        return optimizer
    base = type(optimizer)
    keys = {optimizer._var_key(variable) for variable in variables}

    class ScaledLearningRate(base):
        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in keys:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    ScaledLearningRate.__name__ = ScaledLearningRate.__qualname__ = f"{base.__name__}WithBackboneFactor"
    optimizer.__class__ = ScaledLearningRate
    optimizer.backbone_lr_factor = factor
    return optimizer
