import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

from lab.data.datasets import from_arrays, load_dataset
from lab.data.pipeline import make_augmenter, make_pipeline
from lab.data.tfrecord import (
    check_provenance, dataset_fingerprint, export_dataset, make_tfrecord_pipeline, manifest_path,
    read_manifest, read_tfrecords, verify_tfrecords, write_tfrecords, write_tfrecords_from_batches,
)
from lab.data.tfrecord import provenance, writing


def _images(channels=3, count=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 8, 8, channels), dtype=np.uint8), rng.integers(0, 5, size=count)


def _read_all(directory, split="train", **options):
    pairs = [(x.numpy(), y.numpy()) for x, y in read_tfrecords(directory, split, **options)]
    return np.stack([x for x, _ in pairs]), np.array([y for _, y in pairs])


def _shard_files(directory):
    return sorted(p for p in directory.iterdir() if ".tfrecord" in p.name)


@pytest.mark.parametrize("encoding", ["raw", "png"])
@pytest.mark.parametrize("compression", [None, "GZIP"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_gives_back_the_same_images_and_labels_in_order(tmp_path, encoding, compression, channels):
    x, y = _images(channels)
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16, encoding=encoding, compression=compression)
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    ds = read_tfrecords(tmp_path)
    assert ds.element_spec[0] == tf.TensorSpec((8, 8, channels), tf.uint8)
    assert ds.element_spec[1] == tf.TensorSpec((), tf.int64)
    assert len(ds) == 50
    images, labels = _read_all(tmp_path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_manifest_records_shards_counts_and_format(tmp_path):
    x, y = _images()
    paths = write_tfrecords(x, y, tmp_path, split="val", num_shards=4, compression="zlib",
                            class_names=list("abcde"), metadata={"dataset": "random"})
    manifest = json.loads(manifest_path(tmp_path, "val").read_text())
    assert manifest == read_manifest(tmp_path, "val")
    assert [s["num_examples"] for s in manifest["shards"]] == [13, 13, 12, 12]
    assert manifest["num_examples"] == 50
    assert [s["file"] for s in manifest["shards"]] == [p.name for p in paths]
    assert [s["bytes"] for s in manifest["shards"]] == [p.stat().st_size for p in paths]
    assert [s["sha256"] for s in manifest["shards"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert manifest["version"] == 2 and manifest["provenance"] is None  # bare arrays: no dataset
    assert len(manifest["content_sha256"]) == 64
    assert all(p.name.startswith("val-") and p.name.endswith(".tfrecord.zlib") for p in paths)
    assert (manifest["shape"], manifest["dtype"], manifest["encoding"], manifest["compression"]) == (
        [8, 8, 3], "uint8", "raw", "ZLIB")
    assert manifest["class_names"] == list("abcde") and manifest["metadata"] == {"dataset": "random"}
    np.testing.assert_array_equal(_read_all(tmp_path, "val")[0], x)


def test_batches_are_streamed_into_shards_across_batch_boundaries(tmp_path):
    x, y = _images(count=45)
    batches = ((x[i:i + 7], y[i:i + 7]) for i in range(0, 45, 7))  # a generator, read once
    paths = write_tfrecords_from_batches(batches, tmp_path, images_per_shard=20)
    assert [s["num_examples"] for s in read_manifest(tmp_path)["shards"]] == [20, 20, 5]
    assert len(paths) == 3
    images, labels = _read_all(tmp_path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_float_images_grayscale_without_channel_axis_and_column_labels(tmp_path):
    x = np.random.default_rng(1).random((10, 6, 5), dtype=np.float32)
    y = np.arange(10).reshape(10, 1) % 3
    write_tfrecords(x, y, tmp_path, images_per_shard=4)
    images, labels = _read_all(tmp_path)
    assert images.dtype == np.float32 and images.shape == (10, 6, 5, 1)
    np.testing.assert_array_equal(images[..., 0], x)
    np.testing.assert_array_equal(labels, y[:, 0])


def test_empty_split_round_trips_with_its_shape(tmp_path):
    write_tfrecords(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64), tmp_path)
    ds = read_tfrecords(tmp_path)
    assert read_manifest(tmp_path)["shards"] == [] and len(ds) == 0
    assert ds.element_spec[0].shape == (8, 8, 3) and list(ds) == []


def test_interleaving_shards_is_repeatable_and_loses_nothing(tmp_path):
    x, y = _images()
    write_tfrecords(x, y, tmp_path, images_per_shard=8)
    first, first_labels = _read_all(tmp_path, cycle_length=3)
    again, _ = _read_all(tmp_path, cycle_length=3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, x), "records of several shards are mixed"
    assert sorted(first_labels) == sorted(y)
    assert sorted(map(bytes, first)) == sorted(map(bytes, x))


def test_missing_manifest_names_the_file_and_the_splits_found(tmp_path):
    x, y = _images()
    write_tfrecords(x, y, tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match=r"test\.manifest\.json.*Splits found: train"):
        read_tfrecords(tmp_path, "test")


def test_missing_shard_names_the_file(tmp_path):
    x, y = _images()
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16)
    paths[2].unlink()
    with pytest.raises(FileNotFoundError, match=paths[2].name):
        read_tfrecords(tmp_path)
    with pytest.raises(FileNotFoundError, match=paths[2].name):
        verify_tfrecords(tmp_path)


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_truncated_shard_is_refused_by_name_before_reading(tmp_path, compression):
    x, y = _images()
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16, compression=compression)
    data = paths[1].read_bytes()
    # Cut inside the last record: uncompressed TFRecord readers would otherwise just stop early.
    paths[1].write_bytes(data[:-10])
    with pytest.raises(tf.errors.DataLossError, match=f"{paths[1].name}.*truncated"):
        read_tfrecords(tmp_path)
    with pytest.raises(tf.errors.DataLossError, match=paths[1].name):
        verify_tfrecords(tmp_path)


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_shard_corrupted_in_place_fails_reading_and_verify_names_it(tmp_path, compression):
    x, y = _images()
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16, compression=compression)
    assert verify_tfrecords(tmp_path) == 50
    data = bytearray(paths[2].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, damaged bytes: only the checksums can tell
    paths[2].write_bytes(bytes(data))
    # The shard's sha256 is checked when the dataset is created, so the error names it...
    with pytest.raises(tf.errors.DataLossError, match=f"{paths[2].name} is corrupt.*changed since it was exported"):
        read_tfrecords(tmp_path)
    # ...where TensorFlow, reading it, gives only an offset.
    with pytest.raises(tf.errors.DataLossError):
        list(read_tfrecords(tmp_path, verify_checksums=False))
    with pytest.raises(tf.errors.DataLossError, match=f"{paths[2].name} is corrupt"):
        verify_tfrecords(tmp_path)


def test_interrupted_export_leaves_no_manifest_and_no_finished_shard(tmp_path, monkeypatch):
    x, y = _images()
    serialize = writing._serialize_example
    calls = {"n": 0}

    def fail_partway(*args):
        calls["n"] += 1
        if calls["n"] == 37:  # after two finished shards, inside the third
            raise KeyboardInterrupt
        return serialize(*args)

    monkeypatch.setattr(writing, "_serialize_example", fail_partway)
    with pytest.raises(KeyboardInterrupt):
        write_tfrecords(x, y, tmp_path, images_per_shard=16)
    assert list(tmp_path.iterdir()) == [], "no manifest, no shard, no temporary file"
    with pytest.raises(FileNotFoundError):
        read_tfrecords(tmp_path)


def test_interrupted_reexport_keeps_the_previous_export_whole(tmp_path, monkeypatch):
    x, y = _images()
    old_paths = write_tfrecords(x, y, tmp_path, images_per_shard=16)
    old_files = _shard_files(tmp_path)

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writing, "_serialize_example", fail)
    new_x, new_y = _images(seed=1)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tfrecords(new_x, new_y, tmp_path, images_per_shard=16)
    assert _shard_files(tmp_path) == old_files == sorted(old_paths)
    np.testing.assert_array_equal(_read_all(tmp_path)[0], x)


def test_reexport_replaces_the_old_shards(tmp_path):
    x, y = _images()
    old = write_tfrecords(x, y, tmp_path, images_per_shard=8)
    new_x, new_y = _images(count=20, seed=1)
    new = write_tfrecords(new_x, new_y, tmp_path, images_per_shard=16)
    assert _shard_files(tmp_path) == sorted(new) and not any(p.exists() for p in old)
    np.testing.assert_array_equal(_read_all(tmp_path)[0], new_x)


def test_bad_batch_midway_rolls_back_the_export(tmp_path):
    x, y = _images()
    batches = [(x[:20], y[:20]), (x[20:40], y[20:40]), (x[40:, :4], y[40:])]
    with pytest.raises(ValueError, match=r"Batch 2 holds uint8 images of shape \(4, 8, 3\).*\(8, 8, 3\)"):
        write_tfrecords_from_batches(batches, tmp_path, images_per_shard=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call, message", [
    (lambda d, x, y: write_tfrecords(x, y, d, compression="bz2"), "compression must be one of"),
    (lambda d, x, y: write_tfrecords(x, y, d, encoding="jpeg"), "encoding must be one of"),
    (lambda d, x, y: write_tfrecords(x.astype(np.float32), y, d, encoding="png"), "PNG encoding stores uint8"),
    (lambda d, x, y: write_tfrecords(x.astype(np.int16), y, d), "raw records hold uint8 or float32"),
    (lambda d, x, y: write_tfrecords(x[..., :2], y, d, encoding="png"), "PNG holds 1, 3 or 4 channels"),
    (lambda d, x, y: write_tfrecords(x, y[:-1], d), "50 images but 49 labels"),
    (lambda d, x, y: write_tfrecords(x, y, d, class_names=["a", "b"]), r"labels must lie in \[0, 2\)"),
    (lambda d, x, y: write_tfrecords(x, y.astype(float), d), "integer class id"),
    (lambda d, x, y: write_tfrecords(x, y, d, num_shards=51), "num_shards=51 is more than the 50 images"),
    (lambda d, x, y: write_tfrecords(x, y, d, num_shards=2, images_per_shard=5), "not both"),
    (lambda d, x, y: write_tfrecords(x, y, d, images_per_shard=0), "images_per_shard must be a positive"),
    (lambda d, x, y: write_tfrecords(x, y, d, split="../train"), "split must be a name"),
    (lambda d, x, y: write_tfrecords_from_batches([], d), "iterable was empty"),
    (lambda d, x, y: write_tfrecords_from_batches([x], d), r"must be an \(images, labels\) pair"),
])
def test_bad_arguments_raise_clear_errors_and_write_nothing(tmp_path, call, message):
    x, y = _images()
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "out", x, y)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_eval_pipeline_matches_the_in_memory_pipeline(tmp_path):
    x, y = _images()
    write_tfrecords(x, y, tmp_path, images_per_shard=16)
    streamed = list(make_tfrecord_pipeline(tmp_path, training=False, batch_size=16))
    in_memory = list(make_pipeline(x, y, training=False, batch_size=16))
    assert [b.shape for b, _ in streamed] == [(16, 8, 8, 3)] * 3 + [(2, 8, 8, 3)]
    for (a, la), (b, lb) in zip(streamed, in_memory, strict=True):
        assert a.dtype == tf.float32 and la.dtype == tf.int64
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(la.numpy(), lb.numpy())


