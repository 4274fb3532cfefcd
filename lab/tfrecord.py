"""Sharded TFRecord export and streaming reads of image-classification data.

An exported directory holds, for each split, a manifest and the shards it lists:

    train.manifest.json                 shape, dtype, encoding, compression, class names, the
                                        content hash and provenance of the data, and each
                                        shard's file name, example count, byte size and sha256
    train-<export id>-00000.tfrecord    up to ``images_per_shard`` examples each, in order
    train-<export id>-00001.tfrecord    (``.tfrecord.gz`` / ``.tfrecord.zlib`` when compressed)

Each record is a ``tf.train.Example`` with the features ``image`` (raw bytes or PNG),
``height``, ``width``, ``channels``, ``dtype`` and an int64 ``label``.

The manifest is the commit point. Every shard is written to a temporary file and renamed once
complete, and the manifest is written last, so nothing half-written is ever read:

- An export that fails part-way (an exception, Ctrl-C) deletes the shards it had finished and
  writes no manifest. Shard names carry a fresh export id, so re-exporting a split never
  overwrites the previous export's shards: until the new manifest replaces the old one, the
  old export stays complete and readable; afterwards every shard the old manifest listed is
  deleted, whatever the two shard counts, so a re-export leaves exactly its own shards.
- An export that is killed outright (SIGKILL, power loss) leaves at worst some finished shards
  and ``.tmp-*`` files that no manifest lists; readers ignore them and they can be deleted.
  They are not swept up automatically: they cannot be told apart from the shards of another
  export of the split that is still being written into the same directory.

Provenance. ``export_dataset`` records in each split's manifest what the shards were made
from: the dataset's name and a fingerprint (facts given by the caller, by default the
dataset's task, split sizes and ``source``; a check must be given the same kind), next to the
image shape, dtype, class names, image count and ``content_sha256``, a sha256 of the split's
images and labels. ``check_provenance`` compares all of these with the in-memory dataset of a
run and refuses shards exported from other data (another dataset, seed, limit, image size...)
with a ``ValueError`` naming both sides of each difference, before any shard is read. The
content hash covers every byte of the arrays, not a sample: on 60,000 32x32x3 uint8 images
(176 MB) it takes 0.14 s (one CPU core with SHA instructions), once at export and once per
check. A 1-in-97 strided sample takes 0.015 s but misses a change confined to a few pixels,
and 0.14 s is small next to loading the data.

Integrity. Each shard's sha256 is stored at export. ``read_tfrecords`` and
``make_tfrecord_pipeline`` check every shard's size and, unless ``verify_checksums=False``,
its sha256 when the dataset is created, so a shard damaged in place (same size, other bytes)
or swapped for another one of the same size is refused by name before training starts: inside
``Model.fit`` TensorFlow would only report ``corrupted record at <offset>``, without the file.
This costs one sequential read of the shards per pipeline created (not per epoch): for the
60,000-image export above (15 shards, 183 MB) 0.13 s from the page cache and 0.23 s with the
shards evicted from it, against 2.9 s to read one epoch (2 CPU cores, virtual disk). Hashing
the shards at export adds 0.16 s to a 1.6 s export. Damage done after the pipeline was created
is still only seen by TensorFlow, without the file name; ``verify_tfrecords`` then finds the
shard. Manifests of format version 1 (written before these checks) carry no checksums: they
are still read, unverified, and ``check_provenance`` refuses them.

Reading streams: ``read_tfrecords`` interleaves over the shard files and parses one record at a
time, so memory is bounded by small per-stage buffers (plus the shuffle buffer of a training
pipeline), not by the size of the data; ``benchmarks/streaming_memory.py`` measures a whole run.

Datasets larger than memory. ``export_stream`` converts a ``lab.datasets.sources.StreamSource``
(an npz read a chunk at a time, an image folder file by file, a TFDS dataset streamed) holding
one chunk of images at a time, with the same manifests ``export_dataset`` writes; both also
write ``dataset.json`` last, the whole export's commit point (name, class names, source,
fingerprint, summary, the ``Dataset.content_hash()`` of the data and each split's manifest
hash) and ``labels.npz``. ``open_export`` opens such an export as a ``StreamedDataset``, which a
run trains, evaluates and predicts from (``RunConfig.data_path="stream"``); ``check_export``
refuses an export of other data by its fingerprint, without reading the data.

Errors:
    FileNotFoundError: the manifest or a shard it lists is missing (names the file).
    tf.errors.DataLossError: a shard whose size or sha256 differs from its manifest entry
        (truncated, replaced or damaged in place), raised by ``read_tfrecords`` and
        ``make_tfrecord_pipeline`` themselves and naming the shard.
    ValueError: from ``check_provenance``, shards exported from other data than the run's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import keras

from lab.atomic import atomic_path, json_default, write_json
from lab.pipeline import AUTOTUNE, batch_and_finish, check_batching, prepare_images

if TYPE_CHECKING:
    from lab.datasets import Dataset

__all__ = [
    "COMPRESSIONS", "DATASET_FILE", "ENCODINGS", "MANIFEST_SUFFIX", "StreamedDataset", "check_export",
    "check_provenance", "dataset_fingerprint", "export_dataset", "export_stream", "make_tfrecord_pipeline",
    "manifest_path", "open_export", "read_manifest", "read_tfrecords", "verify_tfrecords", "write_tfrecords",
    "write_tfrecords_from_batches",
]

MANIFEST_SUFFIX = ".manifest.json"
# The whole-dataset export's commit point (export_dataset, export_stream), written after every
# split's manifest, and the labels it lists.
DATASET_FILE = "dataset.json"
_LABELS_FILE = "labels.npz"
_DATASET_FORMAT = "lab.tfrecord.dataset"
COMPRESSIONS = (None, "GZIP", "ZLIB")
ENCODINGS = ("raw", "png")
# Raw records hold the array bytes of one of these dtypes (what lab.datasets produces);
# PNG holds uint8 only.
RAW_DTYPES = ("uint8", "float32")
DEFAULT_IMAGES_PER_SHARD = 4096

_FORMAT = "lab.tfrecord"
# Version 2 added the content hash, the provenance and each shard's sha256. Version 1
# manifests are still read (without checksum verification); check_provenance refuses them.
_FORMAT_VERSION = 2
_SHARD_SUFFIXES = {None: ".tfrecord", "GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zlib"}
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Bytes each open shard reads ahead. Set explicitly so TF does not log its default on every open.
_READ_BUFFER_BYTES = 256 * 1024
# Raw records parsed per call (see _read): at most this many, and this many bytes of images.
_PARSE_BLOCK = 256
_PARSE_BLOCK_BYTES = 8 * 2**20
# A training pipeline's default shuffle buffer: at most this many images and this many bytes,
# so that the default stays bounded for large images too.
_DEFAULT_SHUFFLE_IMAGES = 10_000
_DEFAULT_SHUFFLE_BYTES = 256 * 2**20
_DEFAULT_TRAINING_CYCLE_LENGTH = 4
# Images hashed per update (bounds the copy made of a non-contiguous array) and bytes read per
# update when hashing a shard file.
_HASH_IMAGES = 4096
_HASH_CHUNK_BYTES = 2**20
# What a refused check_provenance tells the user to do.
_REEXPORT = ("Delete the folder or point tfrecord_dir at an empty one; it is re-exported on the next run "
             "(or re-export it with lab.tfrecord.export_dataset).")


# -- writing --------------------------------------------------------------------------------


def write_tfrecords(
    images: np.ndarray,
    labels: np.ndarray,
    directory: str | os.PathLike,
    *,
    split: str = "train",
    num_shards: int | None = None,
    images_per_shard: int | None = None,
    compression: str | None = None,
    encoding: str = "raw",
    class_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Writes in-memory images and labels as TFRecord shards plus ``<split>.manifest.json``.

    Everything is checked before the first file is written, so a mistake in the arrays leaves
    the directory (and any earlier export of the split) untouched.

    Args:
        images: NHWC images (NHW for grayscale), uint8 (or float32 with ``encoding="raw"``).
        labels: one integer class id per image, shape (N,) or (N, 1).
        directory: where the shards and the manifest go (created if missing).
        split: the split's name, used in file names (``train``, ``val``, ``test``...).
        num_shards: split into exactly this many shards of near-equal size. Give either this
            or ``images_per_shard``, not both.
        images_per_shard: at most this many images per shard (default 4096).
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"``.
        encoding: ``"raw"`` (the array bytes; fastest to read) or ``"png"`` (lossless,
            smaller on disk for natural images, decoded on every read).
        class_names: recorded in the manifest; labels must then lie in [0, len(class_names)).
        metadata: extra JSON-serialisable facts kept in the manifest (e.g. the dataset name).

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: bad arrays or options; the message says what was received.
    """
    return _write_arrays(images, labels, directory, split=split, num_shards=num_shards,
                         images_per_shard=images_per_shard, compression=compression, encoding=encoding,
                         class_names=class_names, metadata=metadata, provenance=None)


