import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from lab.data.datasets import Dataset, from_arrays, list_datasets, load_data, load_dataset, load_image_folder, load_shapes
from lab.data.datasets import medmnist as mm
from lab.data.datasets import registry
from lab.data.datasets.folders import write_image_folder
from lab.system.download import ChecksumError, DatasetNotAvailableError


# -- embedded ---------------------------------------------------------------------------------

def test_digits_is_real_and_split_without_overlap(digits):
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    sizes = digits.summary()["sizes"]
    assert sum(sizes.values()) == 1797
    assert digits.x_train.dtype == np.uint8 and digits.x_train.max() == 255
    # the test split keeps every class (stratified)
    assert (digits.class_counts("test") > 0).all()


def test_shapes_is_a_function_of_its_seed():
    a, b, c = load_shapes(num_train=40, seed=1), load_shapes(num_train=40, seed=1), load_shapes(num_train=40, seed=2)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_shapes_masks_match_labels_and_imbalance():
    data = load_shapes(num_train=600, seed=0)
    assert data.masks_train.shape == data.x_train.shape[:3]
    for mask, label in zip(data.masks_train[:50], data.y_train[:50]):
        assert set(np.unique(mask)) == {0, label + 1}
    counts = data.class_counts()
    assert counts[0] > 2 * counts[-1], "the default shapes set is imbalanced like BloodMNIST"


def test_shapes_grayscale_and_bad_arguments():
    assert load_shapes(num_train=5, num_val=5, num_test=5, channels=1).input_shape == (28, 28, 1)
    with pytest.raises(ValueError, match="dataset_size must be at least 16 pixels for shapes, received"):
        load_shapes(dataset_size=8)
    with pytest.raises(ValueError, match="class_weights"):
        load_shapes(class_weights=(1, 2))


# -- derived datasets -------------------------------------------------------------------------

def test_subset_classes_is_seeded_and_remapped(digits):
    a, b = digits.subset_classes(4, seed=3), digits.subset_classes(4, seed=3)
    assert a.class_names == b.class_names and len(a.class_names) == 4
    assert set(np.unique(a.y_train)) == {0, 1, 2, 3}
    kept = [int(name) for name in a.class_names]
    # the remapped label of an image is the index of its original class among the kept ones
    original = digits.y_train[np.isin(digits.y_train, kept)]
    assert np.array_equal(np.asarray(kept)[a.y_train], original)
    with pytest.raises(ValueError, match="num_classes must be between 2 and 10"):
        digits.subset_classes(11)


def test_limit_is_stratified(digits):
    small = digits.limit(100, seed=0)
    assert len(small.y_train) == 100
    assert (small.class_counts() >= 8).all()


def _labelled(train_labels, other_labels=(0, 1)):
    """A Dataset of 2x2 images whose train labels are ``train_labels`` (val and test: ``other_labels``)."""
    train, other = np.asarray(train_labels), np.asarray(other_labels)
    # Every pixel of image i holds i, so a sample can be traced back to the images it kept.
    images = lambda n: np.broadcast_to(np.arange(n).reshape(n, 1, 1, 1), (n, 2, 2, 1))  # noqa: E731
    top = int(max(train.max(), other.max())) + 1
    return Dataset(name="rare", x_train=images(len(train)), y_train=train, x_val=images(len(other)), y_val=other,
                   x_test=images(len(other)), y_test=other, class_names=[f"c{i}" for i in range(top)])


def test_limit_keeps_every_class_even_rare_ones():
    # One class with 97 images and three with one each: a proportional sample of 10 gives the
    # rare classes 0.1 image each, which rounds to none.
    data = _labelled(np.repeat([0, 1, 2, 3], [97, 1, 1, 1]))
    small = data.limit(10, seed=4)
    assert len(small.y_train) == 10 and (small.class_counts() >= 1).all()
    assert small.class_counts()[0] == 7
    again = data.limit(10, seed=4)
    assert np.array_equal(small.x_train, again.x_train), "the sample is a function of the seed"
    # Each kept image still carries its own label.
    np.testing.assert_array_equal(data.y_train[small.x_train[:, 0, 0, 0]], small.y_train)


