"""Instance-segmentation data for E7: the generated multi-shape set and COCO-format annotations.

An ``InstanceDataset`` holds, for each split, a list of ``HxWx3`` uint8 images (sizes may differ)
and one ``Instances`` per image (tight boxes, class ids 1..K, binary masks at the image's size).

- ``load_instance_shapes``: several coloured shapes per image on a textured, noisy background,
  drawn from a seed. Shapes overlap and a later shape occludes earlier ones; every mask is the
  visible part of its shape, and a shape is only drawn if every shape under it keeps at least
  ``MIN_VISIBLE_FRACTION`` of its area and ``MIN_VISIBLE_PIXELS`` pixels visible, so no painted
  shape goes unlabelled and no instance is a sliver. Colours are random per shape, so the class
  is the shape and not the colour. ``difficulty="easy"`` (the registry's ``"shapes_easy"``) draws
  an easier set (``DIFFICULTIES``), on which a light Mask R-CNN from random weights shows that it
  learns within CPU minutes (docs/instance-segmentation.md has the figures).
- ``load_coco``: COCO instance annotations (polygons, RLE compressed or not) with their images.
  Needs pycocotools (the E7 extra).

``load_instance_dataset(name)`` picks one by name: ``"shapes"``, ``"shapes_easy"`` or ``"coco:PATH"``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.data.datasets.embedded import shape_mask
from lab.tasks.instance.types import Instances

SPLITS = ("train", "val", "test")

# The classes of the generated set: shapes whose outlines differ even when small and rotated.
INSTANCE_SHAPE_CLASSES = ("circle", "square", "triangle")

# An occluded shape stays an instance only with this much of it visible (see the module docstring).
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_PIXELS = 16

# Tries to place one more shape that leaves every shape under it visible enough, before the
# image is left with the shapes it has (it always has at least one: the first is never occluded).
_PLACEMENT_TRIES = 10


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """What one difficulty of the generated set draws.

    Attributes:
        name: the set's name (a registry name), recorded with every run.
        classes: the shapes drawn (names of ``lab.data.datasets.embedded.shape_mask``); class id
            ``i + 1`` is ``classes[i]``.
        radius: the shapes' radius, drawn between these fractions of the image side.
        rotated: shapes at random angles (False: squares and triangles upright).
        overlapping: shapes may occlude each other (False: they never touch the same pixel).
        textured: a ramp and stripes on the background (False: one flat colour).
    """

    name: str
    classes: tuple[str, ...]
    radius: tuple[float, float]
    rotated: bool
    overlapping: bool
    textured: bool


# "standard" is E7's set. "easy" keeps what a detector must still learn (where the objects are,
# their class, their outline) but two classes whose outlines differ most, larger, upright, apart and
# on a flat ground: a light Mask R-CNN from random weights learns it in CPU minutes, where in the
# same steps on the standard set its AP stays near 0.
DIFFICULTIES = {
    "standard": Difficulty("shapes", INSTANCE_SHAPE_CLASSES, (0.08, 0.2), rotated=True, overlapping=True,
                           textured=True),
    "easy": Difficulty("shapes_easy", ("circle", "square"), (0.15, 0.3), rotated=False, overlapping=False,
                       textured=False),
}


@dataclasses.dataclass
class InstanceDataset:
    """Images and their instances for the train, validation and test splits.

    Attributes:
        name: ``"shapes"``, ``"shapes_easy"`` or ``"coco:PATH"``, recorded with every run.
        class_names: the foreground classes; class id ``i + 1`` is ``class_names[i]``.
        images: split -> list of ``HxWx3`` uint8 images ("test" may be empty).
        instances: split -> one ``Instances`` per image, masks at that image's size.
        source: provenance (the generator and its arguments, or the files, their md5 and the
            category-id mapping), kept in the run record.
    """

    name: str
    class_names: list[str]
    images: dict[str, list[np.ndarray]]
    instances: dict[str, list[Instances]]
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_names = [str(name) for name in self.class_names]
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be one or more distinct names, received {self.class_names}.")
        for what, mapping in (("images", self.images), ("instances", self.instances)):
            unknown = sorted(set(mapping) - set(SPLITS))
            if unknown:
                raise ValueError(f"{what} has unknown splits {unknown}; the splits are {list(SPLITS)}.")
        self.images = {split: list(self.images.get(split, [])) for split in SPLITS}
        self.instances = {split: list(self.instances.get(split, [])) for split in SPLITS}
        num_classes = len(self.class_names)
        for split in SPLITS:
            images, instances = self.images[split], self.instances[split]
            if len(images) != len(instances):
                raise ValueError(f"The {split} split has {len(images)} images but {len(instances)} Instances; "
                                 f"give one Instances per image (empty for an image without instances).")
            for index, (image, truth) in enumerate(zip(images, instances)):
                where = f"{split} image {index}"
                if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                        or image.shape[-1] != 3:
                    shape = getattr(image, "shape", None)
                    dtype = getattr(image, "dtype", type(image).__name__)
                    raise ValueError(f"{where} must be an HxWx3 uint8 array, received shape {shape} "
                                     f"dtype {dtype}; convert grayscale/RGBA images to RGB uint8 first.")
                if not isinstance(truth, Instances):
                    raise ValueError(f"{where}: expected an Instances, received {type(truth).__name__}.")
                if truth.scores is not None:
                    raise ValueError(f"{where}: ground-truth Instances carry no scores; received scores.")
                if truth.masks.shape[1:] != image.shape[:2] and len(truth):
                    raise ValueError(f"{where}: masks are {truth.masks.shape[1:]} but the image is "
                                     f"{image.shape[:2]}; masks must be at the image's size.")
                if len(truth) and ((truth.classes < 1) | (truth.classes > num_classes)).any():
                    raise ValueError(f"{where}: class ids must be 1..{num_classes} (class_names "
                                     f"{self.class_names}), received {sorted(set(truth.classes.tolist()))}.")
                if len(truth) and (truth.masks.max() > 1 or not truth.masks.reshape(len(truth), -1).any(1).all()):
                    raise ValueError(f"{where}: masks must be binary (0/1) and non-empty; drop empty instances.")

    def split(self, name: str) -> tuple[list[np.ndarray], list[Instances]]:
        """Returns ``(images, instances)`` of one split ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; the splits are {list(SPLITS)}.")
        return self.images[name], self.instances[name]

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (Model Garden's ``num_classes`` is K + 1)."""
        return len(self.class_names)

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Instances per class in a split: ``counts[i]`` is the count of class id ``i + 1``."""
        _, instances = self.split(split)
        classes = np.concatenate([truth.classes for truth in instances] or [np.zeros(0, np.int64)])
        return np.bincount(classes - 1, minlength=self.num_classes).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: names, images and instances per split, train class counts, sizes."""
        shapes = [image.shape[:2] for split in SPLITS for image in self.images[split]]
        heights, widths = [s[0] for s in shapes], [s[1] for s in shapes]
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "images": {split: len(self.images[split]) for split in SPLITS},
            "instances": {split: int(sum(len(t) for t in self.instances[split])) for split in SPLITS},
            "train_class_counts": dict(zip(self.class_names, self.class_counts("train").tolist())),
            "image_size": None if not shapes else {"height": [min(heights), max(heights)],
                                                   "width": [min(widths), max(widths)]},
        }

    def content_hash(self) -> str:
        """A sha256 of the class names and of every split's images (shapes and bytes) and each
        image's boxes, classes and masks: what a run record and an export name the data by.
        Computed once per object."""
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            digest = hashlib.sha256(json.dumps(self.class_names).encode())
            for split in SPLITS:
                digest.update(f"{split}:{len(self.images[split])}".encode())
                for image, truth in zip(self.images[split], self.instances[split]):
                    for array in (image, truth.boxes, truth.classes, truth.masks):
                        array = np.ascontiguousarray(array)
                        digest.update(f"{array.shape}{array.dtype.str}".encode())
                        if array.size:  # memoryview cannot cast an empty array (an image without instances)
                            digest.update(memoryview(array).cast("B"))
            cached = self.__dict__["_content_hash"] = digest.hexdigest()
        return cached

    def limit(self, per_split: int | None, seed: int = 0) -> "InstanceDataset":
        """Keeps at most ``per_split`` images of each split, drawn by ``seed`` (order kept).

        Args:
            per_split: images to keep per split, or None to keep everything.
            seed: draws the images.

        Returns:
            A new InstanceDataset; ``source`` records the limit and its seed.
        """
        if per_split is None:
            return self
        if isinstance(per_split, bool) or not isinstance(per_split, (int, np.integer)) or per_split < 1:
            raise ValueError(f"limit must be a positive number of images per split, received {per_split!r}.")
        rng = np.random.default_rng(seed)
        images, instances = {}, {}
        for split in SPLITS:
            count = len(self.images[split])
            index = np.sort(rng.choice(count, per_split, replace=False)) if count > per_split else np.arange(count)
            images[split] = [self.images[split][i] for i in index]
            instances[split] = [self.instances[split][i] for i in index]
        return dataclasses.replace(self, images=images, instances=instances,
                                   source=dict(self.source, limit=int(per_split), limit_seed=seed))