def _write_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    directory: str | os.PathLike,
    *,
    split: str,
    num_shards: int | None,
    images_per_shard: int | None,
    compression: str | None,
    encoding: str,
    class_names: Sequence[str] | None,
    metadata: dict[str, Any] | None,
    provenance: dict[str, Any] | None,
) -> list[Path]:
    """``write_tfrecords`` plus the provenance that only ``export_dataset`` knows."""
    if num_shards is not None and images_per_shard is not None:
        raise ValueError(
            f"Give num_shards or images_per_shard, not both; received num_shards={num_shards} "
            f"and images_per_shard={images_per_shard}."
        )
    spec = _Spec(encoding=_check_encoding(encoding), num_classes=_num_classes(class_names))
    images, labels = spec.check((images, labels), "the images")
    count = len(images)
    if num_shards is not None:
        if not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive integer, received {num_shards!r}.")
        if num_shards > max(count, 1):
            raise ValueError(
                f"num_shards={num_shards} is more than the {count} images; every shard must hold "
                f"at least one image. Use at most {max(count, 1)} shards."
            )
        # One batch per shard, sizes differing by at most one (the first ones larger).
        sizes = [count // num_shards + (i < count % num_shards) for i in range(num_shards)] if count else []
        starts = np.cumsum([0, *sizes[:-1]], dtype=int)
        batches = ((images[a:a + n], labels[a:a + n]) for a, n in zip(starts, sizes))
        shard_sizes: Iterator[int] = iter(sizes)
    else:
        per_shard = _check_images_per_shard(images_per_shard)
        batches = ((images[i:i + per_shard], labels[i:i + per_shard]) for i in range(0, count, per_shard))
        shard_sizes = itertools.repeat(per_shard)
    return _write_split(batches, directory, split=split, shard_sizes=shard_sizes, spec=spec,
                        compression=compression, class_names=class_names, metadata=metadata,
                        provenance=provenance)


def write_tfrecords_from_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    directory: str | os.PathLike,
    *,
    split: str = "train",
    images_per_shard: int | None = None,
    compression: str | None = None,
    encoding: str = "raw",
    class_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Writes ``(images, labels)`` batches as TFRecord shards, for data that does not fit in memory.

    Only one batch is held at a time. The first batch fixes the image shape and dtype; every
    later batch must match it. A batch that fails the checks stops the export: the shards
    already finished are deleted and no manifest is written.

    Args:
        batches: an iterable (e.g. a generator) of ``(images, labels)`` pairs, each as
            ``write_tfrecords`` takes them; batch sizes may vary and need not divide
            ``images_per_shard``.
        directory, split, compression, encoding, class_names, metadata: as in
            ``write_tfrecords``.
        images_per_shard: at most this many images per shard (default 4096). The total is not
            known in advance, so there is no ``num_shards``.

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: no batches at all, or a batch with bad or inconsistent arrays.
    """
    spec = _Spec(encoding=_check_encoding(encoding), num_classes=_num_classes(class_names))
    shard_sizes = itertools.repeat(_check_images_per_shard(images_per_shard))
    return _write_split(iter(batches), directory, split=split, shard_sizes=shard_sizes, spec=spec,
                        compression=compression, class_names=class_names, metadata=metadata)


def export_dataset(
    dataset: Dataset,
    directory: str | os.PathLike,
    *,
    num_shards: int | None = None,
    images_per_shard: int | None = None,
    compression: str | None = None,
    encoding: str = "raw",
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, list[Path]]:
    """Writes the train, val and test splits of a ``lab.datasets.Dataset`` with its class names.

    Each split gets its own manifest, which also records the dataset's name, task and source,
    and its provenance for ``check_provenance``: the dataset's name, the fingerprint and the
    split's content hash. Segmentation masks, if any, are not exported.

    Args:
        dataset: a ``lab.datasets.Dataset``.
        directory: where the shards and manifests go.
        num_shards, images_per_shard, compression, encoding: as in ``write_tfrecords``
            (``num_shards`` applies to each split).
        fingerprint: JSON-serialisable facts that say what the data was made from (e.g.
            ``{"seed": 0, "limit": 300}``); flat scalar entries read best in error messages.
            Default: ``dataset_fingerprint(dataset)``. ``check_provenance`` must later be given
            the same kind of fingerprint.

    Returns:
        ``{split: shard paths}`` for ``train``, ``val`` and ``test``.

    Raises:
        ValueError: a fingerprint that is not a JSON-serialisable dict (nothing is written),
            or bad arrays or options as in ``write_tfrecords``.
    """
    from lab.datasets import SPLITS

    metadata = {"dataset": dataset.name, "task": dataset.task, "source": _jsonable(dataset.source, "dataset.source")}
    provenance = {"dataset": dataset.name, "fingerprint": _fingerprint(dataset, fingerprint)}
    # Uncommit the whole-dataset export first: until every split is rewritten, its
    # dataset.json would describe shards that are being replaced.
    (Path(directory) / DATASET_FILE).unlink(missing_ok=True)
    written = {}
    for split in SPLITS:
        images, labels = dataset.split(split)
        written[split] = _write_arrays(
            images, labels, directory, split=split,
            # A small split (val, test) may hold fewer images than the shards asked for.
            num_shards=None if num_shards is None else max(1, min(num_shards, len(labels))),
            images_per_shard=images_per_shard, compression=compression, encoding=encoding,
            class_names=dataset.class_names, metadata=metadata, provenance=provenance,
        )
    _write_dataset_file(directory, name=dataset.name, task=dataset.task, class_names=dataset.class_names,
                        source=metadata["source"], provenance=provenance, summary=dataset.summary(),
                        content_sha256=dataset.content_hash(),
                        labels={split: dataset.split(split)[1] for split in SPLITS})
    return written


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Returns the default fingerprint of a dataset: its task, split sizes and ``source``.

    The ``source`` of the kit's loaders records their options (seeds, fractions, limit, image
    size, files), so two loads that differ in any of them get different fingerprints. The
    class counts of ``Dataset.summary()`` are left out: the content hash already covers the
    labels, and they would only lengthen error messages.
    """
    summary = dataset.summary()
    return _jsonable({"task": summary["task"], "sizes": summary["sizes"], "source": dataset.source},
                     "the fingerprint")


def _fingerprint(dataset: Dataset, fingerprint: dict[str, Any] | None) -> dict[str, Any]:
    """Returns the given fingerprint (or the default one) as plain JSON values."""
    if fingerprint is None:
        return dataset_fingerprint(dataset)
    if not isinstance(fingerprint, dict):
        raise ValueError(f"fingerprint must be a dict of JSON-serialisable facts (e.g. {{'seed': 0}}), "
                         f"received {type(fingerprint).__name__}: {fingerprint!r}.")
    return _jsonable(fingerprint, "fingerprint")


def _jsonable(value: Any, what: str) -> Any:
    """Returns ``value`` as it reads back from JSON (tuples become lists, NumPy scalars numbers)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=json_default))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must hold only JSON-serialisable values (str, numbers, bools, None, "
                         f"lists, dicts); it holds {error}.") from error


class _Spec:
    """What every batch of one export must agree on; the first batch fixes shape and dtype."""

    def __init__(self, *, encoding: str, num_classes: int | None) -> None:
        self.encoding = encoding
        self.num_classes = num_classes
        self.shape: tuple[int, int, int] | None = None
        self.dtype: np.dtype | None = None
        # Fed with every checked batch that is written (see _records).
        self.content = _ContentHash()

    def check(self, batch: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(images, labels)`` as NHWC and int64 after checking them; ``where`` names them."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"{where.capitalize()} must be an (images, labels) pair, "
                             f"received {type(batch).__name__}.")
        images, labels = np.asarray(batch[0]), np.asarray(batch[1])
        if images.ndim == 3:  # grayscale without a channel axis: (N, H, W) -> (N, H, W, 1)
            images = images[..., np.newaxis]
        if images.ndim != 4:
            raise ValueError(f"{where.capitalize()}: images must be NHWC (or NHW), received an "
                             f"array of shape {images.shape}.")
        if labels.ndim == 2 and labels.shape[1] == 1:  # MedMNIST and CIFAR store labels as (N, 1)
            labels = labels[:, 0]
        if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
            raise ValueError(f"{where.capitalize()}: labels must be one integer class id per image, "
                             f"received {labels.dtype} labels of shape {labels.shape}.")
        if len(images) != len(labels):
            raise ValueError(f"{where.capitalize()}: {len(images)} images but {len(labels)} labels.")
        if self.encoding == "png":
            if images.dtype != np.uint8:
                raise ValueError(f"{where.capitalize()}: PNG encoding stores uint8 images, received "
                                 f"{images.dtype}. Convert to uint8 0-255 or use encoding='raw'.")
            # tf.io.decode_png cannot ask for 2 channels (grey + alpha), so neither is written.
            if images.shape[-1] not in (1, 3, 4):
                raise ValueError(f"{where.capitalize()}: PNG holds 1, 3 or 4 channels, received "
                                 f"{images.shape[-1]}. Use encoding='raw'.")
        elif images.dtype.name not in RAW_DTYPES:
            raise ValueError(f"{where.capitalize()}: raw records hold {' or '.join(RAW_DTYPES)} "
                             f"images, received {images.dtype}. Convert with .astype() first.")
        shape = tuple(int(d) for d in images.shape[1:])
        if self.shape is None:
            self.shape, self.dtype = shape, images.dtype  # type: ignore[assignment]
        elif shape != self.shape or images.dtype != self.dtype:
            raise ValueError(
                f"{where.capitalize()} holds {images.dtype} images of shape {shape}, but the export "
                f"started with {self.dtype} images of shape {self.shape}; every batch must match."
            )
        if len(labels):
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or (self.num_classes is not None and high >= self.num_classes):
                limit = f"[0, {self.num_classes})" if self.num_classes is not None else "0 or above"
                raise ValueError(f"{where.capitalize()}: labels must lie in {limit}, received labels "
                                 f"from {low} to {high}.")
        return images, labels.astype(np.int64)


class _ContentHash:
    """The sha256 of a split's images and labels, fed batch by batch.

    The digest depends only on the arrays (NHWC images, int64 labels, both little-endian),
    never on how they were batched, so an export and a later check of the in-memory dataset
    agree. Images and labels go to separate hashes so that batches can be fed in one pass;
    the header binds the two to the shape, dtype and count.
    """

    def __init__(self) -> None:
        self._images = hashlib.sha256()
        self._labels = hashlib.sha256()
        self.count = 0

    def update(self, images: np.ndarray, labels: np.ndarray) -> None:
        images = images.astype(images.dtype.newbyteorder("<"), copy=False)
        for start in range(0, len(images), _HASH_IMAGES):
            self._images.update(np.ascontiguousarray(images[start:start + _HASH_IMAGES]).data)
        self._labels.update(np.ascontiguousarray(labels, dtype="<i8").data)
        self.count += len(labels)

    def hexdigest(self, shape: Sequence[int], dtype: np.dtype) -> str:
        header = json.dumps({"count": self.count, "dtype": np.dtype(dtype).name,
                             "shape": [int(d) for d in shape]}, sort_keys=True)
        return hashlib.sha256(header.encode() + self._images.digest() + self._labels.digest()).hexdigest()


def _content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """Returns the content hash an export of these arrays records (see ``_ContentHash``)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:  # as _Spec.check: (N, H, W) -> (N, H, W, 1), (N, 1) -> (N,)
        images = images[..., np.newaxis]
    labels = labels.reshape(len(labels)).astype(np.int64, copy=False)
    content = _ContentHash()
    content.update(images, labels)
    return content.hexdigest(images.shape[1:], images.dtype)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _write_split(
    batches: Iterator[Any],
    directory: str | os.PathLike,
    *,
    split: str,
    shard_sizes: Iterator[int],
    spec: _Spec,
    compression: str | None,
    class_names: Sequence[str] | None,
    metadata: dict[str, Any] | None,
    provenance: dict[str, Any] | None = None,
) -> list[Path]:
    """Streams the batches into shards, then commits them with the manifest (see module doc)."""
    _check_split(split)
    compression = _check_compression(compression)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_file = manifest_path(directory, split)
    # A fresh id per export: its shards never overwrite those of the export being replaced.
    export_id = secrets.token_hex(4)
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    records = _records(batches, spec)
    shards: list[dict[str, Any]] = []
    finished: list[Path] = []
    try:
        for index, capacity in enumerate(shard_sizes):
            first = next(records, None)
            if first is None:
                break
            target = directory / f"{split}-{export_id}-{index:05d}{_SHARD_SUFFIXES[compression]}"
            with atomic_path(target) as tmp:
                with tf.io.TFRecordWriter(str(tmp), options) as writer:
                    writer.write(first)
                    count = 1
                    for record in itertools.islice(records, capacity - 1):
                        writer.write(record)
                        count += 1
                # Hashed as written, while still in the page cache, so that readers can tell a
                # shard damaged or swapped later on (the size alone does not change).
                sha256 = _file_sha256(tmp)
            finished.append(target)
            shards.append({"file": target.name, "num_examples": count, "bytes": target.stat().st_size,
                           "sha256": sha256})
        if spec.shape is None:
            raise ValueError(f"No batches to write for split {split!r}: the iterable was empty.")
        previous = _listed_shards(manifest_file)
        write_json(manifest_file, {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "split": split,
            "num_examples": sum(shard["num_examples"] for shard in shards),
            "shape": list(spec.shape),
            "dtype": spec.dtype.name,  # type: ignore[union-attr]
            "encoding": spec.encoding,
            "compression": compression,
            "class_names": list(class_names) if class_names is not None else None,
            "content_sha256": spec.content.hexdigest(spec.shape, spec.dtype),  # type: ignore[arg-type]
            # What the data was made from (export_dataset); None for bare arrays.
            "provenance": provenance,
            "shards": shards,
            "metadata": metadata or {},
        })
    except BaseException:
        # No manifest lists these shards; remove them so no finished-looking shard is left over.
        for path in finished:
            path.unlink(missing_ok=True)
        raise
    # The new export is committed; the shards of the one it replaced are now unreferenced.
    for name in set(previous) - {shard["file"] for shard in shards}:
        (directory / name).unlink(missing_ok=True)
    return finished


def _records(batches: Iterator[Any], spec: _Spec) -> Iterator[bytes]:
    for index, batch in enumerate(batches):
        images, labels = spec.check(batch, f"batch {index}")
        spec.content.update(images, labels)
        for image, label in zip(images, labels):
            yield _serialize_example(image, int(label), spec.encoding)


def _serialize_example(image: np.ndarray, label: int, encoding: str) -> bytes:
    """Returns one ``tf.train.Example`` record of an HWC image and its label."""
    if encoding == "png":
        data = tf.io.encode_png(image).numpy()
    else:
        # Little-endian whatever the machine, as tf.io.decode_raw reads it by default.
        data = image.astype(image.dtype.newbyteorder("<"), copy=False).tobytes()
    height, width, channels = image.shape
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "height": _int64_feature(height),
        "width": _int64_feature(width),
        "channels": _int64_feature(channels),
        "dtype": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.dtype.name.encode()])),
        "label": _int64_feature(label),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _int64_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