def test_limit_smaller_than_the_classes_of_a_split_is_refused(digits):
    with pytest.raises(ValueError, match=r"limit=5 would drop classes: the train split of 'digits' has 10 classes; "
                                         r"use limit >= 10"):
        digits.limit(5)
    with pytest.raises(ValueError, match="limit=5 would drop classes"):
        load_dataset("digits", limit=5)
    with pytest.raises(ValueError, match="limit must be a positive number of images per split, received 2.5"):
        digits.limit(2.5)
    # Fewer classes on purpose: num_classes first, then a limit that fits them.
    assert load_dataset("digits", num_classes=3, limit=3).num_classes == 3


def test_limit_keeps_the_draws_it_made_before_when_they_kept_every_class(digits):
    from sklearn.model_selection import train_test_split

    # The scikit-learn draw used before rare classes were guaranteed: same seed, same images.
    index, _ = train_test_split(np.arange(len(digits.y_train)), train_size=100, random_state=0,
                                stratify=digits.y_train)
    np.testing.assert_array_equal(digits.limit(100, seed=0).x_train, digits.x_train[np.sort(index)])


def test_limit_close_to_the_split_size_keeps_every_class():
    # 10 classes of 3 images, keep 28: too few left over for scikit-learn to stratify.
    data = _labelled(np.repeat(np.arange(10), 3))
    small = data.limit(28, seed=1)
    assert len(small.y_train) == 28 and (small.class_counts() >= 2).all()


def test_class_weights_balance_counts():
    data = load_shapes(num_train=300, seed=0)
    weights = data.class_weights()
    counts = data.class_counts()
    weighted = np.array([weights[i] * counts[i] for i in range(len(counts))])
    assert np.allclose(weighted, weighted[0])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown dataset 'bloodmnst'. Did you mean 'bloodmnist'\\? Available: .*cifar100.*pathmnist"):
        load_dataset("bloodmnst")
    assert "pathmnist" in list_datasets() and "cifar100_coarse" in list_datasets()


def test_from_arrays_carves_validation(tiny_images):
    x, y = tiny_images
    data = from_arrays(x, y, x[:6], y[:6], val_fraction=0.25)
    assert len(data.y_val) == 15 and len(data.y_train) == 45 and data.num_classes == 3


def test_multilabel_arrays_are_refused(tiny_images):
    x, _ = tiny_images
    with pytest.raises(ValueError, match="Multi-label"):
        from_arrays(x, np.zeros((60, 3)), x, np.zeros((60, 3)), x_val=x, y_val=np.zeros((60, 3)))


# -- MedMNIST ---------------------------------------------------------------------------------

def test_medmnist_registry_has_every_2d_flag():
    flags = mm.flags_2d()
    for flag in ("pathmnist", "dermamnist", "bloodmnist", "octmnist", "pneumoniamnist", "organamnist"):
        assert flag in flags
    assert not any(f.endswith("3d") for f in flags)
    assert registry.medmnist_info()["bloodmnist"]["n_samples"] == {"train": 11959, "val": 1712, "test": 3421}


def _fake_medmnist(path, channels, classes, n=12, side=28):
    rng = np.random.default_rng(0)
    shape = (n, side, side) if channels == 1 else (n, side, side, 3)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flag,channels,classes,size", [("bloodmnist", 3, 8, 28), ("pneumoniamnist", 1, 2, 64)])
def test_medmnist_loads_cached_npz(flag, channels, classes, size, monkeypatch, tmp_path):
    path = mm.npz_path(flag, size)
    md5 = _fake_medmnist(path, channels, classes, side=size)
    info = {k: dict(v) for k, v in registry.medmnist_info().items()}
    info[flag]["MD5" if size == 28 else f"MD5_{size}"] = md5
    monkeypatch.setattr(registry, "medmnist_info", lambda: info)
    data = load_dataset(flag, size=size, download=False)
    assert data.input_shape == (size, size, channels)
    assert data.num_classes == classes and data.y_train.ndim == 1
    assert data.class_names[0] == info[flag]["label"]["0"]


def test_medmnist_missing_file_offline_names_path_and_url():
    with pytest.raises(DatasetNotAvailableError) as error:
        load_dataset("dermamnist", download=False)
    message = str(error.value)
    assert "dermamnist.npz" in message and "zenodo" in message and str(mm.npz_path("dermamnist")) in message


