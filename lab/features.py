"""A frozen-feature cache: run a frozen backbone once, then train the head on its features.

With a frozen backbone (``unfreeze=0``) every epoch would otherwise push every image through
the same unchanging network. The features depend only on the backbone's weights, the input
preprocessing and the images, so they are computed once per split and reused by every epoch
and every run with the same key (a learning-rate sweep over heads pays for one pass).

The key hashes the feature extractor's weights (so ImageNet, random-seeded and kit-saved
backbones never mix), its configuration (backbone, input size, pooling, scaling) and the
images themselves. The cache lives in memory (this process) or on disk under
``data/features/`` as ``.npz`` files written atomically.

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
from collections import OrderedDict
from pathlib import Path

import keras
import numpy as np

from lab.atomic import atomic_path
from lab.datasets import Dataset
from lab.models.transfer import feature_extractor
from lab.paths import data_dir
from lab.pipeline import make_pipeline

CACHE_MODES = ("memory", "disk")
_MEMORY: "OrderedDict[str, dict[str, np.ndarray]]" = OrderedDict()
# A notebook's sweep over heads reuses one entry; older entries are dropped beyond this many bytes
# (CIFAR-10's ResNet-50 features are about 0.5 GB), the newest is always kept.
_MEMORY_BYTES = 2 * 1024**3


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
                     input_scaling: str = "unit", image_size: int | None = None, seed: int = 0) -> Features:
    """Returns the pooled backbone features of every split of ``data``, cached.

    Args:
        model: a transfer model (its layers up to ``pool`` are the extractor).
        data: the dataset.
        cache: "memory", "disk" or None (compute, store nothing).
        passes: augmented passes of the training split (1 without augmentation).
        augmenter: the training augmentation (required when passes > 1).
        batch_size: images per forward pass.
        input_scaling: the pipeline scaling the model was built for.
        image_size: the pipeline's resize (``RunConfig.image_size``), before the model's own.
        seed: seeds the augmentation passes.
    """
    if cache not in (None, *CACHE_MODES):
        raise ValueError(f"feature_cache must be one of {CACHE_MODES} or None, received {cache!r}.")
    if passes < 1 or (passes > 1 and augmenter is None):
        raise ValueError(f"passes={passes}: use 1 without augmentation, or more than 1 with an augmenter.")
    started = time.perf_counter()
    extractor = feature_extractor(model)
    key = cache_key(extractor, data, passes=passes, augmenter=augmenter, input_scaling=input_scaling,
                    image_size=image_size, seed=seed)
    stored = _load(key, cache)
    hit = stored is not None
    if stored is None:
        stored = _extract(extractor, data, passes=passes, augmenter=augmenter, batch_size=batch_size,
                          input_scaling=input_scaling, image_size=image_size, seed=seed)
        _store(key, stored, cache)
    return Features(stored["train"], stored["train_labels"], stored["train_clean"], stored["val"], stored["test"],
                    key, hit, time.perf_counter() - started)


def cache_key(extractor: keras.Model, data: Dataset, *, passes: int, augmenter, input_scaling: str,
              image_size: int | None, seed: int) -> str:
    """Hashes everything the features depend on: weights, configuration and images."""
    digest = hashlib.sha256()
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    layers = [layer.get_config() for layer in extractor.layers if not isinstance(layer, keras.Model)]
    described = {"layers": layers, "input_scaling": input_scaling, "image_size": image_size, "passes": passes,
                 "augmenter": augmenter.get_config() if augmenter is not None and passes > 1 else None,
                 "seed": seed if passes > 1 else None}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for split in ("train", "val", "test"):
        x, y = data.split(split)
        digest.update(str(x.shape).encode())
        digest.update(np.ascontiguousarray(x).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:20]


def clear_memory_cache() -> None:
    """Forgets every feature set held in memory."""
    _MEMORY.clear()


def feature_cache_dir() -> Path:
    return data_dir() / "features"


def _extract(extractor, data: Dataset, *, passes, augmenter, batch_size, input_scaling, image_size, seed) -> dict:
    common = dict(training=False, batch_size=batch_size, input_scaling=input_scaling, image_size=image_size,
                  cache=False)

    def run(images: np.ndarray, augment: bool = False) -> np.ndarray:
        # In data order (no shuffle), so the dataset's labels line up; the head's own pipeline shuffles.
        dataset = make_pipeline(images, **common)
        if augment:
            dataset = dataset.map(lambda batch: augmenter(batch, training=True), num_parallel_calls=1,
                                  deterministic=True)
        return np.asarray(extractor.predict(dataset, verbose=0), dtype=np.float32)

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
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in ("train", "train_labels", "train_clean", "val", "test")}
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache file is recomputed, never trusted
    return None


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
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **stored)
