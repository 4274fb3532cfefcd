"""The on-disk format of an export: file names, format options and each split's manifest.

A split's manifest, ``<split>.manifest.json``, records the image shape, dtype, encoding,
compression and class names, the content hash and provenance of the data
(``lab.data.tfrecord.provenance``) and each shard's file name, example count, byte size and sha256.
It is the split's commit point (``lab.data.tfrecord.writing``): a shard no manifest lists is never
read. ``dataset.json`` plays the same part for a whole-dataset export.

This module is the bottom of the package: every other module of ``lab.data.tfrecord`` reads the
names, options and manifests from here, and it imports none of them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["COMPRESSIONS", "DATASET_FILE", "ENCODINGS", "MANIFEST_SUFFIX", "RAW_DTYPES", "manifest_path",
           "read_manifest"]

MANIFEST_SUFFIX = ".manifest.json"
# The whole-dataset export's commit point (export_dataset, export_stream), written after every
# split's manifest, and the labels it lists.
DATASET_FILE = "dataset.json"
_LABELS_FILE = "labels.npz"
_DATASET_FORMAT = "lab.data.tfrecord.dataset"
COMPRESSIONS = (None, "GZIP", "ZLIB")
ENCODINGS = ("raw", "png")
# Raw records hold the array bytes of one of these dtypes (what lab.data.datasets produces);
# PNG holds uint8 only.
RAW_DTYPES = ("uint8", "float32")

_FORMAT = "lab.data.tfrecord"
# Version 2 added the content hash, the provenance and each shard's sha256. Version 1
# manifests are still read (without checksum verification); check_provenance refuses them.
_FORMAT_VERSION = 2
_SHARD_SUFFIXES = {None: ".tfrecord", "GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zlib"}
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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
            f"Export with lab.data.tfrecord.write_tfrecords or export_dataset."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"TFRecord manifest {path} is not valid JSON ({error}). Re-export the split.") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a lab.data.tfrecord manifest (no \"format\": \"{_FORMAT}\").")
    if manifest.get("version", 0) > _FORMAT_VERSION:
        raise ValueError(f"TFRecord manifest {path} has format version {manifest['version']}, newer than "
                         f"this lab ({_FORMAT_VERSION}). Update lab to read it.")
    return manifest


def _listed_shards(path: Path) -> list[str]:
    """Returns the shard names an existing manifest lists ([] if there is none, or it is unreadable)."""
    try:
        return [shard["file"] for shard in json.loads(path.read_text(encoding="utf-8"))["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


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
