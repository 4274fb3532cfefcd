"""Transfer learning end to end: freeze policies, frozen BatchNorm, the feature cache, learning-rate
factors, progressive unfreezing, and transfer proven offline (pretrain, save, fine-tune)."""

import json

import keras
import numpy as np
import pytest

from lab.config import RunConfig
from lab.data.datasets import load_dataset
from lab.models.features import clear_memory_cache, feature_cache_dir
from lab.models.backbones import find_backbone
from lab.models.transfer import set_trainable, stage_names, transfer_model
from lab.runs.records import load_runs
from lab.tasks.classification import compile_model
from lab.runs.training import train
from lab.studies.transfer_studies import compare_unfreezing, efficiency_table

# ResNet-18 (keras-hub) at 32 px: small enough for CPU tests, deep enough to have real stages.
TRANSFER = dict(model="transfer", backbone="resnet18", weights=None, backbone_input_size=32, epochs=3, batch_size=64,
                verbose=0, early_stopping_patience=None)


@pytest.fixture(scope="module")
def small_digits():
    return load_dataset("digits", limit=240)


def _trainable_layer_names(model):
    return {w.path.split("/")[-2] for w in model.trainable_weights}


def test_freeze_policies_train_the_expected_stages():
    model = transfer_model((32, 32, 3), 4, backbone="resnet50", weights=None, unfreeze=0, freeze_batchnorm=True,
                           head_units=(16,), head_dropout=0.2)
    assert _trainable_layer_names(model) == {"head_dense1", "logits"}
    assert set_trainable(model, 2) == ["conv4", "conv5"]
    names = _trainable_layer_names(model) - {"head_dense1", "logits"}
    assert names and all(n.startswith(("conv4_", "conv5_")) for n in names)
    assert not any(n.endswith("_bn") for n in names)  # BatchNorm stays frozen in unfrozen stages
    set_trainable(model, "all", freeze_batchnorm=False)
    backbone, _ = find_backbone(model)
    assert len(backbone.trainable_weights) == len([w for w in backbone.weights if "moving" not in w.path])
    set_trainable(model, 0)
    assert _trainable_layer_names(model) == {"head_dense1", "logits"}


def test_frozen_batchnorm_stays_in_inference_mode_while_the_last_stage_trains(small_digits):
    model = transfer_model((8, 8, 1), 10, backbone="resnet18", weights=None, backbone_input_size=32, unfreeze=1,
                           freeze_batchnorm=True)
    compile_model(model, RunConfig(**TRANSFER, unfreeze=1, steps_per_execution=1))
    backbone, _ = find_backbone(model)
    before = {w.path: w.numpy().copy() for w in backbone.weights}
    model.fit(small_digits.x_train[:128] / 255.0, small_digits.y_train[:128], epochs=1, batch_size=32, verbose=0)
    changed = {path for path, value in before.items() if not np.array_equal(value, _weight(backbone, path))}
    assert changed, "the unfrozen stage did not train"
    assert all(path.split("/")[-2].startswith("stack3_") for path in changed), sorted(changed)[:5]
    assert not any("moving" in path or "_bn/" in path for path in changed)


def _weight(model, path):
    return next(w for w in model.weights if w.path == path).numpy()


def test_backbone_learning_rate_factor_scales_only_the_pretrained_updates():
    x = np.random.default_rng(0).random((16, 32, 32, 3)).astype(np.float32)
    y = np.arange(16) % 3
    deltas = {}
    for factor in (1.0, 0.1):
        keras.utils.set_random_seed(0)
        model = transfer_model((32, 32, 3), 3, backbone="resnet18", weights=None, unfreeze="all",
                               freeze_batchnorm=True)
        config = RunConfig(**{**TRANSFER, "unfreeze": "all"}, optimizer="sgd", learning_rate=0.1,
                           backbone_lr_factor=factor, steps_per_execution=1)
        compile_model(model, config)
        start = [w.numpy().copy() for w in model.trainable_weights]
        model.train_on_batch(x, y)
        deltas[factor] = {w.path: w.numpy() - s for w, s in zip(model.trainable_weights, start, strict=True)}
    for path, delta in deltas[1.0].items():
        scale = 1.0 if path.startswith("logits") else 0.1
        np.testing.assert_allclose(deltas[0.1][path], scale * delta, rtol=1e-3, atol=1e-7, err_msg=path)