# -- reading --------------------------------------------------------------------------------


def manifest_path(directory: str | os.PathLike, split: str = "train") -> Path:
    """Returns the path of a split's manifest, ``<directory>/<split>.manifest.json``."""
    return Path(directory) / f"{_check_split(split)}{MANIFEST_SUFFIX}"


def read_manifest(directory: str | os.PathLike, split: str = "train") -> dict[str, Any]:
    """Returns a split's manifest: shape, dtype, encoding, compression, class names, shards.

    Raises:
        FileNotFoundError: no manifest for the split (none exported, or the export did not
            finish); the message lists the splits the directory does hold.
        ValueError: the file is not a manifest this version can read.
    """
    path = manifest_path(directory, split)
    if not path.is_file():
        found = sorted(p.name[: -len(MANIFEST_SUFFIX)] for p in Path(directory).glob(f"*{MANIFEST_SUFFIX}"))
        raise FileNotFoundError(
            f"No TFRecord manifest {path}: split {split!r} was never exported there, or its export "
            f"did not finish. Splits found: {', '.join(found) or 'none'}. "
            f"Export with lab.tfrecord.write_tfrecords or export_dataset."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"TFRecord manifest {path} is not valid JSON ({error}). Re-export the split.") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a lab.tfrecord manifest (no \"format\": \"{_FORMAT}\").")
    if manifest.get("version", 0) > _FORMAT_VERSION:
        raise ValueError(f"TFRecord manifest {path} has format version {manifest['version']}, newer than "
                         f"this lab ({_FORMAT_VERSION}). Update lab to read it.")
    return manifest


