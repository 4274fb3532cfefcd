"""Reading shards: a split as a ``tf.data`` pipeline, streamed one record at a time.

``read_tfrecords`` interleaves over the shard files and parses one record at a time, so memory
is bounded by small per-stage buffers (plus the shuffle buffer of a training pipeline), not by
the size of the data; ``benchmarks/streaming_memory.py`` measures a whole run.

Integrity. ``read_tfrecords`` and ``make_tfrecord_pipeline`` check every shard's size and,
unless ``verify_checksums=False``, its sha256 (stored at export, see ``lab.data.tfrecord.provenance``)
when the dataset is created, so a shard damaged in place (same size, other bytes) or swapped
for another one of the same size is refused by name before training starts: inside
``Model.fit`` TensorFlow would only report ``corrupted record at <offset>``, without the file.
This costs one sequential read of the shards per pipeline created (not per epoch): for an
export of 60,000 32x32x3 uint8 images (15 shards, 183 MB) 0.13 s from the page cache and
0.23 s with the shards evicted from it, against 2.9 s to read one epoch (2 CPU cores, virtual
disk). Hashing the shards at export adds 0.16 s to a 1.6 s export. Damage done after the
pipeline was created is still only seen by TensorFlow, without the file name;
``verify_tfrecords`` then finds the shard. Manifests of format version 1 (written before these
checks) carry no checksums: they are still read, unverified, and ``check_provenance`` refuses
them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import keras

from lab.data.pipeline import AUTOTUNE, batch_and_finish, check_batching, prepare_images
from lab.data.tfrecord.manifest import manifest_path, read_manifest
from lab.data.tfrecord.provenance import _check_shard_sha256, _checked_shard_paths

__all__ = ["make_tfrecord_pipeline", "read_tfrecords", "verify_tfrecords"]

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
    _check_manifest_fields(directory, split, manifest, paths)
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
    _check_manifest_fields(directory, split, manifest, paths)
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
    pipeline_size: int | tuple[int, int] | None = None,
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
    """Streams a split from its TFRecord shards through the stages of ``lab.data.pipeline.make_pipeline``.

    Stages, in the same order: read and decode -> resize / to RGB -> shuffle (training only,
    bounded buffer) -> batch -> scale to float -> random augmentation (training only) ->
    prefetch. There is no cache stage: caching in memory would hold the whole split, which
    streaming is meant to avoid; the shards already are the on-disk cache.

    Args:
        directory, split: the export to read (see ``read_tfrecords``).
        training: shuffle (shard order, shard interleaving and a shuffle buffer) and augment
            only when True.
        batch_size, pipeline_size, to_rgb, input_scaling: as in ``make_pipeline``.
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
    ds = prepare_images(ds, pipeline_size=pipeline_size, to_rgb=to_rgb, uint8_input=uint8_input,
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


def _check_manifest_fields(directory: str | os.PathLike, split: str, manifest: dict[str, Any],
                          paths: list[Path]) -> None:
    """Checks a manifest's own fields against its shards: its ``num_examples`` against its shard
    entries, and its ``shape``, ``dtype`` and ``encoding`` against the first record, which every
    record carries (height, width, channels, dtype). One record is read.

    The shard checksums cannot see this: a manifest edited by hand (or copied from another
    export) keeps the shards' sha256 but describes other images, and TensorFlow would then fail
    inside ``Model.fit`` with a reshape error that names neither the split nor the field.

    Raises:
        ValueError: naming the manifest, the split, the field, both values and what to do.
    """
    where = f"TFRecord manifest {manifest_path(directory, split)} (split {split!r})"
    fix = f"The manifest was edited or belongs to another export: re-export split {split!r} (export_dataset)."
    listed = sum(int(shard["num_examples"]) for shard in manifest["shards"])
    if listed != manifest["num_examples"]:
        raise ValueError(f"{where}: its field 'num_examples' is {manifest['num_examples']} but its shards list "
                         f"{listed} records. {fix}")
    first = next((path for shard, path in zip(manifest["shards"], paths) if shard["num_examples"]), None)
    if first is None:
        return
    try:
        record = next(iter(tf.data.TFRecordDataset(str(first), compression_type=manifest["compression"] or "",
                                                   buffer_size=_READ_BUFFER_BYTES).take(1)))
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        stored = [int(feature[key].int64_list.value[0]) for key in ("height", "width", "channels")]
    except (tf.errors.OpError, ValueError, IndexError) as error:  # DecodeError is a ValueError
        raise tf.errors.DataLossError(None, None, f"TFRecord shard {first} is corrupt: its first record does not "
                                                  f"read ({error}). Re-export split {split!r}.") from error
    if list(manifest["shape"]) != stored:
        raise ValueError(f"{where}: its field 'shape' is {list(manifest['shape'])} but the shards hold images of "
                         f"shape {stored} ({first.name}). {fix}")
    dtype = feature["dtype"].bytes_list.value[0].decode() if "dtype" in feature else manifest["dtype"]
    if manifest["dtype"] != dtype:
        raise ValueError(f"{where}: its field 'dtype' is {manifest['dtype']!r} but the shards hold {dtype!r} "
                         f"images ({first.name}). {fix}")
    data = feature["image"].bytes_list.value[0]
    raw_bytes = int(np.prod(stored)) * np.dtype(dtype).itemsize
    is_png = data.startswith(b"\x89PNG\r\n\x1a\n")
    if (manifest["encoding"] == "png") != is_png or (not is_png and len(data) != raw_bytes):
        encoding = "png" if is_png else "raw" if len(data) == raw_bytes else "unreadable"
        raise ValueError(f"{where}: its field 'encoding' is {manifest['encoding']!r} but the shards hold "
                         f"{encoding} images ({first.name}). {fix}")


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


def _tf_reason(error: tf.errors.OpError) -> str:
    """Returns TensorFlow's error message without the op and function-node decorations."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
    return message.split(" [Op:")[0].strip()
