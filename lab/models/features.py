"""A frozen-feature cache: run a frozen backbone once, then train the head on its features.

With a frozen backbone (``unfreeze=0``) every epoch would otherwise push every image through
the same unchanging network. The features depend only on the backbone's weights, the input
preprocessing and the images, so they are computed once per split and reused by every epoch
and every run with the same key (a learning-rate sweep over heads pays for one pass).

The key hashes the feature extractor's weights (every byte, with their shapes and dtypes, so
ImageNet, random-seeded and kit-saved backbones never mix), its configuration (backbone, input
size, pooling, scaling, dtype policy), the augmentation (passes, the augmenter's configuration
and the seed, when there are several passes) and the data itself: every byte of every split's
images and labels, with their shapes and dtypes, not a sample. Hashing costs about 0.15 s per
150 MB of images (50,000 32x32x3 images, one core), once per call. The cache lives in memory
(this process) or on disk under ``data/features/`` as ``<key>.npz`` files written atomically.

Disk entries are checked on every hit. Each file holds, beside the arrays, a ``meta`` entry
written in the same atomic rename: the key it was computed for and a sha256 of its arrays
(names, dtypes, shapes, bytes). A file that cannot be read, that holds no ``meta`` (written by
an older kit), that was made for another key (copied or renamed), or whose arrays no longer
match their hash (damaged or edited by hand) is not used: the kit prints a note naming the
file and what differs, recomputes the features and replaces it. Recomputing rather than
refusing is deliberate: the cache is derived from the run's own inputs, which the key already
covers, so the features recomputed are the ones a run without a cache would use, and a run (or
a sweep of them) does not stop for a file the kit can remake itself. Nothing unverified is
used either way. The hash is kept inside the ``.npz`` rather than in a second file so that
the data and its hash are committed by one rename: two processes filling the same entry at
once (a parallel batch) can never leave one's hash beside the other's file (``np.savez``
output differs between writes by its zip timestamps). Verifying costs a sha256 of the
features read: about 0.3 s for 400 MB (50,000 x 2,048 float32), next to minutes to recompute.

Augmentation changes the images every epoch, so it turns the cache off, unless ``passes`` > 1:
then that many augmented passes of the training split are computed and epoch ``e`` trains on
pass ``e % passes``. That is a different regime from fresh augmentation each epoch (the head
sees only ``passes`` versions of each image) and the run record says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import keras
import numpy as np

from lab.system.atomic import atomic_path
from lab.data.datasets import Dataset
from lab.models.transfer import feature_extractor
from lab.system.paths import data_dir
from lab.data.pipeline import make_pipeline
from lab.system.progress import progress

CACHE_MODES = ("memory", "disk")
_MEMORY: "OrderedDict[str, dict[str, np.ndarray]]" = OrderedDict()
# A notebook's sweep over heads reuses one entry; older entries are dropped beyond this many bytes
# (CIFAR-10's ResNet-50 features are about 0.5 GB), the newest is always kept.
_MEMORY_BYTES = 2 * 1024**3
# The arrays of a feature set, in the order their content hash reads them.
_ARRAYS = ("train", "train_labels", "train_clean", "val", "test")
_FORMAT = "lab.models.features"
_FORMAT_VERSION = 1


@dataclasses.dataclass
class Features:
    """Pooled backbone features of every split, and how they were obtained.

    Attributes:
        train: (passes, n_train, dim) features of the training split (one pass per augmentation).
        train_labels: (passes, n_train) labels, in the order of ``train``.
        train_clean, val, test: (n, dim) features of the unaugmented images, in the dataset's
            order (what the train/val/test metrics are computed on).
        key: the cache key; hit: whether they came from the cache; seconds: time to get them.
    """

    train: np.ndarray
    train_labels: np.ndarray
    train_clean: np.ndarray
    val: np.ndarray
    test: np.ndarray
    key: str
    hit: bool
    seconds: float

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train_clean, "val": self.val, "test": self.test}[name]


def compute_features(model: keras.Model, data: Dataset, *, cache: str | None = "memory", passes: int = 1,
                     augmenter: keras.Sequential | None = None, batch_size: int = 256,
                     input_scaling: str = "unit", pipeline_size: int | None = None, seed: int = 0,
                     progress_bar: bool = True) -> Features:
    """Returns the pooled backbone features of every split of ``data``, cached.

    Args:
        model: a transfer model (its layers up to ``pool`` are the extractor).
        data: the dataset.
        cache: "memory", "disk" or None (compute, store nothing).
        passes: augmented passes of the training split (1 without augmentation).
        augmenter: the training augmentation (required when passes > 1).
        batch_size: images per forward pass.
        input_scaling: the pipeline scaling the model was built for.
        pipeline_size: the pipeline's resize (``RunConfig.pipeline_size``), before the model's own.
        seed: seeds the augmentation passes.
        progress_bar: count the images pushed through the backbone on a bar (``lab.system.progress``; only
            when they are computed, not on a cache hit).

    Returns:
        The features, with their cache key, whether they were a cache hit and the seconds taken.
    """
    if cache not in (None, *CACHE_MODES):
        raise ValueError(f"feature_cache must be one of {CACHE_MODES} or None, received {cache!r}.")
    if passes < 1 or (passes > 1 and augmenter is None):
        raise ValueError(f"passes={passes}: use 1 without augmentation, or more than 1 with an augmenter.")
    started = time.perf_counter()
    extractor = feature_extractor(model)
    key = cache_key(extractor, data, passes=passes, augmenter=augmenter, input_scaling=input_scaling,
                    pipeline_size=pipeline_size, seed=seed)
    stored = _load(key, cache)
    hit = stored is not None
    if stored is None:
        stored = _extract(extractor, data, passes=passes, augmenter=augmenter, batch_size=batch_size,
                          input_scaling=input_scaling, pipeline_size=pipeline_size, seed=seed,
                          progress_bar=progress_bar)
        _store(key, stored, cache)
    return Features(stored["train"], stored["train_labels"], stored["train_clean"], stored["val"], stored["test"],
                    key, hit, time.perf_counter() - started)


def cache_key(extractor: keras.Model, data: Dataset, *, passes: int, augmenter, input_scaling: str,
              pipeline_size: int | None, seed: int) -> str:
    """Hashes everything the features depend on: weights, configuration, augmentation and data.

    Every byte of the weights and of every split's images and labels is hashed (with shapes
    and dtypes), so a change to one pixel or one label gives another key.
    """
    digest = hashlib.sha256()
    weights = [np.ascontiguousarray(keras.ops.convert_to_numpy(weight)) for weight in extractor.weights]
    for weight in weights:
        digest.update(weight.data)
    # A nested backbone's own configuration is long; its class, dtype policy and weight shapes say enough.
    layers = [layer.get_config() for layer in extractor.layers if not isinstance(layer, keras.Model)]
    nested = [[type(layer).__name__, layer.name, layer.dtype_policy.name]
              for layer in extractor.layers if isinstance(layer, keras.Model)]
    described = {"layers": layers, "nested": nested, "weights": [[list(w.shape), w.dtype.str] for w in weights],
                 "input_scaling": input_scaling, "pipeline_size": pipeline_size, "passes": passes,
                 "augmenter": augmenter.get_config() if augmenter is not None and passes > 1 else None,
                 "seed": seed if passes > 1 else None}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for split in ("train", "val", "test"):
        for array in data.split(split):
            array = np.ascontiguousarray(array)
            digest.update(f"{split} {array.dtype.str} {array.shape}".encode())
            digest.update(array.data)
    return digest.hexdigest()[:20]


def content_sha256(stored: dict[str, np.ndarray]) -> str:
    """The sha256 of a feature set's arrays (names, dtypes, shapes and bytes), as a disk entry records it."""
    digest = hashlib.sha256()
    for name in _ARRAYS:
        array = np.ascontiguousarray(stored[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def clear_memory_cache() -> None:
    """Forgets every feature set held in memory."""
    _MEMORY.clear()


def feature_cache_dir() -> Path:
    return data_dir() / "features"


class _CountImages(keras.callbacks.Callback):
    """Advances a progress bar by the images of each predicted batch."""

    def __init__(self, bar) -> None:
        super().__init__()
        self.bar = bar

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        outputs = (logs or {}).get("outputs")
        if outputs is not None:
            self.bar.update(int(keras.tree.flatten(outputs)[0].shape[0]))


def _extract(extractor, data: Dataset, *, passes, augmenter, batch_size, input_scaling, pipeline_size, seed,
             progress_bar: bool = True) -> dict:
    common = dict(training=False, batch_size=batch_size, input_scaling=input_scaling, pipeline_size=pipeline_size,
                  cache=False)
    # One bar for every image of every split and pass (the clean training split is also pass 0 when
    # there is no augmentation); Keras' own per-call Progbar would restart for each of them.
    total = len(data.x_train) * (1 + (passes if passes > 1 else 0)) + len(data.x_val) + len(data.x_test)

    with progress(total=total, desc="features", unit="img", enabled=progress_bar) as bar:
        def run(images: np.ndarray, augment: bool = False) -> np.ndarray:
            # In data order (no shuffle), so the dataset's labels line up; the head's own pipeline shuffles.
            dataset = make_pipeline(images, **common)
            if augment:
                dataset = dataset.map(lambda batch: augmenter(batch, training=True), num_parallel_calls=1,
                                      deterministic=True)
            return np.asarray(extractor.predict(dataset, verbose=0, callbacks=[_CountImages(bar)]), dtype=np.float32)

        clean = run(data.x_train)
        # Each augmented pass is a fresh draw from the seeded augmenter (the same draws every time).
        train = [clean] if passes == 1 else [run(data.x_train, augment=True) for _ in range(passes)]
        return {"train": np.stack(train), "train_labels": np.stack([data.y_train] * passes), "train_clean": clean,
                "val": run(data.x_val), "test": run(data.x_test)}


def _load(key: str, cache: str | None) -> dict | None:
    if cache == "memory" and key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = feature_cache_dir() / f"{key}.npz"
    if cache == "disk" and path.exists():
        stored, problem = read_cache_file(path, key)
        if problem is None:
            return stored
        # Derived from this run's own inputs, so recomputed rather than refused (module docstring).
        print(f"Feature cache {path} {problem}: not used; recomputing the features and replacing it.", flush=True)
        path.unlink(missing_ok=True)
    return None


def read_cache_file(path: str | Path, key: str) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Reads a disk cache entry and checks it against its key and content hash.

    Args:
        path: the ``.npz`` file.
        key: the key the features are wanted for (``cache_key``).

    Returns:
        ``(arrays, None)`` for an entry that matches, ``(None, what differs)`` otherwise.
    """
    try:
        with np.load(path) as archive:
            if "meta" not in archive.files:
                return None, "was written by an older kit, without the key and content hash it is checked against"
            meta = json.loads(str(archive["meta"]))
            missing = [name for name in _ARRAYS if name not in archive.files]
            if missing:
                return None, f"lacks the arrays {', '.join(missing)}"
            stored = {name: archive[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        return None, f"cannot be read ({type(error).__name__}: {error})"
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return None, f"holds no {_FORMAT} metadata"
    if meta.get("key") != key:
        return None, f"was computed for other inputs (key {meta.get('key')} in the file, {key} for this run)"
    content = content_sha256(stored)
    if content != meta.get("content_sha256"):
        return None, (f"changed after it was written (content sha256 {str(meta.get('content_sha256'))[:16]}... "
                      f"recorded in it, {content[:16]}... now)")
    return stored, None


def _memory_bytes() -> int:
    return sum(array.nbytes for entry in _MEMORY.values() for array in entry.values())


def _store(key: str, stored: dict, cache: str | None) -> None:
    if cache == "memory":
        _MEMORY[key] = stored
        while len(_MEMORY) > 1 and _memory_bytes() > _MEMORY_BYTES:
            _MEMORY.popitem(last=False)
    elif cache == "disk":
        path = feature_cache_dir() / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "key": key, "content_sha256": content_sha256(stored),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **stored, meta=np.array(json.dumps(meta, sort_keys=True)))
