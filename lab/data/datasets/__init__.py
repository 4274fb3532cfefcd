"""One registry of datasets and one way to load them: ``load_dataset(name, ...)``.

Names:
    digits, shapes                      embedded, offline (scikit-learn digits; generated shapes)
    mnist, fashion_mnist, cifar10,
    cifar100, cifar100_coarse           Keras datasets (validation carved from train)
    bloodmnist, pathmnist, ...          every 2D MedMNIST flag, ``size`` 28/64/128/224
    tfds:<name>                         any TensorFlow Datasets image-classification set
    folder:<path>                       an image folder (see ``load_image_folder``)
    npz:<path>                          your own MedMNIST-format npz (see ``load_npz``)

Every name is a row of one table (``lab.data.datasets.registry``: kind, tasks, classes, sizes,
splits, url and checksum), found by ``find_source``. Each kind has one reader: MedMNIST, npz,
folders and TFDS yield a ``StreamSource`` read a chunk at a time (``STREAMED_KINDS``), which
``load_dataset`` cuts to the class subset and the limit and then collects into memory; the
keras and embedded sets, which are small, are read whole.

Arrays already in memory become a Dataset with ``from_arrays``.

Data larger than memory: ``lab.data.datasets.streaming.open_stream`` opens the same streams without
collecting them, and ``estimate_nbytes`` says from the table alone (no image read) how much
memory a dataset's images would take, which a run's ``data_path="auto"`` compares with
``STREAM_ABOVE_BYTES``.
"""

from __future__ import annotations

import json

import numpy as np

from lab.data.datasets.base import SPLITS, Dataset, carve_validation
from lab.data.datasets.embedded import SHAPE_CLASSES, load_digits, load_shapes
from lab.data.datasets.folders import load_image_folder, stream_image_folder
from lab.data.datasets.keras_datasets import load_keras_dataset
from lab.data.datasets.medmnist import load_medmnist, load_npz, stream_medmnist, stream_npz
from lab.data.datasets.registry import find_source, list_sources
from lab.data.datasets.sources import StreamSource
from lab.data.datasets.tfds import load_tfds, stream_tfds

__all__ = [
    "DATA_FIELDS", "Dataset", "SEGMENTATION_DATA_FIELDS", "SPLITS", "SHAPE_CLASSES", "STREAM_ABOVE_BYTES",
    "STREAMED_KINDS", "carve_validation", "data_fields", "data_key", "estimate_nbytes", "find_source", "from_arrays",
    "list_datasets", "load_data", "load_dataset", "load_digits", "load_image_folder", "load_keras_dataset",
    "load_medmnist", "load_npz", "load_shapes", "load_tfds", "open_source",
]

# The configuration fields that decide which data a run loads, and the loader argument each
# becomes. ``load_data`` reads exactly these, and ``data_key`` compares exactly these, so runs
# of a sweep or a search that agree on them can share one load and no others do.
DATA_FIELDS = {"dataset": "name", "dataset_size": "size", "dataset_resize": "resize_to", "num_classes": "num_classes",
               "limit": "limit", "val_fraction": "val_fraction", "split_fractions": "split_fractions",
               "color_mode": "color_mode", "seed": "seed"}
# What a SegmentationConfig adds to them: the background class and the mask-folder options
# (``lab.data.datasets.segmentation.FOLDER_OPTIONS``), each the loader argument of its name.
SEGMENTATION_DATA_FIELDS = {field: field for field in (
    "background_class", "tile_size", "tile_margin", "class_names", "class_values",
    "mask_suffix", "images_dir", "masks_dir")}