def test_medmnist_checksum_mismatch_is_reported():
    _fake_medmnist(mm.npz_path("bloodmnist"), 3, 8)
    with pytest.raises(ChecksumError, match="expected md5 " + registry.medmnist_info()["bloodmnist"]["MD5"]):
        load_dataset("bloodmnist", download=False)


def test_medmnist_corrupt_npz_is_reported_by_file(monkeypatch):
    path = mm.npz_path("bloodmnist")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    info = {k: dict(v) for k, v in registry.medmnist_info().items()}
    info["bloodmnist"]["MD5"] = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(registry, "medmnist_info", lambda: info)
    with pytest.raises(ValueError, match="bloodmnist.npz is not a readable MedMNIST npz"):
        load_dataset("bloodmnist", download=False)


def test_medmnist_refuses_multilabel_3d_and_bad_sizes():
    with pytest.raises(ValueError, match="multi-label"):
        load_dataset("chestmnist")
    with pytest.raises(ValueError, match="3D"):
        load_dataset("organmnist3d")
    with pytest.raises(ValueError, match=r"size must be one of \(28, 64, 128, 224\), received size=32"):
        load_dataset("bloodmnist", size=32)
    # size=0 is a size, not "no size": it used to load 28 px in silence.
    with pytest.raises(ValueError, match="received size=0"):
        load_dataset("bloodmnist", size=0, download=False)


@pytest.mark.parametrize("name,side", [("digits", 8), ("mnist", 28), ("fashion_mnist", 28), ("cifar10", 32),
                                       ("cifar100", 32), ("cifar100_coarse", 32)])
def test_fixed_size_datasets_refuse_another_size(name, side):
    with pytest.raises(ValueError, match=rf"'{name}' has a fixed image size of {side}x{side}, received size=64 "
                                         r"\(dataset_size\)\. .*set pipeline_size=64"):
        load_dataset(name, size=64, download=False)


def test_fixed_size_is_checked_from_a_run_configuration_and_its_own_size_is_accepted():
    from lab.config import RunConfig

    with pytest.raises(ValueError, match="'digits' has a fixed image size of 8x8, received size=32"):
        load_data(RunConfig(dataset="digits", dataset_size=32))
    assert load_dataset("digits", size=8).input_shape == (8, 8, 1)
    # mnist at its own size goes on to the download (here refused offline), not to a size error.
    with pytest.raises(DatasetNotAvailableError):
        load_dataset("mnist", size=28, download=False)


# -- Keras datasets ---------------------------------------------------------------------------

def _fake_cifar100(path):
    rng = np.random.default_rng(0)
    def batch(n):
        return {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                b"fine_labels": list(np.arange(n) % 100), b"coarse_labels": list(np.arange(n) % 20)}
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, obj in (("train", batch(400)), ("test", batch(100)), ("meta", meta)):
            raw = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name,classes", [("cifar100", 100), ("cifar100_coarse", 20)])
def test_cifar100_fine_and_coarse(name, classes, monkeypatch, tmp_path):
    from lab.system import paths
    sha = _fake_cifar100(paths.data_dir() / "keras" / "cifar-100-python.tar.gz")
    row = registry.SOURCES["cifar100"]
    monkeypatch.setitem(registry.SOURCES, "cifar100",
                        dataclasses.replace(row, files=({**row.files[0], "sha256": sha},)))
    data = load_dataset(name, download=False, val_fraction=0.25)
    assert data.input_shape == (32, 32, 3) and data.num_classes == classes
    assert len(data.y_train) == 300 and len(data.y_val) == 100 and len(data.y_test) == 100
    assert data.class_names[1] == ("fine1" if classes == 100 else "coarse1")


def test_fashion_mnist_idx_parsing(monkeypatch):
    from lab.system import paths
    rng = np.random.default_rng(0)
    root = paths.data_dir() / "keras"
    root.mkdir(parents=True)
    files = []
    for fname in (file["file"] for file in registry.SOURCES["fashion_mnist"].files):
        n = 50 if fname.startswith("train") else 10
        if "images" in fname:
            payload = b"\x00\x00\x08\x03" + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 \
                + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
        else:
            payload = b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + (np.arange(n) % 10).astype(np.uint8).tobytes()
        with gzip.open(root / fname, "wb") as handle:
            handle.write(payload)
        files.append({"file": fname, "url": "", "md5": hashlib.md5((root / fname).read_bytes()).hexdigest()})
    monkeypatch.setitem(registry.SOURCES, "fashion_mnist",
                        dataclasses.replace(registry.SOURCES["fashion_mnist"], files=tuple(files)))
    data = load_dataset("fashion_mnist", download=False)
    assert data.input_shape == (28, 28, 1) and data.class_names[-1] == "Ankle boot"
    assert len(data.y_test) == 10


