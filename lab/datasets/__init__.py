"""One registry of datasets and one way to load them: ``load_dataset(name, ...)``.

Names:
    digits, shapes                      embedded, offline (scikit-learn digits; generated shapes)
    mnist, fashion_mnist, cifar10,
    cifar100, cifar100_coarse           Keras datasets (validation carved from train)
    bloodmnist, pathmnist, ...          every 2D MedMNIST flag, ``size`` 28/64/128/224
    tfds:<name>                         any TensorFlow Datasets image-classification set
    folder:<path>                       an image folder (see ``load_image_folder``)
    npz:<path>                          your own MedMNIST-format npz (see ``load_npz``)

Arrays already in memory become a Dataset with ``from_arrays``.

Data larger than memory: ``lab.datasets.streaming.open_stream`` opens the same names (but the
keras and embedded ones, which are small) for reading a chunk at a time, and ``estimate_nbytes``
says from the registry's metadata alone (no image read) how much memory a dataset's images
would take, which a run's ``data_path="auto"`` compares with ``STREAM_ABOVE_BYTES``.
"""

from __future__ import annotations

import difflib
import json

import numpy as np

from lab.datasets.base import SPLITS, Dataset, carve_validation
from lab.datasets.embedded import SHAPE_CLASSES, load_digits, load_shapes
from lab.datasets.folders import load_image_folder
from lab.datasets.keras_datasets import load_keras_dataset
from lab.datasets.medmnist import flags_2d, load_medmnist, load_npz
from lab.datasets.tfds import load_tfds

__all__ = [
    "DATA_FIELDS", "Dataset", "SEGMENTATION_DATA_FIELDS", "SPLITS", "SHAPE_CLASSES", "STREAM_ABOVE_BYTES",
    "carve_validation", "data_fields", "data_key",
    "estimate_nbytes", "from_arrays", "list_datasets", "load_data", "load_dataset", "load_digits", "load_image_folder",
    "load_keras_dataset", "load_medmnist", "load_npz", "load_shapes", "load_tfds",
]

EMBEDDED = ("digits", "shapes")
# The configuration fields that decide which data a run loads, and the loader argument each
# becomes. ``load_data`` reads exactly these, and ``data_key`` compares exactly these, so runs
# of a sweep or a search that agree on them can share one load and no others do.
DATA_FIELDS = {"dataset": "name", "dataset_size": "size", "dataset_resize": "resize_to", "num_classes": "num_classes",
               "limit": "limit", "val_fraction": "val_fraction", "split_fractions": "split_fractions",
               "color_mode": "color_mode", "seed": "seed"}
# What a SegmentationConfig adds to them: the background class and the mask-folder options
# (``lab.datasets.segmentation.FOLDER_OPTIONS``), each the loader argument of its name.
SEGMENTATION_DATA_FIELDS = {field: field for field in (
    "background_class", "tile_size", "tile_margin", "class_names", "class_values",
    "mask_suffix", "images_dir", "masks_dir")}
KERAS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "cifar100_coarse")
# The image side of the sets that come in one size. ``size`` cannot change it, so any other
# ``size`` is refused rather than recorded as if the data had been loaded at it.
FIXED_SIZES = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "cifar100_coarse": 32}


def list_datasets() -> list[str]:
    """Returns every registered dataset name (plus the ``tfds:`` and ``folder:`` prefixes)."""
    return [*EMBEDDED, *KERAS, *flags_2d(), "tfds:<name>", "folder:<path>", "npz:<path>"]


