"""Overlap-tile prediction, tiled mask folders, the stated background class, folder options in the config."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lab.config import SegmentationConfig
from lab.data.datasets import SEGMENTATION_DATA_FIELDS, data_key, load_data
from lab.data.datasets.segmentation import FOLDER_OPTIONS, load_mask_folder, load_segmentation_dataset, tile_starts
from lab.runs.evaluation import segmentation_metrics
from lab.tasks.segmentation.tiling import overlap_tile_windows, predict_whole_images, stitch, tile_layout


@pytest.mark.parametrize("height,width", [(37, 53), (16, 16), (5, 3), (1, 7), (100, 33)])
@pytest.mark.parametrize("tile,margin", [(16, 4), (16, 0), (32, 7), (np.int64(16), np.int64(4))])
def test_stitching_an_identity_model_gives_the_image_back(height, width, tile, margin):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    windows, layout = overlap_tile_windows(image, tile, margin)
    assert windows.shape[1:] == (tile, tile, 3), "every window is the network's input size"
    np.testing.assert_array_equal(stitch(windows, layout), image)
    [whole] = predict_whole_images(lambda batch: batch.astype(np.float32) / 255.0, [image], tile, margin)
    np.testing.assert_allclose(whole, image / 255.0, atol=1e-7)


def _blur(batch: np.ndarray, radius: int = 2) -> np.ndarray:
    """A "model" with a (2 radius + 1)-pixel receptive field and zero padding, as a CNN's 'same'
    convolutions have: its outputs near a window's border see zeros instead of the image."""
    size = 2 * radius + 1
    return np.stack([ndimage.uniform_filter(window, size=(size, size, 1), mode="constant") for window in batch])


def test_the_margin_removes_the_seams_of_naive_tiling():
    image = np.random.default_rng(0).random((45, 58, 1)).astype(np.float64)
    radius = 2
    # The reference: the same filter over the whole image, mirrored at the image's borders.
    padded = np.pad(image, ((8, 8), (8, 8), (0, 0)), mode="reflect")
    reference = _blur(padded[np.newaxis], radius)[0][8:-8, 8:-8]
    [overlap] = predict_whole_images(_blur, [image], tile_size=16, tile_margin=radius)
    [naive] = predict_whole_images(_blur, [image], tile_size=16, tile_margin=0)
    np.testing.assert_allclose(overlap, reference, atol=1e-12)
    error = np.abs(naive - reference)[..., 0]
    assert error.max() > 0.05, "naive tiling differs from the whole-image prediction"
    # ... and only along the tiles' seams (every 16 pixels), where a window's zero padding showed.
    seams = np.zeros(error.shape, bool)
    for start in range(0, 64, 16):
        seams[max(start - radius, 0):start + radius, :] = True
        seams[:, max(start - radius, 0):start + radius] = True
    assert error[~seams].max() < 1e-12 and error[seams].mean() > 0.01


def test_tile_layout_refuses_a_margin_without_centre():
    # The configuration's own check, in its words: one check of the tile fields for every layer.
    with pytest.raises(ValueError, match=r"tile_margin must be an integer with 0 <= 2 \* tile_margin < tile_size=16"):
        tile_layout(20, 20, 16, 8)
    with pytest.raises(ValueError, match="tile_size must be a positive integer, received tile_size=0"):
        tile_layout(20, 20, 0, 0)
    with pytest.raises(ValueError, match="tile_margin must be given"):
        tile_layout(20, 20, 16, None)
    with pytest.raises(ValueError, match="stitch expects one 16x16 output per window"):
        stitch(np.zeros((3, 16, 16, 2)), tile_layout(20, 20, 16, 2))


