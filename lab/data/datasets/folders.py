"""Image-folder datasets: one subfolder per class, split by folders or by seeded fractions.

Two layouts are understood:

    root/train/<class>/*.png, root/val/<class>/..., root/test/<class>/...   (splits given)
    root/<class>/*.jpg                                                        (split by fractions)

``validation`` is accepted for ``val``. With a single level of class folders the images are
split per class by ``split_fractions`` (E11's 50/25/25) with a seed, so the split is the same
every time.

Every class folder must hold images (in ``train`` for the split layout): an empty one would be
a class the model is asked to predict but never sees. With split folders, a class may be
missing from ``val`` or ``test`` (a rare class with few images), but ``val`` and ``test`` may
not have class folders that ``train`` lacks, since their images would have no label.

Images are read as 8-bit: 16-bit images (PNG and TIFF, Pillow modes ``I;16``, ``I;16B``...,
and ``I`` holding values 0..65535) are scaled by their type range, ``round(v * 255 / 65535)``,
so a 16-bit image keeps its contrast instead of saturating at 255. 32-bit float images (mode
``F``) are refused: their range is a convention (0..1? 0..255? calibrated units?) that the
file does not state, and guessing it wrong would give a dataset that looks fine but is not.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lab.data.datasets.base import Dataset, carve_validation

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
# Threads that decode a chunk of files at once; a few keep a disk and the cores busy.
_DECODE_THREADS = min(8, os.cpu_count() or 1)


def load_image_folder(root: str | Path, **options: Any) -> Dataset:
    """Loads an image-folder dataset into memory as uint8 arrays of one size: what
    ``stream_image_folder`` reads (same arguments and errors), collected."""
    return stream_image_folder(root, **options).collect()


def stream_image_folder(
    root: str | Path,
    *,
    dataset_size: int | tuple[int, int] = 224,
    resize_to: int | None = None,
    color_mode: str = "rgb",
    split_fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    name: str | None = None,
):
    """The reader of image folders: the file lists and the seeded split, the images read lazily.

    Each split's images are decoded a chunk of files at a time, in order (``load_image_folder``
    collects what this reads), so a folder of any size needs memory for a chunk of images only.

    Args:
        root: the dataset folder (see the module docstring for the layouts).
        dataset_size: final (height, width), or one int for square images (a run's ``dataset_size``).
        resize_to: if given, first resize so the shorter side is this many pixels, then
            centre-crop ``dataset_size`` (E11: resize 256, crop 224). Otherwise resize directly.
        color_mode: ``"rgb"`` or ``"grayscale"``.
        split_fractions: train/val/test shares when the folder has no split folders.
        seed: draws the split when fractions are used.
        name: dataset name for records (default: the folder's name).

    Returns:
        A ``lab.data.datasets.sources.StreamSource`` whose ``source`` has the folder's
        ``listing_sha256`` (a hash of every file's path, size and modification time), which
        tells whether the folder changed since an export.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no class folders or images, an empty class folder (named), class folders
            in val/test that train lacks, bad fractions; when read, an unreadable or
            floating-point image (named).
    """
    from lab.data.datasets.sources import SplitSource, StreamSource

    plan = _plan_folder(root, dataset_size=dataset_size, resize_to=resize_to, color_mode=color_mode,
                        split_fractions=split_fractions, seed=seed)
    size = plan["size"]
    shape = (size[0], size[1], 3 if color_mode == "rgb" else 1)
    splits = {}
    for split, (files, labels) in plan["splits"].items():
        reader = _folder_reader(files, size, resize_to, color_mode)
        splits[split] = SplitSource(count=len(files), shape=shape, dtype="uint8", labels=labels, reader=reader)
    return StreamSource(name=name or plan["root"].name, class_names=plan["class_names"], task="multi-class",
                        source=plan["source"], splits=splits)


def _folder_reader(files: list[Path], size: tuple[int, int], resize_to: int | None, color_mode: str):
    """``SplitSource.reader`` of a folder split: the files decoded in order, a chunk at a time.

    Files are decoded on a few threads (Pillow releases the GIL while it decodes and resizes),
    each by ``_read_images``, and come back in the files' order.
    """

    def reader(chunk: int):
        with ThreadPoolExecutor(max_workers=_DECODE_THREADS) as pool:
            for start in range(0, len(files), chunk):
                part = files[start:start + chunk]
                per_thread = max(1, -(-len(part) // _DECODE_THREADS))
                pieces = pool.map(lambda i: _read_images(part[i:i + per_thread], size, resize_to, color_mode),
                                  range(0, len(part), per_thread))
                yield np.concatenate(list(pieces))

    return reader


def _listing_sha256(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def count_folder_images(root: str | Path) -> int:
    """The number of image files under ``root`` (listing only, nothing is read)."""
    root = Path(root).expanduser()
    return len(_images_under(root)) if root.is_dir() else 0


def _plan_folder(root: str | Path, *, dataset_size, resize_to, color_mode, split_fractions, seed) -> dict[str, Any]:
    """What ``load_image_folder`` reads: the class names, each split's files and labels, and the
    seeded split; everything but the pixels.

    Returns:
        ``root``, ``size``, ``class_names``, ``splits`` (``{split: (files, labels)}``) and ``source``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist.")
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', received {color_mode!r}.")
    size = (dataset_size, dataset_size) if isinstance(dataset_size, int) else tuple(dataset_size)

    split_dirs = {split: _first_existing(root, names) for split, names in _SPLIT_DIRS.items()}
    if split_dirs["train"] is not None:
        class_names = _class_folders(split_dirs["train"])
        listed = {}
        for split, folder in split_dirs.items():
            if folder is not None:
                # Only train must hold every class: a small val or test split may lack a rare one.
                listed[split] = _list_images(folder, class_names, every_class=split == "train")
        if "test" not in listed:
            raise ValueError(f"{root} has a train folder but no test folder; add {root / 'test'}.")
        if "val" not in listed:
            files, labels = listed["train"]
            # carve_validation on positions picks the same images as on the images themselves.
            train_idx, y_train, val_idx, y_val = carve_validation(np.arange(len(files)), labels,
                                                                  split_fractions[1], seed)
            listed["train"] = ([files[i] for i in train_idx], y_train)
            listed["val"] = ([files[i] for i in val_idx], y_val)
        splits = {split: listed[split] for split in ("train", "val", "test")}
        layout = "split folders"
    else:
        fractions = np.asarray(split_fractions, dtype=float)
        if fractions.shape != (3,) or (fractions <= 0).any() or not np.isclose(fractions.sum(), 1.0):
            raise ValueError(
                f"split_fractions must be three positive shares summing to 1, received {split_fractions}."
            )
        class_names = _class_folders(root)
        files, labels = _list_images(root, class_names)
        index = np.arange(len(files))
        rest_idx, _, test_idx, _ = carve_validation(index, labels, float(fractions[2]), seed)
        train_idx, _, val_idx, _ = carve_validation(
            rest_idx, labels[rest_idx], float(fractions[1] / (fractions[0] + fractions[1])), seed
        )
        indices = {"train": train_idx, "val": val_idx, "test": test_idx}
        splits = {s: ([files[i] for i in idx], labels[idx]) for s, idx in indices.items()}
        layout = f"split by fractions {tuple(float(f) for f in fractions)}"
    everything = sorted({path for files, _ in splits.values() for path in files})
    # Which files, of which sizes and times: a folder that changed is not taken for the one exported.
    source = {"folder": str(root.resolve()), "layout": layout, "image_size": list(size),
              "resize_to": resize_to, "color_mode": color_mode, "split_seed": seed,
              "listing_sha256": _listing_sha256(everything, root)}
    return {"root": root, "size": size, "class_names": class_names, "splits": splits, "source": source}


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _class_folders(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder} has no class subfolders; expected {folder}/<class name>/<images>.")
    if set(classes) == {"images", "masks"}:
        raise ValueError(f"{folder} holds images/ and masks/: that is a segmentation folder, not one folder per "
                         "class. Train on it with lab.tasks.segmentation.train_segmentation(dataset='folder:...').")
    return classes


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _list_images(folder: Path, class_names: list[str], *, every_class: bool = True) -> tuple[list[Path], np.ndarray]:
    """Lists the images of each class folder of ``folder`` with their labels.

    Args:
        every_class: refuse a class folder without images (else a missing class is allowed).
    """
    files, labels, empty = [], [], []
    for label, name in enumerate(class_names):
        found = _images_under(folder / name)
        if not found:
            empty.append(name)
        files += found
        labels += [label] * len(found)
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"No images ({suffixes}) found under {folder}.")
    if every_class and empty:
        shown = ", ".join(str(folder / name) for name in empty[:5])
        shown += f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ValueError(f"{len(empty)} class folder(s) hold no images ({suffixes}): {shown}. A class without images "
                         "would be a class the model must predict but never sees; remove the empty folder(s) or add "
                         "images to them, and run again.")
    # Images in a class folder that the class list lacks would be dropped without a word (they
    # have no label), so name them instead.
    unknown = sorted(p.name for p in folder.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in class_names and _images_under(p))
    if unknown:
        raise ValueError(f"{folder} has class folders that the training folder lacks: {unknown[:5]}; their images "
                         f"would have no label. The classes (from train) are {class_names[:10]}"
                         f"{'...' if len(class_names) > 10 else ''}; add these classes to train, or rename or remove "
                         "the folders.")
    return files, np.asarray(labels, dtype=np.int64)


def _read_images(files: list[Path], size: tuple[int, int], resize_to: int | None, color_mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels = 3 if color_mode == "rgb" else 1
    out = np.empty((len(files), size[0], size[1], channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image = to_8bit(image, path).convert("RGB" if channels == 3 else "L")
                if resize_to:
                    image = _resize_shorter_side(image, resize_to)
                    image = _center_crop(image, size)
                else:
                    image = image.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(
                f"Cannot read image {path}: {error}. Remove or replace this file and run again."
            ) from error
        out[i] = array.reshape(size[0], size[1], channels)
    return out


def to_8bit(image, path: Path):
    """Returns ``image`` with 8-bit values: 16-bit images scaled by their type range, others as they are.

    Pillow's own ``convert("L")`` clips 16-bit values to 255 (a 0..65535 ramp becomes 0, 255,
    255, ...), so 16-bit images are scaled here first, ``round(v * 255 / 65535)``, for images
    only: mask values are class values and never pass through this.

    Args:
        image: an open PIL image.
        path: its file, named in errors.

    Raises:
        ValueError: a floating-point image (mode ``F``), or a 32-bit integer image (mode ``I``)
            with values outside 0..65535.
    """
    from PIL import Image

    if image.mode == "F":
        values = np.asarray(image)
        raise ValueError(
            f"Image {path} holds 32-bit floating-point values (Pillow mode 'F', from {values.min():g} to "
            f"{values.max():g}); the kit reads 8-bit and 16-bit integer images and cannot tell which range floats are "
            "meant in. Save it as an 8-bit or 16-bit PNG or TIFF (for values in [0, 1]: round(value * 255) as uint8) "
            "and run again."
        )
    # Mode "I" (32-bit integers) is how Pillow opens some 16-bit files; it is read as 16-bit when
    # its values fit, and refused otherwise rather than scaled by a guessed range.
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"Image {path} holds integers from {values.min()} to {values.max()} (Pillow mode {image.mode!r}), "
                "outside the 16-bit range 0..65535 that the kit scales to 8 bits. Save it as an 8-bit or 16-bit "
                "PNG or TIFF and run again."
            )
        return Image.fromarray(np.round(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8))
    return image


def _resize_shorter_side(image, side: int):
    from PIL import Image

    width, height = image.size
    scale = side / min(width, height)
    return image.resize((max(side, round(width * scale)), max(side, round(height * scale))), Image.BILINEAR)


def _center_crop(image, size: tuple[int, int]):
    width, height = image.size
    if width < size[1] or height < size[0]:
        raise ValueError(f"Cannot centre-crop {size} from an image of {height}x{width}: the shorter side is resized "
                         f"to resize_to (a run's dataset_resize) first, which must be at least the crop "
                         f"(dataset_size). Raise dataset_resize, or lower dataset_size.")
    left, top = (width - size[1]) // 2, (height - size[0]) // 2
    return image.crop((left, top, left + size[1], top + size[0]))


def write_image_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], root: str | Path, *,
                       suffix: str = ".png") -> Path:
    """Writes images as ``root/<class>/<index>.png``: the layout ``load_image_folder`` reads.

    For arranging a raw archive into class folders (E11's Flowers-102 from its image files and
    label list) and for making an offline image-folder dataset from embedded data. Existing
    files are overwritten; each is written to a temporary name first, then renamed.

    Returns:
        ``root``.
    """
    from PIL import Image

    from lab.system.atomic import atomic_path

    root = Path(root)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    # Casting to uint8 wraps values above 255 and truncates fractions, so only images whose
    # values already are 8-bit integers are written; all are checked before the first is written.
    for index, image in enumerate(images):
        array = np.asarray(image)
        if array.dtype != np.uint8 and array.size and (
                array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
            raise ValueError(f"write_image_folder writes 8-bit images; image {index} holds {array.dtype} values from "
                             f"{array.min()} to {array.max()}. Scale the images to integers in 0..255 first "
                             "(e.g. np.round(images * 255).astype(np.uint8) for values in [0, 1]).")
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        array = np.asarray(image)
        array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
        with atomic_path(root / class_names[int(label)] / f"{index:06d}{suffix}") as temporary:
            Image.fromarray(array.astype(np.uint8)).save(temporary)
    return root
