"""``lab.tasks.classification.predict_probabilities``: Keras' ``Model.predict``, bit for bit, in less memory."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab.tasks.classification import predict_probabilities


def _model(*, run_eagerly: bool = False, steps_per_execution: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Dropout(0.5),  # inactive when predicting: training=False is passed
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", run_eagerly=run_eagerly,
                  steps_per_execution=steps_per_execution)
    return model


@pytest.mark.parametrize("options", [{}, {"run_eagerly": True}, {"steps_per_execution": 4}])
def test_equals_model_predict_bit_for_bit(options):
    model = _model(**options)
    images = np.random.default_rng(0).random((70, 8, 8, 3), dtype=np.float32)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(16)  # a partial last batch of 6
    expected = model.predict(batches, verbose=0).astype(np.float32)
    got = predict_probabilities(model, batches)
    assert got.dtype == np.float32 and got.shape == (70, 5)
    np.testing.assert_array_equal(got, expected)
    # Called again (as for the next split), the compiled function is reused and still agrees.
    np.testing.assert_array_equal(predict_probabilities(model, batches.take(2)), expected[:32])


def test_an_empty_dataset_gives_no_rows():
    model = _model()
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 3), np.float32)).batch(16)
    assert predict_probabilities(model, empty).shape == (0, 5)
