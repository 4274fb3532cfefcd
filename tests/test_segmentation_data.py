"""Segmentation data: shapes with masks, mask folders, Oxford-IIIT Pet trimaps, joint augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lab.data.datasets.segmentation import (SegmentationDataset, load_mask_folder, load_segmentation_dataset,
                                       trimap_to_classes)
from lab.tasks.segmentation.pipeline import augment_pair, make_joint_augmenter, make_segmentation_pipeline


def test_shapes_masks_become_segmentation_classes():
    data = load_segmentation_dataset("shapes", limit=20, seed=3)
    assert data.class_names[0] == "background" and data.num_classes == 7
    assert data.input_shape == (32, 32, 3) and data.masks_train.shape == (20, 32, 32)
    assert data.masks_train.dtype == np.uint8 and set(np.unique(data.masks_test)) <= set(range(7))
    shares = data.summary()["pixel_shares"]["train"]
    assert shares[0] > 0.5, "most pixels are background: E6's imbalance"
    weights = data.class_weights()
    assert weights[0] < 1 < weights[1], "balanced weights put the background down"
    with pytest.raises(ValueError, match="Unknown segmentation dataset 'voc'"):
        load_segmentation_dataset("voc")


def test_dataset_refuses_masks_that_do_not_fit():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="masks of shape"):
        SegmentationDataset("bad", x, np.zeros((2, 4, 5)), x, np.zeros((2, 4, 4)), x, np.zeros((2, 4, 4)),
                            ["background", "a"])
    with pytest.raises(ValueError, match="outside \\[0, 2\\)"):
        SegmentationDataset("bad", x, np.full((2, 4, 4), 2), x, np.zeros((2, 4, 4)), x, np.zeros((2, 4, 4)),
                            ["background", "a"])


def _write_pairs(folder, sizes, mask_suffix="", value=255):
    """Images whose red channel is the mask (so alignment can be checked) and {0, value} masks."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: height // 2 + 2, width // 3: width - 2] = value
        image = np.stack([mask, np.full_like(mask, 40), np.full_like(mask, 90)], axis=-1)
        Image.fromarray(image).save(folder / "images" / f"img{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"img{i}{mask_suffix}.png")


def test_mask_folder_maps_values_and_resizes_masks_with_nearest(tmp_path):
    _write_pairs(tmp_path / "set", [(40, 30), (25, 50), (33, 33), (60, 20), (16, 16), (30, 40), (44, 28)],
                 mask_suffix="_mask")
    data = load_mask_folder(tmp_path / "set", dataset_size=16, mask_suffix="_mask", seed=0)
    assert data.class_names == ["background", "foreground"]
    assert sum(len(data.split(s)[0]) for s in ("train", "val", "test")) == 7
    assert data.input_shape == (16, 16, 3)
    for split in ("train", "val", "test"):
        x, masks = data.split(split)
        assert set(np.unique(masks)) <= {0, 1}, "nearest neighbour: no blended class ids"
        agree = ((x[..., 0] > 127) == (masks == 1)).mean()
        assert agree > 0.9, "image and mask were resized alike"
    assert data.source["class_values"] == {0: 0, 255: 1}


def test_mask_folder_tiles_cover_every_image(tmp_path):
    _write_pairs(tmp_path / "set", [(40, 30)] * 3 + [(33, 47)] * 4)
    data = load_mask_folder(tmp_path / "set", tile_size=16, split_fractions=(0.4, 0.3, 0.3), seed=1)
    counts = {s: len(data.split(s)[0]) for s in ("train", "val", "test")}
    # 40x30 gives 3x2 tiles (the last ones flush with the border), 33x47 gives 3x3.
    assert sum(counts.values()) == 3 * 6 + 4 * 9
    x, masks = data.split("train")
    np.testing.assert_array_equal(x[..., 0] == 255, masks == 1)


def test_mask_folder_errors_name_the_problem(tmp_path):
    _write_pairs(tmp_path / "a", [(16, 16)] * 4)
    (tmp_path / "a" / "images" / "lonely.png").write_bytes((tmp_path / "a" / "images" / "img0.png").read_bytes())
    with pytest.raises(ValueError, match=r"images without a mask: \['lonely'\]"):
        load_mask_folder(tmp_path / "a")
    _write_pairs(tmp_path / "b", [(16, 16)] * 4, value=128)
    with pytest.raises(ValueError, match=r"values \[128\] that class_values"):
        load_mask_folder(tmp_path / "b", class_values={0: 0, 255: 1})
    data = load_mask_folder(tmp_path / "b", class_values={0: 0, 128: 1}, class_names=["sky", "roof"])
    assert data.class_names == ["sky", "roof"]
    _write_pairs(tmp_path / "c", [(16, 16), (20, 20), (16, 16), (16, 16)])
    with pytest.raises(ValueError, match="several sizes"):
        load_mask_folder(tmp_path / "c")


def test_mask_folder_refuses_a_stray_value_naming_the_file(tmp_path):
    _write_pairs(tmp_path / "set", [(16, 16)] * 5)
    mask = np.asarray(Image.open(tmp_path / "set" / "masks" / "img3.png")).copy()
    mask[0, 0] = 128  # one pixel: it would have made a 256-class problem
    Image.fromarray(mask).save(tmp_path / "set" / "masks" / "img3.png")
    with pytest.raises(ValueError) as error:
        load_mask_folder(tmp_path / "set")
    message = str(error.value)
    assert "values [128] that are neither a black-and-white mask (only 0 and 255) nor the class ids" in message
    assert "in 1 file(s): " in message and "img3.png ([128] in 1 pixel(s))" in message
    assert "img0.png" not in message, "only the files holding the value are named"
    assert "Values found in all masks: [0, 128, 255]" in message
    assert "class_values={0: 0, 128: 1, 255: 2}" in message
    # With the value mapped, the same folder loads.
    data = load_mask_folder(tmp_path / "set", class_values={0: 0, 128: 0, 255: 1})
    assert data.num_classes == 2 and sum(int((m == 1).sum()) for m in data.masks_train) > 0


def test_mask_folder_takes_class_ids_as_they_are_and_refuses_a_gap(tmp_path):
    _write_pairs(tmp_path / "ids", [(16, 16)] * 5, value=2)
    for path in sorted((tmp_path / "ids" / "masks").iterdir())[:2]:
        mask = np.asarray(Image.open(path)).copy()
        mask[0, :4] = 1
        Image.fromarray(mask).save(path)
    data = load_mask_folder(tmp_path / "ids")
    assert data.class_names == ["background", "class_1", "class_2"]
    assert data.source["class_values"] == {0: 0, 1: 1, 2: 2}

    _write_pairs(tmp_path / "gap", [(16, 16)] * 5, value=2)
    path = tmp_path / "gap" / "masks" / "img4.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0], mask[0, 1] = 1, 7
    Image.fromarray(mask).save(path)
    with pytest.raises(ValueError, match=r"values \[7\] that are neither .*/img4\.png \(\[7\] in 1 pixel\(s\)\)"):
        load_mask_folder(tmp_path / "gap")


def test_mask_folder_names_the_files_class_values_leaves_unmapped(tmp_path):
    _write_pairs(tmp_path / "set", [(16, 16)] * 5, value=128)
    with pytest.raises(ValueError, match=r"values \[128\] that class_values \{0: 0, 255: 1\} does not map, in 5 "
                                         r"file\(s\): .*img0\.png \(\[128\] in \d+ pixel\(s\)\).*and 2 more file"):
        load_mask_folder(tmp_path / "set", class_values={0: 0, 255: 1})
    with pytest.raises(ValueError, match="class_values must map mask values \\(0 or more\\)"):
        load_mask_folder(tmp_path / "set", class_values={-1: 1, 0: 0, 128: 1})


def test_mask_folder_hints_at_jpeg_masks(tmp_path):
    _write_pairs(tmp_path / "set", [(16, 16)] * 4)
    for path in sorted((tmp_path / "set" / "masks").iterdir()):
        Image.open(path).save(path.with_suffix(".jpg"), quality=50)
        path.unlink()
    with pytest.raises(ValueError, match="Masks saved as JPEG pick up in-between values from compression"):
        load_mask_folder(tmp_path / "set")


def test_mask_folder_scales_16_bit_images_but_not_16_bit_masks(tmp_path):
    ramp = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    masks = np.zeros((16, 16), np.uint16)
    masks[4:12, 4:12] = 1  # class ids saved as 16-bit: they must stay 0 and 1, not become 0
    for folder in ("images", "masks"):
        (tmp_path / "set" / folder).mkdir(parents=True)
    for i in range(5):
        Image.fromarray(ramp).save(tmp_path / "set" / "images" / f"img{i}.png")
        Image.fromarray(masks).save(tmp_path / "set" / "masks" / f"img{i}.png")
    assert Image.open(tmp_path / "set" / "masks" / "img0.png").mode == "I;16"
    data = load_mask_folder(tmp_path / "set", color_mode="grayscale")
    for split in ("train", "val", "test"):
        x, m = data.split(split)
        np.testing.assert_array_equal(x[0, ..., 0], np.arange(256).reshape(16, 16))  # not 0, 255, 255, ...
        np.testing.assert_array_equal(m[0], masks)


def test_mask_folder_refuses_float_images_and_fractional_masks(tmp_path):
    _write_pairs(tmp_path / "set", [(16, 16)] * 4)
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(tmp_path / "set" / "masks" / "img2.tif")
    (tmp_path / "set" / "masks" / "img2.png").unlink()
    with pytest.raises(ValueError, match=r"Mask .*img2\.tif holds fractional values \(from 0\.5 to 0\.5\)"):
        load_mask_folder(tmp_path / "set")
    _write_pairs(tmp_path / "float", [(16, 16)] * 4)
    Image.fromarray(np.zeros((16, 16), np.float32)).save(tmp_path / "float" / "images" / "img1.tif")
    (tmp_path / "float" / "images" / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"Image .*img1\.tif holds 32-bit floating-point values"):
        load_mask_folder(tmp_path / "float")


def test_mask_folder_with_split_folders(tmp_path):
    for split, count in (("train", 5), ("test", 2)):
        _write_pairs(tmp_path / "set" / split, [(16, 16)] * count)
    data = load_mask_folder(tmp_path / "set", val_fraction=0.2)
    assert [len(data.split(s)[0]) for s in ("train", "val", "test")] == [4, 1, 2]
    assert data.source["layout"] == "split folders"


def test_trimaps_become_classes():
    trimap = np.array([[1, 2], [3, 2]])
    np.testing.assert_array_equal(trimap_to_classes(trimap), [[1, 0], [2, 0]])
    np.testing.assert_array_equal(trimap_to_classes(trimap, border="pet"), [[1, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"received the values \[0\]"):
        trimap_to_classes(np.array([0, 1]))


def test_oxford_pets_loader_on_mocked_tfds():
    import tensorflow_datasets as tfds

    def as_dataset(self, split, *args, **kwargs):
        rng = np.random.default_rng(len(str(split)))

        def examples():
            for i in range(6):
                height, width = 20 + 3 * i, 30 - 2 * i  # images of many sizes
                trimap = np.full((height, width, 1), 2, np.uint8)
                trimap[5:15, 5:15] = 3
                trimap[7:13, 7:13] = 1
                yield {"image": rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "label": i % 37,
                       "species": i % 2, "file_name": f"pet{i}.jpg", "segmentation_mask": trimap,
                       "head_bbox": np.zeros(4, np.float32)}

        return tf.data.Dataset.from_generator(examples, output_signature=self.info.features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        pets = load_segmentation_dataset("tfds:oxford_iiit_pet", size=16, val_fraction=0.34)
        two = load_segmentation_dataset("tfds:oxford_iiit_pet", size=16, border="pet")
    assert pets.class_names == ["background", "pet", "border"] and two.class_names == ["background", "pet"]
    assert pets.input_shape == (16, 16, 3) and [len(pets.split(s)[0]) for s in ("train", "val", "test")] == [4, 2, 6]
    assert set(np.unique(pets.masks_train)) == {0, 1, 2} and set(np.unique(two.masks_test)) == {0, 1}


def _aligned_batch():
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), np.uint8)
    for i in range(8):
        top, left = rng.integers(2, 14, size=2)
        masks[i, top:top + 14, left:left + 10] = 1 + i % 3
    images = np.repeat((masks / 3.0)[..., None], 3, axis=-1).astype(np.float32)  # the image draws the mask
    return tf.constant(images), tf.constant(masks)


def test_joint_augmentation_moves_image_and_mask_together():
    images, masks = _aligned_batch()
    augmenter = make_joint_augmenter(flip="horizontal_and_vertical", rotation=0.25, zoom=0.2, translation=0.15,
                                     contrast=0.3, seed=5)
    out_images, out_masks = augment_pair(augmenter, images, masks)
    out_images, out_masks = out_images.numpy(), out_masks.numpy()
    assert out_masks.dtype == np.uint8 and set(np.unique(out_masks)) <= {0, 1, 2, 3}
    assert (out_masks != masks.numpy()).mean() > 0.05, "the augmentation changed the masks"
    # Contrast rescales the image, so compare shapes, not values: object pixels stand out from
    # the background exactly where the mask has an object. Edge pixels are left out (there
    # bilinear and nearest interpolation may differ by a pixel).
    def agreement(images, masks):
        scores = []
        for image, mask in zip(images, masks):
            padded = np.pad(mask, 1, mode="edge")
            interior = np.all([padded[1 + dy:33 + dy, 1 + dx:33 + dx] == mask
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
            background = np.median(image[mask == 0])
            scores.append(((np.abs(image - background) > 0.05) == (mask > 0))[interior].mean())
        return min(scores)

    assert agreement(out_images[..., 0], out_masks) > 0.99
    # The check can fail: masks drawn with other random transformations do not fit the images.
    other = augment_pair(make_joint_augmenter(flip="horizontal_and_vertical", rotation=0.25, zoom=0.2,
                                              translation=0.15, seed=6), images, masks)[1].numpy()
    assert agreement(out_images[..., 0], other) < 0.9


def test_segmentation_pipeline_is_repeatable_and_augments_only_training():
    images = (np.random.default_rng(1).random((10, 16, 16, 3)) * 255).astype(np.uint8)
    masks = (images[..., 0] > 127).astype(np.uint8)
    augmenter = make_joint_augmenter(flip="horizontal", rotation=0.1, seed=0)
    first = [b for b in make_segmentation_pipeline(images, masks, training=True, batch_size=4, augmenter=augmenter,
                                                   seed=2)]
    second = [b for b in make_segmentation_pipeline(images, masks, training=True, batch_size=4,
                                                    augmenter=make_joint_augmenter(flip="horizontal", rotation=0.1,
                                                                                   seed=0), seed=2)]
    for (x1, m1), (x2, m2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(m1, m2)
    x, m = next(iter(make_segmentation_pipeline(images, masks, training=False, batch_size=10, augmenter=augmenter)))
    np.testing.assert_allclose(x, images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(m, masks)
    x, y = next(iter(make_segmentation_pipeline(images, training=False, batch_size=10, targets="images")))
    np.testing.assert_array_equal(x, y)