def test_keras_dataset_offline_error():
    with pytest.raises(DatasetNotAvailableError, match="mnist.npz"):
        load_dataset("mnist", download=False)


# -- image folders ----------------------------------------------------------------------------

def _write_images(folder, classes=("cat", "dog", "owl"), per_class=8, size=(20, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")


def test_image_folder_split_by_fractions(tmp_path):
    _write_images(tmp_path / "flowers")
    data = load_image_folder(tmp_path / "flowers", dataset_size=16, split_fractions=(0.5, 0.25, 0.25), seed=1)
    assert data.class_names == ["cat", "dog", "owl"]
    assert data.input_shape == (16, 16, 3)
    assert [len(data.split(s)[1]) for s in ("train", "val", "test")] == [12, 6, 6]
    again = load_image_folder(tmp_path / "flowers", dataset_size=16, seed=1)
    assert np.array_equal(again.x_test, data.x_test)


def test_image_folder_with_split_folders_and_center_crop(tmp_path):
    for split in ("train", "val", "test"):
        _write_images(tmp_path / "ds" / split, per_class=3, size=(40, 60))
    data = load_dataset(f"folder:{tmp_path / 'ds'}", size=24, resize_to=32)
    assert data.input_shape == (24, 24, 3) and len(data.y_val) == 9


def test_unreadable_image_is_named(tmp_path):
    _write_images(tmp_path / "ds", per_class=2)
    bad = tmp_path / "ds" / "dog" / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read image .*broken.jpg"):
        load_image_folder(tmp_path / "ds", dataset_size=8)


RAMP = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535: 8-bit 0..255 scaled


@pytest.mark.parametrize("suffix,image", [
    (".png", lambda: Image.fromarray(RAMP)),                                           # mode I;16
    (".tif", lambda: Image.frombytes("I;16B", (16, 16), RAMP.astype(">u2").tobytes())),  # big-endian TIFF
    (".tif", lambda: Image.fromarray(RAMP.astype(np.int32))),                          # mode I, 16-bit values
])
@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_image_folder_scales_16_bit_images(tmp_path, suffix, image, color_mode):
    for split in ("train", "val", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            image().save(tmp_path / split / name / f"ramp{suffix}")
    data = load_image_folder(tmp_path, dataset_size=16, color_mode=color_mode)
    expected = np.arange(256, dtype=np.uint8).reshape(16, 16)  # clipping would give 0, 255, 255, ...
    for x in (data.x_train, data.x_val, data.x_test):
        for channel in range(x.shape[-1]):
            np.testing.assert_array_equal(x[0, ..., channel], expected)


def test_image_folder_refuses_float_and_out_of_range_images_by_name(tmp_path):
    _write_images(tmp_path / "ds", per_class=2)
    Image.fromarray((RAMP / 65535).astype(np.float32)).save(tmp_path / "ds" / "dog" / "float.tif")
    with pytest.raises(ValueError, match=r"Image .*float\.tif holds 32-bit floating-point values \(Pillow mode 'F', "
                                         r"from 0 to 1\).*round\(value \* 255\)"):
        load_image_folder(tmp_path / "ds", dataset_size=8)
    (tmp_path / "ds" / "dog" / "float.tif").unlink()
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "ds" / "owl" / "wide.tif")
    with pytest.raises(ValueError, match=r"Image .*wide\.tif holds integers from 70000 to 70000 .*0\.\.65535"):
        load_image_folder(tmp_path / "ds", dataset_size=8)


def test_empty_class_folder_is_refused_by_name(tmp_path):
    _write_images(tmp_path / "ds", per_class=4)
    (tmp_path / "ds" / "zebra").mkdir()
    (tmp_path / "ds" / "zebra" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"1 class folder\(s\) hold no images .*ds/zebra\. .*remove the empty "
                                         r"folder\(s\) or add images"):
        load_image_folder(tmp_path / "ds", dataset_size=8)


def test_split_folders_need_every_class_in_train_only(tmp_path):
    _write_images(tmp_path / "ds" / "train", per_class=3)
    _write_images(tmp_path / "ds" / "test", classes=("cat", "dog"), per_class=2)  # no owl in test: allowed
    data = load_image_folder(tmp_path / "ds", dataset_size=8, split_fractions=(0.5, 0.4, 0.1))
    assert data.class_names == ["cat", "dog", "owl"]
    assert data.class_counts("test").tolist() == [2, 2, 0] and data.class_counts("train").min() >= 1

    (tmp_path / "ds" / "train" / "yak").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) hold no images .*train/yak"):
        load_image_folder(tmp_path / "ds", dataset_size=8)
    (tmp_path / "ds" / "train" / "yak").rmdir()

    # A class folder in test that train lacks: its images would have no label.
    _write_images(tmp_path / "ds" / "test", classes=("yak",), per_class=1)
    with pytest.raises(ValueError, match=r"test has class folders that the training folder lacks: \['yak'\]"):
        load_image_folder(tmp_path / "ds", dataset_size=8)


def test_write_image_folder_refuses_values_that_are_not_8_bit(tmp_path):
    images = np.zeros((2, 4, 4), np.uint16)
    images[1, 0, 0] = 300  # would wrap to 44 as uint8
    with pytest.raises(ValueError, match="image 1 holds uint16 values from 0 to 300"):
        write_image_folder(images, np.array([0, 1]), ["a", "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written when an image is refused"
    write_image_folder(images.clip(0, 255), np.array([0, 1]), ["a", "b"], tmp_path / "out")
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path / "empty")


# -- TensorFlow Datasets ----------------------------------------------------------------------

def test_tfds_loader_on_mocked_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        mnist = load_dataset("tfds:mnist", val_fraction=0.2)
        flowers = load_dataset("tfds:oxford_flowers102", size=24)  # images of many sizes: resized
    assert mnist.name == "tfds:mnist" and mnist.input_shape == (28, 28, 1)
    assert len(mnist.y_val) == 6 and len(mnist.y_test) == 30 and mnist.num_classes == 10
    assert flowers.input_shape == (24, 24, 3) and flowers.num_classes == 102
    assert flowers.class_names[0] == "pink primrose"


def test_tfds_unknown_name():
    with pytest.raises(ValueError, match="TensorFlow Datasets has no dataset 'no_such_set'"):
        load_dataset("tfds:no_such_set")


def test_a_run_configuration_reaches_every_image_folder_option(tmp_path):
    """split_fractions and color_mode are run fields: they reach the loader (in memory and
    streamed), change the data key, and are refused for data that is not a folder."""
    from lab.config import RunConfig
    from lab.data.datasets import data_key, load_data
    from lab.data.datasets.streaming import open_stream

    _write_images(tmp_path / "flowers")
    folder = f"folder:{tmp_path / 'flowers'}"
    config = RunConfig(dataset=folder, dataset_size=16, split_fractions=[0.5, 0.125, 0.375], color_mode="grayscale",
                       seed=1)
    data = load_data(config)
    assert data.input_shape == (16, 16, 1)
    assert [len(data.split(s)[1]) for s in ("train", "val", "test")] == [12, 3, 9]
    stream = open_stream(config.dataset, size=16, split_fractions=config.split_fractions, color_mode=config.color_mode,
                         seed=1)
    assert stream.splits["test"].shape == (16, 16, 1)
    streamed_test = np.concatenate([images for images, _ in stream.splits["test"].chunks()])
    assert np.array_equal(streamed_test, data.x_test)
    assert data_key(config) != data_key(RunConfig(dataset=folder, dataset_size=16, seed=1))
    with pytest.raises(ValueError, match="split_fractions applies to image and mask folders"):
        RunConfig(dataset="digits", split_fractions=[0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="color_mode must be one of"):
        RunConfig(dataset=folder, color_mode="cmyk")
    with pytest.raises(ValueError, match="three positive shares"):
        RunConfig(dataset=folder, split_fractions=[0.5, 0.5])