def test_training_pipeline_shuffles_repeatably_and_augments(tmp_path):
    x, y = _images()
    write_tfrecords(x, y, tmp_path, images_per_shard=10)

    def epoch():
        augmenter = make_augmenter(flip="horizontal", seed=3)
        ds = make_tfrecord_pipeline(tmp_path, training=True, batch_size=16, shuffle_buffer=8,
                                    augmenter=augmenter, seed=5, drop_remainder=True)
        return list(ds), len(ds)

    batches, steps = epoch()
    assert steps == 3 and len(batches) == 3
    images = np.concatenate([b.numpy() for b, _ in batches])
    labels = np.concatenate([l.numpy() for _, l in batches])
    assert images.shape == (48, 8, 8, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert not np.array_equal(labels, y[:48]), "training data is shuffled"
    again = np.concatenate([b.numpy() for b, _ in epoch()[0]])
    np.testing.assert_array_equal(images, again)


def test_pipeline_resizes_and_converts_grayscale(tmp_path):
    x, y = _images(channels=1, count=10)
    write_tfrecords(x, y, tmp_path, encoding="png")
    ds = make_tfrecord_pipeline(tmp_path, training=False, batch_size=4, pipeline_size=12, to_rgb=True,
                                input_scaling="none")
    expected = make_pipeline(x, y, training=False, batch_size=4, pipeline_size=12, to_rgb=True,
                             input_scaling="none", cache=False)
    for (a, _), (b, _) in zip(ds, expected, strict=True):
        assert a.shape[1:] == (12, 12, 3)
        np.testing.assert_allclose(a.numpy(), b.numpy())


def test_export_dataset_writes_every_split_with_class_names(tmp_path):
    rng = np.random.default_rng(2)
    dataset = from_arrays(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), np.arange(40) % 4,
                          rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), np.arange(12) % 4,
                          class_names=["w", "x", "y", "z"], name="toy")
    written = export_dataset(dataset, tmp_path, num_shards=3, compression="GZIP")
    assert set(written) == {"train", "val", "test"}
    for split in written:
        manifest = read_manifest(tmp_path, split)
        assert manifest["class_names"] == ["w", "x", "y", "z"]
        assert manifest["metadata"]["dataset"] == "toy"
        images, labels = _read_all(tmp_path, split)
        np.testing.assert_array_equal(images, dataset.split(split)[0])
        np.testing.assert_array_equal(labels, dataset.split(split)[1])


