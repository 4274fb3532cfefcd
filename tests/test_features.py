"""Reused data artefacts checked against what they were made from: the frozen-feature cache
(its key covers every byte of the inputs; a disk entry is verified on every hit) and prepared
TensorFlow Datasets (the version asked for, never another one, recorded in ``source``).

The TFDS tests belong with the other loader tests in test_datasets.py; they are here because that
file was being edited elsewhere when they were written. They fake a prepared dataset (TFDS's own
metadata files, written offline) and never download."""

import json
import re
from unittest import mock

import keras
import numpy as np
import pytest

from lab.data.datasets import Dataset
from lab.system.download import DatasetNotAvailableError
from lab.models.features import (cache_key, clear_memory_cache, compute_features, content_sha256,
                          feature_cache_dir, read_cache_file)
from lab.models.transfer import feature_extractor, transfer_model


@pytest.fixture(scope="module")
def model():
    return transfer_model((8, 8, 1), 3, backbone="resnet18", weights=None, backbone_input_size=32)


@pytest.fixture(scope="module")
def extractor(model):
    return feature_extractor(model)


def _data(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n):
        return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n, dtype=np.int64) % 3

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(12), split(6), split(6)
    return Dataset("tiny", x_train, y_train, x_val, y_val, x_test, y_test, ["a", "b", "c"])


@pytest.fixture(autouse=True)
def empty_memory_cache():
    clear_memory_cache()
    yield
    clear_memory_cache()


def _key(extractor, data, **changes):
    options = dict(passes=1, augmenter=None, input_scaling="unit", pipeline_size=None, seed=0) | changes
    return cache_key(extractor, data, **options)


# -- the key ------------------------------------------------------------------------------------

def test_the_key_covers_every_pixel_and_label(extractor):
    data = _data()
    key = _key(extractor, data)
    assert _key(extractor, _data()) == key, "the same inputs give the same key"
    for split in ("train", "val", "test"):
        pixel, label = _data(), _data()
        x, _ = pixel.split(split)
        x[-1, 7, 7, 0] ^= 1  # the last pixel of the last image: not a sample
        _, y = label.split(split)
        y[-1] = (y[-1] + 1) % 3
        assert _key(extractor, pixel) != key and _key(extractor, label) != key, split
    as_int32 = _data()
    as_int32.y_test = as_int32.y_test.astype(np.int32)
    assert _key(extractor, as_int32) != key


def test_the_key_covers_weights_scaling_and_augmentation(model, extractor):
    data = _data()
    key = _key(extractor, data)
    assert _key(extractor, data, input_scaling="imagenet") != key
    assert _key(extractor, data, pipeline_size=16) != key
    # Without augmented passes the augmenter and seed are not used, so they do not split the cache.
    flip = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=1)])
    assert _key(extractor, data, augmenter=flip, seed=5) == key
    two = _key(extractor, data, passes=2, augmenter=flip, seed=0)
    assert len({key, two, _key(extractor, data, passes=3, augmenter=flip, seed=0),
                _key(extractor, data, passes=2, augmenter=flip, seed=1),
                _key(extractor, data, passes=2, seed=0,
                     augmenter=keras.Sequential([keras.layers.RandomRotation(0.1, seed=1)]))}) == 5
    other = transfer_model((8, 8, 1), 3, backbone="resnet18", weights=None, backbone_input_size=32)
    other.set_weights(model.get_weights())
    assert _key(feature_extractor(other), data) == key, "the key depends on the weights, not on the object"
    weight = other.get_layer("resnet18_backbone").weights[0]
    weight.assign(weight.numpy() + 1e-3)
    assert _key(feature_extractor(other), data) != key


# -- the disk cache -----------------------------------------------------------------------------