def list_datasets() -> list[str]:
    """Returns every registered dataset name (plus the ``tfds:``, ``folder:`` and ``npz:`` prefixes)."""
    return list_sources("classification")


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

    The sets read a chunk at a time (MedMNIST, npz, folders, TFDS) are opened as a stream
    (``open_source``), cut to the class subset and the limit from their labels, and only the
    images kept are read into memory (``StreamSource.collect``).

    Args:
        name: a registry name (see the module docstring).
        size: MedMNIST image size (28, 64, 128, 224); image side for tfds and folders;
            for shapes, the generated image side. The keras datasets and digits come in one
            size (the registry's ``sizes``): leave it None (or that size) and resize in the
            pipeline with ``pipeline_size`` instead.
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
    data = open_source(name, size=size, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                       download=download, **options)
    data = subset_and_limit(data, name, num_classes=num_classes, limit=limit, seed=seed)
    return data.collect() if isinstance(data, StreamSource) else data


def subset_and_limit(data, name: str, *, num_classes: int | None, limit: int | None, seed: int):
    """Applies the class subset and the limit to a ``Dataset`` or a ``StreamSource`` (both choose
    from the labels alone, so they keep the same images) and records the registry name."""
    if num_classes is not None:
        data = data.subset_classes(num_classes, seed=seed)
    data = data.limit(limit, seed=seed)
    data.source = {**data.source, "loaded_as": name.strip()}  # the registry name, which a run record names
    return data


def open_source(name: str, *, size: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                data_dir: str | None = None, download: bool = True, **options) -> Dataset | StreamSource:
    """The data of a registry name as its kind's reader gives it: a ``StreamSource`` for the sets
    read a chunk at a time (``STREAMED_KINDS``), a ``Dataset`` for the small ones read whole.

    Arguments as ``load_dataset`` (no class subset or limit).
    """
    source, argument = find_source(name, "classification")
    fixed = source.fixed_size
    if size is not None and fixed is not None and size != fixed:
        raise ValueError(
            f"{name.strip()!r} has a fixed image size of {fixed}x{fixed}, received size={size} (dataset_size). Leave "
            f"size and dataset_size unset and set pipeline_size={size} to resize the images in the pipeline instead."
        )
    sized = {"dataset_size": size} if size else {}
    if source.kind == "digits":
        return load_digits(seed=seed, **options)
    if source.kind == "shapes":
        return load_shapes(seed=seed, **sized, **options)
    if source.kind == "keras":
        return load_keras_dataset(source.base or source.name, **{**options, **source.options},
                                  val_fraction=val_fraction, seed=seed, data_dir=data_dir, download=download)
    if source.kind == "medmnist":
        return stream_medmnist(source.name, size=28 if size is None else size, data_dir=data_dir, download=download,
                               **options)
    if source.kind == "npz":
        return stream_npz(argument, size=size, **options)
    if source.kind == "tfds":
        return stream_tfds(argument, dataset_size=size, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                           download=download, **options)
    return stream_image_folder(argument, **sized, seed=seed, **options)  # "folder", the last of READ_KINDS


# The classification kinds whose reader yields a stream (a chunk of images at a time), and those
# read whole (small: at most 180 MB); ``open_source`` has a reader for each.
STREAMED_KINDS = ("medmnist", "npz", "tfds", "folder")
READ_KINDS = ("digits", "shapes", "keras", *STREAMED_KINDS)
# Above this many bytes of images, a run with data_path="auto" streams its data from TFRecords
# instead of loading it. Colab gives 12 GB of RAM, and an in-memory run holds the arrays and the
# pipeline's copy of them (from_tensor_slices, the cache), two to three times the images: 2 GiB
# keeps that well inside. PathMNIST at 28, 64 px (0.25, 1.3 GB) loads; at 128, 224 px (5.3,
# 16 GB) streams.
STREAM_ABOVE_BYTES = 2 * 2**30


def estimate_nbytes(name: str, *, size: int | None = None, limit: int | None = None,
                    data_dir: str | None = None) -> int | None:
    """The bytes a dataset's uint8 images would take in memory, without loading any image.

    From the registry's split sizes, channels and image sides (the keras sets, digits, MedMNIST),
    an npz's array headers, a folder's file count (times ``size``, default 224, squared, 3
    channels) or a prepared TFDS dataset's metadata. ``limit`` caps each split; a class subset
    is not counted (the estimate is then high).

    Returns:
        The estimate, or None where it cannot be had without loading (``shapes``, a TFDS
        dataset that is not prepared, images of varying size).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    source, argument = find_source(name, "classification")
    if source.splits is not None and source.channels is not None and source.sizes is not None:
        side = size or source.sizes[0]
        splits, image_bytes = list(source.splits.values()), side * side * source.channels
        # Digits are split by fractions: its one published "split" is all its images.
        if limit is not None and "all" not in source.splits:
            splits = [min(count, limit) for count in splits]
        return int(sum(splits)) * image_bytes
    if source.kind == "npz":
        from lab.data.datasets.sources import npz_members

        try:
            members = npz_members(argument)
        except (OSError, ValueError):
            return None  # the loader names what is wrong with the file
        images = [members[f"{s}_images"] for s in SPLITS if f"{s}_images" in members]
        splits = [m.shape[0] for m in images]
        image_bytes = int(np.prod(images[0].shape[1:])) * images[0].dtype.itemsize if images else 0
        splits = splits if limit is None else [min(count, limit) for count in splits]
        return int(sum(splits)) * image_bytes
    if source.kind == "folder":
        from lab.data.datasets.folders import count_folder_images

        side = size or 224
        # The split is not known before listing the classes: every image, at most three limits.
        count = count_folder_images(argument)
        return (count if limit is None else min(count, 3 * limit)) * side * side * 3
    if source.kind == "tfds":
        return _tfds_nbytes(argument, size, limit, data_dir)
    return None


def _tfds_nbytes(name: str, size: int | None, limit: int | None, data_dir: str | None) -> int | None:
    """From a prepared TFDS dataset's dataset_info.json; None when it is not prepared."""
    try:
        import tensorflow_datasets as tfds

        from lab.system import paths

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
    from lab.data.datasets.segmentation import load_segmentation_dataset

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