# -- the generated set --------------------------------------------------------------------------


def load_instance_shapes(
    *,
    num_train: int = 300,
    num_val: int = 50,
    num_test: int = 50,
    dataset_size: int = 128,
    max_instances: int = 4,
    noise: float = 0.1,
    seed: int = 0,
    difficulty: str = "standard",
) -> InstanceDataset:
    """Generates E7's shapes set: 1 to ``max_instances`` shapes per image.

    Args:
        num_train, num_val, num_test: images per split (test may be 0).
        dataset_size: side of the square images in pixels (at least 32).
        max_instances: the most shapes in one image (each image draws 1 to this many).
        noise: standard deviation of the per-pixel noise, in [0, 1] intensity units.
        seed: the whole dataset is a function of the arguments and this seed.
        difficulty: a key of ``DIFFICULTIES``: ``"standard"`` (E7's set: circles, squares and
            triangles, overlapping, at any angle, on a textured ground) or ``"easy"`` (larger
            upright circles and squares, apart, on a flat ground).

    Returns:
        An InstanceDataset named and classed as its ``Difficulty`` says; ``source`` records the
        difficulty and what it draws.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {list(DIFFICULTIES)} for the instance shapes, "
                         f"received {difficulty!r}.")
    spec = DIFFICULTIES[difficulty]
    for what, value, least in (("num_train", num_train, 1), ("num_val", num_val, 1), ("num_test", num_test, 0),
                               ("max_instances", max_instances, 1), ("dataset_size", dataset_size, 32)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{what} must be an integer of at least {least} for the instance shapes, "
                             f"received {value!r}.")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be between 0 and 1 (intensity units), received {noise!r}.")
    rng = np.random.default_rng(seed)
    images: dict[str, list[np.ndarray]] = {}
    instances: dict[str, list[Instances]] = {}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        drawn = [_draw_instances(rng, dataset_size, max_instances, noise, spec) for _ in range(count)]
        images[split] = [image for image, _ in drawn]
        instances[split] = [truth for _, truth in drawn]
    return InstanceDataset(
        name=spec.name, class_names=list(spec.classes), images=images, instances=instances,
        source={"generator": "lab.tasks.instance.data.load_instance_shapes", "num_train": num_train,
                "num_val": num_val, "num_test": num_test, "dataset_size": dataset_size,
                "max_instances": max_instances, "noise": noise, "seed": seed,
                "min_visible_fraction": MIN_VISIBLE_FRACTION, "min_visible_pixels": MIN_VISIBLE_PIXELS,
                "difficulty": difficulty, "drawn": dataclasses.asdict(spec)},
    )


def _draw_instances(rng: np.random.Generator, size: int, max_instances: int, noise: float,
                    spec: Difficulty) -> tuple[np.ndarray, Instances]:
    """Draws one image of the instance shapes; returns (uint8 image, its Instances)."""
    wanted = int(rng.integers(1, max_instances + 1))
    base = rng.uniform(0.2, 0.8, size=3)  # the background's colour, before its texture
    drawn: list[np.ndarray] = []  # each placed shape's full footprint, bottom first
    visible: list[np.ndarray] = []  # what is left visible of each
    labels: list[int] = []
    colours: list[np.ndarray] = []
    for _ in range(wanted):
        for _ in range(_PLACEMENT_TRIES):
            label = int(rng.integers(len(spec.classes)))
            radius = rng.uniform(*spec.radius) * size
            center = rng.uniform(radius, size - radius, size=2)
            angle = rng.uniform(0, np.pi / 2) if spec.rotated else 0.0
            inside = _place_shape(spec.classes[label], size, radius, center, angle)
            if not spec.overlapping and any((inside & d).any() for d in drawn):
                continue
            remaining = [v & ~inside for v in visible]
            # A shape may only go on top if every shape under it stays a fair instance.
            if all(r.sum() >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * d.sum())
                   for r, d in zip(remaining, drawn)):
                drawn.append(inside)
                visible = remaining + [inside]
                labels.append(label + 1)
                colours.append(_contrasting_colour(rng, base))
                break
    image = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if spec.textured:  # a linear ramp and faint stripes at random angles on the base colour
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
        ramp_angle, stripe_angle = rng.uniform(0, 2 * np.pi, size=2)
        ramp_colour = rng.uniform(-0.25, 0.25, size=3).astype(np.float32)
        ramp = (np.cos(ramp_angle) * xx + np.sin(ramp_angle) * yy)[..., None] * ramp_colour
        stripes = np.sin(2 * np.pi * rng.uniform(2, 8) * (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy))
        image = (base + ramp + 0.08 * stripes[..., None]).astype(np.float32)
    for inside, colour in zip(drawn, colours):  # painted bottom to top: later shapes occlude
        image[inside] = colour
    # float32 noise: half the time of float64, which dominated the generation time.
    image += np.float32(noise) * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    truth = Instances.from_masks(np.stack(visible).astype(np.uint8), np.asarray(labels, np.int64))
    return image, truth


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random RGB colour that differs from ``background`` by at least 0.3 in some channel, so
    that no shape is invisible against its ground (drawn again until it does)."""
    while True:
        colour = rng.uniform(0.0, 1.0, size=3)
        if np.abs(colour - background).max() >= 0.3:
            return colour


