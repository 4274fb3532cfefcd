"""Oxford-IIIT Pet from TensorFlow Datasets, its trimaps as classes (``load_oxford_pets``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lab.data.datasets.segmentation.dataset import SegmentationDataset, _split_indices

PET_CLASSES = ("background", "pet", "border")


def trimap_to_classes(trimap: np.ndarray, border: str = "class") -> np.ndarray:
    """Maps Oxford-IIIT Pet trimaps (1 pet, 2 background, 3 border) to class ids.

    Args:
        trimap: uint8 values 1, 2, 3.
        border: "class" (background 0, pet 1, border 2), "pet" (the border counted as pet) or
            "background" (the border counted as background); the last two give two classes.
    """
    trimap = np.asarray(trimap)
    unknown = np.setdiff1d(np.unique(trimap), [1, 2, 3])
    if unknown.size:
        raise ValueError(f"Oxford-IIIT Pet trimaps hold 1 (pet), 2 (background) and 3 (border), received the "
                         f"values {unknown[:10].tolist()}.")
    border_id = {"class": 2, "pet": 1, "background": 0}
    if border not in border_id:
        raise ValueError(f"border must be 'class', 'pet' or 'background', received {border!r}.")
    lookup = np.array([0, 1, 0, border_id[border]], dtype=np.uint8)
    return lookup[trimap]


def load_oxford_pets(
    *,
    dataset_size: int | tuple[int, int] = 128,
    border: str = "class",
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> SegmentationDataset:
    """Loads TFDS ``oxford_iiit_pet`` (3,680 train, 3,669 test images) with trimap classes.

    Images are resized to ``dataset_size`` (bilinear), trimaps with nearest neighbour, as the
    TensorFlow segmentation tutorial does (128x128). Validation is carved from train by ``seed``.

    Args:
        dataset_size: final side (or (height, width)).
        border: what the trimap's border becomes (see ``trimap_to_classes``).
        val_fraction: share of train held out for validation.
        seed: draws that split.
        data_dir: TFDS data_dir (default: ``<data dir>/tensorflow_datasets``).
        download: let TFDS download and prepare it when missing (about 800 MB).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from lab.data.datasets.tfds import prepared_builder

    size = (dataset_size, dataset_size) if isinstance(dataset_size, int) else tuple(dataset_size)
    trimap_to_classes(np.array([1, 2, 3]), border)  # validates ``border`` before any work
    builder = prepared_builder("oxford_iiit_pet", data_dir=data_dir, download=download)

    def to_numpy(split: str) -> tuple[np.ndarray, np.ndarray]:
        def prepare(example):
            image = tf.image.resize(example["image"], size, method="bilinear")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            mask = tf.image.resize(example["segmentation_mask"], size, method="nearest")
            return image, mask[..., 0]

        ds = builder.as_dataset(split=split, shuffle_files=False)
        images, masks = [], []
        for image, mask in tfds.as_numpy(ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)):
            images.append(image)
            masks.append(mask)
        if not images:
            raise ValueError(f"TFDS 'oxford_iiit_pet' split {split!r} is empty.")
        return np.stack(images), trimap_to_classes(np.stack(masks), border)

    x_train, masks_train = to_numpy("train")
    train_idx, val_idx = _split_indices(len(x_train), val_fraction, seed)
    x_test, masks_test = to_numpy("test")
    class_names = list(PET_CLASSES) if border == "class" else ["background", "pet"]
    return SegmentationDataset(
        name="tfds:oxford_iiit_pet", x_train=x_train[train_idx], masks_train=masks_train[train_idx],
        x_val=x_train[val_idx], masks_val=masks_train[val_idx], x_test=x_test, masks_test=masks_test,
        class_names=class_names,
        source={"tfds": "oxford_iiit_pet", "version": str(builder.info.version), "image_size": list(size),
                "border": border, "val": f"carved {val_fraction} seed {seed}"},
    )