def check_provenance(
    directory: str | os.PathLike,
    split: str,
    data: Dataset,
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Checks that a split's shards were exported from ``data``; returns the split's manifest.

    Only the manifest is read, and the split's arrays in ``data`` are hashed (0.14 s for
    60,000 32x32x3 images), so shards of other data are refused before TensorFlow reads them.
    Compared: the dataset's name, the fingerprint, the image shape and dtype, the class
    names, the image count and the content hash of the images and labels.

    Args:
        directory: the export directory.
        split: which split (``"train"``...).
        data: the ``lab.datasets.Dataset`` the run uses.
        fingerprint: the facts given to ``export_dataset`` when the shards were written
            (default: ``dataset_fingerprint(data)``, what ``export_dataset`` records by default).

    Returns:
        The split's manifest, as ``read_manifest`` returns it.

    Raises:
        FileNotFoundError: no manifest for the split.
        ValueError: the shards do not match ``data``: the message names both sides of each
            difference and what to do. Also raised for manifests that cannot be checked: those
            written before provenance checks (format version 1) and those of
            ``write_tfrecords``, which records no dataset fingerprint.
    """
    manifest = read_manifest(directory, split)
    where = f"The TFRecords of split {split!r} in {directory}"
    name = data.name
    expected = _fingerprint(data, fingerprint)
    if "content_sha256" not in manifest or "provenance" not in manifest:
        raise ValueError(
            f"{where} were exported before provenance checks: {manifest_path(directory, split)} "
            f"(format version {manifest.get('version', 1)}) records no fingerprint or content hash, "
            f"so it cannot be told whether they hold this run's {name} data. Re-export them. {_REEXPORT}"
        )
    provenance = manifest["provenance"]
    if not isinstance(provenance, dict):
        raise ValueError(
            f"{where} were written by write_tfrecords, which records no dataset fingerprint, so it "
            f"cannot be told whether they hold this run's {name} data. Export them with "
            f"lab.tfrecord.export_dataset instead. {_REEXPORT}"
        )
    stored_name = provenance.get("dataset")
    changed = _changed_entries(provenance.get("fingerprint") or {}, expected)

    images, labels = data.split(split)
    shape = tuple(int(d) for d in images.shape[1:]) + ((1,) if images.ndim == 3 else ())
    stored_shape = tuple(manifest["shape"])
    differences = []
    if (stored_shape, manifest["dtype"]) != (shape, images.dtype.name):
        differences.append(f"{manifest['dtype']} images of shape {stored_shape} in the TFRecords, "
                           f"{images.dtype.name} images of shape {shape} in this run")
    if manifest["class_names"] != list(data.class_names):
        differences.append(_class_difference(manifest["class_names"], list(data.class_names)))
    if manifest["num_examples"] != len(labels):
        differences.append(f"{manifest['num_examples']} images in the TFRecords, {len(labels)} in this run")
    elif not differences:
        # Hashed only when everything else agrees: otherwise it differs anyway.
        content = _content_sha256(images, labels)
        if content != manifest["content_sha256"]:
            differences.append(f"the images or labels differ (content sha256 {manifest['content_sha256'][:16]}... "
                               f"in the TFRecords, {content[:16]}... in this run)")
    if stored_name == name and not changed and not differences:
        return manifest
    if stored_name != name:
        # Another dataset explains every fingerprint difference; listing them would be noise.
        message = f"{where} were exported from {stored_name} but this run uses {name}"
    elif changed:
        message = (f"{where} were exported from {_describe(name, changed, 0)} but this run uses "
                   f"{_describe(name, changed, 1)}")
        if len(changed) > _DESCRIBED_ENTRIES:
            rest = [key for key, _, _ in changed[_DESCRIBED_ENTRIES:]]
            verb = "entry differs" if len(rest) == 1 else "entries differ"
            differences.insert(0, f"{len(rest)} more fingerprint {verb} ({', '.join(rest[:8])}"
                                  f"{', ...' if len(rest) > 8 else ''})")
    else:
        message = f"{where} do not hold this run's {name} data"
    details = f": {'; '.join(differences)}" if differences else ""
    raise ValueError(f"{message}{details}. {_REEXPORT}")


# Fingerprint entries that check_provenance shows on each side; the others are only named.
_DESCRIBED_ENTRIES = 4
_UNSET = object()


def _changed_entries(stored: dict[str, Any], expected: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Returns ``(dotted key, stored value, expected value)`` for each fingerprint entry that differs."""
    old, new = _flatten(stored), _flatten(expected)
    changed = []
    for key in [*old, *(key for key in new if key not in old)]:
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        # Compared as JSON text, so that NaN equals NaN and 1 differs from true.
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            changed.append((key, a, b))
    # Scalars (seeds, limits, sizes) first: they say the most in the fewest words.
    changed.sort(key=lambda entry: any(isinstance(v, (list, dict)) for v in entry[1:]))
    return [(key, _show(a), _show(b)) for key, a, b in changed]


