"""E7's instance data: the generated shapes, COCO loading, and the Model Garden TFRecord export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab.tasks.instance import missing_extra
from lab.tasks.instance.data import (
    INSTANCE_SHAPE_CLASSES, MIN_VISIBLE_PIXELS, InstanceDataset, load_instance_dataset, load_instance_shapes,
)
from lab.tasks.instance.types import Instances


def small_shapes(**options) -> InstanceDataset:
    return load_instance_shapes(**({"num_train": 12, "num_val": 4, "num_test": 3, "dataset_size": 48} | options))


# -- the generated set --------------------------------------------------------------------------


def test_shapes_are_determined_by_the_seed():
    first, again, other = small_shapes(seed=1), small_shapes(seed=1), small_shapes(seed=2)
    assert first.content_hash() == again.content_hash()
    assert first.content_hash() != other.content_hash()
    assert all((a == b).all() for a, b in zip(first.images["train"], again.images["train"]))


def test_shapes_have_the_sizes_and_counts_asked():
    data = small_shapes(max_instances=3)
    assert [len(data.images[s]) for s in ("train", "val", "test")] == [12, 4, 3]
    assert data.class_names == list(INSTANCE_SHAPE_CLASSES) and data.num_classes == 3
    for split in ("train", "val", "test"):
        images, instances = data.split(split)
        for image, truth in zip(images, instances):
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8
            assert 1 <= len(truth) <= 3 and truth.masks.shape == (len(truth), 48, 48)
            assert ((truth.classes >= 1) & (truth.classes <= 3)).all()
            assert truth.scores is None
    # Several instances per image on average, and every class appears.
    counts = data.class_counts("train")
    assert counts.sum() == sum(len(t) for t in data.instances["train"]) > 12 and (counts > 0).all()


def test_shape_masks_are_the_visible_parts_with_tight_boxes():
    # Without noise each shape is one flat colour: a mask that included an occluded pixel, or
    # missed a visible one next to another shape, would hold two colours.
    data = small_shapes(noise=0.0, max_instances=4, num_train=20)
    overlapped = 0
    for image, truth in zip(*data.split("train")):
        assert (truth.masks.sum(axis=0) <= 1).all(), "visible parts of different shapes cannot overlap"
        for mask, box in zip(truth.masks, truth.boxes):
            assert mask.sum() >= MIN_VISIBLE_PIXELS
            colours = np.unique(image[mask.astype(bool)], axis=0)
            assert len(colours) == 1, f"a mask spans {len(colours)} colours"
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            np.testing.assert_array_equal(box, [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        boxes = truth.boxes
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                overlapped += (min(boxes[i, 2], boxes[j, 2]) > max(boxes[i, 0], boxes[j, 0])) and (
                    min(boxes[i, 3], boxes[j, 3]) > max(boxes[i, 1], boxes[j, 1]))
    assert overlapped > 0, "some shapes should overlap, so occlusion is exercised"


def test_limit_summary_and_bad_arguments():
    data = small_shapes()
    limited = data.limit(5, seed=3)
    assert [len(limited.images[s]) for s in ("train", "val", "test")] == [5, 4, 3]
    assert limited.content_hash() == data.limit(5, seed=3).content_hash() != data.content_hash()
    assert limited.source["limit"] == 5 and data.limit(None) is data
    summary = json.loads(json.dumps(data.summary()))
    assert summary["images"] == {"train": 12, "val": 4, "test": 3}
    assert summary["image_size"] == {"height": [48, 48], "width": [48, 48]}
    assert sum(summary["train_class_counts"].values()) == summary["instances"]["train"]
    with pytest.raises(ValueError, match="limit must be a positive"):
        data.limit(0)
    with pytest.raises(ValueError, match="dataset_size must be an integer of at least 32.*received 16"):
        load_instance_shapes(dataset_size=16)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        data.split("dev")
    with pytest.raises(ValueError, match=r"Unknown instance dataset 'pets'\..* Available: shapes, shapes_easy, "
                                         r"coco:<path>\."):
        load_instance_dataset("pets")
    assert load_instance_dataset("shapes", num_train=2, num_val=1, num_test=0, dataset_size=32).name == "shapes"


def test_instance_dataset_refuses_bad_content():
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((1, 20, 30), np.uint8)
    mask[0, 2:5, 3:9] = 1
    truth = Instances.from_masks(mask, [2])

    def make(images, instances, class_names=("a", "b")):
        return InstanceDataset("t", list(class_names), {"train": images}, {"train": instances})

    assert make([image], [truth]).class_counts().tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"train image 0 must be an HxWx3 uint8 array.*float32"):
        make([image.astype(np.float32)], [truth])
    with pytest.raises(ValueError, match=r"masks are \(20, 30\) but the image is \(30, 20\)"):
        make([np.zeros((30, 20, 3), np.uint8)], [truth])
    with pytest.raises(ValueError, match=r"class ids must be 1..1.*received \[2\]"):
        make([image], [truth], class_names=("a",))
    with pytest.raises(ValueError, match="2 images but 1 Instances"):
        make([image, image], [truth])


def test_the_easy_difficulty_draws_upright_circles_and_squares_apart_on_a_flat_ground():
    data = small_shapes(difficulty="easy", noise=0.0, max_instances=3, num_train=30, dataset_size=64)
    assert data.name == "shapes_easy" and data.class_names == ["circle", "square"]
    counts = data.class_counts("train")
    assert (counts > 0).all() and counts.sum() > 30, "both classes, several shapes in some images"
    for image, truth in zip(*data.split("train")):
        assert 1 <= len(truth) <= 3
        assert (truth.masks.sum(axis=0) <= 1).all()
        outside = ~truth.masks.any(0).astype(bool)
        assert len(np.unique(image[outside], axis=0)) == 1, "the ground is one flat colour"
        for mask, box, label in zip(truth.masks, truth.boxes, truth.classes):
            box_area = (box[2] - box[0]) * (box[3] - box[1])
            # Upright squares fill their box; circles leave its corners (pi/4 of it).
            fill = mask.sum() / box_area
            assert fill == 1.0 if data.class_names[label - 1] == "square" else 0.7 < fill < 0.85
            # Larger than the standard set's: a radius of at least 0.15 of the side.
            assert min(box[2] - box[0], box[3] - box[1]) >= 2 * 0.8 * 0.15 * 64 - 1
        for i in range(len(truth)):  # apart: no two shapes' boxes share a pixel row and column both
            for j in range(i + 1, len(truth)):
                a, b = truth.boxes[i], truth.boxes[j]
                assert not (min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))
    standard = small_shapes(noise=0.0)
    assert standard.name == "shapes" and standard.class_names == list(INSTANCE_SHAPE_CLASSES)


def test_the_difficulty_is_checked_and_recorded():
    with pytest.raises(ValueError, match=r"difficulty must be one of \['standard', 'easy'\].*received 'hard'"):
        small_shapes(difficulty="hard")
    assert small_shapes().source["difficulty"] == "standard"
    # The registry's name implies the difficulty and its own noise and instance count; the run
    # record's data section (lab.runs.runner.data_record) says which set was drawn, and how.
    from lab.data.datasets.registry import SOURCES
    from lab.runs.runner import data_record

    easy = load_instance_dataset("shapes_easy", dataset_size=48)
    record = json.loads(json.dumps(data_record(easy)))
    assert record["name"] == "shapes_easy" and record["class_names"] == ["circle", "square"]
    assert record["images"] == {"train": 240, "val": 16, "test": 16}
    assert {key: record["source"][key] for key in SOURCES["shapes_easy"].options} == SOURCES["shapes_easy"].options
    assert record["source"]["drawn"] == {"name": "shapes_easy", "classes": ["circle", "square"], "radius": [0.15, 0.3],
                                         "rotated": False, "overlapping": False, "textured": False}
    assert SOURCES["shapes_easy"].classes == easy.num_classes
    # An option passed by name wins over the one the name implies.
    assert load_instance_dataset("shapes_easy", num_train=2, num_val=1, num_test=0, noise=0.0).source["noise"] == 0.0
    assert record["content_sha256"] != load_instance_dataset("shapes", num_train=4, num_val=2, num_test=0,
                                                             dataset_size=48).content_hash()


def test_a_run_loads_the_easy_set_at_its_dataset_size():
    from lab.tasks.instance import load_data

    data = load_data({"dataset": "shapes_easy", "dataset_size": 64, "limit": 3})
    assert data.name == "shapes_easy" and data.images["train"][0].shape == (64, 64, 3)
    assert data.source["difficulty"] == "easy" and data.source["limit"] == 3
    with pytest.raises(ValueError, match=r"dataset_size applies to the generated sets \('shapes', 'shapes_easy'\)"):
        load_data({"dataset": "coco:/nowhere", "dataset_size": 64})


# -- COCO ---------------------------------------------------------------------------------------


def skip_without_extra() -> None:
    """load_coco needs the whole E7 extra (it calls require_model_garden), not pycocotools alone."""
    pytest.importorskip("pycocotools")
    if missing_extra():
        pytest.skip(f"the E7 extra is not fully installed (missing {missing_extra()})")


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [len(flat)]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0] + runs


def write_coco(folder: Path, *, in_images_folder: bool = False) -> dict:
    """Writes 4 PNGs (RGB, grayscale, RGBA) and a COCO JSON with a polygon, an uncompressed RLE,
    a compressed RLE, a crowd annotation and an image without annotations. Returns the JSON."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    folder.mkdir(parents=True, exist_ok=True)
    image_folder = folder / "images" if in_images_folder else folder
    image_folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "RGB"]
    images = []
    for i, mode in enumerate(modes):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, size=(40, 50, channels), dtype=np.uint8).squeeze()
        Image.fromarray(pixels, mode).save(image_folder / f"img{i}.png")
        images.append({"id": 100 + i, "file_name": f"img{i}.png", "height": 40, "width": 50})
    rle_mask = np.zeros((40, 50), np.uint8)
    rle_mask[10:20, 30:45] = 1
    compressed = mask_utils.encode(np.asfortranarray(rle_mask))
    annotations = [
        # A 20x20 square polygon on image 100 (category 7, "cat").
        {"id": 1, "image_id": 100, "category_id": 7, "iscrowd": 0,
         "segmentation": [[5.0, 10.0, 25.0, 10.0, 25.0, 30.0, 5.0, 30.0]]},
        {"id": 2, "image_id": 100, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [40, 50], "counts": compressed["counts"].decode()}},
        {"id": 3, "image_id": 101, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [40, 50], "counts": _uncompressed_rle(rle_mask)}},
        {"id": 4, "image_id": 101, "category_id": 7, "iscrowd": 1,
         "segmentation": {"size": [40, 50], "counts": _uncompressed_rle(rle_mask)}},
        {"id": 5, "image_id": 102, "category_id": 7, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 8]]},
    ]
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}
    (folder / "all.json").write_text(json.dumps(coco))
    return coco