def _write_folder(folder, sizes, value=255, membrane=False):
    """Images whose red channel draws the mask; masks {0, value}. ``membrane``: class 0 is thin lines."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), np.uint8)
        if membrane:
            mask[:] = value
            mask[::7, :] = 0
            mask[:, ::9] = 0
        else:
            mask[height // 4: height // 2 + 3, width // 3: width - 3] = value
        image = np.stack([mask, np.full_like(mask, 40), np.full_like(mask, 90 + i)], axis=-1)
        Image.fromarray(image).save(folder / "images" / f"img{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"img{i}.png")


def test_a_tiled_folder_keeps_its_validation_and_test_images_whole(tmp_path):
    sizes = [(40, 30), (33, 47), (50, 50), (36, 40), (45, 33), (40, 41), (38, 39)]
    _write_folder(tmp_path / "set", sizes)
    data = load_mask_folder(tmp_path / "set", tile_size=16, split_fractions=(0.4, 0.3, 0.3), seed=1)
    assert data.tiled and data.tile_margin == 2 and data.input_shape == (16, 16, 3)
    for split in ("val", "test"):
        images, masks = data.whole_images(split)
        tiles = data.split(split)[0]
        assert len(images) == len(set(data.tile_origins[split])) == data.summary()["images"][split]
        assert {image.shape[:2] for image in images} <= set(sizes) and len(tiles) > len(images)
        for image, mask in zip(images, masks):
            np.testing.assert_array_equal(image[..., 0] == 255, mask == 1)
    with pytest.raises(ValueError, match="the 'train' split holds tiles"):
        data.whole_images("train")
    # limit counts images: two per split, each with all its tiles.
    limited = data.limit(2, seed=0)
    assert [limited.summary()["images"][s] for s in ("train", "val", "test")] == [2, 2, 2]
    for split in ("val", "test"):
        kept = limited.whole_images(split)[0]
        tiles_per_image = [len(tile_starts(height, 16)) * len(tile_starts(width, 16))
                           for height, width, _ in (image.shape for image in kept)]
        assert np.bincount(limited.tile_origins[split]).tolist() == tiles_per_image
        for index, image in enumerate(kept):  # the tiles kept are the kept images' own
            first = limited.split(split)[0][np.flatnonzero(limited.tile_origins[split] == index)[0]]
            np.testing.assert_array_equal(first, image[:16, :16])


def test_resize_then_tile(tmp_path):
    _write_folder(tmp_path / "set", [(40, 30), (33, 47), (50, 50), (36, 40), (45, 33)])
    data = load_mask_folder(tmp_path / "set", dataset_size=32, tile_size=16, tile_margin=4)
    assert data.input_shape == (16, 16, 3) and data.tile_margin == 4
    assert all(image.shape == (32, 32, 3) for image in data.whole_images("test")[0])
    assert len(data.x_train) == 4 * data.summary()["images"]["train"], "32x32 gives 2x2 tiles of 16"
    with pytest.raises(ValueError, match="larger than the resized images 8x8"):
        load_mask_folder(tmp_path / "set", dataset_size=8, tile_size=16)
    with pytest.raises(ValueError, match=r"tile_margin must be an integer with 0 <= 2 \* tile_margin < tile_size=16"):
        load_mask_folder(tmp_path / "set", tile_size=16, tile_margin=8)


def test_the_background_class_is_stated_not_assumed(tmp_path):
    # EM-like masks: the membrane (value 0, class 0) is the foreground; the cells are background.
    _write_folder(tmp_path / "em", [(32, 32)] * 5, membrane=True)
    data = load_mask_folder(tmp_path / "em", background_class=1)
    assert data.class_names == ["foreground", "background"] and data.background_class == 1
    named = load_segmentation_dataset(f"folder:{tmp_path / 'em'}", class_names=["membrane", "cell"],
                                      background_class=1)
    assert named.class_names == ["membrane", "cell"] and named.summary()["background_class"] == 1
    truth = data.masks_test
    everything_cell = np.ones_like(truth)
    flagged = segmentation_metrics(truth, everything_cell, data.class_names, background_class=1)
    assert flagged["all_background"] is True and flagged["foreground_fraction_predicted"] == 0.0
    assert flagged["foreground_fraction_true"] == pytest.approx((truth == 0).mean())
    assert flagged["foreground_iou"] == 0.0, "the foreground IoU is the membrane's"
    # Read with class 0 as background, the same prediction looks like a perfect foreground.
    assumed = segmentation_metrics(truth, everything_cell, data.class_names)
    assert assumed["all_background"] is False
    with pytest.raises(ValueError, match="background_class must be one of the class ids 0 to 1"):
        load_mask_folder(tmp_path / "em", background_class=2)
    with pytest.raises(ValueError, match="background_class must be a class id from 0 to 1"):
        segmentation_metrics(truth, truth, data.class_names, background_class=2)


def test_folder_options_are_config_fields_that_reach_the_loader(tmp_path):
    _write_folder(tmp_path / "set", [(40, 30), (33, 47), (50, 50), (36, 40), (45, 33), (40, 41), (38, 39)])
    # split_fractions and color_mode are every run's fields (image folders have them too).
    assert set(SEGMENTATION_DATA_FIELDS) | {"split_fractions", "color_mode"} == set(FOLDER_OPTIONS) | {"background_class"}
    config = SegmentationConfig(dataset=f"folder:{tmp_path / 'set'}", tile_size=16, tile_margin=3,
                                split_fractions=[0.4, 0.3, 0.3], color_mode="grayscale", class_names=["sky", "roof"],
                                class_values={"0": 0, "255": 1}, background_class=0, mask_suffix="",
                                images_dir="images", masks_dir="masks")
    assert config.class_values == {0: 0, 255: 1}, "a JSON record's string keys become mask values again"
    data = load_data(config)
    assert data.tile_size == 16 and data.tile_margin == 3 and data.input_shape == (16, 16, 1)
    assert data.class_names == ["sky", "roof"] and data.source["color_mode"] == "grayscale"
    # Every field changes the data key (sweeps load each setting once) and the config hash.
    changes = {"tile_size": 8, "tile_margin": 1, "split_fractions": [0.5, 0.25, 0.25], "color_mode": "rgb",
               "class_names": ["a", "b"], "class_values": {0: 0, 128: 1}, "background_class": 1,
               "mask_suffix": "_mask", "images_dir": "x", "masks_dir": "y"}
    for key, value in changes.items():
        other = config.replace(**{key: value})
        assert data_key(other) != data_key(config) and other.config_hash() != config.config_hash(), key
    roundtrip = SegmentationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert roundtrip.config_hash() == config.config_hash() and data_key(roundtrip) == data_key(config)


@pytest.mark.parametrize("values,message", [
    (dict(tile_size=16), "tile_size applies to mask folders"),
    (dict(dataset="folder:/x", tile_margin=2), "set tile_size too"),
    (dict(dataset="folder:/x", tile_size=16, tile_margin=8), r"0 <= 2 \* tile_margin < tile_size=16"),
    (dict(dataset="folder:/x", dataset_size=16, tile_size=32), "choose tile_size <= dataset_size"),
    (dict(dataset="folder:/x", split_fractions=[0.8, 0.2]), "three positive shares"),
    (dict(dataset="folder:/x", color_mode="rgba"), "color_mode must be one of 'rgb', 'grayscale'"),
    (dict(dataset="folder:/x", class_names=["a", "a"]), "two or more distinct"),
    (dict(dataset="folder:/x", class_values={1.5: 1, 0: 0}), "whole-number mask values"),
    (dict(dataset="folder:/x", class_values={0: 1, 255: 2}), "class 0 among them"),
    (dict(dataset="folder:/x", class_values={0: 0, 255: 2}, class_names=["a", "b"]), "maps to 3 class ids"),
    (dict(background_class=-1), "background_class must be a class id"),
    (dict(dataset="folder:/x", images_dir=""), "images_dir must be a non-empty string"),
])
def test_configuration_refuses_bad_folder_options(values, message):
    with pytest.raises(ValueError, match=message):
        SegmentationConfig(**values)


def test_folder_options_are_refused_for_other_datasets():
    with pytest.raises(ValueError, match=r"tile_size, class_values apply to mask folders .* not to 'shapes'"):
        load_segmentation_dataset("shapes", tile_size=16, class_values={0: 0})
    shapes = load_segmentation_dataset("shapes", limit=8, background_class=0)
    assert shapes.background_class == 0


def test_a_tiled_model_predicts_and_saves_each_original_image(tmp_path):
    from lab.tasks.segmentation.tasks import SEGMENTATION, masks_per_image, save_predictions

    sizes = [(40, 30), (33, 47), (50, 50), (36, 40), (45, 33), (40, 41), (38, 39), (44, 36)]
    _write_folder(tmp_path / "set", sizes)
    config = SegmentationConfig(dataset=f"folder:{tmp_path / 'set'}", tile_size=16, split_fractions=[0.5, 0.25, 0.25],
                                model="unet", depth=2, filters=4, batch_size=8, verbose=0)
    data = load_data(config)
    model = SEGMENTATION.plan(config, data).model
    truth, predicted, loss = SEGMENTATION._predict(model, config, data, "test")
    assert [m.shape for m in predicted] == [m.shape for m in truth] == [m.shape for m in data.whole_images("test")[1]]
    assert np.isfinite(loss) and all(set(np.unique(m)) <= {0, 1} for m in predicted)
    save_predictions(tmp_path / "predictions.npz", truth, predicted, data.class_names, 1)
    with np.load(tmp_path / "predictions.npz") as saved:
        assert [tuple(s) for s in saved["image_shapes"]] == [m.shape for m in truth]
        np.testing.assert_array_equal(saved["y_pred"], np.concatenate([m.ravel() for m in predicted]))
        assert int(saved["background_class"]) == 1
        y_true, y_pred = masks_per_image(dict(saved))
    for mine, theirs in zip(y_true + y_pred, truth + predicted):  # cut apart again, image by image
        np.testing.assert_array_equal(mine, theirs)


def test_data_passed_in_must_be_tiled_and_have_the_background_the_configuration_states(tmp_path):
    from lab.tasks.segmentation.tasks import SEGMENTATION

    _write_folder(tmp_path / "set", [(32, 32)] * 6)
    config = SegmentationConfig(dataset=f"folder:{tmp_path / 'set'}", tile_size=16, tile_margin=2, model="unet",
                                depth=2)
    tiled = load_data(config)
    SEGMENTATION.describe(config, tiled)
    with pytest.raises(ValueError, match="tile_size=16, tile_margin=2, but the data passed in is not tiled"):
        SEGMENTATION.describe(config, load_mask_folder(tmp_path / "set"))
    with pytest.raises(ValueError, match="is cut into 16-pixel tiles, tile_margin=4"):
        SEGMENTATION.describe(config, load_mask_folder(tmp_path / "set", tile_size=16, tile_margin=4))
    with pytest.raises(ValueError, match=r"background_class=2 is not a class of set, whose class ids are 0 to 1"):
        SEGMENTATION.describe(config.replace(background_class=2), tiled)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ALL BACKGROUND")  # one epoch of a tiny U-Net: the flag is expected
def test_a_tiled_run_scores_and_saves_every_original_image(tmp_path):
    from lab.runs.records import load_run
    from lab.tasks.segmentation import train_segmentation

    sizes = [(40, 30), (33, 47), (50, 50), (36, 40), (45, 33), (40, 41), (38, 39), (44, 36)]
    _write_folder(tmp_path / "set", sizes)
    result = train_segmentation(dataset=f"folder:{tmp_path / 'set'}", tile_size=16, tile_margin=2,
                                split_fractions=[0.5, 0.25, 0.25], model="unet", depth=2, filters=4, epochs=1,
                                batch_size=8, verbose=0, save_model=False, reports_dir=str(tmp_path / "reports"))
    assert result.status == "completed"
    data = load_segmentation_dataset(f"folder:{tmp_path / 'set'}", tile_size=16, tile_margin=2,
                                     split_fractions=[0.5, 0.25, 0.25])
    test_images, test_masks = data.whole_images("test")
    with np.load(result.run_dir / "predictions.npz") as saved:
        shapes = [tuple(shape) for shape in saved["image_shapes"]]
        assert shapes == [mask.shape for mask in test_masks], "one prediction per original test image"
        assert saved["y_true"].size == saved["y_pred"].size == sum(mask.size for mask in test_masks)
        assert data.masks_test.size > saved["y_true"].size, "the tiles overlap: scoring them would count pixels twice"
        assert int(saved["background_class"]) == 0
    metrics = result.metrics
    assert metrics["test_images"] == len(test_images) == 2 and metrics["val_images"] == 2
    assert metrics["test_accuracy"] == metrics["test_pixel_accuracy"]
    rescored = load_run(result.run_dir).rescore()
    assert rescored["test_mean_iou"] == pytest.approx(metrics["test_mean_iou"], nan_ok=True)
    assert rescored["test_pixel_accuracy"] == pytest.approx(metrics["test_pixel_accuracy"])
    record = json.loads((result.run_dir / "config.json").read_text())
    assert record["tile_size"] == 16 and record["tile_margin"] == 2 and record["background_class"] is None
    assert record["data"]["background_class"] == 0 and record["data"]["tile_size"] == 16
    assert record["data"]["images"]["test"] == 2
    assert (result.run_dir / "plots" / "predicted_masks.png").exists()