def load_dataset(
    name: str,
    *,
    size: int | None = None,
    num_classes: int | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = True,
    **options,
) -> Dataset:
    """Loads a dataset by registry name, then applies the class subset and the size limit.

    Args:
        name: a registry name (see the module docstring).
        size: MedMNIST image size (28, 64, 128, 224); image side for tfds and folders;
            for shapes, the generated image side. The keras datasets and digits come in one
            size (``FIXED_SIZES``): leave it None (or that size) and resize in the pipeline
            with ``pipeline_size`` instead.
        num_classes: keep only this many classes, drawn by ``seed`` (labels remapped).
        limit: keep at most this many images per split (stratified, by ``seed``).
        val_fraction: share of train held out as validation where a dataset has no val split.
        seed: the seed of every random choice above.
        data_dir: cache directory (default: ``$LAB_DATA_DIR`` or ``data/``).
        download: allow downloads of missing files.
        **options: passed to the specific loader (e.g. ``label_mode``, ``split_fractions``).

    Raises:
        ValueError: an unknown name, listing the valid ones; a ``size`` the dataset cannot be
            loaded at; a ``limit`` smaller than the number of classes of a split.
    """
    name = name.strip()
    lowered = name.lower()
    if size is not None and lowered in FIXED_SIZES and size != FIXED_SIZES[lowered]:
        side = FIXED_SIZES[lowered]
        raise ValueError(
            f"{name!r} has a fixed image size of {side}x{side}, received size={size} (dataset_size). Leave size and "
            f"dataset_size unset and set pipeline_size={size} to resize the images in the pipeline instead."
        )
    if lowered == "digits":
        dataset = load_digits(seed=seed, **options)
    elif lowered == "shapes":
        dataset = load_shapes(seed=seed, **({"image_size": size} if size else {}), **options)
    elif lowered in KERAS:
        base, label_mode = ("cifar100", "coarse") if lowered == "cifar100_coarse" else (lowered, options.pop("label_mode", "fine"))
        dataset = load_keras_dataset(base, label_mode=label_mode, val_fraction=val_fraction, seed=seed,
                                     data_dir=data_dir, download=download, **options)
    elif lowered in flags_2d() or lowered.endswith("mnist3d") or lowered == "chestmnist":
        dataset = load_medmnist(lowered, size=28 if size is None else size, data_dir=data_dir, download=download,
                                **options)
    elif lowered.startswith("tfds:"):
        dataset = load_tfds(name[5:], image_size=size, val_fraction=val_fraction, seed=seed,
                            data_dir=data_dir, download=download, **options)
    elif lowered.startswith("folder:"):
        dataset = load_image_folder(name[7:], **({"image_size": size} if size else {}), seed=seed, **options)
    elif lowered.startswith("npz:"):
        dataset = load_npz(name[4:], size=size, **options)
    else:
        close = difflib.get_close_matches(lowered, list_datasets(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}.{hint} Available: {', '.join(list_datasets())}.")
    if num_classes is not None:
        dataset = dataset.subset_classes(num_classes, seed=seed)
    dataset = dataset.limit(limit, seed=seed)
    dataset.source = {**dataset.source, "loaded_as": name}  # the registry name, which a run record names
    return dataset


# Above this many bytes of images, a run with data_path="auto" streams its data from TFRecords
# instead of loading it. Colab gives 12 GB of RAM, and an in-memory run holds the arrays and the
# pipeline's copy of them (from_tensor_slices, the cache), two to three times the images: 2 GiB
# keeps that well inside. PathMNIST at 28, 64 px (0.25, 1.3 GB) loads; at 128, 224 px (5.3,
# 16 GB) streams.
STREAM_ABOVE_BYTES = 2 * 2**30
# Image bytes of the datasets that come in one size (all well below the threshold).
_FIXED_BYTES = {"digits": 1797 * 64 * 8, "mnist": 70_000 * 28 * 28, "fashion_mnist": 70_000 * 28 * 28,
                "cifar10": 60_000 * 32 * 32 * 3, "cifar100": 60_000 * 32 * 32 * 3,
                "cifar100_coarse": 60_000 * 32 * 32 * 3}


def estimate_nbytes(name: str, *, size: int | None = None, limit: int | None = None,
                    data_dir: str | None = None) -> int | None:
    """The bytes a dataset's uint8 images would take in memory, without loading any image.

    From the registry (MedMNIST's split sizes), an npz's array headers, a folder's file count
    (times ``size``, default 224, squared, 3 channels) or a prepared TFDS dataset's metadata.
    ``limit`` caps each split; a class subset is not counted (the estimate is then high).

    Returns:
        The estimate, or None where it cannot be had without loading (``shapes``, a TFDS
        dataset that is not prepared, images of varying size).
    """
    lowered = name.strip().lower()
    splits: list[int] = []
    image_bytes = 0
    if lowered in _FIXED_BYTES:
        return _FIXED_BYTES[lowered]
    if lowered in flags_2d():
        from lab.datasets.medmnist import registry

        meta = registry()[lowered]
        side = size or 28
        splits, image_bytes = list(meta["n_samples"].values()), side * side * int(meta["n_channels"])
    elif lowered.startswith("npz:"):
        from lab.datasets.sources import npz_members

        try:
            members = npz_members(name.strip()[4:])
        except (OSError, ValueError):
            return None  # the loader names what is wrong with the file
        images = [members[f"{s}_images"] for s in SPLITS if f"{s}_images" in members]
        splits = [m.shape[0] for m in images]
        image_bytes = int(np.prod(images[0].shape[1:])) * images[0].dtype.itemsize if images else 0
    elif lowered.startswith("folder:"):
        from lab.datasets.folders import count_folder_images

        side = size or 224
        # The split is not known before listing the classes; one "split" of every image.
        splits, image_bytes = [count_folder_images(name.strip()[7:])], side * side * 3
    elif lowered.startswith("tfds:"):
        return _tfds_nbytes(name.strip()[5:], size, limit, data_dir)
    else:
        return None
    if limit is not None:
        splits = [min(count, limit) for count in splits] if not lowered.startswith("folder:") else \
            [min(splits[0], 3 * limit)]
    return int(sum(splits)) * image_bytes


def _tfds_nbytes(name: str, size: int | None, limit: int | None, data_dir: str | None) -> int | None:
    """From a prepared TFDS dataset's dataset_info.json; None when it is not prepared."""
    try:
        import tensorflow_datasets as tfds

        from lab import paths

        builder = tfds.builder(name, data_dir=str(data_dir or paths.data_dir() / "tensorflow_datasets"))
        counts = [split.num_examples for split in builder.info.splits.values()]
        shape = tuple(builder.info.features["image"].shape)
    except Exception:  # any failure only means "unknown": the loader reports the real problem
        return None
    if not counts:
        return None
    if size:
        shape = (size, size, shape[-1])
    if any(d is None for d in shape):
        return None
    return int(sum(min(c, limit) if limit else c for c in counts)) * int(np.prod(shape))


def load_data(config):
    """Loads the data a run configuration names: a classification ``Dataset`` for a
    ``RunConfig``, a ``SegmentationDataset`` (images and masks) for a ``SegmentationConfig``.
    Only the ``DATA_FIELDS`` of the configuration are read (and a segmentation configuration's
    ``SEGMENTATION_DATA_FIELDS``)."""
    values = {argument: getattr(config, field) for field, argument in data_fields(config).items()
              if getattr(config, field, None) is not None}
    name = values.pop("name")
    if config.task == "classification":
        return load_dataset(name, **values)
    from lab.datasets.segmentation import load_segmentation_dataset

    return load_segmentation_dataset(name, **values)


def data_fields(config) -> dict[str, str]:
    """The configuration fields that choose a run's data, each with the loader argument it becomes."""
    return DATA_FIELDS if config.task == "classification" else DATA_FIELDS | SEGMENTATION_DATA_FIELDS


def data_key(config) -> tuple:
    """What decides the data a configuration loads: equal keys, the same data (hashable: lists and
    dicts such as class_values become their JSON text)."""
    values = (getattr(config, field, None) for field in data_fields(config))
    return (config.task == "classification",
            *(json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else v for v in values))


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "arrays",
) -> Dataset:
    """Wraps NumPy arrays as a Dataset, carving a validation split from train if none is given.

    A run on it records ``name`` as its dataset, with the arrays' content hash. Without
    ``class_names`` the classes are numbered from 0 to the largest label found, which is wrong
    when the largest classes have no image here: pass the names then (the record says whether
    they were given or inferred). Two classes make a ``"binary-class"`` task.
    """
    y_train = np.asarray(y_train).reshape(len(y_train), -1)[:, 0] if np.ndim(y_train) == 2 else np.asarray(y_train)
    if x_val is None or y_val is None:
        x_train, y_train, x_val, y_val = carve_validation(np.asarray(x_train), y_train, val_fraction, seed)
    inferred = class_names is None
    if inferred:
        top = max(int(np.max(y_train)), int(np.max(y_val)), int(np.max(y_test))) + 1
        class_names = [str(i) for i in range(top)]
    return Dataset(name=name, x_train=np.asarray(x_train), y_train=y_train, x_val=np.asarray(x_val),
                   y_val=np.asarray(y_val), x_test=np.asarray(x_test), y_test=np.asarray(y_test),
                   class_names=list(class_names), task="binary-class" if len(class_names) == 2 else "multi-class",
                   source={"origin": "arrays", "loaded_as": name, "class_names": "inferred" if inferred else "given"})
