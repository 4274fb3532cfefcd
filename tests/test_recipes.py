"""Training recipes: EMA of the weights, mixup and cutmix, the named recipes, the binary decision threshold."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import lab.tasks.classification
from lab.runs.callbacks import RestoreBestWeights
from lab.tasks.classification import decide
from lab.config import RunConfig
from lab.config.classification import RECIPES
from lab.models.losses import SparseCategoricalCrossentropy, accuracy
from lab.config.optimizers import ema_decay, make_optimizer
from lab.data.pipeline import make_pipeline, mix_batch, mix_batches
from lab.runs.records import load_run
from lab.runs.runner import ema_callbacks
from lab.runs.training import train

TINY = dict(dataset="digits", limit=120, model="mlp", hidden_units=[8], batch_size=16, epochs=2,
            early_stopping_patience=None, verbose=0, save_model=False, learning_rate=0.01)
SEED = tf.constant([3, 4], tf.int64)


# -- EMA -------------------------------------------------------------------------------------------------------------


class _Weights(keras.callbacks.Callback):
    """The model's weights after the last training batch and at each epoch's end."""

    def on_train_begin(self, logs=None):
        self.raw, self.at_epoch_end = None, []

    def on_train_batch_end(self, batch, logs=None):
        self.raw = [np.array(w) for w in self.model.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append([np.array(w) for w in self.model.get_weights()])


def test_ema_weights_differ_from_the_raw_ones_and_are_what_is_validated_and_kept():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=make_optimizer("sgd", 0.5, ema=True, ema_momentum=0.5),
                  loss="sparse_categorical_crossentropy")
    weights, best = _Weights(), RestoreBestWeights()
    history = model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=16, verbose=0, shuffle=False,
                        callbacks=[*ema_callbacks(model), weights, best])
    averaged = weights.at_epoch_end[-1]
    assert not all(np.allclose(a, r) for a, r in zip(averaged, weights.raw))  # the average is not the last step
    # After the fit the model holds the best epoch's averaged weights.
    for kept, expected in zip(model.get_weights(), weights.at_epoch_end[best.best_epoch], strict=True):
        np.testing.assert_allclose(kept, expected, rtol=1e-6)
    # The validation loss of each epoch is that of the weights the epoch ends with: the averaged ones.
    model.set_weights(averaged)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


def test_no_ema_callback_without_an_averaging_optimizer():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=make_optimizer("adam", 1e-3), loss="mse")
    assert ema_callbacks(model) == []


def test_an_ema_run_evaluates_its_best_epochs_averaged_weights():
    result = train(**TINY, ema=True, ema_momentum=0.5)
    assert result.config.ema and result.model.optimizer.use_ema
    assert result.metrics["val_loss"] == pytest.approx(result.metrics["best_epoch_val_loss"], rel=1e-5)


def test_the_average_warms_up_so_the_initial_weights_fade_within_a_few_steps():
    """A weight that moves by -1 per step (SGD at 1 on a constant gradient) averaged with the
    warm-up: after 30 steps the average is near the recent weights, where Keras' own average
    at 0.99 would still be about -5 (three quarters of it the initial weight, 0)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=make_optimizer("sgd", 1.0, ema=True, ema_momentum=0.99),
                  loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    steps = 30
    model.fit(np.ones((steps, 1), "float32"), np.zeros(steps, "float32"), batch_size=1, epochs=1, verbose=0,
              shuffle=False)  # the fit ends by writing the average into the model
    expected = 0.0
    for step in range(steps):
        decay = 0.0 if step == 0 else min(0.99, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * -(step + 1.0)
    assert float(model.get_weights()[0][0, 0]) == pytest.approx(expected, rel=1e-5)
    assert expected < -20  # the last weight is -30; without the warm-up the average is about -5
    assert [float(ema_decay(step, 0.99)) for step in (0, 1, 90, 5000)] == pytest.approx([0.0, 2 / 11, 0.91, 0.99])


# -- mixup and cutmix ------------------------------------------------------------------------------------------------


def _batch():
    images = tf.random.stateless_uniform([6, 8, 10, 1], [1, 2])
    return images, tf.constant([0, 1, 2, 3, 4, 0])


def test_mixup_is_deterministic_per_seed_and_its_labels_follow_the_ratio():
    images, labels = _batch()
    mixed, soft = mix_batch(images, labels, num_classes=5, mixup=1.0, seed=SEED)
    again, soft_again = mix_batch(images, labels, num_classes=5, mixup=1.0, seed=SEED)
    other, _ = mix_batch(images, labels, num_classes=5, mixup=1.0, seed=SEED + 1)
    assert np.array_equal(mixed, again) and np.array_equal(soft, soft_again) and not np.allclose(mixed, other)
    np.testing.assert_allclose(np.sum(soft, axis=1), 1.0, rtol=1e-6)
    lam = float(soft[1, 1])  # image 1 (label 1) is mixed with image 4 (label 4)
    assert 0.0 < lam < 1.0 and float(soft[1, 4]) == pytest.approx(1 - lam, rel=1e-5)
    np.testing.assert_allclose(mixed[1], lam * images[1] + (1 - lam) * images[4], rtol=1e-5, atol=1e-6)


def test_cutmix_pastes_a_box_whose_area_is_the_labels_share():
    images, labels = _batch()
    for seed in range(5):
        mixed, soft = mix_batch(images, labels, num_classes=5, cutmix=1.0, seed=SEED + seed)
        from_partner = ~np.isclose(np.asarray(mixed[1]), np.asarray(images[1]))[..., 0]
        rows, columns = np.nonzero(from_partner)
        if rows.size:  # a rectangle of pixels taken from image 4
            assert from_partner[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all()
        np.testing.assert_allclose(np.asarray(mixed[1])[from_partner], np.asarray(images[4])[from_partner])
        assert float(soft[1, 4]) == pytest.approx(from_partner.mean(), abs=1e-6)
        np.testing.assert_allclose(np.sum(soft, axis=1), 1.0, rtol=1e-6)


def test_mix_batches_repeats_per_seed_and_refuses_nothing_to_do():
    images, labels = _batch()
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat(2)
    first = [soft.numpy() for _, soft in mix_batches(ds, num_classes=5, mixup=0.2, cutmix=1.0, seed=1)]
    second = [soft.numpy() for _, soft in mix_batches(ds, num_classes=5, mixup=0.2, cutmix=1.0, seed=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])  # each batch draws its own ratio
    with pytest.raises(ValueError, match="mixup > 0 or cutmix > 0"):
        mix_batches(ds, num_classes=5, seed=1)


def test_the_loss_and_accuracy_take_soft_labels():
    probabilities = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    soft = tf.constant([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])
    loss = SparseCategoricalCrossentropy()(soft, probabilities)
    expected = keras.losses.categorical_crossentropy(soft, probabilities)
    assert float(loss) == pytest.approx(float(np.mean(expected)), rel=1e-6)
    sparse = SparseCategoricalCrossentropy()(tf.constant([0, 2]), probabilities)
    assert float(sparse) == pytest.approx(-np.mean(np.log([0.7, 0.6])), rel=1e-5)
    assert list(np.asarray(accuracy(soft, probabilities))) == [1.0, 1.0]
    assert list(np.asarray(accuracy(tf.constant([1, 2]), probabilities))) == [0.0, 1.0]


def test_a_mixed_run_trains_and_validates_on_plain_labels():
    result = train(**TINY, mixup=0.2, cutmix=1.0)
    assert result.metrics["status"] in ("completed", "stalled")
    history = result.history
    assert {"accuracy", "val_accuracy"} <= set(history.columns)
    assert 0.0 <= history["val_accuracy"].min() <= history["val_accuracy"].max() <= 1.0


# -- the named recipe -----------------------------------------------------------------------------------------------


def test_a_recipe_fills_in_its_fields_and_explicit_values_win():
    strong = RunConfig(recipe="strong")
    assert {key: getattr(strong, key) for key in RECIPES["strong"]} == RECIPES["strong"]
    assert strong.to_dict()["ema"] is True  # the record says what ran
    mine = RunConfig(recipe="strong", mixup=0.0, learning_rate=3e-4)
    assert mine.mixup == 0.0 and mine.learning_rate == 3e-4 and mine.cutmix == RECIPES["strong"]["cutmix"]
    assert RunConfig.from_dict(mine.to_dict()) == mine  # a record's config builds the same run
    assert RunConfig().ema is False and RunConfig().recipe is None
    with pytest.raises(ValueError, match=r"Unknown recipe 'strog'\. Available recipes: strong"):
        RunConfig(recipe="strog")


@pytest.mark.parametrize("changes,match", [
    (dict(mixup=-0.1), r"mixup is the Beta distribution's alpha.*received mixup=-0\.1"),
    (dict(cutmix="yes"), r"received cutmix='yes'"),
    (dict(ema="yes"), r"ema must be True or False, received ema='yes'"),
    (dict(ema_momentum=1.0), r"ema_momentum must be in \(0, 1\), received ema_momentum=1\.0"),
    (dict(decision_threshold="youden"), r"decision_threshold must be one of None, 'validation'.*'youden'"),
])
def test_bad_recipe_values_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**changes)


# -- the binary decision threshold ----------------------------------------------------------------------------------


def test_decide_applies_the_validation_threshold_to_binary_probabilities():
    y_prob = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]], np.float32)
    assert list(decide(y_prob, None, 0.2)[0]) == [0, 0, 1]
    classes, applied = decide(y_prob, "validation", 0.2)
    assert list(classes) == [0, 1, 1] and applied == 0.2
    assert decide(y_prob, "validation", float("nan"))[1] is None  # no threshold: argmax
    with pytest.raises(ValueError, match="applies to binary tasks; this one has 3 classes"):
        decide(np.full((2, 3), 1 / 3), "validation", 0.5)


