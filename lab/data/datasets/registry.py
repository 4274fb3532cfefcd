"""The one table of named data sources, and the one lookup by name (``find_source``).

Every loader that takes a dataset name (``load_dataset``, ``open_stream``, ``estimate_nbytes``,
``load_segmentation_dataset``, ``load_instance_dataset``) asks ``find_source`` for the row of the
name, then calls the reader of the row's ``kind``. A row says what the name is (its kind and
the tasks it serves), what it holds (classes, channels, the image sides it comes in, the images
of each published split) and where it is downloaded from (url and checksum of every file).

Rows are of two sorts: a fixed name (``"cifar10"``, ``"shapes"``) and a prefix ending in ``:``
whose rest is an argument (``"folder:<path>"``, ``"tfds:<name>"``). A fixed name wins over a
prefix (``tfds:oxford_iiit_pet`` is the pets segmentation set, any other ``tfds:`` name a TFDS
classification set). The MedMNIST rows are read from medmnist's own registry
(``medmnist.info.INFO``, ``medmnist_info``), which is data the kit does not copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
from typing import Any

TASKS = ("classification", "segmentation", "instance")
_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_KERAS_SPLITS = {"train": 60_000, "test": 10_000}
_CIFAR_SPLITS = {"train": 50_000, "test": 10_000}
# The image sides MedMNIST publishes (the 3D flags: 28 and 64 only).
MEDMNIST_SIZES = (28, 64, 128, 224)


@dataclasses.dataclass(frozen=True)
class Source:
    """One row of the table.

    Attributes:
        name: the registry name, or a prefix ending in ``:`` (then ``shown`` says what follows it).
        kind: which reader loads it (``digits``, ``shapes``, ``keras``, ``medmnist``, ``npz``,
            ``tfds``, ``folder``, ``pets``, ``coco``, ``membranes``).
        tasks: the tasks it serves (of ``TASKS``).
        classes: the number of classes, as a classification set (a segmentation set's own
            count, background included; ``shapes`` as segmentation adds its background to
            these). None: known only once read.
        channels: image channels (None: known only once read).
        sizes: the image sides it can be loaded at (one: a fixed size; None: any side).
        splits: images of each published split (None: known only once read).
        files: each downloaded file: ``file``, ``url`` and ``md5`` or ``sha256`` (MedMNIST's also
            the ``size`` it is the images of).
        options: the loader arguments the name implies (``cifar100_coarse``: coarse labels).
        base: the row whose files it reads, when another (``cifar100_coarse`` reads ``cifar100``).
        shown: how a list of names shows it (a prefix: ``"folder:<path>"``).
        listed: whether a list of names shows it (MedMNIST's 3D flags are refused, not offered).
    """

    name: str
    kind: str
    tasks: tuple[str, ...] = ("classification",)
    classes: int | None = None
    channels: int | None = None
    sizes: tuple[int, ...] | None = None
    splits: dict[str, int] | None = None
    files: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    base: str | None = None
    shown: str | None = None
    listed: bool = True

    @property
    def is_prefix(self) -> bool:
        return self.name.endswith(":")

    @property
    def fixed_size(self) -> int | None:
        """The one image side of a set that comes in one size, else None."""
        return self.sizes[0] if self.sizes is not None and len(self.sizes) == 1 else None

    def file_for(self, size: int) -> dict[str, Any]:
        """The downloaded file of the images at ``size`` pixels (MedMNIST)."""
        return next(entry for entry in self.files if entry.get("size") == size)


def _keras_file(file: str, url: str | None = None, **digest: str) -> dict[str, Any]:
    return {"file": file, "url": url or _KERAS_URL + file, **digest}


SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("digits", "digits", classes=10, channels=1, sizes=(8,), splits={"all": 1797}),
    Source("shapes", "shapes", tasks=TASKS, classes=6, channels=3),
    # E7's generated set made easy (lab.tasks.instance.data.DIFFICULTIES), for quick runs on a CPU. Few
    # validation images, so that scoring each epoch costs little beside training.
    Source("shapes_easy", "shapes", tasks=("instance",), classes=2, channels=3,
           options={"difficulty": "easy", "max_instances": 3, "noise": 0.05, "num_train": 240, "num_val": 16,
                    "num_test": 16}),
    Source("mnist", "keras", classes=10, channels=1, sizes=(28,), splits=_KERAS_SPLITS,
           files=(_keras_file("mnist.npz", sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),)),
    # MD5s as published in zalandoresearch/fashion-mnist's README.
    Source("fashion_mnist", "keras", classes=10, channels=1, sizes=(28,), splits=_KERAS_SPLITS, files=(
        _keras_file("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        _keras_file("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
        _keras_file("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
        _keras_file("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
    )),
    Source("cifar10", "keras", classes=10, channels=3, sizes=(32,), splits=_CIFAR_SPLITS, files=(
        _keras_file("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),)),
    Source("cifar100", "keras", classes=100, channels=3, sizes=(32,), splits=_CIFAR_SPLITS, files=(
        _keras_file("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),)),
    Source("cifar100_coarse", "keras", classes=20, channels=3, sizes=(32,), splits=_CIFAR_SPLITS,
           options={"label_mode": "coarse"}, base="cifar100"),
    Source("tfds:oxford_iiit_pet", "pets", tasks=("segmentation",), classes=3, channels=3,
           splits={"train": 3680, "test": 3669}),
    Source("tfds:", "tfds", shown="tfds:<name>"),
    Source("folder:", "folder", tasks=("classification", "segmentation"), shown="folder:<path>"),
    Source("npz:", "npz", shown="npz:<path>"),
    Source("coco:", "coco", tasks=("instance",), shown="coco:<path>"),
    Source("membranes", "membranes", tasks=("segmentation",), classes=2, channels=1),
)}


def medmnist_info() -> dict[str, dict[str, Any]]:
    """medmnist's registry, ``medmnist.info.INFO``: every flag (2D and 3D) with its task, labels,
    channels, split sizes, and the url and md5 of its npz at each size."""
    # medmnist/__init__.py tries to import its torch Dataset classes and prints a reminder to
    # install torch when that fails; the registry itself needs none of it, so mute the print.
    with contextlib.redirect_stdout(io.StringIO()):
        from medmnist.info import INFO
    return INFO


def _medmnist_sources() -> dict[str, Source]:
    """The MedMNIST rows, from medmnist's registry (every flag; the 3D ones unlisted, refused by the reader)."""
    rows = {}
    for flag, meta in medmnist_info().items():
        keys = {size: medmnist_size_key(size) for size in MEDMNIST_SIZES if f"url{medmnist_size_key(size)}" in meta}
        sizes = tuple(keys)
        files = tuple({"file": f"{flag}{key}.npz", "size": size, "url": meta[f"url{key}"], "md5": meta[f"MD5{key}"]}
                      for size, key in keys.items())
        rows[flag] = Source(flag, "medmnist", classes=len(meta["label"]), channels=int(meta["n_channels"]),
                            sizes=sizes, splits=dict(meta["n_samples"]), files=files,
                            listed=not flag.endswith("3d"))
    return rows


def medmnist_size_key(size: int) -> str:
    """MedMNIST's suffix of a size in its registry keys and file names (``""``, ``"_64"``...)."""
    return "" if size == 28 else f"_{size}"


def sources() -> dict[str, Source]:
    """Every row: the fixed table and MedMNIST's flags, by name."""
    return {**SOURCES, **_medmnist_sources()}


def list_sources(task: str = "classification") -> list[str]:
    """The names a list shows for ``task``: fixed names, then the prefixes with their argument."""
    rows = [row for row in sources().values() if task in row.tasks and row.listed]
    fixed = [row.name for row in rows if not row.is_prefix]
    return [*fixed, *(row.shown or row.name for row in rows if row.is_prefix)]


_WHAT = {"classification": "dataset", "segmentation": "segmentation dataset", "instance": "instance dataset"}


def find_source(name: str, task: str = "classification") -> tuple[Source, str | None]:
    """The row of ``name`` for ``task``, and the argument after its prefix (None for a fixed name).

    Fixed names are matched without regard to case or surrounding spaces; a prefix's argument
    (a path, a TFDS name) keeps its case.

    Raises:
        ValueError: an unknown name (or a prefix with nothing after it), naming the closest
            valid name and listing every one for the task.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; the tasks are {', '.join(TASKS)}.")
    stripped = str(name).strip()
    lowered = stripped.lower()
    rows = sources()
    row = rows.get(lowered)
    if row is not None and not row.is_prefix and task in row.tasks:
        return row, None
    for row in rows.values():
        if row.is_prefix and task in row.tasks and lowered.startswith(row.name) and stripped[len(row.name):].strip():
            return row, stripped[len(row.name):]
    available = list_sources(task)
    close = difflib.get_close_matches(lowered, available, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {_WHAT[task]} {name!r}.{hint} Available: {', '.join(available)}.")