# -- provenance ---------------------------------------------------------------------------------


def _toy(seed=0, size=8, class_names=("w", "x", "y", "z"), name="toy"):
    rng = np.random.default_rng(seed)
    return from_arrays(rng.integers(0, 256, (40, size, size, 3), dtype=np.uint8), np.arange(40) % 4,
                       rng.integers(0, 256, (12, size, size, 3), dtype=np.uint8), np.arange(12) % 4,
                       class_names=list(class_names), name=name)


def test_export_records_provenance_and_the_same_data_passes_the_check(tmp_path):
    data = load_dataset("digits", limit=120, seed=0)
    export_dataset(data, tmp_path, num_shards=2)
    for split in ("train", "val", "test"):
        manifest = check_provenance(tmp_path, split, load_dataset("digits", limit=120, seed=0))
        assert manifest == read_manifest(tmp_path, split)
        assert manifest["provenance"] == {"dataset": "digits", "fingerprint": dataset_fingerprint(data)}
        assert manifest["provenance"]["fingerprint"]["source"]["split_seed"] == 0
        assert manifest["provenance"]["fingerprint"]["sizes"] == {"train": 120, "val": 120, "test": 120}
    custom = tmp_path / "custom"
    export_dataset(data, custom, fingerprint={"seed": np.int64(0), "limit": 120, "size": (8, 8)})
    assert read_manifest(custom)["provenance"]["fingerprint"] == {"seed": 0, "limit": 120, "size": [8, 8]}
    check_provenance(custom, "train", data, fingerprint={"seed": 0, "limit": 120, "size": (8, 8)})


