"""TensorFlow Datasets by name, cached under the kit's data directory.

Versions. TFDS keeps each prepared dataset in ``<data_dir>/<name>[/<config>]/<version>/`` with
its own ``dataset_info.json`` (version, splits, example counts, download checksums). The kit
asks for the version the installed TFDS release defines for the dataset (its canonical
version), or the one the name pins (``"mnist:3.0.1"``, ``"mnist:3.*.*"``: TFDS's syntax), and
records in ``Dataset.source`` the name, the config, the version and the splits actually read,
so a run record (and the fingerprint of a TFRecord export) says which data it used.

A prepared folder of another version is never used in its place. What TFDS 4.9 guarantees
itself (read in ``tensorflow_datasets/core/load.py``, ``dataset_builder.py``,
``dataset_info.py`` and ``utils/file_utils.py``), and what the kit adds:

- No version pinned: TFDS builds the dataset's code builder at its canonical version and,
  with an explicit ``data_dir`` (the kit always passes one), reads only
  ``<data_dir>/<name>/<config>/<canonical version>/`` (``get_data_dir_and_dataset_dir``
  searches no other folder). If that folder's ``dataset_info.json`` holds another version (a
  folder renamed by hand), ``DatasetInfo.read_from_directory`` raises an ``AssertionError``
  ("Builder version: ... Proto version: ..."), which ``prepared_builder`` turns into a
  ``ValueError`` naming the folder and both versions.
- A version pinned: TFDS first tries a read-only builder made from the prepared files
  (``read_only_builder.builder_from_files``). That builder takes its version from the
  folder's ``dataset_info.json`` and does not compare it with the folder's name, so a folder
  ``2.0.0`` holding version 1.0.0 would be used as asked; ``prepared_builder`` refuses it
  (folder name, recorded version and the version asked for must agree) and names all three.
- Only other versions prepared: with ``download=False`` ``prepared_builder`` refuses, naming
  the versions found and the one asked for (and how to pin one of them); with
  ``download=True`` TFDS prepares the version asked for beside them, and a failed download
  names them too.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lab.system import paths
from lab.data.datasets.base import Dataset, carve_validation
from lab.system.download import DatasetNotAvailableError, download_settings


def load_tfds(name: str, **options: Any) -> Dataset:
    """Loads an image-classification dataset from TensorFlow Datasets into memory: what
    ``stream_tfds`` reads (same arguments and errors), collected."""
    return stream_tfds(name, **options).collect()


def tfds_source(builder) -> dict[str, str | None]:
    """What a loader records of a prepared TFDS dataset: its name, config and version."""
    return {"tfds": builder.name, "config": builder.builder_config_name, "version": str(builder.version)}


def prepared_builder(name: str, *, data_dir: str | Path | None = None, download: bool = True):
    """Returns the TFDS builder of ``name``, downloaded and prepared under the kit's data folder.

    Args:
        name: the TFDS name, optionally with a config and a version (``"name/config:1.2.3"``).
        data_dir: TFDS data_dir (default: ``<data dir>/tensorflow_datasets``).
        download: let TFDS download and prepare the version asked for when it is missing.

    Raises:
        ValueError: TFDS has no such dataset or cannot read the version pinned, or the
            prepared folder holds another version than its name and the one asked for.
        DatasetNotAvailableError: the version asked for is not prepared and cannot be
            downloaded (offline, or ``download=False``); names the versions that are prepared.
    """
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir) if data_dir else paths.data_dir() / "tensorflow_datasets"
    dataset_name, pinned = tfds.core.naming.parse_builder_name_kwargs(name)
    folder = data_dir / str(dataset_name.name)
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except tfds.core.DatasetNotFoundError as error:  # its message carries TFDS's suggestions
        raise ValueError(f"TensorFlow Datasets has no dataset {name!r}: {error}") from error
    except AssertionError as error:
        # TFDS's version checks (see the module docstring): a pinned version it cannot read, or
        # a prepared folder whose dataset_info.json holds another version than the folder it reads.
        raise ValueError(
            f"TFDS refuses {name!r} under {folder}: {error}. The kit never uses a prepared dataset of another "
            f"version than the one asked for: delete the folder of the version asked for under {folder} (it is "
            f"prepared again with download=True), or ask for a version that is prepared there by name "
            f"('{dataset_name.name}:<version>')."
        ) from error
    _check_version(builder, name, pinned.get("version"))
    asked = str(builder.version)
    if download:
        try:
            with bounded_downloads():
                builder.download_and_prepare()
        except Exception as error:  # network errors surface as many types inside tfds
            raise DatasetNotAvailableError(
                f"Could not download or prepare TFDS dataset {name!r} version {asked} into {data_dir} ({error}). "
                f"If this machine is offline, prepare it elsewhere with tfds and copy {folder} "
                f"here.{_other_versions(builder)}"
            ) from error
    elif not builder.is_prepared():
        raise DatasetNotAvailableError(
            f"TFDS dataset {name!r} version {asked} is not prepared under {data_dir} (no {builder.data_dir}/"
            f"dataset_info.json). Prepare it with download=True.{_other_versions(builder)}")
    return builder



@contextlib.contextmanager
def bounded_downloads() -> Iterator[None]:
    """Within this block, each HTTP request TFDS makes waits at most ``LAB_DOWNLOAD_TIMEOUT`` seconds.

    TFDS downloads with ``requests`` and no timeout, so a network that accepts connections and never
    answers would stall a preparation forever. Its own retries, checksums and resume are kept: the
    kit adds only the timeout, through the one function TFDS opens every URL with.
    """
    from tensorflow_datasets.core.download import downloader

    timeout, _ = download_settings()
    open_url = downloader._open_url

    def bounded(url: str, **kwargs: Any):
        if url.startswith("http"):  # ftp goes through urllib, which takes no keywords there
            kwargs.setdefault("timeout", timeout)
        return open_url(url, **kwargs)

    downloader._open_url = bounded
    try:
        yield
    finally:
        downloader._open_url = open_url


def _check_version(builder, name: str, pinned: str | None) -> None:
    """Refuses a builder whose prepared folder, recorded version and version asked for disagree."""
    folder = Path(builder.data_dir)
    info = folder / "dataset_info.json"
    recorded = None
    if info.is_file():
        try:
            recorded = json.loads(info.read_text(encoding="utf-8")).get("version")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise ValueError(f"The prepared TFDS dataset {folder} has an unreadable {info.name} ({error}). "
                             f"Delete {folder}; it is prepared again with download=True.") from error
    version = str(builder.version)
    problems = []
    if recorded is not None and recorded != folder.name:
        problems.append(f"its {info.name} records version {recorded} but the folder is named {folder.name}")
    if pinned is not None and not builder.version.match(pinned):
        problems.append(f"TFDS gave version {version} for the {pinned} asked for")
    if problems:
        raise ValueError(
            f"The prepared TFDS dataset {folder} is not the {name!r} asked for: {'; '.join(problems)}. The kit "
            f"never uses a prepared dataset of another version than the one asked for: delete {folder} (it is "
            f"prepared again with download=True) or ask for the version it holds.")


def prepared_versions(builder) -> list[str]:
    """The versions of the builder's dataset (and config) prepared beside the one it reads."""
    folder = Path(builder.data_dir).parent
    if not folder.is_dir():
        return []
    found = [entry.name for entry in folder.iterdir() if (entry / "dataset_info.json").is_file()]
    return sorted(found, key=lambda version: [int(part) if part.isdigit() else -1 for part in version.split(".")])