def _flatten(facts: Any, prefix: str = "") -> dict[str, Any]:
    """``{"source": {"seed": 1}}`` -> ``{"source.seed": 1}``; lists and scalars are leaves."""
    if not isinstance(facts, dict) or (prefix and not facts):
        return {prefix: facts}
    flat: dict[str, Any] = {}
    for key, value in facts.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _show(value: Any, width: int = 48) -> str:
    if value is _UNSET:
        return "unset"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _describe(name: Any, changed: list[tuple[str, str, str]], side: int) -> str:
    """``digits (seed 1, limit 300)``: the dataset's name and its side of the changed entries."""
    shown = ", ".join(f"{entry[0]} {entry[1 + side]}" for entry in changed[:_DESCRIBED_ENTRIES])
    return f"{name} ({shown})" if shown else str(name)


def _class_difference(stored: list[str] | None, current: list[str]) -> str:
    def preview(names: list[str]) -> str:
        return ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")

    if stored is None:
        return f"no class names in the TFRecords, {len(current)} in this run ({preview(current)})"
    if len(stored) != len(current):
        return (f"{len(stored)} classes in the TFRecords ({preview(stored)}), "
                f"{len(current)} in this run ({preview(current)})")
    index = next(i for i, (a, b) in enumerate(zip(stored, current)) if a != b)
    return f"class {index} is {stored[index]!r} in the TFRecords, {current[index]!r} in this run"


def read_tfrecords(
    directory: str | os.PathLike,
    split: str = "train",
    *,
    cycle_length: int = 1,
    shuffle_shards: bool = False,
    seed: int = 0,
    num_parallel_calls: int = AUTOTUNE,
    deterministic: bool = True,
    verify_checksums: bool = True,
) -> tf.data.Dataset:
    """Streams a split's ``(image, label)`` pairs from its shards, one record at a time.

    The compression, shape and dtype come from the manifest. Images have the static shape
    (H, W, C) and the stored dtype (uint8, or float32 for raw float exports); labels are
    int64. The dataset's cardinality is the manifest's count, so ``len()`` works.

    Args:
        directory: the export directory.
        split: which split.
        cycle_length: shards read at once. 1 (the default) reads them one after another,
            giving back exactly the written order.
            More mixes the shards record by record: still the same order on every run with
            ``deterministic=True``, but not the written one. Memory grows with it only by a few
            records per shard.
        shuffle_shards: visit the shards in a new random order each epoch (drawn from ``seed``).
        seed: seeds the shard shuffle.
        num_parallel_calls: parallelism of the interleave and of record parsing.
        deterministic: keep the element order fixed across runs.
        verify_checksums: check each shard's sha256 against its manifest entry now, reading
            every shard once (see the module doc for the cost). Without it, a shard damaged in
            place is only found while iterating, as a DataLossError that does not name it.

    Returns:
        A ``tf.data.Dataset`` of ``(image, label)``.

    Raises:
        FileNotFoundError: the manifest or one of its shards is missing (names the file).
        tf.errors.DataLossError: a shard's size (or, with ``verify_checksums``, its sha256)
            differs from its manifest entry; the message names the shard.
    """
    return _read(directory, split, read_manifest(directory, split), cycle_length=cycle_length,
                 shuffle_shards=shuffle_shards, seed=seed, num_parallel_calls=num_parallel_calls,
                 deterministic=deterministic, verify_checksums=verify_checksums)


