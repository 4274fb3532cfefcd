import keras
import numpy as np
import pytest
import tensorflow as tf

from lab.data.pipeline import IMAGENET_MEAN, IMAGENET_STD, augment_batch, augment_batches, make_augmenter, make_pipeline


def _labels_in_order(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def test_eval_pipeline_scales_to_unit_and_keeps_order(tiny_images):
    x, y = tiny_images
    ds = make_pipeline(x, y, training=False, batch_size=16)
    images = np.concatenate([b.numpy() for b, _ in ds])
    assert images.dtype == np.float32 and images.shape == (60, 8, 8, 3)
    np.testing.assert_allclose(images, x / 255.0, rtol=1e-6)
    assert np.array_equal(_labels_in_order(ds), y)


def test_training_pipeline_shuffles_repeatably_and_reshuffles_each_epoch(tiny_images):
    x, y = tiny_images
    first = make_pipeline(x, y, training=True, batch_size=60, seed=7)
    second = make_pipeline(x, y, training=True, batch_size=60, seed=7)
    epoch1, epoch2 = _labels_in_order(first), _labels_in_order(first)
    assert np.array_equal(epoch1, _labels_in_order(second)), "same seed, same order"
    assert not np.array_equal(epoch1, y), "training data is shuffled"
    assert not np.array_equal(epoch1, epoch2), "reshuffled every epoch"
    assert sorted(epoch1) == sorted(y)


def test_augmentation_is_random_but_seeded(tiny_images):
    x, y = tiny_images
    def run():
        augmenter = make_augmenter(flip="horizontal", rotation=0.2, zoom=0.1, seed=3)
        ds = make_pipeline(x, y, training=True, batch_size=60, augmenter=augmenter, seed=1)
        return next(iter(ds))[0].numpy()
    plain = next(iter(make_pipeline(x, y, training=True, batch_size=60, seed=1)))[0].numpy()
    augmented = run()
    assert augmented.shape == plain.shape
    assert not np.allclose(augmented, plain), "augmentation changes the images"
    np.testing.assert_array_equal(augmented, run())


def test_augmentation_is_off_for_evaluation(tiny_images):
    x, y = tiny_images
    augmenter = make_augmenter(flip="horizontal_and_vertical", rotation=0.3)
    ds = make_pipeline(x, y, training=False, batch_size=60, augmenter=augmenter)
    np.testing.assert_allclose(next(iter(ds))[0].numpy(), x / 255.0, rtol=1e-6)


def test_resize_grayscale_to_rgb_and_imagenet_scaling():
    gray = np.full((4, 8, 8, 1), 255, np.uint8)
    ds = make_pipeline(gray, np.zeros(4, int), training=False, batch_size=4, pipeline_size=16, to_rgb=True,
                       input_scaling="imagenet")
    images = next(iter(ds))[0].numpy()
    assert images.shape == (4, 16, 16, 3)
    expected = (1.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    np.testing.assert_allclose(images[0, 0, 0], expected, rtol=1e-5)


def test_images_only_pipeline_and_file_cache(tiny_images, tmp_path):
    x, _ = tiny_images
    ds = make_pipeline(x, training=False, batch_size=32, cache=tmp_path / "cache" / "c")
    batches = [b.numpy() for b in ds]
    assert [len(b) for b in batches] == [32, 28]
    assert list((tmp_path / "cache").glob("c*")), "the file cache was written"


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, received 0"),
    ({"input_scaling": "zscore"}, "input_scaling must be one of"),
])
def test_bad_pipeline_arguments(tiny_images, kwargs, message):
    x, y = tiny_images
    with pytest.raises(ValueError, match=message):
        make_pipeline(x, y, training=True, **kwargs)


def test_bad_augmentation_arguments():
    with pytest.raises(ValueError, match="rotation must be in"):
        make_augmenter(rotation=1.5)
    with pytest.raises(ValueError, match="flip must be one of"):
        make_augmenter(flip="diagonal")


def test_augmentation_is_repeatable_across_many_batches(tiny_images):
    # Several batches: parallel augmentation would take the layers' random draws in a varying order.
    x, y = tiny_images
    def run():
        augmenter = make_augmenter(flip="horizontal", rotation=0.2, seed=5)
        return np.concatenate([b.numpy() for b, _ in make_pipeline(x, y, training=True, batch_size=8,
                                                                    augmenter=augmenter, seed=2)])
    first = run()
    for _ in range(3):
        np.testing.assert_array_equal(first, run())


# -- stateless, parallel augmentation -----------------------------------------------------------------------------

ALL_AUGMENTATIONS = dict(flip="horizontal_and_vertical", rotation=0.2, zoom=0.2, translation=0.2, contrast=0.3)


def _epochs_by_image(pipeline, epochs=2):
    """Each epoch's augmented images, put back in dataset order (the labels are the image indices)."""
    result = []
    for _ in range(epochs):
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in pipeline])
        images, labels = np.concatenate(images), np.concatenate(labels)
        result.append(images[np.argsort(labels)])
    return result


@pytest.fixture
def indexed_images(tiny_images):
    x, _ = tiny_images
    return x, np.arange(len(x))


def test_same_seed_gives_the_same_augmented_epochs(indexed_images):
    x, y = indexed_images

    def run(seed):
        augmenter = make_augmenter(**ALL_AUGMENTATIONS, seed=seed)
        return _epochs_by_image(make_pipeline(x, y, training=True, batch_size=8, augmenter=augmenter, seed=seed))

    first, again, other = run(4), run(4), run(5)
    for epoch, repeated in zip(first, again):
        np.testing.assert_array_equal(epoch, repeated)
    # Compared image by image, so a different shuffle alone would not make these differ.
    assert not np.allclose(first[0], first[1]), "every epoch draws new augmentations"
    assert not np.allclose(first[0], other[0]), "another seed draws other augmentations"