def _other_versions(builder) -> str:
    """A sentence naming the other prepared versions, which the kit does not use in place of the one asked for."""
    asked = str(builder.version)
    others = [version for version in prepared_versions(builder) if version != asked]
    if not others:
        return ""
    config = f"/{builder.builder_config_name}" if builder.builder_config_name else ""
    return (f" Prepared there: version {', '.join(others)} of {builder.name}{config}, not the {asked} asked for; "
            f"the kit does not use another version in its place. To use the prepared one, ask for it by name "
            f"('{builder.name}{config}:{others[-1]}'): TFDS then reads it from its files.")


def stream_tfds(
    name: str,
    *,
    dataset_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
    image_key: str = "image",
    label_key: str = "label",
):
    """The reader of TFDS: an image-classification dataset, each split streamed from the prepared dataset.

    The official ``validation`` split is used when the dataset has one; otherwise one is carved
    from train, drawn from the labels by ``seed``. The labels come from a first pass that skips
    decoding the images (``tfds.decode.SkipDecoding``); the images are then decoded (and
    resized) a chunk at a time when a split is read (``load_tfds`` collects them).

    Args:
        name: the TFDS name, e.g. ``"oxford_flowers102"`` or ``"cifar10"``; ``"name:1.2.3"`` or
            ``"name/config:1.2.3"`` pins a config and version (TFDS's syntax).
        dataset_size: resize every image to this square size (required for varying sizes).
        val_fraction: share of train held out when there is no validation split.
        seed: draws that split.
        data_dir: TFDS data_dir (default: ``<data dir>/tensorflow_datasets``).
        download: let TFDS download and prepare the dataset when missing.
        image_key, label_key: feature names of the image and the label.

    Returns:
        A ``lab.data.datasets.sources.StreamSource`` whose ``source`` records the TFDS name, config,
        version and the splits read (see the module docstring for how the version is chosen
        and checked).

    Raises:
        ValueError: no such dataset, a version that does not match, no test split, or images
            of varying size without ``dataset_size`` (known from the dataset's metadata,
            before any image is read).
        DatasetNotAvailableError: not prepared and cannot be downloaded.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from lab.data.datasets.sources import SplitSource, StreamSource

    builder = prepared_builder(name, data_dir=data_dir, download=download)
    splits = set(builder.info.splits.keys()) or {"train", "test"}
    label_feature = builder.info.features[label_key]
    class_names = list(getattr(label_feature, "names", [str(i) for i in range(label_feature.num_classes)]))
    if "test" not in splits:
        raise ValueError(f"TFDS {name!r} has no test split (splits: {sorted(splits)}).")
    feature = builder.info.features[image_key]
    height, width, channels = (tuple(feature.shape) + (None,) * 3)[:3]
    if dataset_size:
        height = width = dataset_size
    if height is None or width is None or channels is None:
        raise ValueError(f"TFDS {name!r} has images of several sizes; pass dataset_size to resize them.")
    shape = (int(height), int(width), int(channels))

    def labels_of(split: str) -> np.ndarray:
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
        ds = ds.map(lambda example: example[label_key], num_parallel_calls=tf.data.AUTOTUNE).batch(65536)
        parts = [batch for batch in tfds.as_numpy(ds)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def reader_of(split: str):
        def reader(chunk: int):
            ds = builder.as_dataset(split=split, shuffle_files=False)

            def prepare(example):
                image = example[image_key]
                if dataset_size:
                    image = tf.cast(tf.image.resize(image, (dataset_size, dataset_size)), tf.uint8)
                return image

            ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(chunk).prefetch(1)
            yield from tfds.as_numpy(ds)

        return reader

    def split_source(split: str) -> SplitSource:
        labels = labels_of(split)
        return SplitSource(count=len(labels), shape=shape, dtype="uint8", labels=labels, reader=reader_of(split))

    sources = {"train": split_source("train"), "test": split_source("test")}
    val_split = next((s for s in ("validation", "val") if s in splits), None)
    if val_split:
        sources["val"] = split_source(val_split)
    else:
        train = sources["train"]
        train_idx, y_train, val_idx, y_val = carve_validation(np.arange(train.count), train.labels, val_fraction, seed)
        sources["train"], sources["val"] = train.select(train_idx, y_train), train.select(val_idx, y_val)
    return StreamSource(
        name=f"tfds:{name}", class_names=class_names, task="multi-class",
        source={**tfds_source(builder), "image_size": dataset_size,
                "splits": {"train": "train", "val": val_split or f"carved {val_fraction} of train, seed {seed}",
                           "test": "test"}},
        splits={split: sources[split] for split in ("train", "val", "test")},
    )