def test_a_binary_run_applies_its_validation_threshold_to_the_confusion_matrix(monkeypatch):
    matrices = []
    original = lab.tasks.classification.confusion_matrix
    monkeypatch.setattr(lab.tasks.classification, "confusion_matrix",
                        lambda y_true, y_pred, k: matrices.append((y_true, y_pred)) or original(y_true, y_pred, k))
    result = train(**{**TINY, "num_classes": 2, "limit": 60}, decision_threshold="validation")
    metrics, predictions = result.metrics, load_run(result.run_dir).predictions()
    assert metrics["decision_threshold"] == pytest.approx(metrics["val_threshold"])
    y_true, y_pred = matrices[-1]
    np.testing.assert_array_equal(y_pred, predictions["y_prob"][:, 1] >= metrics["val_threshold"])
    assert np.mean(y_pred == y_true) == pytest.approx(metrics["test_accuracy_at_val_threshold"])


def test_a_threshold_for_a_multiclass_run_is_refused_before_training():
    with pytest.raises(ValueError, match="applies to binary tasks; this one has 10 classes"):
        train(**TINY, decision_threshold="validation")


# -- class-balanced sampling ----------------------------------------------------------------------------------------


def test_balanced_sampling_draws_every_class_about_equally_and_repeatably():
    labels = np.array([0] * 270 + [1] * 30)  # 10% minority
    images = np.arange(300, dtype=np.uint8).reshape(300, 1, 1, 1)

    def epochs(seed):
        ds = make_pipeline(images, labels, training=True, batch_size=50, balance_classes=True, seed=seed, cache=False)
        return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(2)]

    first, second = epochs(0)
    assert len(first) == len(labels)  # an epoch is as long as the data
    assert 0.4 < first.mean() < 0.6 and 0.4 < second.mean() < 0.6  # about half minority
    assert not np.array_equal(first, second)  # drawn afresh every epoch
    assert all(np.array_equal(a, b) for a, b in zip(epochs(0), (first, second)))  # the same per seed


def test_balanced_sampling_refuses_class_weighting_and_streaming():
    with pytest.raises(ValueError, match="would correct twice: choose one"):
        RunConfig(balanced_sampling=True, class_weighting="balanced")
    with pytest.raises(ValueError, match="streamed data .* is not supported"):
        RunConfig(balanced_sampling=True, data_path="stream")
    with pytest.raises(ValueError, match="balanced_sampling must be True or False, received balanced_sampling=1"):
        RunConfig(balanced_sampling=1)


def test_a_balanced_run_trains():
    result = train(**TINY, balanced_sampling=True)
    assert result.metrics["status"] in ("completed", "stalled") and result.config.balanced_sampling