def _place_shape(name: str, size: int, radius: float, center: np.ndarray, angle: float) -> np.ndarray:
    """One shape's footprint in a ``size x size`` image, computed only on the square around it
    (every shape lies within 1.2 radii of its centre; a square's corners reach 1.13)."""
    reach = 1.2 * radius
    y0, x0 = (max(0, int(np.floor(c - reach))) for c in center)
    y1, x1 = (min(size, int(np.ceil(c + reach)) + 1) for c in center)
    inside = np.zeros((size, size), bool)
    inside[y0:y1, x0:x1] = shape_mask(name, (y1 - y0, x1 - x0), radius=radius,
                                      center=(center[0] - y0, center[1] - x0), angle=angle)
    return inside


# -- COCO ---------------------------------------------------------------------------------------


def load_coco(path: str | os.PathLike, *, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
              seed: int = 0) -> InstanceDataset:
    """Loads COCO instance annotations and their images.

    Args:
        path: one COCO JSON file (split by image into train/val/test by ``split_fractions`` and
            ``seed``), or a folder holding ``train.json`` and ``val.json`` and optionally
            ``test.json`` (used as given). Each image is found by its ``file_name`` relative to
            its JSON's folder, or to that folder's ``images/`` subfolder.
        split_fractions: train, val and test shares of a single file's images (sum 1).
        seed: draws a single file's split.

    Returns:
        An InstanceDataset. Category ids are mapped to 1..K in order of id (``source`` records the
        mapping); ``iscrowd=1`` annotations are left out (counted in ``source``), as are
        annotations whose mask is empty at the image's resolution. Images without annotations
        are kept with no instances: Model Garden's own COCO converter writes them too, and its
        Mask R-CNN parser pads them like any other image (all ground truth -1).

    Raises:
        ImportError: pycocotools (the E7 extra) is not installed.
        FileNotFoundError: the path, a split's JSON or an image is missing (named).
        ValueError: a JSON without the keys COCO needs, an annotation of an unknown image or
            category, a mask outside its image, an image whose size differs from its entry.
    """
    from lab.tasks.instance.extra import require_model_garden

    require_model_garden()
    path = Path(path)
    if path.is_dir():
        files = {split: path / f"{split}.json" for split in SPLITS}
        for split in ("train", "val"):
            if not files[split].is_file():
                raise FileNotFoundError(f"{files[split]} not found: a COCO folder needs train.json and val.json "
                                        f"(test.json optional); or pass one JSON file to split by fractions.")
        if not files["test"].is_file():
            del files["test"]
        parsed = {split: _read_coco_json(file) for split, file in files.items()}
        categories = parsed["train"]["categories"]
        for split, coco in parsed.items():
            if _category_key(coco["categories"]) != _category_key(categories):
                raise ValueError(f"{files[split]} lists other categories than {files['train']}; every split "
                                 f"must share one category list.")
        split_images = {split: [image["id"] for image in coco["images"]] for split, coco in parsed.items()}
        split_info: dict[str, Any] = {"split": "files"}
    elif path.is_file():
        fractions = _check_fractions(split_fractions)
        coco = _read_coco_json(path)
        files = {"all": path}
        parsed = {"all": coco}
        categories = coco["categories"]
        ids = [image["id"] for image in coco["images"]]
        order = np.random.default_rng(seed).permutation(len(ids))
        n_train = int(round(fractions[0] * len(ids)))
        n_val = int(round(fractions[1] * len(ids)))
        # Each split keeps the file's order, so the split depends only on the ids and the seed.
        parts = {"train": np.sort(order[:n_train]), "val": np.sort(order[n_train:n_train + n_val]),
                 "test": np.sort(order[n_train + n_val:])}
        split_images = {split: [ids[i] for i in part] for split, part in parts.items()}
        split_info = {"split": "fractions", "split_fractions": list(fractions), "split_seed": seed}
    else:
        raise FileNotFoundError(f"{path} not found: give a COCO JSON file or a folder with train.json and val.json.")

    ordered = sorted(categories, key=lambda category: category["id"])
    category_ids = {category["id"]: index + 1 for index, category in enumerate(ordered)}
    class_names = [str(category["name"]) for category in ordered]
    images: dict[str, list[np.ndarray]] = {}
    instances: dict[str, list[Instances]] = {}
    counts = {"iscrowd_skipped": 0, "empty_masks_dropped": 0}
    without: dict[str, int] = {}
    for split, wanted in split_images.items():
        key = split if split in parsed else "all"
        coco, json_file = parsed[key], files[key]
        entries = {image["id"]: image for image in coco["images"]}
        by_image: dict[Any, list[dict]] = {image_id: [] for image_id in entries}
        for annotation in coco["annotations"]:
            if annotation["image_id"] not in entries:
                raise ValueError(f"{json_file}: annotation {annotation.get('id')} points to image id "
                                 f"{annotation['image_id']!r}, which the file's images do not list.")
            if annotation["category_id"] not in category_ids:
                raise ValueError(f"{json_file}: annotation {annotation.get('id')} has category_id "
                                 f"{annotation['category_id']!r}; the categories are {sorted(category_ids)}.")
            by_image[annotation["image_id"]].append(annotation)
        images[split], instances[split] = [], []
        for image_id in wanted:
            entry = entries[image_id]
            image = _read_image(json_file.parent, entry)
            masks, classes = [], []
            for annotation in by_image[image_id]:
                if annotation.get("iscrowd", 0):
                    counts["iscrowd_skipped"] += 1
                    continue
                mask = _decode_segmentation(annotation, entry, json_file)
                if not mask.any():
                    counts["empty_masks_dropped"] += 1
                    continue
                masks.append(mask)
                classes.append(category_ids[annotation["category_id"]])
            height, width = image.shape[:2]
            images[split].append(image)
            instances[split].append(Instances.from_masks(
                np.stack(masks) if masks else np.zeros((0, height, width), np.uint8), np.asarray(classes, np.int64)))
        without[split] = sum(len(truth) == 0 for truth in instances[split])
    source = {
        "loader": "lab.tasks.instance.data.load_coco", "path": str(path),
        "files": {split: {"path": str(file), "md5": _md5(file)} for split, file in files.items()},
        **split_info,
        "category_ids": {str(coco_id): index for coco_id, index in category_ids.items()},
        "iscrowd": "annotations with iscrowd=1 are left out", **counts,
        "images_without_instances": without,
        "boxes": "tight boxes of the decoded masks",
    }
    return InstanceDataset(name=f"coco:{path}", class_names=class_names, images=images, instances=instances,
                           source=source)


