"""TensorFlow Datasets by name, cached under the kit's data directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lab import paths
from lab.datasets.base import Dataset, carve_validation
from lab.download import DatasetNotAvailableError


def load_tfds(
    name: str,
    *,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> Dataset:
    """Loads an image-classification dataset from TensorFlow Datasets into memory.

    The official ``validation`` split is used when the dataset has one; otherwise one is carved
    from train. Images of varying size need ``image_size`` (they are resized to a square).

    Args:
        name: the TFDS name, e.g. ``"oxford_flowers102"`` or ``"cifar10"``.
        image_size: resize every image to this square size (required for varying sizes).
        val_fraction: share of train held out when there is no validation split.
        seed: draws that split.
        data_dir: TFDS data_dir (default: ``<data dir>/tensorflow_datasets``).
        download: let TFDS download and prepare the dataset when missing.
        image_key, label_key: feature names of the image and the label.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = prepared_builder(name, data_dir=data_dir, download=download)

    # The split names come from the prepared dataset's metadata; when it has none (not prepared,
    # or faked by tfds.testing.mock_data in the tests) assume the usual train and test.
    splits = set(builder.info.splits.keys()) or {"train", "test"}
    label_feature = builder.info.features[label_key]
    class_names = list(getattr(label_feature, "names", [str(i) for i in range(label_feature.num_classes)]))

    def to_numpy(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        def prepare(example):
            image = example[image_key]
            if image_size:
                image = tf.cast(tf.image.resize(image, (image_size, image_size)), tf.uint8)
            return image, example[label_key]
        images, labels = [], []
        for image, label in tfds.as_numpy(ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)):
            images.append(image)
            labels.append(label)
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"TFDS {name!r} has images of several sizes; pass image_size to resize them.")
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    x_train, y_train = to_numpy("train")
    val_split = next((s for s in ("validation", "val") if s in splits), None)
    if val_split:
        x_val, y_val = to_numpy(val_split)
    else:
        x_train, y_train, x_val, y_val = carve_validation(x_train, y_train, val_fraction, seed)
    if "test" not in splits:
        raise ValueError(f"TFDS {name!r} has no test split (splits: {sorted(splits)}).")
    x_test, y_test = to_numpy("test")
    return Dataset(
        name=f"tfds:{name}", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=y_test, class_names=class_names,
        source={"tfds": name, "version": str(builder.info.version), "image_size": image_size,
                "val": val_split or f"carved {val_fraction} seed {seed}"},
    )


def prepared_builder(name: str, *, data_dir: str | Path | None = None, download: bool = True):
    """Returns the TFDS builder of ``name``, downloaded and prepared under the kit's data folder.

    Raises:
        ValueError: TFDS has no such dataset.
        DatasetNotAvailableError: it is not prepared and cannot be downloaded (offline).
    """
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir) if data_dir else paths.data_dir() / "tensorflow_datasets"
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except Exception as error:  # tfds raises its own DatasetNotFoundError with suggestions
        raise ValueError(f"TensorFlow Datasets has no dataset {name!r}: {error}") from error
    if download:
        try:
            builder.download_and_prepare()
        except Exception as error:  # network errors surface as many types inside tfds
            raise DatasetNotAvailableError(
                f"Could not download or prepare TFDS dataset {name!r} into {data_dir} ({error}). "
                f"If this machine is offline, prepare it elsewhere with tfds and copy {data_dir / name} here."
            ) from error
    elif not Path(builder.data_dir).exists():
        raise DatasetNotAvailableError(f"TFDS dataset {name!r} is not prepared under {data_dir}.")
    return builder
