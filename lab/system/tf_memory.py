"""Letting TensorFlow free a finished run's traced graphs.

``keras.backend.clear_session()`` resets Keras' global state, yet a process that trains model
after model (a sweep, a keras-tuner search) still grows by several MB per run (about 9 MB for
the E1 CNN on digits; more for bigger models) and never gives it back. The traced train step
stays alive: ``tf.distribute``'s ``ReplicaContext.all_reduce``, which Keras 3 calls in every
train step, uses ``tf.custom_gradient``, and in graph mode that registers a gradient function
under a new name (``CustomGradient-<n>``) in TensorFlow's global gradient registry and never
unregisters it. The registered function holds the FuncGraph of the train step, and with it
every op, every tensor and the ``tf.function`` variable initialisers (FunctionDefs in the eager
context) of that model.

Gradient functions are looked up only while a graph is being differentiated, i.e. while a
train step is traced; once traced, the graph holds its gradient ops. So after a run the names
it registered can be dropped, and its graphs are freed with its model.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


@contextlib.contextmanager
def released_graphs() -> Iterator[None]:
    """Drops the custom-gradient registrations made inside the block when it ends.

    Wrap one training run in it; memory then stays flat across runs (see
    ``benchmarks/tuner_memory.py``). A model kept from inside the block still trains and
    predicts: its traced functions already hold their gradients, and a retrace registers anew.

    Example:
        >>> with released_graphs():
        ...     result = train(config)
    """
    registry = _registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in [k for k in registry if k not in before and k.startswith(CUSTOM_GRADIENT_PREFIX)]:
                registry.pop(name, None)


def _registry() -> dict | None:
    """TensorFlow's gradient registry (a private dict), or None if a future version moved it."""
    try:
        from tensorflow.python.framework import ops
    except ImportError:
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None