def test_augmentation_does_not_depend_on_parallelism_or_order(indexed_images):
    x, y = indexed_images
    augmenter = make_augmenter(**ALL_AUGMENTATIONS, seed=1)
    batches = tf.data.Dataset.from_tensor_slices((x.astype(np.float32) / 255.0, y)).batch(8)

    def images(num_parallel_calls, deterministic=True):
        return _epochs_by_image(augment_batches(batches, augmenter, seed=3, deterministic=deterministic,
                                                num_parallel_calls=num_parallel_calls), epochs=1)[0]

    one_at_a_time = images(1)
    np.testing.assert_array_equal(one_at_a_time, images(4))
    np.testing.assert_array_equal(one_at_a_time, images(4, deterministic=False))


def test_stateless_augmentation_leaves_the_layers_seed_state_alone(indexed_images):
    x, y = indexed_images
    augmenter = make_augmenter(**ALL_AUGMENTATIONS, seed=2)
    before = [layer.generator.state.numpy().copy() for layer in augmenter.layers]
    for _ in make_pipeline(x, y, training=True, batch_size=8, augmenter=augmenter):
        pass
    for layer, state in zip(augmenter.layers, before):
        np.testing.assert_array_equal(layer.generator.state.numpy(), state, err_msg=layer.name)


@pytest.mark.parametrize("option", sorted(ALL_AUGMENTATIONS))
def test_every_augmentation_option_changes_images_within_range(indexed_images, option):
    x, y = indexed_images
    options = {"flip": None, option: ALL_AUGMENTATIONS[option]}
    plain = _epochs_by_image(make_pipeline(x, y, training=True, batch_size=8, seed=1), epochs=1)[0]
    augmented = _epochs_by_image(make_pipeline(x, y, training=True, batch_size=8, seed=1,
                                               augmenter=make_augmenter(**options)), epochs=1)[0]
    changed = ~np.all(np.isclose(plain, augmented), axis=(1, 2, 3))
    assert 0.2 < changed.mean(), f"{option} changed only {changed.mean():.0%} of the images"
    assert augmented.min() >= -1e-6 and augmented.max() <= 1 + 1e-6


def test_stateless_flip_keeps_its_meaning(indexed_images):
    # Each image comes out as itself or its mirror image, about half of them mirrored.
    x, y = indexed_images
    flipped = _epochs_by_image(make_pipeline(x, y, training=True, batch_size=8, seed=3,
                                             augmenter=make_augmenter(flip="horizontal")), epochs=1)[0]
    original = x / 255.0
    same = np.all(np.isclose(flipped, original), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(flipped, original[:, :, ::-1]), axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 0.2 < mirrored.mean() < 0.8


def test_stateless_joint_augmentation_moves_masks_with_images():
    # The image draws its mask, so after the same transformation the two still coincide.
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 24, 24), np.uint8)
    for i in range(8):
        top, left = rng.integers(2, 10, size=2)
        masks[i, top:top + 10, left:left + 8] = 1 + i % 3
    images = tf.constant(np.repeat((masks / 3.0)[..., None], 3, axis=-1).astype(np.float32))
    augmenter = make_augmenter(flip="horizontal_and_vertical", rotation=0.25, zoom=0.2, translation=0.15, seed=5)
    seed = tf.constant([7, 8], tf.int64)
    out_images, out_masks = augment_batch(augmenter, images, masks=tf.constant(masks), seed=seed)
    again_images, again_masks = augment_batch(augmenter, images, masks=tf.constant(masks), seed=seed)
    np.testing.assert_array_equal(out_images, again_images)
    np.testing.assert_array_equal(out_masks, again_masks)
    out_images, out_masks = out_images.numpy()[..., 0], out_masks.numpy()
    assert out_masks.dtype == np.uint8 and set(np.unique(out_masks)) <= {0, 1, 2, 3}
    assert (out_masks != masks).mean() > 0.05, "the masks moved"
    # Away from object edges (where bilinear and nearest interpolation may differ) they agree.
    padded = np.pad(out_masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    interior = np.all([padded[:, 1 + dy:25 + dy, 1 + dx:25 + dx] == out_masks
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    # Four bilinear resamplings blur the images a little: read each pixel's class back by rounding.
    assert (np.rint(out_images * 3) == out_masks)[interior].mean() > 0.99
    other = augment_batch(augmenter, images, masks=tf.constant(masks), seed=tf.constant([7, 9], tf.int64))[1].numpy()
    assert (np.rint(out_images * 3) == other)[interior].mean() < 0.9, "another seed moves them elsewhere"


def test_augmenter_with_another_layer_runs_one_batch_at_a_time(indexed_images):
    # RandomBrightness draws from its own generator whatever seed it is given: it cannot run
    # statelessly, so the pipeline falls back to one batch at a time, which is still repeatable.
    x, y = indexed_images

    def run():
        augmenter = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=1),
                                      keras.layers.RandomBrightness(0.2, value_range=(0, 1), seed=2)])
        return _epochs_by_image(make_pipeline(x, y, training=True, batch_size=8, augmenter=augmenter), epochs=1)[0]

    np.testing.assert_array_equal(run(), run())
    augmenter = keras.Sequential([keras.layers.RandomBrightness(0.2, seed=2)])
    with pytest.raises(ValueError, match=r"Stateless augmentation supports .* also has \['RandomBrightness'\]"):
        augment_batch(augmenter, tf.zeros((2, 8, 8, 3)), seed=tf.constant([1, 2], tf.int64))
