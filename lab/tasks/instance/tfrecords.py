"""An InstanceDataset as TFRecords in Model Garden's detection format, with the kit's provenance.

An export directory holds:

    dataset.json                    the commit point, written last: name, class names, source,
                                    the dataset's ``content_hash()``, and per split its shard
                                    files with their example counts, byte sizes and sha256
    train-00000-of-00002.tfrecord   up to ``images_per_shard`` examples each, in split order
    val-00000-of-00001.tfrecord     (an empty split writes no shard)

Each record is one image's ``tf.train.Example`` with exactly the keys Model Garden's
``TfExampleDecoder(include_mask=True)`` reads: ``image/encoded`` (PNG), ``image/height``,
``image/width``, ``image/source_id`` (the image's index in its split, as a decimal string, since
Model Garden's COCO evaluator parses it as an int), ``image/filename``,
``image/object/bbox/{ymin,xmin,ymax,xmax}`` (normalised to [0, 1]), ``image/object/class/label``
(1..K), ``image/object/is_crowd`` (0), ``image/object/area`` (the mask's pixel count) and
``image/object/mask`` (one 0/1 PNG per instance, as Model Garden's own COCO converter writes).

Provenance, as ``lab.data.tfrecord``: the export is written into a temporary sibling folder and renamed
into place once ``dataset.json`` is in it, so an interrupted export leaves no folder a reader could
take for complete (a killed process leaves at worst a ``.tmp-*`` sibling, which can be deleted).
Exporting into a folder that already holds an export of the same content reuses it after
checking every shard's size and sha256 (a damaged shard is named, with what to do); a folder
holding an export of other data is refused, naming both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from lab.system.atomic import write_json
from lab.tasks.instance.data import SPLITS, InstanceDataset
from lab.tasks.instance.types import Instances
from lab.data.tfrecord.provenance import _file_sha256

FORMAT = "lab.tasks.instance.tfrecords"
VERSION = 1
DATASET_FILE = "dataset.json"


@dataclasses.dataclass(frozen=True)
class InstanceRecords:
    """Where an export is and what it holds.

    Attributes:
        directory: the export folder.
        files: split -> the absolute shard paths, in order (empty for an empty split).
        counts: split -> the number of examples (images).
        reused: True when an existing export of the same content was verified and kept.
    """

    directory: Path
    files: dict[str, list[str]]
    counts: dict[str, int]
    reused: bool

    def input_path(self, split: str) -> str:
        """The split's shards as Model Garden's ``DataConfig.input_path`` (comma-separated paths).

        Raises:
            ValueError: an unknown split, or a split with no images (Model Garden would fall back to TFDS).
        """
        if split not in self.files:
            raise ValueError(f"Unknown split {split!r}; the splits are {list(self.files)}.")
        if not self.files[split]:
            raise ValueError(f"The {split} split of {self.directory} has no images, so no shards to read.")
        return ",".join(self.files[split])


def export_instances(dataset: InstanceDataset, directory: str | os.PathLike, *, images_per_shard: int = 1000,
                     verbose: bool = False) -> InstanceRecords:
    """Writes ``dataset`` as Model Garden TFRecords into ``directory``, or reuses an identical export.

    Args:
        dataset: the data to export.
        directory: the export folder (created; must not exist, be empty, or hold an export of
            the same content).
        images_per_shard: the most examples in one shard file.
        verbose: show a progress bar of the images written (``lab.system.progress``).

    Returns:
        The InstanceRecords of the export (``reused=True`` when an existing one was kept).

    Raises:
        ValueError: ``directory`` holds an export of other data, or something that is not an
            export; a bad ``images_per_shard``.
        tf.errors.DataLossError: a shard of an existing export of the same data is missing,
            truncated or changed (named).
    """
    if isinstance(images_per_shard, bool) or not isinstance(images_per_shard, (int, np.integer)) \
            or images_per_shard < 1:
        raise ValueError(f"images_per_shard must be a positive integer, received {images_per_shard!r}.")
    directory = Path(directory).absolute()
    existing = _existing_export(dataset, directory)
    if existing is not None:
        return existing
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        splits = _write_shards(dataset, tmp, images_per_shard, verbose)
        info = {"format": FORMAT, "version": VERSION, "name": dataset.name, "class_names": dataset.class_names,
                "source": dataset.source, "content_sha256": dataset.content_hash(),
                "summary": dataset.summary(), "splits": splits}
        write_json(tmp / DATASET_FILE, info)  # the commit point: last file written
        if directory.exists():
            directory.rmdir()  # empty (checked above); a directory cannot be renamed over a full one
        try:
            os.replace(tmp, directory)
        except OSError:
            # Another process finished an export into the same folder first: keep its export if
            # it holds the same data (checked as any existing export), else refuse as usual.
            existing = _existing_export(dataset, directory)
            if existing is None:
                raise
            shutil.rmtree(tmp)
            return existing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _records(directory, info, reused=False)


def _existing_export(dataset: InstanceDataset, directory: Path) -> InstanceRecords | None:
    """The verified export in ``directory`` when it holds this dataset; None when there is none."""
    if not directory.exists():
        return None
    info_path = directory / DATASET_FILE
    if not info_path.is_file():
        if directory.is_dir() and not any(directory.iterdir()):
            return None
        raise ValueError(f"{directory} exists and is not an instance export (no {DATASET_FILE}); export to "
                         f"another folder, or delete it if it holds nothing you need.")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{info_path} is not valid JSON ({error}); delete {directory} and export again.") from error
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{info_path} is not an instance export (format {found!r}, expected "
                         f"{FORMAT!r}); export to another folder.")
    wanted = dataset.content_hash()
    if info.get("content_sha256") != wanted or info.get("class_names") != dataset.class_names:
        held = info.get("summary", {})
        raise ValueError(
            f"{directory} holds an export of other data: {info.get('name')!r} (content sha256 "
            f"{str(info.get('content_sha256'))[:12]}, images {held.get('images')}, classes {info.get('class_names')}), "
            f"but {dataset.name!r} (content sha256 {wanted[:12]}, images {dataset.summary()['images']}, classes "
            f"{dataset.class_names}) was asked. Export to another folder, or delete {directory} to replace it.")
    for split, entry in info["splits"].items():
        for shard in entry["shards"]:
            path = directory / shard["file"]
            where = (f"Shard {path} of the {split} split of the instance export {directory}")
            advice = f"Delete the folder {directory} and export again."
            if not path.is_file():
                raise tf.errors.DataLossError(None, None, f"{where} is missing. {advice}")
            if path.stat().st_size != shard["bytes"] or _file_sha256(path) != shard["sha256"]:
                raise tf.errors.DataLossError(None, None, f"{where} differs from the export's record (size or "
                                                          f"sha256): it is damaged or was replaced. {advice}")
    return _records(directory, info, reused=True)


def _records(directory: Path, info: dict[str, Any], *, reused: bool) -> InstanceRecords:
    return InstanceRecords(
        directory=directory,
        files={split: [str(directory / shard["file"]) for shard in info["splits"][split]["shards"]]
               for split in SPLITS},
        counts={split: int(info["splits"][split]["examples"]) for split in SPLITS},
        reused=reused,
    )


def _write_shards(dataset: InstanceDataset, folder: Path, images_per_shard: int,
                  verbose: bool) -> dict[str, Any]:
    """Writes every split's shards into ``folder``; returns the per-split entries of dataset.json."""
    from lab.system.progress import progress

    total = sum(len(dataset.images[split]) for split in SPLITS)
    splits: dict[str, Any] = {}
    with progress(total=total, desc=f"TFRecords {dataset.name}", unit="img", enabled=verbose) as bar:
        for split in SPLITS:
            images, instances = dataset.split(split)
            num_shards = -(-len(images) // images_per_shard)
            shards = []
            for shard_index in range(num_shards):
                name = f"{split}-{shard_index:05d}-of-{num_shards:05d}.tfrecord"
                start = shard_index * images_per_shard
                stop = min(start + images_per_shard, len(images))
                with tf.io.TFRecordWriter(str(folder / name)) as writer:
                    for index in range(start, stop):
                        writer.write(serialize_example(images[index], instances[index], index=index, split=split))
                        bar.update(1)
                shards.append({"file": name, "examples": stop - start, "bytes": (folder / name).stat().st_size,
                               "sha256": _file_sha256(folder / name)})
            splits[split] = {"examples": len(images), "shards": shards}
    return splits


def serialize_example(image: np.ndarray, truth: Instances, *, index: int, split: str) -> bytes:
    """One image and its instances as a serialized ``tf.train.Example`` in Model Garden's format.

    Args:
        image: ``HxWx3`` uint8.
        truth: its instances (boxes in pixels, masks at the image's size).
        index: the image's index in its split (its ``image/source_id``).
        split: the split's name (in ``image/filename``).

    Returns:
        The serialized example.
    """
    height, width = image.shape[:2]
    scale = np.array([height, width, height, width], np.float32)
    boxes = truth.boxes / scale  # pixels -> [0, 1], Model Garden's normalised (ymin, xmin, ymax, xmax)
    masks = [tf.io.encode_png(mask[..., np.newaxis]).numpy() for mask in truth.masks.astype(np.uint8)]
    areas = truth.masks.sum(axis=(1, 2), dtype=np.int64).astype(np.float32)

    def floats(values: np.ndarray) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))

    def ints(values: Any) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def strings(values: list[bytes]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/encoded": strings([tf.io.encode_png(image).numpy()]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/source_id": strings([str(index).encode()]),
        "image/filename": strings([f"{split}/{index:06d}.png".encode()]),
        "image/object/bbox/ymin": floats(boxes[:, 0]),
        "image/object/bbox/xmin": floats(boxes[:, 1]),
        "image/object/bbox/ymax": floats(boxes[:, 2]),
        "image/object/bbox/xmax": floats(boxes[:, 3]),
        "image/object/class/label": ints(truth.classes),
        "image/object/is_crowd": ints([0] * len(truth)),
        "image/object/area": floats(areas),
        "image/object/mask": strings(masks),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
