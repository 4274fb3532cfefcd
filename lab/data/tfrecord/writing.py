"""Writing shards: one split's shards and manifest, and a whole dataset with ``dataset.json``.

One writer, over a stream of ``(images, labels)`` batches (``write_tfrecords_from_batches``):
arrays in memory are written as a stream of batches, one a shard (``write_tfrecords``,
``export_dataset``), and a dataset read a chunk at a time as the stream of its chunks
(``export_stream`` in ``lab.data.tfrecord.streamed``).

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

A whole-dataset export (``export_dataset`` here, ``export_stream`` in ``lab.data.tfrecord.streamed``)
writes every split this way, then ``labels.npz`` and, last, ``dataset.json``: the whole
export's commit point (name, class names, source, fingerprint, summary, the
``Dataset.content_hash()`` of the data and each split's manifest hash). It removes the old
``dataset.json`` before the first split, so a half-rewritten export is never opened.
"""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from lab.system.atomic import atomic_path, write_json
from lab.data.tfrecord.manifest import (
    _DATASET_FORMAT, _FORMAT, _FORMAT_VERSION, _LABELS_FILE, _SHARD_SUFFIXES, DATASET_FILE, RAW_DTYPES,
    _check_compression, _check_encoding, _check_split, _listed_shards, manifest_path, read_manifest,
)
from lab.data.tfrecord.provenance import _ContentHash, _file_sha256, _fingerprint, _jsonable

if TYPE_CHECKING:
    from lab.data.datasets import Dataset

__all__ = ["DEFAULT_IMAGES_PER_SHARD", "export_dataset", "write_tfrecords", "write_tfrecords_from_batches"]

DEFAULT_IMAGES_PER_SHARD = 4096


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
    """Writes a stream of ``(images, labels)`` batches as TFRecord shards plus ``<split>.manifest.json``.

    The one writer of the kit: in-memory arrays (``write_tfrecords``, ``export_dataset``) and
    datasets read a chunk at a time (``export_stream``) are streams of batches it writes. Only
    one batch is held at a time. The first batch fixes the image shape and dtype; every later
    batch must match it. A batch that fails the checks stops the export: the shards already
    finished are deleted and no manifest is written.

    Args:
        batches: an iterable (e.g. a generator) of ``(images, labels)`` pairs: NHWC images
            (NHW for grayscale), uint8 (or float32 with ``encoding="raw"``), and one integer
            class id per image, shape (N,) or (N, 1). Batch sizes may vary and need not divide
            ``images_per_shard``.
        directory: where the shards and the manifest go (created if missing).
        split: the split's name, used in file names (``train``, ``val``, ``test``...).
        images_per_shard: at most this many images per shard (default 4096).
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"``.
        encoding: ``"raw"`` (the array bytes; fastest to read) or ``"png"`` (lossless,
            smaller on disk for natural images, decoded on every read).
        class_names: recorded in the manifest; labels must then lie in [0, len(class_names)).
        metadata: extra JSON-serialisable facts kept in the manifest (e.g. the dataset name).

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: no batches at all, or a batch with bad or inconsistent arrays, or bad
            options; the message says what was received.
    """
    return _write_split(iter(batches), directory, split=split,
                        shard_sizes=itertools.repeat(_check_images_per_shard(images_per_shard)),
                        spec=_Spec(encoding=_check_encoding(encoding), num_classes=_num_classes(class_names)),
                        compression=compression, class_names=class_names, metadata=metadata)


def write_tfrecords(images: np.ndarray, labels: np.ndarray, directory: str | os.PathLike, *,
                    num_shards: int | None = None, images_per_shard: int | None = None, **options: Any) -> list[Path]:
    """Writes in-memory images and labels: the arrays as a stream of batches, one a shard, through
    the writer of ``write_tfrecords_from_batches``.

    The arrays are checked whole before the first file is written, so a mistake in them leaves
    the directory (and any earlier export of the split) untouched.

    Args:
        images, labels: the split, as one batch of ``write_tfrecords_from_batches``.
        directory: where the shards and the manifest go (created if missing).
        num_shards: split into exactly this many shards of near-equal size. Give either this
            or ``images_per_shard``, not both.
        images_per_shard: at most this many images per shard (default 4096).
        **options: ``split``, ``compression``, ``encoding``, ``class_names`` and ``metadata``,
            as ``write_tfrecords_from_batches`` takes them.

    Returns:
        The shard paths, in order.
    """
    return _write_arrays(images, labels, directory, num_shards=num_shards, images_per_shard=images_per_shard,
                         **options)


def _write_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    directory: str | os.PathLike,
    *,
    num_shards: int | None,
    images_per_shard: int | None,
    split: str = "train",
    compression: str | None = None,
    encoding: str = "raw",
    class_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
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
    else:
        per_shard = _check_images_per_shard(images_per_shard)
        sizes = [min(per_shard, count - start) for start in range(0, count, per_shard)]
    # The arrays as a stream of batches, one a shard.
    starts = np.cumsum([0, *sizes[:-1]], dtype=int)
    batches = ((images[a:a + n], labels[a:a + n]) for a, n in zip(starts, sizes))
    return _write_split(batches, directory, split=split, shard_sizes=iter(sizes), spec=spec,
                        compression=compression, class_names=class_names, metadata=metadata,
                        provenance=provenance)


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
    """Writes the train, val and test splits of a ``lab.data.datasets.Dataset`` with its class names.

    Each split gets its own manifest, which also records the dataset's name, task and source,
    and its provenance for ``check_provenance``: the dataset's name, the fingerprint and the
    split's content hash. Segmentation masks, if any, are not exported.

    Args:
        dataset: a ``lab.data.datasets.Dataset``.
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
    from lab.data.datasets import SPLITS

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


# -- argument checks ---------------------------------------------------------------------------


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
