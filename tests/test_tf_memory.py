import gc
import weakref

import keras
import numpy as np
from tensorflow.python.framework import func_graph

from lab.system.tf_memory import _registry, released_graphs


def _fit_a_tiny_model() -> keras.Model:
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((8, 4), "float32"), np.zeros(8, "int64"), epochs=1, verbose=0)
    return model


def _train_step_graphs() -> int:
    gc.collect()
    return sum(isinstance(o, func_graph.FuncGraph) and "one_step_on_data" in o.name for o in gc.get_objects())


def test_a_fitted_models_graphs_are_freed_with_it():
    registry = _registry()
    assert registry is not None, "TensorFlow's gradient registry moved: lab.system.tf_memory needs updating"
    _fit_a_tiny_model()
    leaked = _train_step_graphs()
    assert leaked >= 1, "without released_graphs the train step's graph outlives its model (TensorFlow keeps it)"

    before = len(registry)
    with released_graphs():
        model = _fit_a_tiny_model()
    assert len(registry) == before
    model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int64"), epochs=1, verbose=0)  # still trains
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None
    assert _train_step_graphs() == leaked, "this model's graphs went with it"
