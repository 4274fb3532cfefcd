"""U-Net's training as published: elastic deformation, the weight map and its cache, the weighted
loss, the generated membranes, and their configuration."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lab.data.datasets.segmentation import list_segmentation_datasets, load_membranes, load_segmentation_dataset
from lab.tasks.segmentation.elastic import RandomElasticDeformation, deform
from lab.tasks.segmentation import SegmentationConfig, train_segmentation
from lab.tasks.segmentation.losses import CombinedLoss, DiceLoss, WeightedCrossentropy, split_targets
from lab.tasks.segmentation.metrics import MeanIoU, PixelAccuracy
from lab.tasks.segmentation.pipeline import augment_pair, make_joint_augmenter, make_segmentation_pipeline
from lab.tasks.segmentation.weight_map import dataset_weight_maps, unet_weight_map, weight_maps

SEED = tf.constant([3, 7], tf.int64)


@pytest.fixture(scope="module")
def membranes():
    return load_membranes(num_train=6, num_val=2, num_test=2, dataset_size=64, seed=1)


def _blocks(batch: int = 2, size: int = 48) -> tuple[tf.Tensor, tf.Tensor]:
    """Masks of 8-pixel blocks of classes 0-2 and images that draw them (image value = class id)."""
    rng = np.random.default_rng(0)
    masks = np.kron(rng.integers(0, 3, (batch, size // 8, size // 8)), np.ones((1, 8, 8))).astype(np.uint8)
    return tf.constant(masks[..., None].astype(np.float32)), tf.constant(masks)


# -- elastic deformation ----------------------------------------------------------------------


def test_a_known_displacement_moves_a_known_pattern_with_mirrored_borders():
    image = np.arange(6 * 7, dtype=np.float32).reshape(1, 6, 7, 1)
    np.testing.assert_array_equal(deform(tf.constant(image), tf.zeros((1, 6, 7, 2))), image)
    shift = tf.constant(np.broadcast_to(np.float32([2, -3]), (1, 6, 7, 2)))
    # output[y, x] = input[y + 2, x - 3], mirrored at the border pixels as numpy's "reflect" pads.
    padded = np.pad(image[0, ..., 0], ((0, 2), (3, 0)), mode="reflect")
    expected = padded[2:, :7]
    for interpolation in ("bilinear", "nearest"):
        np.testing.assert_array_equal(deform(tf.constant(image), shift, interpolation=interpolation)[0, ..., 0],
                                      expected)
    # Half a pixel across: bilinear averages the two neighbours.
    half = tf.constant(np.broadcast_to(np.float32([0, 0.5]), (1, 6, 7, 2)))
    np.testing.assert_allclose(deform(tf.constant(image), half)[0, :, :6, 0], image[0, :, :6, 0] + 0.5)


def test_elastic_deformation_is_deterministic_per_seed_and_draws_a_field_per_image():
    images, masks = _blocks(batch=3)
    augmenter = make_joint_augmenter(flip=None, elastic=10.0, seed=0)
    first = augment_pair(augmenter, images, masks, seed=SEED)
    again = augment_pair(make_joint_augmenter(flip=None, elastic=10.0, seed=0), images, masks, seed=SEED)
    other = augment_pair(augmenter, images, masks, seed=tf.constant([3, 8], tf.int64))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1]), "another seed, another deformation"
    assert (first[1].numpy() != masks.numpy()).mean() > 0.05, "the masks were deformed"
    layer = RandomElasticDeformation(10.0, 3)
    field = layer.get_random_transformation(images, seed=keras.random.SeedGenerator(1))["displacement"].numpy()
    assert field.shape == (3, 48, 48, 2)
    assert not np.allclose(field[0], field[1]), "each image has its own field"
    assert 3.0 < field.std() < 15.0, "displacements of about 10 pixels"
    # Smooth: neighbouring pixels move almost alike (a 3x3 grid over 48 pixels).
    assert np.abs(np.diff(field, axis=1)).max() < 3.0
    assert layer.get_random_transformation(images, training=False) is None


def test_elastic_deformation_moves_image_mask_and_weight_map_alike():
    images, masks = _blocks()
    # Targets with a weight map: class ids, then weights that are a function of the class.
    targets = tf.stack([tf.cast(masks, tf.float32), 10.0 * tf.cast(masks, tf.float32) + 1.0], axis=-1)
    augmenter = make_joint_augmenter(flip="horizontal_and_vertical", rotation=0.1, elastic=10.0, seed=2)
    out_images, out_targets = augment_pair(augmenter, images, targets, seed=SEED)
    out_images, out_targets = out_images.numpy()[..., 0], out_targets.numpy()
    assert out_targets.shape == targets.shape and out_targets.dtype == np.float32
    out_masks = out_targets[..., 0]
    assert set(np.unique(out_masks)) <= {0.0, 1.0, 2.0}, "nearest neighbour: only class ids"
    np.testing.assert_array_equal(out_targets[..., 1], 10.0 * out_masks + 1.0)
    # Flips and the deformation alone resample once: the image (bilinear) is the mask (nearest)
    # but for the pixels between two blocks. Another seed's masks do not fit the images.
    flipped = make_joint_augmenter(flip="horizontal_and_vertical", elastic=10.0, seed=2)
    out_images, out_masks = (t.numpy()[..., 0] for t in augment_pair(flipped, images, targets, seed=SEED))
    assert (np.abs(out_images - out_masks) < 0.5).mean() > 0.9
    other = augment_pair(flipped, images, targets, seed=tf.constant([1, 1], tf.int64))[1].numpy()[..., 0]
    assert (np.abs(out_images - other) < 0.5).mean() < 0.8
    # Integer masks come back as integer masks.
    _, plain = augment_pair(flipped, images, masks, seed=SEED)
    assert plain.dtype == tf.uint8
    np.testing.assert_array_equal(plain.numpy(), out_masks.astype(np.uint8))


def test_elastic_settings_are_checked():
    with pytest.raises(ValueError, match="aug_elastic is the standard deviation.*received aug_elastic=-1"):
        make_joint_augmenter(elastic=-1)
    with pytest.raises(ValueError, match="aug_elastic_grid.*integer >= 2.*received aug_elastic_grid=1"):
        RandomElasticDeformation(10.0, grid=1)
    restored = keras.layers.deserialize(keras.layers.serialize(RandomElasticDeformation(4.0, 5, seed=3)))
    assert (restored.stddev, restored.grid, restored.seed) == (4.0, 5, 3)


# -- the weight map -----------------------------------------------------------------------------


def test_weight_map_of_two_cells_by_hand():
    # Cells (class 0) in columns 0-3 and 8-11, a membrane (class 1) in columns 4-7 between them:
    # every membrane pixel lies d1 + d2 = 1 + 4 = 2 + 3 = 5 pixels from the two cells.
    mask = np.zeros((5, 12), np.uint8)
    mask[:, 4:8] = 1
    weights = unet_weight_map(mask, cell_class=0, class_weights=[0.5, 2.0], w0=10.0, sigma=5.0)
    assert weights.dtype == np.float32 and weights.shape == mask.shape
    np.testing.assert_allclose(weights[:, 4:8], 2.0 + 10.0 * math.exp(-25 / 50), rtol=1e-6)
    np.testing.assert_allclose(weights[mask == 0], 0.5)  # cells get w_c only
    # A wider gap weighs less; one cell alone has no border term.
    wide = np.zeros((5, 20), np.uint8)
    wide[:, 4:16] = 1
    gap = unet_weight_map(wide, cell_class=0, class_weights=[0.5, 2.0], w0=10.0, sigma=5.0)
    np.testing.assert_allclose(gap[0, 4], 2.0 + 10.0 * math.exp(-(1 + 12) ** 2 / 50), rtol=1e-5)
    lone = np.ones((5, 12), np.uint8)
    lone[:, :4] = 0
    np.testing.assert_allclose(unet_weight_map(lone, cell_class=0, class_weights=[0.5, 2.0]), np.where(lone, 2.0, 0.5))


def test_weight_map_against_brute_force_distances():
    rng = np.random.default_rng(4)
    mask = np.ones((40, 40), np.uint8)
    for _ in range(6):  # six rectangular cells in a membrane
        top, left = rng.integers(0, 34, 2)
        mask[top:top + rng.integers(3, 7), left:left + rng.integers(3, 7)] = 0
    from scipy import ndimage

    cells, count = ndimage.label(mask == 0)
    distances = np.sort([ndimage.distance_transform_edt(cells != label) for label in range(1, count + 1)], axis=0)
    expected = np.where(mask == 1, 1.5 + 10.0 * np.exp(-(distances[0] + distances[1]) ** 2 / (2 * 3.0 ** 2)), 1.0)
    np.testing.assert_allclose(unet_weight_map(mask, cell_class=0, class_weights=[1.0, 1.5], sigma=3.0), expected,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weight_map_sigma must be a number > 0.*received weight_map_sigma=0"):
        unet_weight_map(mask, cell_class=0, class_weights=[1, 1], sigma=0)
    with pytest.raises(ValueError, match="class id 1 but class_weights has 1"):
        unet_weight_map(mask, cell_class=0, class_weights=[1])


def test_weight_maps_are_cached_with_the_data_and_checked_against_the_masks(membranes):
    data = dataclasses.replace(membranes)  # a copy whose masks this test may change
    data.masks_train = data.masks_train.copy()
    maps = dataset_weight_maps(data, "train")
    assert maps.shape == data.masks_train.shape
    np.testing.assert_allclose(maps, weight_maps(data.masks_train, cell_class=0, class_weights=data.class_weights()))
    assert dataset_weight_maps(data, "train") is maps, "computed once"
    assert dataset_weight_maps(data, "train", sigma=3.0) is not maps, "other parameters, other maps"
    again = dataset_weight_maps(data, "train")
    data.masks_train[0, :, :] = 1  # the masks change in place: the cache no longer holds
    changed = dataset_weight_maps(data, "train")
    assert changed is not again and not np.allclose(changed[0], again[0])
    assert data.limit(2).weight_map_cache == {}, "a copy starts without the original's maps"


# -- the weighted loss ------------------------------------------------------------------------


def test_the_weighted_loss_with_unit_weights_is_the_unweighted_loss():
    rng = np.random.default_rng(2)
    masks = rng.integers(0, 2, (2, 6, 6))
    probabilities = rng.dirichlet([1, 1], (2, 6, 6)).astype(np.float32)
    ones = np.stack([masks, np.ones_like(masks)], -1).astype(np.float32)
    for loss in (WeightedCrossentropy(), CombinedLoss(), DiceLoss(), CombinedLoss(dice_weight=0.3)):
        assert float(loss(ones, probabilities)) == pytest.approx(float(loss(masks, probabilities)), rel=1e-6)
    # Weights multiply each pixel's cross-entropy; Dice reads the class ids only.
    weights = rng.uniform(0.5, 3.0, masks.shape)
    weighted = np.stack([masks, weights], -1).astype(np.float32)
    per_pixel = -np.log(np.take_along_axis(probabilities, masks[..., None], -1)[..., 0])
    assert float(WeightedCrossentropy()(weighted, probabilities)) == pytest.approx((weights * per_pixel).mean(),
                                                                                    rel=1e-5)
    assert float(DiceLoss()(weighted, probabilities)) == pytest.approx(float(DiceLoss()(masks, probabilities)))
    ids, pixel_weights = split_targets(tf.constant(weighted))
    np.testing.assert_array_equal(ids, masks)
    np.testing.assert_allclose(pixel_weights, weights, rtol=1e-6)
    # The metrics score the class ids whatever the targets carry.
    for metric in (MeanIoU(2), PixelAccuracy()):
        metric.update_state(weighted, probabilities)
        plain = type(metric)(2) if isinstance(metric, MeanIoU) else type(metric)()
        plain.update_state(masks, probabilities)
        assert float(metric.result()) == pytest.approx(float(plain.result()))


def test_the_pipeline_carries_weight_maps_in_the_targets(membranes):
    maps = dataset_weight_maps(membranes, "train")
    augmenter = make_joint_augmenter(flip="horizontal_and_vertical", elastic=10.0, seed=0)

    def batches():
        return list(make_segmentation_pipeline(membranes.x_train, membranes.masks_train, training=True, batch_size=3,
                                               augmenter=augmenter, seed=1, weight_maps=maps))

    first, second = batches(), batches()
    for (x1, y1), (x2, y2) in zip(first, second):
        assert y1.shape == (3, 64, 64, 2) and y1.dtype == tf.float32
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # Each pixel keeps its weight: the pairs (class id, weight) are pairs of the original maps.
    pairs = {(int(c), round(float(w), 4)) for c, w in zip(membranes.masks_train.ravel(), maps.ravel())}
    moved = np.concatenate([y.numpy().reshape(-1, 2) for _, y in first])
    assert {(int(c), round(float(w), 4)) for c, w in moved[::37]} <= pairs
    with pytest.raises(ValueError, match="one \\(H, W\\) map per mask"):
        make_segmentation_pipeline(membranes.x_train, membranes.masks_train, training=True, weight_maps=maps[:2])


# -- the generated membranes ------------------------------------------------------------------


def test_the_membrane_set_is_seeded_em_like_and_thin(membranes):
    assert membranes.class_names == ["cell", "membrane"] and membranes.background_class == 0
    assert membranes.x_train.shape == (6, 64, 64, 1) and membranes.x_train.dtype == np.uint8
    assert {len(membranes.x_val), len(membranes.x_test)} == {2}
    assert set(np.unique(membranes.masks_train)) == {0, 1}
    share = membranes.masks_train.mean()
    assert 0.1 < share < 0.35, "the membrane is a thin minority class"
    images, masks = membranes.x_train[..., 0].astype(float), membranes.masks_train
    assert images[masks == 1].mean() < images[masks == 0].mean() - 30, "dark membranes on lighter cells"
    assert images.min() < 60 and images.max() > 180, "EM-like: the whole 8-bit range in use"
    again = load_membranes(num_train=6, num_val=2, num_test=2, dataset_size=64, seed=1)
    np.testing.assert_array_equal(again.x_train, membranes.x_train)
    np.testing.assert_array_equal(again.masks_test, membranes.masks_test)
    other = load_membranes(num_train=6, num_val=2, num_test=2, dataset_size=64, seed=2)
    assert not np.array_equal(other.masks_train, membranes.masks_train)
    with pytest.raises(ValueError, match="at least 32 pixels.*received dataset_size=16"):
        load_membranes(dataset_size=16)


def test_the_membrane_set_is_a_registry_name():
    assert "membranes" in list_segmentation_datasets()
    data = load_segmentation_dataset("membranes", size=64, limit=3, num_train=5)
    assert data.x_train.shape == (3, 64, 64, 1) and data.source["loaded_as"] == "membranes"
    assert SegmentationConfig(dataset="membranes").dataset == "membranes"


# -- the configuration and a run --------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    (dict(aug_elastic=-1.0), "aug_elastic is the standard deviation.*received aug_elastic=-1.0"),
    (dict(aug_elastic=float("nan")), "received aug_elastic=nan"),
    (dict(aug_elastic_grid=1), "aug_elastic_grid.*received aug_elastic_grid=1"),
    (dict(aug_elastic_grid=2.5), "received aug_elastic_grid=2.5"),
    (dict(weight_map="yes"), "weight_map must be True or False, received weight_map='yes'"),
    (dict(weight_map_w0=-1), "weight_map_w0 must be a number >= 0.*received weight_map_w0=-1"),
    (dict(weight_map_sigma=0), "weight_map_sigma must be a number > 0.*received weight_map_sigma=0"),
    (dict(weight_map=True, class_weighting="balanced"), "weight_map holds its own class balancing"),
    (dict(weight_map=True, loss="dice"), "loss='dice' does not have"),
    (dict(weight_map=True, model="autoencoder"), "autoencoders have no masks"),
])
def test_configuration_refuses_bad_recipe_values(values, message):
    with pytest.raises(ValueError, match=message):
        SegmentationConfig(**values)


def test_a_run_with_the_published_recipe(membranes, tmp_path):
    result = train_segmentation(data=membranes, dataset="membranes", model="unet", depth=2, filters=4, batch_size=3,
                                epochs=1, augment=True, aug_elastic=10.0, weight_map=True, verbose=0,
                                reports_dir=str(tmp_path), save_model=False, tensorboard=False)
    assert result.status == "completed"
    assert {"test_dice_membrane", "test_iou_membrane", "val_loss"} <= set(result.metrics)
    config = result.config.to_dict()
    assert (config["aug_elastic"], config["weight_map"], config["weight_map_w0"]) == (10.0, True, 10.0)
    assert "train" in membranes.weight_map_cache, "the maps stay with the data for the next run"