def test_coco_decodes_polygons_and_rle_and_remaps_categories(tmp_path):
    skip_without_extra()
    from lab.tasks.instance.data import load_coco

    write_coco(tmp_path, in_images_folder=True)
    data = load_coco(tmp_path / "all.json", split_fractions=(1.0, 0.0, 0.0))
    assert data.class_names == ["dog", "cat"]  # ordered by category id: 3 -> 1, 7 -> 2
    assert data.source["category_ids"] == {"3": 1, "7": 2}
    assert data.source["iscrowd_skipped"] == 1 and data.source["images_without_instances"]["train"] == 1
    images, instances = data.split("train")
    assert len(images) == 4 and all(image.shape == (40, 50, 3) and image.dtype == np.uint8 for image in images)
    assert [len(t) for t in instances] == [2, 1, 1, 0]  # the crowd annotation is left out
    polygon, rle = instances[0].masks
    assert instances[0].classes.tolist() == [2, 1]
    assert abs(int(polygon.sum()) - 400) <= 45  # a 20x20 square, give or take its edges
    np.testing.assert_allclose(instances[0].boxes[0], [10, 5, 30, 25], atol=1)
    expected = np.zeros((40, 50), np.uint8)
    expected[10:20, 30:45] = 1
    np.testing.assert_array_equal(rle, expected)  # compressed RLE
    np.testing.assert_array_equal(instances[1].masks[0], expected)  # uncompressed RLE
    np.testing.assert_array_equal(instances[1].boxes[0], [10, 30, 20, 45])
    # Grayscale and RGBA became RGB: the grayscale image has three equal channels.
    assert (images[1][..., 0] == images[1][..., 2]).all()
    assert data.source["files"]["all"]["md5"] and data.source["split"] == "fractions"
    assert load_instance_dataset(f"coco:{tmp_path / 'all.json'}", split_fractions=(1.0, 0.0, 0.0)).content_hash() \
        == data.content_hash()


