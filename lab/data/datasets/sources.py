"""Datasets read a chunk at a time: the pieces every streamed reader is made of.

A ``StreamSource`` is what ``load_dataset`` returns without the arrays: its splits
(``SplitSource``) know their image count, shape, dtype and labels (labels are small: 8 bytes an
image, 0.9 MB for PathMNIST) and hand out the images in chunks, in order, never all at once.
``ContentHasher`` computes ``Dataset.content_hash()`` of such a source chunk by chunk.

npz files: each member is read through ``zipfile`` a chunk at a time (``np.load(mmap_mode=...)``
cannot map a member of a zip, and MedMNIST ships its npz files deflated), its header parsed with
``numpy.lib.format`` (``npz_members``, ``npz_split_sources``).

The readers of each kind of data build on this (``lab.data.datasets.medmnist.stream_medmnist`` and
``stream_npz``, ``lab.data.datasets.folders.stream_image_folder``, ``lab.data.datasets.tfds.stream_tfds``);
``lab.data.datasets.open_source`` opens them by registry name; ``StreamSource.collect`` reads one into
memory (what ``load_dataset`` and each kind's ``load_*`` do), and ``lab.data.datasets.streaming``
streams a run's data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lab.data.datasets.base import SPLITS, Dataset, check_float_range, limit_indices, select_classes

# Images read per chunk (2.4 MB at 28x28x3), fewer for large images: a chunk never holds more
# than _CHUNK_BYTES of images (426 images at 224x224x3 uint8).
DEFAULT_CHUNK_IMAGES = 1024
_CHUNK_BYTES = 64 * 2**20

Reader = Callable[[int], Iterator[np.ndarray]]


@dataclasses.dataclass
class SplitSource:
    """One split, read in order a chunk at a time.

    Attributes:
        count: images in the split (after any selection).
        shape: (height, width, channels) of every image.
        dtype: the images' dtype name (``"uint8"`` or ``"float32"``).
        labels: the int64 label of every image.
        reader: ``reader(chunk_images)`` yields the underlying images in order as arrays of at
            most that many (NHWC; NHW for grayscale npz members).
        indices: the sorted positions kept from what ``reader`` yields (None: all of them).
        where: what holds the images, for error messages (an npz's path and member).
    """

    count: int
    shape: tuple[int, int, int]
    dtype: str
    labels: np.ndarray
    reader: Reader
    indices: np.ndarray | None = None
    where: str = "The streamed data"

    def chunks(self, chunk_images: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields ``(images, labels)`` of the split in order, at most ``chunk_images`` at a time.

        Raises:
            ValueError: the source yields images of another shape or dtype than announced, or
                another number of them, or float images outside [0, 1] (``check_float_range``).
        """
        per_chunk = chunk_images or max(1, min(DEFAULT_CHUNK_IMAGES, _CHUNK_BYTES // max(1, self.image_bytes)))
        position, emitted = 0, 0
        for images in self.reader(per_chunk):
            if images.ndim == 3:
                images = images[..., np.newaxis]
            if tuple(images.shape[1:]) != self.shape or images.dtype.name != self.dtype:
                raise ValueError(f"The data holds {images.dtype.name} images of shape {tuple(images.shape[1:])} "
                                 f"after {position} images, but {self.dtype} images of shape {self.shape} were "
                                 "announced; every image must have the same shape (pass a size to resize them).")
            check_float_range(images, f"{self.where}: images {position} to {position + len(images) - 1}")
            if self.indices is None:
                chosen = images
            else:
                low, high = np.searchsorted(self.indices, [position, position + len(images)])
                chosen = images[self.indices[low:high] - position]
            position += len(images)
            if len(chosen):
                yield chosen, self.labels[emitted:emitted + len(chosen)]
                emitted += len(chosen)
        if emitted != self.count:
            raise ValueError(f"The data yielded {emitted} images of a split announced with {self.count}; "
                             "the file changed while it was read, or it is damaged.")

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.count * self.image_bytes

    def select(self, indices: np.ndarray, labels: np.ndarray | None = None) -> "SplitSource":
        """Keeps the images at ``indices`` (sorted positions in this split), with new labels if given."""
        indices = np.asarray(indices, dtype=np.int64)
        base = indices if self.indices is None else self.indices[indices]
        return dataclasses.replace(self, count=len(indices), indices=base,
                                   labels=self.labels[indices] if labels is None else np.asarray(labels, np.int64))


@dataclasses.dataclass
class StreamSource:
    """What ``load_dataset`` would return, with splits read a chunk at a time.

    Attributes mirror ``Dataset``: ``name``, ``class_names``, ``task``, ``source``; ``splits``
    maps ``train``/``val``/``test`` to their ``SplitSource``.
    """

    name: str
    class_names: list[str]
    task: str
    source: dict[str, Any]
    splits: dict[str, SplitSource]

    @property
    def nbytes(self) -> int:
        """The bytes the images of every split would take in memory."""
        return sum(split.nbytes for split in self.splits.values())

    def labels(self) -> dict[str, np.ndarray]:
        return {split: self.splits[split].labels for split in SPLITS}

    def summary(self) -> dict[str, Any]:
        """``Dataset.summary()`` of the same data, from the labels alone."""
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.splits["train"].shape),
            "num_classes": len(self.class_names),
            "sizes": {s: int(self.splits[s].count) for s in SPLITS},
            "class_counts": {s: np.bincount(self.splits[s].labels, minlength=len(self.class_names)).tolist()
                             for s in SPLITS},
            "class_names": list(self.class_names),
        }

    def subset_classes(self, num_classes: int, seed: int = 0) -> "StreamSource":
        """``Dataset.subset_classes`` without reading an image."""
        kept, indices, labels = select_classes(self.labels(), len(self.class_names), num_classes, seed=seed,
                                               name=self.name)
        splits = {s: self.splits[s].select(indices[s], labels[s]) for s in SPLITS}
        return dataclasses.replace(self, splits=splits, class_names=[self.class_names[c] for c in kept],
                                   source=dict(self.source, subset_classes=[int(c) for c in kept], subset_seed=seed))

    def collect(self) -> Dataset:
        """Reads every split into memory: the ``Dataset`` of the same images, labels and source.

        Each split's images go straight into one array of its announced size, so loading needs
        the memory of the images and one chunk, never twice the images.
        """
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            part = self.splits[split]
            images = np.empty((part.count, *part.shape), dtype=part.dtype)
            position = 0
            for chunk, _ in part.chunks():
                images[position:position + len(chunk)] = chunk
                position += len(chunk)
            arrays[f"x_{split}"], arrays[f"y_{split}"] = images, part.labels
        return Dataset(name=self.name, class_names=list(self.class_names), task=self.task, source=dict(self.source),
                       **arrays)

    def limit(self, per_split: int | None, seed: int = 0) -> "StreamSource":
        """``Dataset.limit`` without reading an image."""
        if per_split is None:
            return self
        indices = limit_indices(self.labels(), per_split, seed=seed, name=self.name)
        return dataclasses.replace(self, splits={s: self.splits[s].select(indices[s]) for s in SPLITS},
                                   source=dict(self.source, limit=per_split))


class ContentHasher:
    """Computes ``Dataset.content_hash()`` of a dataset fed split by split, chunk by chunk.

    ``Dataset.content_hash`` hashes, for each split in order, a header naming the split, the
    array's shape and dtype, then its bytes, images first and labels second. Shapes are known
    before reading, so the same digest can be fed a chunk at a time.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._labels: np.ndarray | None = None
        self._split: str | None = None

    def start(self, split: str, count: int, shape: tuple[int, ...], dtype: str, labels: np.ndarray) -> None:
        """Begins a split of ``count`` images; ``labels`` are hashed when it ends."""
        self._finish()
        full = (int(count), *(int(d) for d in shape))
        self._digest.update(f"{split}{full}{np.dtype(dtype).str}".encode())
        self._split, self._labels = split, np.ascontiguousarray(labels, dtype=np.int64)

    def update(self, images: np.ndarray) -> None:
        self._digest.update(memoryview(np.ascontiguousarray(images)).cast("B"))

    def _finish(self) -> None:
        if self._split is not None and self._labels is not None:
            self._digest.update(f"{self._split}{self._labels.shape}{self._labels.dtype.str}".encode())
            self._digest.update(memoryview(self._labels).cast("B"))
        self._split = self._labels = None

    def hexdigest(self) -> str:
        self._finish()
        return self._digest.hexdigest()


# -- npz members, a chunk at a time ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NpyMember:
    """An array stored in an npz (zip) file, read without loading it whole.

    Attributes:
        path: the npz file.
        member: the name of the ``.npy`` entry inside it.
        shape, dtype: from the array's header.
        compressed: whether the entry is deflated (``np.savez_compressed``) or stored.
    """

    path: Path
    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    compressed: bool

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Yields the array ``rows`` entries (first-axis slices) at a time, in order."""
        row_shape = self.shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
            _read_npy_header(handle, self.path, self.member)
            remaining = self.shape[0] if self.shape else 0
            while remaining:
                take = min(rows, remaining)
                data = _read_exactly(handle, take * row_bytes, self.path, self.member)
                # A read-only view of the bytes read (no second copy); they are freed with it.
                yield np.frombuffer(data, dtype=self.dtype).reshape(take, *row_shape)
                remaining -= take

    def read(self) -> np.ndarray:
        """The whole array (for labels: a few bytes per image)."""
        parts = list(self.chunks(max(1, self.shape[0] if self.shape else 1)))
        return np.concatenate(parts) if parts else np.zeros(self.shape, self.dtype)


def npz_members(path: str | Path) -> dict[str, NpyMember]:
    """Reads the header of every array of an npz file, without reading the arrays.

    Raises:
        ValueError: not a zip file, or an entry that is not a readable ``.npy`` array (object
            arrays and Fortran-ordered arrays are refused: neither can be read in chunks).
    """
    path = Path(path)
    members = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as handle:
                    shape, fortran, dtype = _read_npy_header(handle, path, info.filename)
                name = info.filename[:-4]
                if fortran and len(shape) > 1:
                    raise ValueError(f"Array {name!r} of {path} is stored in Fortran order, which cannot be read a "
                                     "chunk of images at a time. Save it in C order (np.ascontiguousarray) and again "
                                     "with np.savez / np.savez_compressed.")
                members[name] = NpyMember(path, info.filename, tuple(int(d) for d in shape), dtype,
                                          info.compress_type != zipfile.ZIP_STORED)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a readable npz file ({error}).") from error
    return members


def _read_npy_header(handle, path: Path, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    import numpy.lib.format as npy_format

    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"Entry {member} of {path} is not a readable .npy array ({error}).") from error
    if dtype.hasobject:
        raise ValueError(f"Entry {member} of {path} holds Python objects ({dtype}); the kit reads numeric arrays "
                         "only (and never unpickles data from a file).")
    return shape, fortran, dtype


def _read_exactly(handle, size: int, path: Path, member: str) -> bytes:
    parts, remaining = [], size
    while remaining:
        part = handle.read(remaining)
        if not part:
            raise ValueError(f"Entry {member} of {path} ends early: the file is truncated.")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def npz_split_sources(path: Path, members: dict[str, NpyMember]) -> dict[str, SplitSource]:
    """The three splits of a MedMNIST-format npz (``{split}_images`` / ``{split}_labels``).

    Raises:
        ValueError: a missing array, labels that are not one integer per image, images that are
            not NHW / NHWC uint8 or float32, or splits whose images differ in shape.
    """
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [entry for entry in expected if entry not in members]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; a MedMNIST-format npz holds {expected} "
                         f"(it holds {sorted(members) or 'no arrays'}).")
    splits = {}
    for split in SPLITS:
        images, labels = members[f"{split}_images"], members[f"{split}_labels"]
        if len(images.shape) not in (3, 4) or images.dtype.name not in ("uint8", "float32"):
            raise ValueError(f"{path}: {split}_images must be uint8 or float32 images of shape (N, H, W) or "
                             f"(N, H, W, C), received {images.dtype} of shape {images.shape}.")
        y = labels.read()
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: {split}_labels must be one integer class id per image, received "
                             f"{y.dtype} labels of shape {y.shape} (multi-label data is not supported).")
        if len(y) != images.shape[0]:
            raise ValueError(f"{path}: {split} has {images.shape[0]} images but {len(y)} labels.")
        shape = tuple(images.shape[1:]) + ((1,) if len(images.shape) == 3 else ())
        splits[split] = SplitSource(count=int(len(y)), shape=shape, dtype=images.dtype.name,  # type: ignore[arg-type]
                                    labels=y.astype(np.int64), reader=images.chunks,
                                    where=f"{path}: {split}_images")
    shapes = {s.shape for s in splits.values()}
    if len(shapes) > 1:
        raise ValueError(f"{path}: the splits hold images of different shapes {sorted(shapes)}; every split "
                         "must have the same image shape.")
    return splits
