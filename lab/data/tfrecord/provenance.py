"""What shards were made from, and whether they are still what was written.

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

Integrity. Each shard's sha256 is stored at export; the readers (``lab.data.tfrecord.reading``)
check every shard's size and sha256 against its manifest entry with the checks below, and
name the shard that differs (see that module for when and at what cost).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import tensorflow as tf

from lab.system.atomic import json_default
from lab.data.tfrecord.manifest import manifest_path, read_manifest

if TYPE_CHECKING:
    from lab.data.datasets import Dataset

__all__ = ["check_provenance", "dataset_fingerprint", "is_default_fingerprint"]

# Images hashed per update (bounds the copy made of a non-contiguous array) and bytes read per
# update when hashing a shard file.
_HASH_IMAGES = 4096
_HASH_CHUNK_BYTES = 2**20
# What a refused check_provenance tells the user to do.
_REEXPORT = ("Delete the folder or point tfrecord_dir at an empty one; it is re-exported on the next run "
             "(or re-export it with lab.data.tfrecord.export_dataset).")

# Fingerprint entries that check_provenance shows on each side; the others are only named.
_DESCRIBED_ENTRIES = 4
_UNSET = object()


# -- fingerprints and content hashes -----------------------------------------------------------


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


def is_default_fingerprint(fingerprint: Any) -> bool:
    """Whether a recorded fingerprint is ``dataset_fingerprint``'s (what ``export_dataset`` records
    when given none, as an export made by hand is), rather than facts a caller chose (a run's
    data fields): a check must compare a fingerprint of the same kind."""
    return isinstance(fingerprint, dict) and set(fingerprint) == {"task", "sizes", "source"}


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


# -- provenance checks -------------------------------------------------------------------------


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
        data: the ``lab.data.datasets.Dataset`` the run uses.
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
            f"lab.data.tfrecord.export_dataset instead. {_REEXPORT}"
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


# -- shard integrity ---------------------------------------------------------------------------


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