def test_content_hash_does_not_depend_on_batching_or_on_the_writer(tmp_path):
    x, y = _images(count=45)
    write_tfrecords(x, y, tmp_path / "a", images_per_shard=16)
    write_tfrecords_from_batches(((x[i:i + 7], y[i:i + 7]) for i in range(0, 45, 7)), tmp_path / "b",
                                 images_per_shard=10)
    write_tfrecords(x, y[:, np.newaxis], tmp_path / "c", num_shards=1, encoding="png")
    hashes = {read_manifest(tmp_path / d)["content_sha256"] for d in "abc"}
    assert hashes == {provenance._content_sha256(x, y)}
    changed = x.copy()
    changed[44, 7, 7, 2] ^= 1  # one bit of the last pixel: the hash covers every byte
    assert provenance._content_sha256(changed, y) not in hashes
    assert provenance._content_sha256(x, (y + 1) % 5) not in hashes


def test_shards_of_another_seed_are_refused_naming_both_seeds(tmp_path):
    export_dataset(load_dataset("digits", limit=120, seed=1), tmp_path / "default")
    run = load_dataset("digits", limit=120, seed=0)
    with pytest.raises(ValueError, match=r"exported from digits \(source.split_seed 1\) but this run uses "
                                         r"digits \(source.split_seed 0\): the images or labels differ.*"
                                         r"Delete the folder or point tfrecord_dir at an empty one"):
        check_provenance(tmp_path / "default", "train", run)
    # A caller's own fingerprint, as a training run gives it, is named the same way.
    export_dataset(load_dataset("digits", limit=120, seed=1), tmp_path / "custom",
                   fingerprint={"dataset": "digits", "seed": 1, "limit": 120})
    with pytest.raises(ValueError, match=r"exported from digits \(seed 1\) but this run uses digits \(seed 0\)"):
        check_provenance(tmp_path / "custom", "train", run, fingerprint={"dataset": "digits", "seed": 0, "limit": 120})


