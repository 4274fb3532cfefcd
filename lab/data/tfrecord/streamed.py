"""Datasets larger than memory: exported a chunk at a time, then streamed by a run.

``export_stream`` converts a ``lab.data.datasets.sources.StreamSource`` (an npz read a chunk at a
time, an image folder file by file, a TFDS dataset streamed) holding one chunk of images at a
time, with the same manifests, ``labels.npz`` and ``dataset.json`` that ``export_dataset``
writes (``lab.data.tfrecord.writing``). ``open_export`` opens such an export as a
``StreamedDataset``, which a run trains, evaluates and predicts from
(``RunConfig.data_path="stream"``); ``check_export`` refuses an export of other data by its
fingerprint, without reading the data.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from lab.data.tfrecord.manifest import _DATASET_FORMAT, DATASET_FILE, _check_encoding, read_manifest
from lab.data.tfrecord.provenance import _DESCRIBED_ENTRIES, _REEXPORT, _changed_entries, _describe, _file_sha256, _jsonable
from lab.data.tfrecord.reading import make_tfrecord_pipeline, read_tfrecords
from lab.data.tfrecord.writing import _check_images_per_shard, _Spec, _write_dataset_file, _write_split

__all__ = ["StreamedDataset", "check_export", "export_stream", "open_export"]


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
        stream: a ``lab.data.datasets.sources.StreamSource`` (``lab.data.datasets.streaming.open_stream``).
        directory: where the shards, manifests and ``dataset.json`` go.
        images_per_shard, compression, encoding: as ``write_tfrecords``.
        fingerprint: as ``export_dataset`` (default: the task, split sizes and source).
        chunk_images: images read and written per chunk (default: 1024, at most 64 MB).
        verbose: show a progress bar of the images written (``lab.system.progress``).

    Returns:
        ``{split: shard paths}`` for ``train``, ``val`` and ``test``.

    Raises:
        ValueError: the source yields images that differ from what it announced, or bad
            options; nothing of the split is left behind (see ``lab.data.tfrecord.writing``).
    """
    from lab.data.datasets import SPLITS
    from lab.data.datasets.sources import ContentHasher
    from lab.system.progress import progress

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


class StreamedDataset:
    """A dataset exported as TFRecords, read from its shards: what a streamed run trains on.

    It answers what a run asks of a ``lab.data.datasets.Dataset`` (name, class names, task, source,
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
        from lab.data.datasets.base import balanced_class_weights

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
    pipeline is made (sizes and sha256, see ``lab.data.tfrecord.reading``).

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
                                "did not finish. Export it with lab.data.tfrecord.export_stream / export_dataset (a run "
                                "with data_path='stream' does so itself).")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}). {_REEXPORT}") from error
    if not isinstance(info, dict) or info.get("format") != _DATASET_FORMAT:
        raise ValueError(f"{path} is not a lab.data.tfrecord dataset file (no \"format\": \"{_DATASET_FORMAT}\"). "
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
