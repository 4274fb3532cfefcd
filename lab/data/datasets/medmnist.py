"""MedMNIST v2 datasets, read from medmnist's own registry and npz files, without PyTorch.

The ``medmnist`` package lists torch and torchvision as requirements (several GB with CUDA),
but its registry (``medmnist.info.INFO``: labels, split sizes, url and md5 of every flag and
size) is plain Python. The kit installs medmnist with ``pip install --no-deps`` (see the
Makefile and README), reads that registry, and downloads and parses the npz files itself.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from lab.system import paths
from lab.data.datasets.base import SPLITS, Dataset
import lab.data.datasets.registry as table
from lab.system.download import ChecksumError, fetch, file_hash

def flags_2d() -> list[str]:
    """Returns the 2D MedMNIST flags (the ones the kit's image models can train on)."""
    return sorted(flag for flag in table.medmnist_info() if not flag.endswith("3d"))


def is_multilabel(flag: str) -> bool:
    return table.medmnist_info()[flag]["task"].startswith("multi-label")


def npz_path(flag: str, size: int = 28, data_dir: str | Path | None = None) -> Path:
    """Returns where the npz of ``flag`` at ``size`` pixels is cached."""
    root = Path(data_dir) if data_dir else paths.data_dir()
    return root / "medmnist" / f"{flag}{table.medmnist_size_key(size)}.npz"


def load_medmnist(flag: str, **options: Any) -> Dataset:
    """Loads a 2D MedMNIST dataset with its official train/val/test split into memory: what
    ``stream_medmnist`` reads (same arguments and errors), collected."""
    return stream_medmnist(flag, **options).collect()


def stream_medmnist(
    flag: str, *, size: int = 28, data_dir: str | Path | None = None, download: bool = True
):
    """The reader of MedMNIST: a 2D flag with its official train/val/test split, read a chunk at a time.

    The flag and size are checked and the npz downloaded and verified against the md5 of the
    registry (``lab.data.datasets.registry``); the npz members are then read a chunk of images at a
    time (see ``lab.data.datasets.sources``).

    Args:
        flag: a 2D MedMNIST flag such as ``"bloodmnist"`` or ``"pneumoniamnist"``.
        size: image side in pixels, one of 28, 64, 128, 224.
        data_dir: cache directory (default: the kit's data directory).
        download: download the npz when it is not cached (checked against its md5).

    Returns:
        A ``lab.data.datasets.sources.StreamSource`` of uint8 images of shape (size, size, channels).

    Raises:
        ValueError: unknown flag or size, a 3D flag, or a multi-label flag (chestmnist).
        DatasetNotAvailableError: the npz is not cached and cannot be downloaded.
        ChecksumError: the cached npz is not the registry's.
    """
    from lab.data.datasets.sources import StreamSource, npz_members, npz_split_sources

    path, meta, file = _registry_file(flag, size, data_dir, download)
    try:
        splits = npz_split_sources(path, npz_members(path))
    except ValueError as error:
        raise ValueError(f"{path} is not a readable MedMNIST npz ({error}). Delete it and run again to download it "
                         "anew.") from error
    return StreamSource(name=flag, class_names=_registry_class_names(meta), task=meta["task"],
                        source=_registry_source(meta, file, size), splits=splits)


def _registry_file(flag: str, size: int, data_dir: str | Path | None, download: bool
                   ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Checks a flag and size, and returns its verified npz, medmnist's entry and the registry's file."""
    info = table.medmnist_info()
    row = table.sources().get(flag)
    if row is None or row.kind != "medmnist":
        raise ValueError(f"Unknown MedMNIST flag {flag!r}. 2D flags: {', '.join(flags_2d())}.")
    if flag.endswith("3d"):
        raise ValueError(
            f"{flag!r} is a 3D MedMNIST dataset; the kit's models take 2D images. "
            f"2D flags: {', '.join(flags_2d())}."
        )
    if is_multilabel(flag):
        raise ValueError(
            f"{flag!r} is multi-label ({info[flag]['task']}): each image has several 0/1 labels, "
            "which needs sigmoid outputs and per-label metrics that the kit does not train yet. "
            f"Pick a single-label flag: {', '.join(f for f in flags_2d() if not is_multilabel(f))}."
        )
    if size not in table.MEDMNIST_SIZES:
        raise ValueError(f"MedMNIST size must be one of {table.MEDMNIST_SIZES}, received size={size}.")
    file = row.file_for(size)
    target = npz_path(flag, size, data_dir)
    try:
        path = fetch(file["url"], target, md5=file["md5"], download=download)
    except ChecksumError as error:
        # Refused under the registry name, whose records promise the official data; the file
        # may still be the user's own on purpose (a re-export, a subset), which npz: reads.
        raise ChecksumError(
            f"{error} If this file is your own MedMNIST-format data rather than a damaged download, use it as "
            f"your own file: dataset='npz:{target}' (better: move it out of {target.parent} first). Its run "
            "records then mark the source as unofficial, with the file's md5."
        ) from error
    return path, info[flag], file


def _registry_class_names(meta: dict[str, Any]) -> list[str]:
    labels = meta["label"]
    return [labels[str(i)] for i in range(len(labels))]


def _registry_source(meta: dict[str, Any], file: dict[str, Any], size: int) -> dict[str, Any]:
    return {"url": file["url"], "md5": file["md5"], "size": size,
            "license": meta.get("license"), "medmnist_version": _version()}


# -- your own npz files -------------------------------------------------------------------------


def load_npz(path: str | Path, **options: Any) -> Dataset:
    """Loads your own MedMNIST-format npz into memory (registry name ``npz:<path>``): what
    ``stream_npz`` reads (same arguments and errors), collected."""
    return stream_npz(path, **options).collect()


def stream_npz(path: str | Path, *, size: int | None = None, class_names: list[str] | None = None,
               name: str | None = None):
    """The reader of your own MedMNIST-format npz files, a chunk of images at a time.

    Every array's header and every label is checked before an image is read.

    Args:
        path: the npz file, holding ``{train,val,test}_images`` (NHW or NHWC, uint8 or
            float32) and ``{train,val,test}_labels`` (one integer per image, (N,) or (N, 1)),
            and optionally ``class_names`` (a string array).
        size: the image side, if you want it checked (an npz comes in one size: resize with
            the run's ``pipeline_size`` instead).
        class_names: the class names; they take precedence over the file's. Without either,
            classes are numbered 0 to the largest label (the record says "inferred").
        name: the dataset's name in records (default: the file name without ``.npz``).

    Returns:
        A ``lab.data.datasets.sources.StreamSource`` whose ``source`` marks it as unofficial, with the
        file's md5, size in bytes and path (and the MedMNIST flag whose official md5 it has, if
        any). The md5 reads the whole file once (a few seconds per GB), as the registry's files
        are checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an npz, missing or malformed arrays, a size that differs from the
            images', class names that do not cover the labels.
    """
    from lab.data.datasets.sources import StreamSource, npz_members, npz_split_sources

    path = _existing_npz(path)
    members = npz_members(path)
    splits = npz_split_sources(path, members)
    _check_npz_size(path, splits["train"].shape, size)
    names, how = _npz_class_names(path, members, {s: splits[s].labels for s in SPLITS}, class_names)
    return StreamSource(name=name or path.stem, class_names=names,
                        task="binary-class" if len(names) == 2 else "multi-class",
                        source=_npz_source(path, how), splits=splits)


def npz_nbytes(path: str | Path) -> int:
    """The bytes an npz's images take in memory, from the arrays' headers (nothing else is read)."""
    from lab.data.datasets.sources import npz_members

    members = npz_members(_existing_npz(path))
    return sum(int(np.prod(m.shape, dtype=np.int64)) * m.dtype.itemsize
               for name, m in members.items() if name.endswith("_images"))


def _existing_npz(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No npz file at {path} (dataset='npz:{path}'). Give the path of a MedMNIST-format "
                                "npz: {train,val,test}_images and {train,val,test}_labels arrays.")
    return path


def _check_npz_size(path: Path, shape: tuple[int, ...], size: int | None) -> None:
    if size is not None and tuple(shape[:2]) != (size, size):
        raise ValueError(f"{path} holds {shape[0]}x{shape[1]} images, received size={size} (dataset_size). An npz "
                         "comes in one size: leave dataset_size unset and resize in the pipeline with pipeline_size.")


def _npz_class_names(path: Path, members: dict, labels: dict[str, np.ndarray],
                     given: list[str] | None) -> tuple[list[str], str]:
    """The class names (given, from the file's ``class_names`` array, or numbered) and which."""
    top = max((int(y.max()) for y in labels.values() if len(y)), default=0) + 1
    low = min((int(y.min()) for y in labels.values() if len(y)), default=0)
    if low < 0:
        raise ValueError(f"{path}: labels must be class ids from 0, received a label {low}.")
    if given is not None:
        names, how = [str(n) for n in given], "given"
    elif "class_names" in members:
        array = members["class_names"].read()
        if array.dtype.kind not in "US" or array.ndim != 1:
            raise ValueError(f"{path}: class_names must be a 1-D string array, received {array.dtype} of shape "
                             f"{array.shape}.")
        names, how = [str(n.decode() if isinstance(n, bytes) else n) for n in array], "from the file"
    else:
        return [str(i) for i in range(top)], "inferred"
    if len(names) < top:
        raise ValueError(f"{path}: {len(names)} class names ({how}) but labels up to {top - 1}; give one name per "
                         "class.")
    return names, how


def _npz_source(path: Path, how: str) -> dict[str, Any]:
    """Where your own npz came from: unofficial, with its md5 (and the MedMNIST flag it matches)."""
    md5 = file_hash(path, "md5")
    matches = [f"{flag}{'' if key == 'MD5' else key[3:]}" for flag, meta in table.medmnist_info().items()
               for key, value in meta.items() if key.startswith("MD5") and value == md5]
    return {"npz": str(path.resolve()), "md5": md5, "bytes": path.stat().st_size, "official": False,
            "class_names": how, **({"matches_medmnist": matches[0]} if matches else {})}


def _version() -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        from medmnist.info import __version__
    return __version__