def test_shards_of_another_dataset_are_refused_before_tensorflow_reads_them(tmp_path):
    written = export_dataset(load_dataset("digits", limit=60), tmp_path)
    for path in written["train"]:  # check_provenance reads only the manifest
        path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(ValueError) as error:
        check_provenance(tmp_path, "train", load_dataset("shapes", limit=60))
    message = str(error.value)
    assert "exported from digits but this run uses shapes" in message
    assert "uint8 images of shape (8, 8, 1) in the TFRecords, uint8 images of shape (28, 28, 3) in this run" in message
    assert "10 classes in the TFRecords ('0', '1', '2', '3', '4', ...), 6 in this run ('circle'" in message
    assert "60 images in the TFRecords, 60 in this run" not in message  # equal counts are not differences


def test_other_image_shape_class_names_or_count_are_named(tmp_path):
    export_dataset(_toy(), tmp_path)
    with pytest.raises(ValueError, match=r"do not hold this run's toy data: uint8 images of shape \(8, 8, 3\) in "
                                         r"the TFRecords, uint8 images of shape \(16, 16, 3\) in this run\."):
        check_provenance(tmp_path, "train", _toy(size=16), fingerprint=dataset_fingerprint(_toy()))
    with pytest.raises(ValueError, match=r"class 2 is 'y' in the TFRecords, 'q' in this run"):
        check_provenance(tmp_path, "val", _toy(class_names="wxqz"))
    fewer = _toy().limit(30)
    with pytest.raises(ValueError, match=r"36 images in the TFRecords, 30 in this run"):
        check_provenance(tmp_path, "train", fewer, fingerprint=dataset_fingerprint(_toy()))
    with pytest.raises(ValueError, match=r"exported from toy but this run uses other"):
        check_provenance(tmp_path, "test", _toy(name="other"))