@pytest.mark.slow
def test_feature_cache_trains_the_same_head_much_faster(small_digits, isolated_dirs):
    clear_memory_cache()
    through = train(TRANSFER, data=small_digits, feature_cache=None, name="through-backbone", save_model=False)
    cached = train(TRANSFER, data=small_digits, feature_cache="memory", name="cached")
    again = train(TRANSFER, data=small_digits, feature_cache="memory", name="cached-again", learning_rate=3e-3,
                  epochs=1, save_model=False)
    assert through.metrics["feature_cache"].startswith("off: feature_cache=None")
    assert cached.metrics["feature_cache"]["hit"] is False and again.metrics["feature_cache"]["hit"] is True
    for key in ("val_accuracy", "test_accuracy", "best_epoch_val_accuracy"):
        assert abs(cached.metrics[key] - through.metrics[key]) <= 0.005, key
    np.testing.assert_allclose(cached.history["loss"], through.history["loss"], rtol=1e-3)
    # The saved model is the whole network with the trained head, usable on images.
    model = keras.models.load_model(cached.run_dir / "model.keras", compile=False)
    probabilities = model.predict(small_digits.x_test / 255.0, verbose=0)
    y_prob = np.load(cached.run_dir / "predictions.npz")["y_prob"]
    np.testing.assert_allclose(probabilities, y_prob, atol=1e-4)
    # On disk the features survive the process.
    disk = train(TRANSFER, data=small_digits, feature_cache="disk", epochs=1, save_model=False)
    assert disk.metrics["feature_cache"]["mode"] == "disk"
    assert len(list(feature_cache_dir().glob("*.npz"))) == 1


def test_memory_cache_drops_the_oldest_features_beyond_its_budget(monkeypatch):
    from lab.models import features

    clear_memory_cache()
    monkeypatch.setattr(features, "_MEMORY_BYTES", 1000)
    for key in ("a", "b", "c"):
        features._store(key, {"train": np.zeros(100, np.float32)}, "memory")  # 400 bytes each
    assert list(features._MEMORY) == ["b", "c"]
    features._store("big", {"train": np.zeros(1000, np.float32)}, "memory")
    assert list(features._MEMORY) == ["big"]  # the newest stays even when alone over budget
    clear_memory_cache()