def _read(
    directory: str | os.PathLike,
    split: str,
    manifest: dict[str, Any],
    *,
    cycle_length: int,
    shuffle_shards: bool,
    seed: int,
    num_parallel_calls: int,
    deterministic: bool,
    verify_checksums: bool,
) -> tf.data.Dataset:
    """``read_tfrecords`` on an already loaded manifest."""
    if not isinstance(cycle_length, (int, np.integer)) or cycle_length < 1:
        raise ValueError(f"cycle_length must be a positive integer, received {cycle_length!r}.")
    paths = _checked_shard_paths(directory, split, manifest)
    if verify_checksums:
        for shard, path in zip(manifest["shards"], paths):
            _check_shard_sha256(path, shard, split)
    compression = manifest["compression"] or ""
    files = tf.data.Dataset.from_tensor_slices(tf.constant([str(p) for p in paths], dtype=tf.string))
    if shuffle_shards and len(paths) > 1:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def open_shard(path):
        return tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=_READ_BUFFER_BYTES)

    if cycle_length == 1:
        # One shard after another. TFRecordDataset reads a dataset of file names itself; an
        # interleave over one shard at a time gives the same records but cost about 70 ms more
        # per pass (its threads start anew each epoch and each evaluation).
        ds = tf.data.TFRecordDataset(files, compression_type=compression, buffer_size=_READ_BUFFER_BYTES)
    else:
        # block_length=1 keeps the interleave's buffers a few records per open shard: with a
        # block as long as a shard, TF prefetches up to two blocks per shard, i.e. whole shards.
        ds = files.interleave(
            open_shard, cycle_length=cycle_length, block_length=1, deterministic=deterministic,
            # A fixed parallelism above cycle_length is an error in TF; it could not be used anyway.
            num_parallel_calls=num_parallel_calls if num_parallel_calls == AUTOTUNE
            else max(1, min(num_parallel_calls, cycle_length)),
        )
    if manifest["encoding"] == "raw":
        # Parsed a block of records per call and split again (the tf.data guide's "vectorize"): a
        # function call per record is a fixed cost that dominates for small images (4,000
        # 32x32x3 images: 38,700 images/s against 12,300 parsed one by one, 2 busy cores).
        # A block holds at most 8 MB of images: one is parsed per core at once.
        image_bytes = int(np.prod(manifest["shape"])) * np.dtype(manifest["dtype"]).itemsize
        block = max(1, min(_PARSE_BLOCK, _PARSE_BLOCK_BYTES // max(1, image_bytes)))
        ds = ds.batch(block, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        ds = ds.map(_block_parser(manifest), num_parallel_calls=num_parallel_calls, deterministic=deterministic)
        ds = ds.unbatch()
    else:
        ds = ds.map(_parser(manifest), num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    # Known length for Keras' progress bar and len(); a count that differs fails loudly at the end.
    return ds.apply(tf.data.experimental.assert_cardinality(manifest["num_examples"]))


def verify_tfrecords(directory: str | os.PathLike, split: str = "train") -> int:
    """Reads and decodes every record of a split, shard by shard, and names any damaged shard.

    Use it when iterating a split raised ``tf.errors.DataLossError`` (TensorFlow's message
    gives only a byte offset), or after copying an export to check it arrived whole.

    Returns:
        The number of examples checked (the manifest's count).

    Raises:
        FileNotFoundError: the manifest or a shard is missing.
        tf.errors.DataLossError: a shard that is truncated, fails its checksums (TFRecord's
            per-record CRCs, and the shard's sha256 where the manifest records one), does not
            decode, or holds another number of records than its manifest entry; the message
            names the shard.
    """
    manifest = read_manifest(directory, split)
    paths = _checked_shard_paths(directory, split, manifest)
    parse = _parser(manifest)
    total = 0
    for shard, path in zip(manifest["shards"], paths):
        records = tf.data.TFRecordDataset(str(path), compression_type=manifest["compression"] or "",
                                          buffer_size=_READ_BUFFER_BYTES)
        images = records.map(parse, num_parallel_calls=AUTOTUNE)
        try:
            count = int(images.reduce(np.int64(0), _count))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise tf.errors.DataLossError(
                None, None, f"TFRecord shard {path} is corrupt: {_tf_reason(error)}. "
                            f"Re-export split {split!r}.",
            ) from error
        if count != shard["num_examples"]:
            raise tf.errors.DataLossError(
                None, None, f"TFRecord shard {path} holds {count} records but its manifest lists "
                            f"{shard['num_examples']}. Re-export split {split!r}.",
            )
        # Last: a shard swapped for another one of the same size decodes without an error.
        _check_shard_sha256(path, shard, split)
        total += count
    return total


def make_tfrecord_pipeline(
    directory: str | os.PathLike,
    split: str = "train",
    *,
    training: bool,
    batch_size: int = 64,
    image_size: int | tuple[int, int] | None = None,
    to_rgb: bool = False,
    input_scaling: str = "unit",
    shuffle_buffer: int | None = None,
    augmenter: keras.Sequential | None = None,
    seed: int = 0,
    deterministic: bool = True,
    drop_remainder: bool = False,
    cycle_length: int | None = None,
    num_parallel_calls: int = AUTOTUNE,
    verify_checksums: bool = True,
) -> tf.data.Dataset:
    """Streams a split from its TFRecord shards through the stages of ``lab.pipeline.make_pipeline``.

    Stages, in the same order: read and decode -> resize / to RGB -> shuffle (training only,
    bounded buffer) -> batch -> scale to float -> random augmentation (training only) ->
    prefetch. There is no cache stage: caching in memory would hold the whole split, which
    streaming is meant to avoid; the shards already are the on-disk cache.

    Args:
        directory, split: the export to read (see ``read_tfrecords``).
        training: shuffle (shard order, shard interleaving and a shuffle buffer) and augment
            only when True.
        batch_size, image_size, to_rgb, input_scaling: as in ``make_pipeline``.
        augmenter, deterministic, drop_remainder: as in ``make_pipeline``.
        shuffle_buffer: images in the shuffle buffer when training (default: up to 10,000
            images or 256 MB of them, whichever is fewer). Memory use grows with it.
        seed: seeds the shard order and the shuffle.
        cycle_length: shards read at once (default: 4 when training, to mix shards; 1 otherwise,
            which keeps the written order).
        num_parallel_calls: parallelism of reading and of every map.
        verify_checksums: check every shard's sha256 now (one read of each shard), so that a
            shard damaged in place is refused by name here rather than failing inside
            ``Model.fit`` with TensorFlow's ``corrupted record at <offset>``.

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)`` batches: float32 images, int64 labels.

    Raises:
        FileNotFoundError, tf.errors.DataLossError: as ``read_tfrecords``. This does not check
            what the shards were exported from; call ``check_provenance`` first for that.
    """
    check_batching(batch_size, input_scaling)
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be a positive number of images, received {shuffle_buffer}.")
    manifest = read_manifest(directory, split)
    if cycle_length is None:
        cycle_length = min(_DEFAULT_TRAINING_CYCLE_LENGTH, max(1, len(manifest["shards"]))) if training else 1
    ds = _read(directory, split, manifest, cycle_length=cycle_length, shuffle_shards=training, seed=seed,
               num_parallel_calls=num_parallel_calls, deterministic=deterministic,
               verify_checksums=verify_checksums)
    uint8_input = manifest["dtype"] == "uint8"
    # 1. Deterministic per-image work (redone each epoch: nothing is cached).
    ds = prepare_images(ds, image_size=image_size, to_rgb=to_rgb, uint8_input=uint8_input,
                        deterministic=deterministic, num_parallel_calls=num_parallel_calls)
    # 3. Shuffle the training split only, within a bounded buffer; reshuffled every epoch.
    if training:
        image_spec = ds.element_spec[0]
        image_bytes = int(np.prod(image_spec.shape)) * image_spec.dtype.size
        buffer = shuffle_buffer or min(_DEFAULT_SHUFFLE_IMAGES, max(1, _DEFAULT_SHUFFLE_BYTES // image_bytes))
        ds = ds.shuffle(max(1, min(buffer, manifest["num_examples"])), seed=seed, reshuffle_each_iteration=True)
    # 4.-7. Batch, scale, augment, prefetch: the same stages as make_pipeline.
    return batch_and_finish(ds, training=training, batch_size=batch_size, input_scaling=input_scaling,
                            uint8_input=uint8_input, augmenter=augmenter, deterministic=deterministic,
                            drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls, seed=seed)


def _checked_shard_paths(directory: str | os.PathLike, split: str, manifest: dict[str, Any]) -> list[Path]:
    """Returns the manifest's shard paths after checking each exists with its recorded size."""
    paths = []
    for shard in manifest["shards"]:
        path = Path(directory) / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(
                f"TFRecord shard {path} is missing; {manifest_path(directory, split)} lists it. "
                f"Copy the whole export directory, or re-export split {split!r}."
            )
        size = path.stat().st_size
        # Cheap, and it matters: TF reads an uncompressed shard cut at a record boundary, or
        # inside its last record, without any error, silently losing the rest.
        if size != shard["bytes"]:
            raise tf.errors.DataLossError(
                None, None, f"TFRecord shard {path} has {size} bytes but its manifest lists "
                            f"{shard['bytes']}: it is truncated or was replaced. Re-export split {split!r}.",
            )
        paths.append(path)
    return paths


def _check_shard_sha256(path: Path, shard: dict[str, Any], split: str) -> None:
    """Raises DataLossError naming the shard if its bytes changed since export (version 2 on)."""
    expected = shard.get("sha256")
    if expected is None:  # a version-1 manifest records no checksums
        return
    actual = _file_sha256(path)
    if actual != expected:
        raise tf.errors.DataLossError(
            None, None, f"TFRecord shard {path} is corrupt: its bytes changed since it was exported "
                        f"(sha256 {actual[:16]}..., the manifest lists {expected[:16]}...; the size is "
                        f"unchanged, so it was damaged in place or replaced by another shard). "
                        f"Re-export split {split!r}.",
        )


def _parser(manifest: dict[str, Any]):
    """Returns the function turning one serialized record into ``(image, label)``."""
    shape = tuple(manifest["shape"])
    dtype = tf.as_dtype(manifest["dtype"])
    png = manifest["encoding"] == "png"
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        if png:
            image = tf.io.decode_png(example["image"], channels=shape[-1], dtype=tf.uint8)
        else:
            image = tf.io.decode_raw(example["image"], dtype)
            image = tf.reshape(image, tf.stack([example["height"], example["width"], example["channels"]]))
        # A static shape lets models be built from element_spec; a record that disagrees with
        # the manifest fails here instead of somewhere inside the model.
        return tf.ensure_shape(image, shape), example["label"]

    return parse


def _block_parser(manifest: dict[str, Any]):
    """Returns the function turning a block of serialized raw records into ``(images, labels)``."""
    shape = tuple(manifest["shape"])
    dtype = tf.as_dtype(manifest["dtype"])
    features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(records):
        examples = tf.io.parse_example(records, features)
        # decode_raw of a vector of equal-length strings gives one row per record; a record whose
        # size disagrees with the manifest's shape fails here (decode_raw or the reshape).
        images = tf.io.decode_raw(examples["image"], dtype)
        images = tf.reshape(images, tf.concat([tf.shape(records), shape], axis=0))
        return tf.ensure_shape(images, (None, *shape)), examples["label"]

    return parse


def _count(count, _element):
    return count + 1


def _listed_shards(path: Path) -> list[str]:
    """Returns the shard names an existing manifest lists ([] if there is none, or it is unreadable)."""
    try:
        return [shard["file"] for shard in json.loads(path.read_text(encoding="utf-8"))["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _tf_reason(error: tf.errors.OpError) -> str:
    """Returns TensorFlow's error message without the op and function-node decorations."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
    return message.split(" [Op:")[0].strip()


# -- argument checks ---------------------------------------------------------------------------


def _check_split(split: str) -> str:
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"split must be a name of letters, digits, '_' and '-' (e.g. 'train'), "
                         f"received {split!r}.")
    return split


def _check_compression(compression: str | None) -> str | None:
    value = compression.upper() if isinstance(compression, str) else compression
    value = None if value in ("", "NONE") else value
    if value not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, received {compression!r}.")
    return value


def _check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, received {encoding!r}.")
    return encoding


def _check_images_per_shard(images_per_shard: int | None) -> int:
    if images_per_shard is None:
        return DEFAULT_IMAGES_PER_SHARD
    if not isinstance(images_per_shard, (int, np.integer)) or images_per_shard < 1:
        raise ValueError(f"images_per_shard must be a positive integer, received {images_per_shard!r}.")
    return int(images_per_shard)


def _num_classes(class_names: Sequence[str] | None) -> int | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a list of names, received the string {class_names!r}.")
    return len(class_names)


# -- datasets larger than memory --------------------------------------------------------------
# export_stream converts a lab.datasets.sources.StreamSource (an npz read a chunk at a time,
# an image folder read file by file, a TFDS dataset streamed) without ever holding a split; the
# export then opens as a StreamedDataset, which a run trains, evaluates and predicts from.


def export_stream(
    stream,
    directory: str | os.PathLike,
    *,
    images_per_shard: int | None = None,
    compression: str | None = None,
    encoding: str = "raw",
    fingerprint: dict[str, Any] | None = None,
    chunk_images: int | None = None,
    verbose: bool = True,
) -> dict[str, list[Path]]:
    """Writes every split of a ``StreamSource`` as shards, holding one chunk of images at a time.

    Writes what ``export_dataset`` writes for the same data (the same records, manifests with
    the same content hashes and provenance, and ``dataset.json``, whose ``content_sha256``
    equals ``Dataset.content_hash()`` of the data loaded in memory), computing every hash and
    the summary (class counts, sizes, shape) as the chunks pass or from the labels alone.
    Memory: one chunk (at most 64 MB of images by default) plus TensorFlow's writer buffers.

    Args:
        stream: a ``lab.datasets.sources.StreamSource`` (``lab.datasets.streaming.open_stream``).
        directory: where the shards, manifests and ``dataset.json`` go.
        images_per_shard, compression, encoding: as ``write_tfrecords``.
        fingerprint: as ``export_dataset`` (default: the task, split sizes and source).
        chunk_images: images read and written per chunk (default: 1024, at most 64 MB).
        verbose: show a progress bar of the images written (``lab.progress``).

    Returns:
        ``{split: shard paths}`` for ``train``, ``val`` and ``test``.

    Raises:
        ValueError: the source yields images that differ from what it announced, or bad
            options; nothing of the split is left behind (see the module doc).
    """
    from lab.datasets import SPLITS
    from lab.datasets.sources import ContentHasher
    from lab.progress import progress

    summary = stream.summary()
    if fingerprint is None:
        fingerprint = {"task": summary["task"], "sizes": summary["sizes"], "source": stream.source}
    elif not isinstance(fingerprint, dict):
        raise ValueError(f"fingerprint must be a dict of JSON-serialisable facts (e.g. {{'seed': 0}}), "
                         f"received {type(fingerprint).__name__}: {fingerprint!r}.")
    source = _jsonable(stream.source, "the source")
    provenance = {"dataset": stream.name, "fingerprint": _jsonable(fingerprint, "fingerprint")}
    metadata = {"dataset": stream.name, "task": stream.task, "source": source}
    per_shard = _check_images_per_shard(images_per_shard)
    _check_encoding(encoding)
    (Path(directory) / DATASET_FILE).unlink(missing_ok=True)  # uncommitted until every split is written
    hasher = ContentHasher()
    written = {}
    total = sum(part.count for part in stream.splits.values())
    with progress(total=total, desc=f"TFRecords {stream.name}", unit="img", enabled=verbose) as bar:
        for split in SPLITS:
            part = stream.splits[split]
            hasher.start(split, part.count, part.shape, part.dtype, part.labels)
            spec = _Spec(encoding=encoding, num_classes=len(stream.class_names))
            # Known before reading, so that an empty split still gets a manifest with its shape.
            spec.shape, spec.dtype = tuple(part.shape), np.dtype(part.dtype)

            def batches(part=part):
                for images, labels in part.chunks(chunk_images):
                    hasher.update(images)
                    yield images, labels
                    bar.update(len(labels))

            written[split] = _write_split(batches(), directory, split=split, shard_sizes=itertools.repeat(per_shard),
                                          spec=spec, compression=compression, class_names=stream.class_names,
                                          metadata=metadata, provenance=provenance)
    _write_dataset_file(directory, name=stream.name, task=stream.task, class_names=stream.class_names,
                        source=source, provenance=provenance, summary=summary, content_sha256=hasher.hexdigest(),
                        labels=stream.labels())
    return written


def _write_dataset_file(directory: str | os.PathLike, *, name: str, task: str, class_names: Sequence[str],
                        source: Any, provenance: dict[str, Any], summary: dict[str, Any], content_sha256: str,
                        labels: dict[str, np.ndarray]) -> None:
    """Commits a whole-dataset export: its labels, then ``dataset.json`` naming every split's manifest."""
    directory = Path(directory)
    with atomic_path(directory / _LABELS_FILE) as tmp:
        np.savez(tmp, **{split: np.asarray(y, dtype=np.int64) for split, y in labels.items()})
    splits = {split: {"content_sha256": read_manifest(directory, split)["content_sha256"],
                      "num_examples": int(len(y))} for split, y in labels.items()}
    write_json(directory / DATASET_FILE, {
        "format": _DATASET_FORMAT, "version": 1, "name": name, "task": task, "class_names": list(class_names),
        "source": source, "provenance": provenance, "summary": _jsonable(summary, "the summary"),
        "content_sha256": content_sha256, "splits": splits,
        "labels": {"file": _LABELS_FILE, "sha256": _file_sha256(directory / _LABELS_FILE)},
    })


class StreamedDataset:
    """A dataset exported as TFRecords, read from its shards: what a streamed run trains on.

    It answers what a run asks of a ``lab.datasets.Dataset`` (name, class names, task, source,
    summary, content hash, labels, class counts and weights, input shape) from ``dataset.json``
    and the labels file, never holding the images: ``pipeline`` streams a split and ``images``
    reads a few. ``split`` refuses, naming what to use instead.

    Attributes:
        directory: the export.
        access: how the run reads its data, recorded in its ``data.access``: ``path``
            ("stream"), ``tfrecord_dir``, and from ``load_streamed`` the ``reason``, whether the
            shards were ``exported_now`` or reused, and what the run ``read_from``.
    """

    def __init__(self, directory: Path, info: dict[str, Any], labels: dict[str, np.ndarray],
                 access: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.info = info
        self.name: str = info["name"]
        self.task: str = info["task"]
        self.class_names: list[str] = list(info["class_names"])
        self.source: dict[str, Any] = dict(info["source"])
        self._labels = labels
        self._verified: set[str] = set()
        self.access = {"path": "stream", "tfrecord_dir": str(self.directory), **(access or {})}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.info["summary"]["input_shape"])  # type: ignore[return-value]

    def summary(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.info["summary"]))

    def content_hash(self) -> str:
        """``Dataset.content_hash()`` of the exported data (computed at export)."""
        return self.info["content_sha256"]

    def labels(self, split: str) -> np.ndarray:
        """The int64 labels of a split (in the shards' order)."""
        if split not in self._labels:
            raise ValueError(f"Unknown split {split!r}; expected one of {tuple(self._labels)}.")
        return self._labels[split]

    y_train = property(lambda self: self.labels("train"))
    y_val = property(lambda self: self.labels("val"))
    y_test = property(lambda self: self.labels("test"))

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.labels(split), minlength=self.num_classes)

    def class_weights(self, split: str = "train") -> dict[int, float]:
        from lab.datasets.base import balanced_class_weights

        return balanced_class_weights(self.class_counts(split))

    def split(self, name: str):
        raise ValueError(f"{self.name} is streamed from the TFRecords in {self.directory}; its images are not held "
                         f"in memory. Use .pipeline({name!r}, training=...) to stream them, .images({name!r}, "
                         f"indices) for a few, or .labels({name!r}); or run with data_path='memory'.")

    def pipeline(self, split: str, *, training: bool, **options: Any) -> tf.data.Dataset:
        """``make_tfrecord_pipeline`` of a split (the same keyword options).

        Each split's shards are checked against their sha256 by the first pipeline made of it
        only: a run makes several (training, validation, each evaluation and prediction), and
        for data larger than memory each check is a full read from disk.
        """
        options.setdefault("verify_checksums", split not in self._verified)
        ds = make_tfrecord_pipeline(self.directory, split, training=training, **options)
        self._verified.add(split)
        return ds

    def images(self, split: str, indices: Sequence[int]) -> np.ndarray:
        """The images at ``indices`` of a split (in the order given), reading the shards in order
        only as far as the largest index: for a sample grid, not for the whole split."""
        indices = np.asarray(indices, dtype=np.int64)
        count = len(self.labels(split))
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise ValueError(f"indices must lie in [0, {count}) for split {split!r}, received {indices.min()} to "
                             f"{indices.max()}.")
        wanted = set(indices.tolist())
        found: dict[int, np.ndarray] = {}
        if wanted:
            stream = read_tfrecords(self.directory, split, verify_checksums=False).take(int(indices.max()) + 1)
            for position, (image, _label) in enumerate(stream.as_numpy_iterator()):
                if position in wanted:
                    found[position] = image
        shape = self.input_shape
        dtype = read_manifest(self.directory, split)["dtype"]
        return np.stack([found[i] for i in indices.tolist()]) if len(indices) else np.zeros((0, *shape), dtype)


def open_export(directory: str | os.PathLike, *, access: dict[str, Any] | None = None) -> StreamedDataset:
    """Opens a whole-dataset export (``export_dataset`` or ``export_stream``) for streaming.

    Checks that the export is complete and consistent: ``dataset.json`` present, the labels
    file unchanged, and every split's manifest holding the content hash and count it lists (a
    split re-exported on its own since is refused). Shards themselves are checked when a
    pipeline is made (sizes and sha256, see the module doc).

    Args:
        directory: the export.
        access: facts about how the run chose this path, added to ``StreamedDataset.access``.

    Raises:
        FileNotFoundError: no ``dataset.json`` (nothing exported, an export that did not finish,
            or shards written split by split with ``write_tfrecords``).
        ValueError: an export whose parts disagree; the message says to re-export.
    """
    directory = Path(directory)
    path = directory / DATASET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {DATASET_FILE} in {directory}: no whole dataset was exported there, or its export "
                                "did not finish. Export it with lab.tfrecord.export_stream / export_dataset (a run "
                                "with data_path='stream' does so itself).")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}). {_REEXPORT}") from error
    if not isinstance(info, dict) or info.get("format") != _DATASET_FORMAT:
        raise ValueError(f"{path} is not a lab.tfrecord dataset file (no \"format\": \"{_DATASET_FORMAT}\"). "
                         f"{_REEXPORT}")
    labels_path = directory / info["labels"]["file"]
    if not labels_path.is_file() or _file_sha256(labels_path) != info["labels"]["sha256"]:
        raise ValueError(f"The labels file {labels_path} of the export in {directory} is missing or changed since "
                         f"export. {_REEXPORT}")
    with np.load(labels_path, allow_pickle=False) as stored:
        labels = {split: stored[split] for split in stored.files}
    for split, facts in info["splits"].items():
        manifest = read_manifest(directory, split)
        if (manifest.get("content_sha256"), manifest["num_examples"]) != (facts["content_sha256"],
                                                                            facts["num_examples"]):
            raise ValueError(f"Split {split!r} of the export in {directory} was re-exported on its own since the "
                             f"dataset was exported: its manifest no longer matches {DATASET_FILE}. {_REEXPORT}")
    return StreamedDataset(directory, info, labels, access)


def check_export(directory: str | os.PathLike, name: str, fingerprint: dict[str, Any],
                 source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checks that a whole-dataset export was made from the data a run names, without reading it.

    For data converted from its source (``export_stream``), which a run does not hold: the
    dataset's name, the fingerprint recorded at export (e.g. the run's data fields) and, if
    given, the source's facts (an npz's md5, a folder's listing hash, a TFDS version...) must
    equal the run's. Use ``check_provenance`` when the data is in memory (it compares the
    content itself).

    Args:
        directory: the export.
        name: the dataset's name.
        fingerprint: what ``export_stream`` / ``export_dataset`` were given.
        source: the ``source`` of the data now (``StreamSource.source``), compared with the
            one recorded at export.

    Returns:
        The export's ``dataset.json``.

    Raises:
        FileNotFoundError: no complete export there.
        ValueError: exported from other data; the message names both sides of each difference.
    """
    info = open_export(directory).info
    stored = info["provenance"]
    expected = _jsonable(fingerprint, "fingerprint")
    changed = _changed_entries(stored.get("fingerprint") or {}, expected)
    if source is not None:
        changed += _changed_entries({"source": info.get("source")}, {"source": _jsonable(source, "the source")})
    where = f"The TFRecords in {directory}"
    if stored.get("dataset") != name:
        raise ValueError(f"{where} were exported from {stored.get('dataset')} but this run uses {name}. {_REEXPORT}")
    if changed:
        more = len(changed) - _DESCRIBED_ENTRIES
        rest = f" ({more} more entries differ: {', '.join(k for k, _, _ in changed[_DESCRIBED_ENTRIES:][:8])})" \
            if more > 0 else ""
        raise ValueError(f"{where} were exported from {_describe(name, changed, 0)} but this run uses "
                         f"{_describe(name, changed, 1)}{rest}. {_REEXPORT}")
    return info