def test_a_disk_entry_is_reused_when_it_matches(model, capsys):
    data = _data()
    first = compute_features(model, data, cache="disk")
    [path] = feature_cache_dir().glob("*.npz")
    assert path.name == f"{first.key}.npz" and not first.hit
    with np.load(path) as archive:
        meta = json.loads(str(archive["meta"]))
    assert meta["key"] == first.key and meta["content_sha256"] == content_sha256(vars(first))
    modified = path.stat().st_mtime_ns
    again = compute_features(model, data, cache="disk")
    assert again.hit and again.key == first.key and path.stat().st_mtime_ns == modified
    for name in ("train", "train_labels", "train_clean", "val", "test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert "Feature cache" not in capsys.readouterr().out


def _rewrite(path, change):
    """Rewrites a cache entry with ``change`` applied to its arrays and its meta."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize("damage, what", [
    (lambda path: _rewrite(path, lambda a: a["val"].__setitem__((0, 0), a["val"][0, 0] + 1)),
     r"changed after it was written \(content sha256 [0-9a-f]{16}\.\.\. recorded in it, [0-9a-f]{16}\.\.\. now\)"),
    (lambda path: _rewrite(path, lambda a: a.pop("meta")),
     "was written by an older kit, without the key and content hash it is checked against"),
    (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), r"cannot be read \("),
], ids=["arrays-edited", "written-by-an-older-kit", "truncated"])
def test_a_damaged_disk_entry_is_named_and_recomputed(model, capsys, damage, what):
    data = _data()
    first = compute_features(model, data, cache="disk")
    path = feature_cache_dir() / f"{first.key}.npz"
    damage(path)
    assert read_cache_file(path, first.key)[0] is None
    again = compute_features(model, data, cache="disk")
    out = capsys.readouterr().out
    assert f"Feature cache {path} " in out and "not used; recomputing the features and replacing it" in out
    assert re.search(what, out), out
    assert not again.hit
    np.testing.assert_allclose(again.val, first.val, rtol=1e-6)
    stored, problem = read_cache_file(path, first.key)
    assert problem is None, "the entry was replaced by a verified one"
    assert compute_features(model, data, cache="disk").hit


def test_a_byte_flipped_disk_entry_is_not_used(model, capsys):
    data = _data()
    first = compute_features(model, data, cache="disk")
    path = feature_cache_dir() / f"{first.key}.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the stored arrays: same size, one bit changed
    path.write_bytes(bytes(raw))
    assert not compute_features(model, data, cache="disk").hit
    assert f"Feature cache {path} " in capsys.readouterr().out


def test_an_entry_made_for_other_inputs_is_not_used(model, capsys):
    first = compute_features(model, _data(0), cache="disk")
    other = compute_features(model, _data(1), cache="disk")
    target = feature_cache_dir() / f"{first.key}.npz"
    target.write_bytes((feature_cache_dir() / f"{other.key}.npz").read_bytes())  # copied over by hand
    assert not compute_features(model, _data(0), cache="disk").hit
    out = capsys.readouterr().out
    assert f"Feature cache {target} was computed for other inputs (key {other.key} in the file, {first.key} " \
           f"for this run)" in out


# -- prepared TensorFlow Datasets -------------------------------------------------------------

@pytest.fixture
def tfds_dir(isolated_dirs):
    return isolated_dirs / "data" / "tensorflow_datasets"


def _prepare_fake(tfds, root, folder: str, version: str) -> None:
    """Writes TFDS's metadata of mnist into ``root/mnist/<folder>`` as version ``version``."""
    with tfds.testing.mock_data(data_dir=str(root)):
        builder = tfds.builder("mnist", data_dir=str(root))
        target = root / "mnist" / folder
        target.mkdir(parents=True)
        builder.info.write_to_directory(target)
    info = target / "dataset_info.json"
    info.write_text(json.dumps(json.loads(info.read_text()) | {"version": version}))


def test_a_prepared_tfds_dataset_of_the_version_asked_for_is_used_and_recorded(tfds_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lab.data.datasets.tfds import load_tfds

    asked = str(tfds.builder_cls("mnist").VERSION)
    _prepare_fake(tfds, tfds_dir, asked, asked)
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        data = load_tfds("mnist", download=False, val_fraction=0.25, seed=3)
    assert data.source == {"tfds": "mnist", "config": None, "version": asked, "image_size": None,
                           "splits": {"train": "train", "val": "carved 0.25 of train, seed 3", "test": "test"}}
    assert len(data.y_train) == 9 and len(data.y_test) == 12


def test_another_prepared_tfds_version_is_never_used_in_its_place(tfds_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lab.data.datasets.tfds import load_tfds, prepared_builder

    asked = str(tfds.builder_cls("mnist").VERSION)
    old = "2.0.0"
    _prepare_fake(tfds, tfds_dir, old, old)
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        with pytest.raises(DatasetNotAvailableError) as refused:
            load_tfds("mnist", download=False)
        # Online, TFDS would prepare the version asked for beside it; offline the download fails.
        with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", side_effect=OSError("offline")):
            with pytest.raises(DatasetNotAvailableError) as failed:
                prepared_builder("mnist", download=True)
    for message in (str(refused.value), str(failed.value)):
        assert f"'mnist' version {asked}" in message
        assert f"Prepared there: version {old} of mnist, not the {asked} asked for" in message
        assert f"ask for it by name ('mnist:{old}')" in message
    assert f"is not prepared under {tfds_dir}" in str(refused.value)
    assert "Could not download or prepare" in str(failed.value)


def test_a_prepared_folder_holding_another_version_is_refused(tfds_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lab.data.datasets.tfds import load_tfds

    asked = str(tfds.builder_cls("mnist").VERSION)
    _prepare_fake(tfds, tfds_dir, asked, "2.0.0")  # a 2.0.0 folder renamed to the version asked for
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        with pytest.raises(ValueError) as refused:
            load_tfds("mnist", download=False)
    message = str(refused.value)
    assert f"TFDS refuses 'mnist' under {tfds_dir / 'mnist'}" in message
    assert f"Builder version: {asked}. Proto version: 2.0.0" in message
    assert "never uses a prepared dataset of another version" in message


def test_a_pinned_tfds_version_is_asked_for_and_checked(tfds_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lab.data.datasets.tfds import load_tfds

    asked = str(tfds.builder_cls("mnist").VERSION)
    _prepare_fake(tfds, tfds_dir, asked, asked)
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        assert load_tfds(f"mnist:{asked}", download=False).source["version"] == asked
        with pytest.raises(ValueError, match="TFDS refuses 'mnist:2.0.0' .*cannot be loaded at version 2.0.0"):
            load_tfds("mnist:2.0.0", download=False)


def test_a_pinned_older_version_is_read_from_its_folder_only_when_the_folder_holds_it(tfds_dir):
    # A pinned version is read from the prepared files by TFDS's read-only builder, which takes its
    # version from dataset_info.json and never compares it with the folder's name: the kit does.
    tfds = pytest.importorskip("tensorflow_datasets")
    from lab.data.datasets.tfds import load_tfds

    _prepare_fake(tfds, tfds_dir, "2.0.0", "2.0.0")
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        assert load_tfds("mnist:2.0.0", download=False).source["version"] == "2.0.0"
    (tfds_dir / "mnist" / "2.0.0").rename(tfds_dir / "mnist" / "1.0.0")
    _prepare_fake(tfds, tfds_dir, "2.0.0", "1.0.0")  # a 1.0.0 folder renamed to 2.0.0
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tfds_dir)):
        with pytest.raises(ValueError) as refused:
            load_tfds("mnist:2.0.0", download=False)
    message = str(refused.value)
    assert f"The prepared TFDS dataset {tfds_dir / 'mnist' / '2.0.0'} is not the 'mnist:2.0.0' asked for" in message
    assert "its dataset_info.json records version 1.0.0 but the folder is named 2.0.0" in message
    assert "TFDS gave version 1.0.0 for the 2.0.0 asked for" in message