def test_same_description_other_pixels_are_refused(tmp_path):
    data = _toy()
    export_dataset(data, tmp_path)
    data.x_test[5, 0, 0, 0] ^= 1
    with pytest.raises(ValueError, match=r"do not hold this run's toy data: the images or labels differ "
                                         r"\(content sha256 [0-9a-f]{16}\.\.\. in the TFRecords, "
                                         r"[0-9a-f]{16}\.\.\. in this run\)"):
        check_provenance(tmp_path, "test", data)
    check_provenance(tmp_path, "train", data)  # the other splits still match


def test_legacy_and_bare_array_manifests_are_refused(tmp_path):
    data = _toy()
    export_dataset(data, tmp_path, num_shards=2)
    path = manifest_path(tmp_path, "train")
    legacy = json.loads(path.read_text())
    for key in ("content_sha256", "provenance"):
        del legacy[key]
    for shard in legacy["shards"]:
        del shard["sha256"]
    legacy["version"] = 1
    path.write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match=r"were exported before provenance checks: .*train\.manifest\.json \(format "
                                         r"version 1\) records no fingerprint.*Re-export them"):
        check_provenance(tmp_path, "train", data)
    np.testing.assert_array_equal(_read_all(tmp_path)[0], data.x_train)  # still readable, unverified
    write_tfrecords(data.x_val, data.y_val, tmp_path, split="val", class_names=data.class_names)
    with pytest.raises(ValueError, match="written by write_tfrecords, which records no dataset fingerprint"):
        check_provenance(tmp_path, "val", data)


@pytest.mark.parametrize("fingerprint, message", [
    (["seed", 0], "fingerprint must be a dict.*received list"),
    ({"seed": object()}, "fingerprint must hold only JSON-serialisable values.*object"),
])
def test_bad_fingerprint_is_refused_before_anything_is_written(tmp_path, fingerprint, message):
    with pytest.raises(ValueError, match=message):
        export_dataset(_toy(), tmp_path / "out", fingerprint=fingerprint)
    assert not (tmp_path / "out").exists()


# -- re-export and damaged shards ---------------------------------------------------------------


def test_reexport_with_fewer_shards_leaves_only_the_new_ones(tmp_path):
    data = _toy()
    old = export_dataset(data, tmp_path, num_shards=4)
    assert [len(old[s]) for s in ("train", "val", "test")] == [4, 4, 4]
    new = export_dataset(data, tmp_path, num_shards=2, compression="GZIP")
    for split in ("train", "val", "test"):
        files = sorted(p for p in tmp_path.glob(f"{split}-*"))
        assert files == sorted(new[split]) and len(files) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tfrecord.gz")) == [
        "dataset.json", "labels.npz", "test.manifest.json", "train.manifest.json",
        "val.manifest.json"]  # no .tmp-* left either
    check_provenance(tmp_path, "train", data)
    np.testing.assert_array_equal(_read_all(tmp_path)[0], data.x_train)


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_pipeline_names_a_shard_corrupted_in_place_before_training(tmp_path, compression):
    x, y = _images(count=64)
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16, compression=compression)
    data = bytearray(paths[1].read_bytes())
    data[len(data) // 3] ^= 0x01
    paths[1].write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError, match=f"TFRecord shard .*{paths[1].name} is corrupt.*Re-export"):
        make_tfrecord_pipeline(tmp_path, training=True, batch_size=8)


def test_a_shard_swapped_for_another_of_the_same_size_is_named(tmp_path):
    x, y = _images(count=32)
    paths = write_tfrecords(x, y, tmp_path, images_per_shard=16)
    assert paths[0].stat().st_size == paths[1].stat().st_size
    paths[1].write_bytes(paths[0].read_bytes())  # decodes fine: only the sha256 tells
    for read in (verify_tfrecords, lambda d: make_tfrecord_pipeline(d, training=False)):
        with pytest.raises(tf.errors.DataLossError, match=f"{paths[1].name} is corrupt"):
            read(tmp_path)
    assert len(list(read_tfrecords(tmp_path, verify_checksums=False))) == 32  # silently the wrong images
