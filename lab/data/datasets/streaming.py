"""What a run streams: datasets opened by name for chunked reading, converted to TFRecords once.

``open_stream(name, ...)`` is ``load_dataset`` without the arrays (``load_dataset`` collects
the same stream into memory): it returns a ``lab.data.datasets.sources.StreamSource`` for

- MedMNIST (registry flags) and ``npz:<path>``: the npz members read a chunk at a time;
- ``folder:<path>``: the file lists and the seeded split of ``load_image_folder``, decoded a
  chunk of files at a time;
- ``tfds:<name>``: the prepared dataset streamed as ``tf.data``; labels from a pass that skips
  decoding the images.

The keras datasets and the embedded ones are at most 180 MB and have no streamed reader:
``open_stream`` returns None for them and callers load them with ``load_dataset``.

Class subsets (``num_classes``) and limits depend only on the labels and the seed
(``lab.data.datasets.base.select_classes`` / ``limit_indices``), so a streamed conversion keeps
exactly the images the in-memory path keeps, and its content hash (computed while converting)
equals ``Dataset.content_hash()`` of the same data.

``choose_data_path`` decides whether a run loads or streams (``RunConfig.data_path``), and
``load_streamed`` converts the run's data to TFRecords once (or checks an existing export) and
opens it as a ``lab.data.tfrecord.StreamedDataset``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lab.data.datasets.base import SPLITS
from lab.data.datasets.sources import StreamSource


# -- opening a source by name ------------------------------------------------------------------------


def open_stream(
    name: str,
    *,
    size: int | None = None,
    resize_to: int | None = None,
    num_classes: int | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
    split_fractions: list[float] | None = None,
    color_mode: str | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = True,
) -> StreamSource | None:
    """Opens a registry dataset for chunked reading, as ``load_dataset`` would load it.

    Args:
        name, size, resize_to, num_classes, limit, val_fraction, seed, data_dir, download: as
            ``load_dataset`` takes them (``resize_to``: an image folder's shorter side).
        split_fractions, color_mode: an image folder's split and colour mode (None: the
            folder loader's defaults); refused for other datasets, as ``load_dataset`` does.

    Returns:
        A ``StreamSource``, or None for the small datasets read only in memory (keras,
        embedded); load those with ``load_dataset``.

    Raises:
        ValueError, DatasetNotAvailableError: as ``load_dataset`` for the same arguments.
    """
    from lab.data.datasets import STREAMED_KINDS, find_source, open_source, subset_and_limit

    source, _ = find_source(name, "classification")
    options = {key: value for key, value in (("split_fractions", split_fractions), ("color_mode", color_mode))
               if value is not None}
    if options and source.kind != "folder":
        raise ValueError(f"{' and '.join(options)} apply to image folders (dataset='folder:<path>'); "
                         f"received dataset={name!r}.")
    if source.kind not in STREAMED_KINDS:
        return None
    if source.kind == "folder":
        options["resize_to"] = resize_to
    stream = open_source(name, size=size, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                         download=download, **options)
    return subset_and_limit(stream, name, num_classes=num_classes, limit=limit, seed=seed)


# -- what a run streams ------------------------------------------------------------------------------


def choose_data_path(config, data: Any = None) -> tuple[str, str]:
    """Decides whether a classification run loads its data or streams it, and why.

    Args:
        config: a ``RunConfig`` (its ``data_path``, ``tfrecord_dir`` and data fields).
        data: data passed to the run already loaded, if any (its size is then known).

    Returns:
        ``("memory" | "stream", reason)``; the reason is recorded with the run.
    """
    from lab.data.datasets import STREAM_ABOVE_BYTES, estimate_nbytes

    if config.data_path != "auto":
        return config.data_path, f"data_path={config.data_path!r}"
    if config.tfrecord_dir:
        return "stream", "data_path='auto' and tfrecord_dir is set"
    limit = f"{STREAM_ABOVE_BYTES / 2**30:g} GiB"
    if data is not None and hasattr(data, "x_train"):
        nbytes: int | None = sum(data.split(split)[0].nbytes for split in SPLITS)
    else:
        nbytes = estimate_nbytes(config.dataset, size=config.dataset_size, limit=config.limit)
    if nbytes is None:
        return "memory", f"data_path='auto': the size of {config.dataset} cannot be estimated before loading"
    path = "stream" if nbytes > STREAM_ABOVE_BYTES else "memory"
    side = "above" if path == "stream" else "at most"
    amount = f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
    return path, f"data_path='auto': about {amount} of images, {side} {limit}"


def default_export_dir(config, content: str | None = None) -> Path:
    """Where a run's streamed data goes when ``tfrecord_dir`` is not set:
    ``<data dir>/tfrecords/<dataset>-<hash of the data fields (and the content, if given)>``."""
    import json
    import re

    from lab.system import paths
    from lab.data.datasets import DATA_FIELDS

    facts = {field: getattr(config, field, None) for field in DATA_FIELDS} | {"content": content}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(config.dataset)).name.split(":")[-1])[:40] or "data"
    return paths.data_dir() / "tfrecords" / f"{stem}-{key}"


def load_streamed(config, *, data: Any = None, reason: str = "", verbose: bool = True):
    """The run's data as a ``lab.data.tfrecord.StreamedDataset``: converted to TFRecords once, then reused.

    Data passed in memory (``from_arrays``, a dataset loaded by hand, a sweep's shared load) is
    exported with ``export_dataset`` and, when the folder already holds an export, checked
    against it with ``check_provenance`` (every split's content). Otherwise the dataset named by
    the configuration is converted from its source a chunk at a time (``export_stream``); an
    existing export is checked with ``check_export`` (the data fields and the source's facts,
    without reading the data). The keras and embedded datasets, which are small and have no
    chunked reader, are loaded and exported from memory.

    Args:
        config: a ``RunConfig``.
        data: the run's data if it was passed in.
        reason: why the run streams (recorded in ``access``).
        verbose: show the export's progress bar.

    Raises:
        ValueError: the folder holds an export of other data (named on both sides).
    """
    from lab.data import tfrecord
    from lab.data.datasets import DATA_FIELDS, load_data

    # The data fields, whether the data was converted from its source or exported from memory, so
    # that either kind of export can be reused by the other. What else tells the data apart is
    # the content hash (data in memory) or the source's facts (an npz's md5, a folder's listing,
    # a TFDS version), compared by check_provenance and check_export.
    fingerprint = {field: getattr(config, field, None) for field in DATA_FIELDS}
    stream = None
    if data is None:
        stream = open_stream(config.dataset, size=config.dataset_size, resize_to=config.dataset_resize,
                             num_classes=config.num_classes, limit=config.limit, val_fraction=config.val_fraction,
                             split_fractions=config.split_fractions, color_mode=config.color_mode, seed=config.seed)
        if stream is None:  # keras and embedded sets: small, read in memory
            data = load_data(config)
    if stream is not None:
        directory = Path(config.tfrecord_dir) if config.tfrecord_dir else default_export_dir(config)
        exported = not (directory / tfrecord.DATASET_FILE).is_file()
        if exported:
            tfrecord.export_stream(stream, directory, fingerprint=fingerprint, verbose=verbose)
        else:
            expected = tfrecord.dataset_fingerprint(stream) if _exported_by_hand(directory) else fingerprint
            tfrecord.check_export(directory, stream.name, expected, source=stream.source)
    else:
        directory = Path(config.tfrecord_dir) if config.tfrecord_dir else default_export_dir(config,
                                                                                             data.content_hash())
        exported = not (directory / tfrecord.DATASET_FILE).is_file()
        if exported:
            tfrecord.export_dataset(data, directory, fingerprint=fingerprint)
        else:
            by_hand = _exported_by_hand(directory)
            for split in SPLITS:
                tfrecord.check_provenance(directory, split, data, fingerprint=None if by_hand else fingerprint)
    # What the record says of this: why it streams, whether the shards were written now or reused,
    # and whether this run read its data from the source in chunks or had it in memory.
    return tfrecord.open_export(directory, access={"reason": reason, "exported_now": exported,
                                                   "read_from": "source, in chunks" if stream is not None
                                                   else "arrays in memory"})


def _exported_by_hand(directory: Path) -> bool:
    """Whether an export holds ``export_dataset``'s default fingerprint (the data's task, sizes and
    source), as one made by hand does, rather than a run's data fields. Such an export of exactly
    the run's data is accepted: it is checked against the same default fingerprint of the run's
    data (and, in memory, its content), not against data fields it never recorded."""
    from lab.data import tfrecord

    provenance = tfrecord.read_manifest(directory, "train").get("provenance")
    return isinstance(provenance, dict) and tfrecord.is_default_fingerprint(provenance.get("fingerprint"))