def _read_coco_json(path: Path) -> dict[str, Any]:
    """Reads a COCO JSON and checks it has the keys the loader reads."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from error
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(coco, dict) or key not in coco]
    if missing:
        raise ValueError(f"{path} is missing the COCO keys {missing}; an instance-annotation file has "
                         f"'images', 'annotations' and 'categories'.")
    for what, items, keys in (("image", coco["images"], ("id", "file_name", "height", "width")),
                              ("annotation", coco["annotations"], ("image_id", "category_id", "segmentation")),
                              ("category", coco["categories"], ("id", "name"))):
        for item in items:
            lacking = [key for key in keys if key not in item]
            if lacking:
                raise ValueError(f"{path}: {what} {item.get('id', item)!r} is missing {lacking}; each {what} "
                                 f"needs {list(keys)}.")
    if not coco["categories"]:
        raise ValueError(f"{path} lists no categories.")
    for what, items in (("image", coco["images"]), ("category", coco["categories"])):
        ids = [item["id"] for item in items]
        if len(set(ids)) != len(ids):
            repeated = sorted((i for i, n in collections.Counter(ids).items() if n > 1), key=str)[:5]
            raise ValueError(f"{path} lists {what} ids more than once: {repeated}; each {what} needs its own id.")
    return coco


def _category_key(categories: list[dict]) -> list[tuple[Any, str]]:
    return sorted((category["id"], str(category["name"])) for category in categories)


def _check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be three shares (train, val, test), train above 0, none "
                         f"negative, summing to 1; received {tuple(split_fractions)}.")
    return fractions  # type: ignore[return-value]


def _read_image(folder: Path, entry: dict[str, Any]) -> np.ndarray:
    """Reads one image of a COCO file as HxWx3 uint8 and checks its size against its entry."""
    from PIL import Image

    candidates = [folder / entry["file_name"], folder / "images" / entry["file_name"]]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"Image {entry['id']!r} ({entry['file_name']!r}) not found; looked for "
                                f"{candidates[0]} and {candidates[1]}.")
    with Image.open(found) as opened:
        if opened.mode not in ("RGB", "L", "LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "1"):
            raise ValueError(f"{found} has pixel mode {opened.mode!r}; the loader reads 8-bit RGB, grayscale, "
                             f"palette or RGBA images. Convert it to 8-bit RGB.")
        # Grayscale, palette and RGBA images become RGB (alpha is dropped, as Model Garden's decoder does).
        image = np.asarray(opened.convert("RGB"), dtype=np.uint8)
    if image.shape[:2] != (entry["height"], entry["width"]):
        raise ValueError(f"{found} is {image.shape[0]}x{image.shape[1]} (height x width) but its JSON entry says "
                         f"{entry['height']}x{entry['width']}; fix the entry or the file.")
    return image


def _decode_segmentation(annotation: dict[str, Any], entry: dict[str, Any], json_file: Path) -> np.ndarray:
    """Decodes one annotation's polygons or RLE to an HxW uint8 mask, through pycocotools."""
    from pycocotools import mask as mask_utils

    height, width = int(entry["height"]), int(entry["width"])
    segmentation = annotation["segmentation"]
    where = f"{json_file}: annotation {annotation.get('id')} of image {entry['id']!r} ({width}x{height})"
    if isinstance(segmentation, list):
        polygons = [np.asarray(polygon, dtype=np.float64) for polygon in segmentation]
        if not polygons or any(p.ndim != 1 or len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError(f"{where}: a polygon segmentation is a list of [x1, y1, x2, y2, ...] lists of at "
                             f"least 3 points.")
        for polygon in polygons:
            xs, ys = polygon[0::2], polygon[1::2]
            if xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height:
                raise ValueError(f"{where}: polygon reaches x {xs.min():g}..{xs.max():g}, y {ys.min():g}.."
                                 f"{ys.max():g}, outside the image (x 0..{width}, y 0..{height}).")
        rle = mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in polygons], height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"{where}: the RLE is of size {segmentation['size']} (height, width), not the "
                             f"image's [{height}, {width}]: the mask does not fit the image.")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            if sum(segmentation["counts"]) != height * width:
                raise ValueError(f"{where}: the uncompressed RLE counts sum to {sum(segmentation['counts'])}, "
                                 f"not height x width = {height * width}.")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE, as COCO stores it
            counts = segmentation["counts"]
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"{where}: segmentation must be polygons (a list) or an RLE dict with 'counts' and "
                         f"'size', received {type(segmentation).__name__}.")
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- the registry -------------------------------------------------------------------------------


def load_instance_dataset(name: str, **options: Any) -> InstanceDataset:
    """Loads an instance dataset by name.

    Args:
        name: ``"shapes"`` (the generated set), ``"shapes_easy"`` (its easy difficulty) or
            ``"coco:<path>"`` (a COCO JSON file or a folder with train.json and val.json): the
            registry's instance sets (``lab.data.datasets.registry``).
        **options: passed to ``load_instance_shapes`` (over the options the name implies) or
            ``load_coco``.

    Returns:
        The InstanceDataset.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    from lab.data.datasets.registry import find_source

    source, argument = find_source(name, "instance")
    if source.kind == "shapes":
        return load_instance_shapes(**{**source.options, **options})
    return load_coco(argument, **options)
