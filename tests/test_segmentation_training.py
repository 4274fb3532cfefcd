"""train_segmentation / train_autoencoder: run records, repeatability, E6's all-background flag."""

import json

import keras
import numpy as np
import pytest

from lab.data.datasets.segmentation import load_segmentation_dataset
from lab.runs.records import load_run, load_runs, results_table
from lab.tasks.segmentation import SegmentationConfig, train_autoencoder, train_segmentation

TINY = dict(model="unet", depth=2, filters=4, batch_size=8, epochs=2, verbose=0)


@pytest.fixture(scope="module")
def shapes():
    return load_segmentation_dataset("shapes", limit=24, seed=0)


@pytest.fixture(scope="module")
def tiny_run(shapes, tmp_path_factory):
    """One recorded run, shared by the record and repeatability tests (training is the slow part)."""
    reports = str(tmp_path_factory.mktemp("reports"))
    config = dict(loss="combined", augment=True, aug_rotation=0.1, name="tiny-unet", tags=["e6"], seed=4,
                  reports_dir=reports, **TINY)
    return config, train_segmentation(config, data=shapes)


def test_a_run_writes_a_full_segmentation_record(shapes, tiny_run):
    config, result = tiny_run
    assert result.status == "completed"
    files = sorted(p.name for p in result.run_dir.iterdir())
    assert files == ["config.json", "history.csv", "metrics.json", "model.keras", "plots", "predictions.npz", "tensorboard"]
    assert sorted(p.name for p in (result.run_dir / "plots").iterdir()) == [
        "class_distribution.png", "confusion_matrix.png", "iou_dice_curves.png", "learning_curves.png",
        "per_class_scores.png", "predicted_masks.png"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for key in ("test_pixel_accuracy", "test_mean_iou", "test_mean_dice", "test_iou_background", "test_dice_ring",
                "test_iou_circle", "foreground_fraction_predicted", "foreground_fraction_true", "all_background",
                "val_mean_iou", "train_accuracy", "test_loss", "best_epoch"):
        assert key in metrics, key
    assert {"loss", "accuracy", "mean_iou", "mean_dice", "val_mean_iou", "epoch_seconds"} <= set(result.history)
    with np.load(result.run_dir / "predictions.npz") as npz:
        assert npz["y_true"].shape == npz["y_pred"].shape == shapes.masks_test.shape
        assert list(npz["class_names"]) == shapes.class_names
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["task"] == "segmentation" and config["data"]["num_classes"] == 7
    rescored = load_run(result.run_dir).rescore()
    assert rescored["test_mean_iou"] == pytest.approx(metrics["test_mean_iou"])
    # Listed and tabulated like every classification run.
    runs = load_runs(config["reports_dir"], tags=["e6"])
    table = results_table(runs, ["name", "status", "test_mean_iou", "all_background"])
    assert table["name"].tolist() == ["tiny-unet"]
    # The saved best model loads with its custom loss and metrics and predicts the same masks.
    model = keras.models.load_model(result.run_dir / "model.keras")
    x = shapes.x_test[:4].astype(np.float32) / 255.0
    np.testing.assert_allclose(model.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)


def test_same_seed_same_result_on_cpu(shapes, tiny_run):
    config, first = tiny_run
    second = train_segmentation(config, data=shapes, save_model=False)  # the model file does not change results
    assert first.history["loss"].tolist() == second.history["loss"].tolist()
    for key in ("test_mean_iou", "test_pixel_accuracy", "val_loss"):
        assert first.metrics[key] == second.metrics[key]


def test_an_all_background_run_is_flagged_whatever_its_pixel_accuracy(shapes):
    # A large step size on plain cross-entropy collapses onto the majority class (E6).
    with pytest.warns(UserWarning, match="ALL BACKGROUND"):
        result = train_segmentation(data=shapes, loss="crossentropy", learning_rate=1e-2, save_model=False, **TINY)
    metrics = load_run(result.run_dir).metrics
    assert metrics["all_background"] is True
    assert metrics["test_pixel_accuracy"] > 0.7, "pixel accuracy looks fine..."
    assert metrics["test_foreground_iou"] < 0.05, "...but no object is found"
    assert metrics["foreground_fraction_predicted"] < 0.1 * metrics["foreground_fraction_true"]
    assert "pixel accuracy" in metrics["warning"]


def test_denoising_autoencoder_run(shapes):
    result = train_autoencoder(data=shapes, model="denoising_autoencoder", filters=[4, 8], noise_stddev=0.3,
                               batch_size=8, epochs=2, verbose=0, save_model=False)
    assert result.status == "completed" and result.metrics["noise_stddev"] == 0.3
    for key in ("test_mse", "test_psnr", "test_noisy_psnr", "test_denoised_psnr"):
        assert np.isfinite(result.metrics[key]), key
    assert sorted(p.name for p in (result.run_dir / "plots").iterdir()) == ["learning_curves.png",
                                                                          "reconstructions.png"]


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match=r"Unknown configuration key\(s\) \['epoch'\]"):
        SegmentationConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="Model 'unet' has no option 'latent_dim'"):
        SegmentationConfig(model="unet", latent_dim=2)
    with pytest.raises(ValueError, match="Model 'pretrained_unet' has no option 'depth'"):
        SegmentationConfig(model="pretrained_unet", depth=3)
    with pytest.raises(ValueError, match="loss must be one of"):
        SegmentationConfig(model="vae", loss="dice")
    with pytest.raises(ValueError, match="train it with lab.tasks.segmentation.train_autoencoder"):
        train_segmentation(model="vae")
    with pytest.raises(ValueError, match="monitor must be one of"):
        SegmentationConfig(monitor="val_iou")
    config = SegmentationConfig(model="pretrained_unet", backbone="vgg16", weights=None,
                                decoder_filters=[8, 8, 4, 4])
    assert config.model_options() == {"backbone": "vgg16", "weights": None, "decoder_filters": (8, 8, 4, 4)}
    assert config.replace(weights="imagenet", unfreeze="all").model_options()["unfreeze"] == "all"
    with pytest.raises(ValueError, match="weights must be 'imagenet' or None"):
        config.replace(weights="random")
    with pytest.raises(ValueError, match="'encoder_weights' is now called weights"):
        config.replace(encoder_weights=None)
    with pytest.raises(ValueError, match=r"'encoder' is now called backbone \(a pretrained_unet's"):
        config.replace(backbone=None, encoder="vgg16")
    with pytest.raises(ValueError, match="unfreeze applies to pretrained_unet's backbone"):
        SegmentationConfig(model="unet", unfreeze=0)
    assert config.replace(name="x").config_hash() == config.config_hash()


def test_balanced_class_weights_reach_the_loss(shapes):
    from lab.tasks.segmentation.tasks import SEGMENTATION

    config = SegmentationConfig(class_weighting="balanced", loss="crossentropy", **TINY)
    model = SEGMENTATION.plan(config, shapes).model
    assert model.loss.class_weights == pytest.approx(shapes.class_weights("train"))
    assert model.loss.class_weights[0] < 1 < model.loss.class_weights[1]
    with pytest.raises(ValueError, match="has 2 weights but shapes has 7 classes"):
        SEGMENTATION.plan(config.replace(class_weighting=[1.0, 2.0]), shapes)