def test_coco_single_file_splits_by_seeded_fractions_and_folder_splits_as_given(tmp_path):
    skip_without_extra()
    from lab.tasks.instance.data import load_coco

    coco = write_coco(tmp_path / "one")
    split = load_coco(tmp_path / "one" / "all.json", split_fractions=(0.5, 0.25, 0.25), seed=0)
    assert [len(split.images[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert split.content_hash() == load_coco(tmp_path / "one" / "all.json", split_fractions=(0.5, 0.25, 0.25),
                                             seed=0).content_hash()
    seeds = {load_coco(tmp_path / "one" / "all.json", split_fractions=(0.5, 0.25, 0.25), seed=s).content_hash()
             for s in range(6)}
    assert len(seeds) > 1, "the seed draws the split"

    folder = tmp_path / "two"
    write_coco(folder)
    for name, ids in (("train", [100, 101, 103]), ("val", [102])):
        part = dict(coco, images=[i for i in coco["images"] if i["id"] in ids],
                    annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
        (folder / f"{name}.json").write_text(json.dumps(part))
    data = load_coco(folder)
    assert [len(data.images[s]) for s in ("train", "val", "test")] == [3, 1, 0]
    assert data.source["split"] == "files" and set(data.source["files"]) == {"train", "val"}
    assert data.instances["val"][0].classes.tolist() == [2]


def test_coco_bad_inputs_say_what_is_wrong(tmp_path):
    skip_without_extra()
    from lab.tasks.instance.data import load_coco

    coco = write_coco(tmp_path)
    path = tmp_path / "bad.json"

    def load_with(**changes):
        path.write_text(json.dumps(dict(coco, **changes)))
        return load_coco(path, split_fractions=(1.0, 0.0, 0.0))

    def annotation(**changes):
        return [dict(coco["annotations"][0], **changes)]

    with pytest.raises(FileNotFoundError, match="nowhere.json not found"):
        load_coco(tmp_path / "nowhere.json")
    with pytest.raises(ValueError, match=r"missing the COCO keys \['annotations'\]"):
        path.write_text(json.dumps({"images": [], "categories": []}))
        load_coco(path)
    with pytest.raises(FileNotFoundError, match=r"'gone.png'.*looked for .*gone.png"):
        load_with(images=[dict(coco["images"][0], file_name="gone.png")], annotations=[])
    with pytest.raises(ValueError, match="points to image id 999"):
        load_with(annotations=annotation(image_id=999))
    with pytest.raises(ValueError, match=r"category_id 5; the categories are \[3, 7\]"):
        load_with(annotations=annotation(category_id=5))
    with pytest.raises(ValueError, match=r"polygon reaches x 5..60.*outside the image \(x 0..50"):
        load_with(annotations=annotation(segmentation=[[5, 10, 60, 10, 25, 30]]))
    with pytest.raises(ValueError, match=r"RLE is of size \[80, 50\].*does not fit the image"):
        load_with(annotations=annotation(segmentation={"size": [80, 50], "counts": [4000]}))
    with pytest.raises(ValueError, match="img0.png is 40x50.*entry says 41x50"):
        load_with(images=[dict(coco["images"][0], height=41)], annotations=[])
    with pytest.raises(ValueError, match=r"lists image ids more than once: \[100\]"):
        load_with(images=coco["images"] + coco["images"][:1])
    with pytest.raises(ValueError, match="split_fractions must be three shares"):
        load_coco(tmp_path / "all.json", split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(FileNotFoundError, match="train.json not found: a COCO folder needs"):
        load_coco(tmp_path)


# -- the TFRecord export ------------------------------------------------------------------------


def test_export_decodes_back_with_model_gardens_decoder(tmp_path):
    pytest.importorskip("official")
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
    from lab.tasks.instance.tfrecords import export_instances

    data = small_shapes(num_train=7, num_val=2, num_test=0)
    # An image without instances is written too (COCO sets have them).
    empty = Instances(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 48, 48)))
    data = InstanceDataset(data.name, data.class_names, data.images,
                           dict(data.instances, val=[data.instances["val"][0], empty]), data.source)
    records = export_instances(data, tmp_path / "export", images_per_shard=3)
    assert not records.reused and records.counts == {"train": 7, "val": 2, "test": 0}
    assert len(records.files["train"]) == 3 and records.files["test"] == []
    assert records.input_path("train").split(",") == records.files["train"]
    with pytest.raises(ValueError, match="test split .* has no images"):
        records.input_path("test")
    decoder = TfExampleDecoder(include_mask=True)
    for split in ("train", "val"):
        decoded = [decoder.decode(r) for r in tf.data.TFRecordDataset(records.files[split])]
        assert len(decoded) == len(data.images[split])
        for index, (out, image, truth) in enumerate(zip(decoded, *data.split(split))):
            assert out["source_id"].numpy() == str(index).encode()
            np.testing.assert_array_equal(out["image"].numpy(), image)
            np.testing.assert_allclose(out["groundtruth_boxes"].numpy(), truth.boxes / 48.0, atol=1e-6)
            np.testing.assert_array_equal(out["groundtruth_classes"].numpy(), truth.classes)
            np.testing.assert_array_equal(out["groundtruth_instance_masks"].numpy(), truth.masks)
            np.testing.assert_array_equal(out["groundtruth_area"].numpy(), truth.masks.sum(axis=(1, 2)))
            assert not out["groundtruth_is_crowd"].numpy().any()
    info = json.loads((tmp_path / "export" / "dataset.json").read_text())
    assert info["content_sha256"] == data.content_hash() and info["class_names"] == data.class_names


def test_export_is_reused_checked_and_refused_for_other_content(tmp_path):
    import tensorflow as tf
    from lab.tasks.instance.tfrecords import export_instances

    data = small_shapes(num_train=4, num_val=2, num_test=1)
    first = export_instances(data, tmp_path / "export")
    again = export_instances(small_shapes(num_train=4, num_val=2, num_test=1), tmp_path / "export")
    assert again.reused and again.files == first.files and again.counts == first.counts

    other = small_shapes(num_train=4, num_val=2, num_test=1, seed=9)
    with pytest.raises(ValueError, match=rf"holds an export of other data: 'shapes' \(content sha256 "
                                         rf"{data.content_hash()[:12]}.*but 'shapes' \(content sha256 "
                                         rf"{other.content_hash()[:12]}.*Export to another folder"):
        export_instances(other, tmp_path / "export")

    shard = Path(first.files["val"][0])
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF  # damaged in place: same size, other bytes
    shard.write_bytes(bytes(content))
    with pytest.raises(tf.errors.DataLossError, match=rf"{shard.name}.*damaged.*Delete the folder"):
        export_instances(data, tmp_path / "export")
    shard.unlink()
    with pytest.raises(tf.errors.DataLossError, match=rf"{shard.name}.*missing"):
        export_instances(data, tmp_path / "export")

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an instance export"):
        export_instances(data, tmp_path / "other")


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from lab.tasks.instance import tfrecords

    real = tfrecords.serialize_example
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # part-way through, after a shard was finished
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(tfrecords, "serialize_example", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        tfrecords.export_instances(small_shapes(num_train=6, num_val=2, num_test=0), tmp_path / "export",
                                   images_per_shard=2)
    assert list(tmp_path.iterdir()) == []
