"""The Keras datasets (mnist, fashion_mnist, cifar10, cifar100), cached under the data directory.

The files, URLs and checksums are those ``keras.datasets`` uses, kept in the registry's table
(``lab.data.datasets.registry.SOURCES``, ``files`` of each ``keras`` row); the kit downloads and parses
them itself so that they live in the kit's data directory, are verified, are written
atomically and fail with a clear message offline. Keras datasets have no validation split, so
one is carved from train (stratified, by seed).
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np

from lab.system import paths
from lab.data.datasets.base import Dataset, carve_validation
from lab.system.download import fetch

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def load_keras_dataset(
    name: str,
    *,
    label_mode: str = "fine",
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Dataset:
    """Loads one of the Keras datasets with a validation split carved from train.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or ``"cifar100"``.
        label_mode: for cifar100, ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
        val_fraction: share of the training images held out for validation.
        seed: draws the validation split.
        data_dir: cache directory (default: the kit's data directory).
        download: download missing files (verified against their checksum).

    Returns:
        A Dataset of uint8 images.
    """
    from lab.data.datasets.registry import SOURCES

    names = [row.name for row in SOURCES.values() if row.kind == "keras" and row.base is None]
    if name not in names:
        raise ValueError(f"Unknown Keras dataset {name!r}; available: {', '.join(names)}.")
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', received {label_mode!r}.")
    root = (Path(data_dir) if data_dir else paths.data_dir()) / "keras"
    files = [fetch(file["url"], root / file["file"], download=download,
                   **{key: file[key] for key in ("md5", "sha256") if key in file}) for file in SOURCES[name].files]
    if name == "mnist":
        with np.load(files[0], allow_pickle=False) as npz:
            (x_train, y_train), (x_test, y_test) = (npz["x_train"], npz["y_train"]), (npz["x_test"], npz["y_test"])
        class_names = [str(i) for i in range(10)]
    elif name == "fashion_mnist":
        x_train, y_train, x_test, y_test = (_read_idx(f) for f in files)
        class_names = FASHION_CLASSES
    else:
        x_train, y_train, x_test, y_test, class_names = _read_cifar(files[0], name, label_mode)
    x_train, y_train, x_val, y_val = carve_validation(x_train, np.asarray(y_train), val_fraction, seed)
    full_name = f"{name}_coarse" if name == "cifar100" and label_mode == "coarse" else name
    return Dataset(
        name=full_name, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=x_test, y_test=np.asarray(y_test), class_names=class_names,
        source={"files": [str(f.name) for f in files], "val_fraction": val_fraction, "val_seed": seed},
    )


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (the MNIST format): a magic number, the dimensions, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches, which hold only dicts, bytes, lists and NumPy arrays.

    Anything else in the archive is refused rather than executed.
    """

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name} from a CIFAR archive.")


def _read_cifar(path: Path, name: str, label_mode: str):
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if name == "cifar10":
        train_members = [f"data_batch_{i}" for i in range(1, 6)]
        test_member, meta_member = "test_batch", "batches.meta"
        label_key, names_key = "labels", "label_names"
    else:
        train_members, test_member, meta_member = ["train"], "test", "meta"
        label_key, names_key = f"{label_mode}_labels", f"{label_mode}_label_names"

    with tarfile.open(path, "r:gz") as archive:
        def load(member: str) -> dict:
            handle = archive.extractfile(f"{folder}/{member}")
            raw = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
            return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}

        def images_labels(members: list[str]) -> tuple[np.ndarray, np.ndarray]:
            batches = [load(m) for m in members]
            x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.concatenate([np.asarray(b[label_key]) for b in batches])
            return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)

        x_train, y_train = images_labels(train_members)
        x_test, y_test = images_labels([test_member])
        class_names = [n.decode() for n in load(meta_member)[names_key]]
    return x_train, y_train, x_test, y_test, class_names