@pytest.mark.slow
def test_augmentation_turns_the_cache_off_unless_passes_are_cached(small_digits):
    off = train(TRANSFER, data=small_digits, augment=True, epochs=1, save_model=False)
    assert off.metrics["feature_cache"].startswith("off: augmentation changes the images every epoch")
    passes = train(TRANSFER, data=small_digits, augment=True, feature_cache_passes=2, epochs=3, save_model=False,
                   divergence_patience=10)
    cache = passes.metrics["feature_cache"]
    assert cache["passes"] == 2 and "2 augmented passes" in cache["note"]
    assert passes.status != "failed" and len(passes.history) == 3  # 3 epochs need not learn: the passes are the point
    # Train metrics are on the clean images, in order: the same as the whole model on them.
    model = passes.model
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = model.evaluate(small_digits.x_train / 255.0, small_digits.y_train, verbose=0)
    assert passes.metrics["train_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_feature_cache_applies_the_pipeline_resize(small_digits):
    result = train(TRANSFER, data=small_digits, pipeline_size=16, epochs=1, save_model=False)
    assert result.status != "failed" and result.metrics["feature_cache"]["mode"] == "memory"


def test_progressive_unfreezing_runs_in_phases_at_lower_learning_rates(small_digits):
    result = train(TRANSFER, data=small_digits, unfreeze_schedule=[0, 1], phase_epochs=[2, 1],
                   learning_rate=1e-3, phase_lr_factor=0.1)
    phases = result.metrics["phases"]
    assert [p["trainable_stages"] for p in phases] == [[], ["stack3"]]
    assert [p["learning_rate"] for p in phases] == pytest.approx([1e-3, 1e-4])
    assert list(result.history["phase"]) == [1, 1, 2] and result.metrics["epochs_run"] == 3
    assert len((result.run_dir / "history.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs


def test_a_schedule_with_too_many_stages_is_refused_before_any_phase_trains(small_digits):
    with pytest.raises(ValueError, match=r"resnet18 has 5 stages"):
        train(TRANSFER, data=small_digits, unfreeze_schedule=[0, 9], phase_epochs=[1, 1], save_model=False)
    assert load_runs() == [], "a refused configuration writes no record"


@pytest.mark.slow
def test_transfer_is_proven_offline_pretrain_save_fine_tune(small_digits):
    """ResNet-18 pretrained on the shapes set, saved, then fine-tuned on digits: the saved features
    beat random ones with the head alone, and unfreezing a stage gains more."""
    shapes = load_dataset("shapes", size=32, limit=600)
    pretrained = train(TRANSFER, data=shapes, unfreeze="all", epochs=4, name="pretrain-shapes")
    assert pretrained.status == "completed"

    # Round trip: the fine-tuning model starts from exactly the saved backbone.
    saved, _ = find_backbone(keras.models.load_model(pretrained.run_dir / "model.keras", compile=False))
    reloaded, _ = find_backbone(transfer_model((8, 8, 1), 10, backbone="resnet18", weights=str(pretrained.run_dir),
                                               backbone_input_size=32))
    for a, b in zip(saved.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    random_head = train(TRANSFER, data=small_digits, epochs=6, name="random-head")
    table, figure, results = compare_unfreezing({**TRANSFER, "epochs": 6, "weights": str(pretrained.run_dir)},
                                                unfreeze=(0, 1), data=small_digits, name="e2")
    head, deeper = (r.metrics["best_epoch_val_accuracy"] for r in results)
    assert head > random_head.metrics["best_epoch_val_accuracy"] + 0.05
    assert deeper >= head
    assert list(table["policy"]) == ["head only", "head + last 1"]
    assert list(table["trainable stages"]) == ["-", "stack3"]
    assert len(figure.axes) == 4
    efficiency = efficiency_table(results)
    assert (efficiency["s per 1% acc"] > 0).all()
    record = json.loads((results[1].run_dir / "config.json").read_text())
    assert record["weights"] == str(pretrained.run_dir) and record["unfreeze"] == 1


@pytest.mark.parametrize("values, message", [
    (dict(model="transfer"), "needs a backbone"),
    (dict(model="transfer", backbone="resnet5"), "Unknown backbone 'resnet5'"),
    (dict(model="transfer", backbone="vgg16", input_scaling="imagenet"), "normalise twice"),
    (dict(model="transfer", backbone="vgg16", unfreeze_schedule=[0, 1]), "phase_epochs of the same length"),
    (dict(model="transfer", backbone="vgg16", unfreeze=1, unfreeze_schedule=[0, 1], phase_epochs=[1, 1]),
     "not both"),
    (dict(model="cnn", backbone_lr_factor=0.1), "transfer models only"),
    (dict(model="cnn", backbone="vgg16"), "has no option 'backbone'"),
    (dict(model="transfer", backbone="vgg16", feature_cache="gpu"), "feature_cache must be one of"),
    (dict(dataset="cifar10", dataset_resize=256), "dataset_resize applies to image folders"),
    (dict(model="transfer", backbone="vgg16", feature_cache_passes=2), "set augment=True"),
])
def test_bad_transfer_configs_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**values)


def test_stage_names_of_a_transfer_model():
    model = transfer_model((32, 32, 3), 3, backbone="vgg16", weights=None)
    assert stage_names(model) == ["block1", "block2", "block3", "block4", "block5"]


def test_the_unfreezing_comparison_repeats_each_policy_once_per_seed(small_digits):
    table, figure, results = compare_unfreezing({**TRANSFER, "epochs": 1}, unfreeze=(0,), data=small_digits,
                                                name="seeded", seeds=[3, 4])
    assert [(r.config.name, r.config.seed) for r in results] == [("seeded-0", 3), ("seeded-0", 4)]
    assert list(table["policy"]) == ["head only", "head only"] and list(table["seed"]) == [3, 4]
    assert "seed" not in compare_unfreezing({**TRANSFER, "epochs": 1}, unfreeze=(0,), data=small_digits)[0]
    with pytest.raises(ValueError, match="received seeds=-1"):
        compare_unfreezing(TRANSFER, unfreeze=(0,), data=small_digits, seeds=-1)
