"""Image and mask files matched by name, optionally cut into tiles (``load_mask_folder``).

Mask values are mapped to class ids by ``class_values`` or by a default reading that refuses any
value it cannot place, naming the files that hold it. Images are resized with bilinear
interpolation and masks with nearest neighbour only; tiles are cut after the split, so tiles of
one image never land in two splits (``cut_tiles``, ``tile_starts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.data.datasets.folders import IMAGE_SUFFIXES, to_8bit
from lab.data.datasets.segmentation.dataset import WHOLE_SPLITS, SegmentationDataset, _split_indices

# The loader options only a mask folder has (``load_mask_folder``'s keyword arguments), each a
# SegmentationConfig field of the same name.
FOLDER_OPTIONS = ("tile_size", "tile_margin", "split_fractions", "color_mode", "class_names", "class_values",
                  "mask_suffix", "images_dir", "masks_dir")
COLOR_MODES = ("rgb", "grayscale")


def load_mask_folder(
    root: str | Path,
    *,
    dataset_size: int | tuple[int, int] | None = None,
    tile_size: int | None = None,
    tile_margin: int | None = None,
    class_values: dict[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    background_class: int = 0,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    color_mode: str = "rgb",
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    val_fraction: float = 0.15,
    seed: int = 0,
    name: str | None = None,
) -> SegmentationDataset:
    """Loads image and mask files matched by file stem.

    Layouts:

        root/images/<stem>.<any image suffix>, root/masks/<stem><mask_suffix>.png
            split into train/val/test by ``split_fractions`` (seeded, by image)
        root/{train,val,test}/images/..., root/{train,val,test}/masks/...
            the given splits (``val`` is carved from train by ``val_fraction`` if missing)

    Masks are single-channel images (PNG, grayscale or palette) whose values are mapped to
    class ids by ``class_values``. Without it, masks holding only 0 and 255 become 0 and 1 (a
    binary mask saved as black and white), and masks holding the class ids 0, 1, ..., k-1
    (each of them somewhere) are taken as they are. Any other value is refused, with the files
    that hold it: one stray value (a pixel of 128 in a black-and-white mask, the in-between
    values of a mask saved as JPEG) would otherwise become a class of its own.

    Images are read as 8-bit, 16-bit images scaled by their range (see
    ``lab.data.datasets.folders.to_8bit``); mask values are class values and are never rescaled.

    Images of any size become arrays of one size: ``dataset_size`` resizes each image
    (bilinear) and its mask (nearest neighbour); ``tile_size`` cuts both into square tiles
    (the last row and column flush with the border, so nothing is dropped), after the resize
    when both are given. Tiles are cut after the split, so tiles of one image never land in
    two splits. A tiled set also keeps its validation and test images whole: a run predicts
    them whole by overlap-tile (``tile_margin`` pixels of context around each tile's centre)
    and scores each image once.

    Args:
        root: the folder.
        dataset_size: resize everything to this side (or (height, width)).
        tile_size: cut tiles of this side (images must be at least this large).
        tile_margin: the context margin of overlap-tile prediction, 0 <= 2 * margin <
            tile_size (None: tile_size // 8).
        class_values: {mask value: class id}, e.g. {0: 0, 255: 1} or {0: 0, 128: 1, 255: 2};
            it must cover every value the masks hold.
        class_names: names of the class ids (default: "background" for ``background_class``
            and "foreground" for the other of two classes, else "class_<id>" for the others).
        background_class: the class id that is background.
        images_dir, masks_dir: the sub-folder names.
        mask_suffix: what mask stems add to image stems (``"_mask"`` for ``cat_mask.png``).
        color_mode: "rgb" or "grayscale" for the images.
        split_fractions: train/val/test shares when there are no split folders.
        val_fraction: share of train for validation when split folders have no val.
        seed: draws the splits.
        name: dataset name for records (default: the folder's name).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: images without masks or masks without images (named), unreadable files,
            floating-point images, mask values that ``class_values`` (or, without it, the
            default reading) does not map (with the files that hold them), sizes that do not fit.
    """
    root = Path(root).expanduser()
    size, tile_margin = _checked_folder_options(root, dataset_size, tile_size, tile_margin, color_mode)
    pairs, layout = _split_pairs(root, images_dir, masks_dir, mask_suffix, split_fractions, val_fraction, seed)
    loaded, mask_values = _read_splits(pairs, color_mode)
    mapping = _value_mapping(class_values, mask_values)
    names = _class_names(class_names, max(mapping.values()) + 1, background_class)
    lookup = _lookup_table(mapping, mask_values)
    splits = {split: _prepared(images, [lookup[m] for m in masks], size) for split, (images, masks) in loaded.items()}
    source = {"folder": str(root.resolve()), "layout": layout, "image_size": list(size) if size else None,
              "tile_size": tile_size, "tile_margin": tile_margin, "color_mode": color_mode,
              "class_values": {int(k): int(v) for k, v in mapping.items()}, "split_seed": seed}
    common = dict(name=name or root.name, class_names=names, background_class=background_class, source=source)
    if tile_size:
        return SegmentationDataset(**common, **_tiled_splits(splits, pairs, tile_size), tile_size=tile_size,
                                   tile_margin=tile_margin)
    return SegmentationDataset(**common, **{key: value for split, (images, masks) in splits.items()
                                            for key, value in _stacked(split, images, masks, root).items()})


def _checked_folder_options(root: Path, dataset_size: int | tuple[int, int] | None, tile_size: int | None,
                            tile_margin: int | None, color_mode: str) -> tuple[tuple[int, int] | None, int]:
    """Refuses a missing folder and bad options before any file is read.

    Returns:
        The resize target as (height, width) or None, and the tile margin (0 without tiles).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"Mask folder {root} does not exist.")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', received {color_mode!r}.")
    size = ((dataset_size, dataset_size) if isinstance(dataset_size, int)
            else (tuple(dataset_size) if dataset_size else None))
    if tile_size is None:
        if tile_margin:
            raise ValueError(f"tile_margin={tile_margin} is the margin of tiles: set tile_size too.")
        return size, 0
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, received {tile_size!r}.")
    if size and tile_size > min(size):
        raise ValueError(f"tile_size={tile_size} is larger than the resized images {size[0]}x{size[1]} "
                         "(images are resized first, then cut into tiles): choose a smaller tile_size.")
    margin = tile_size // 8 if tile_margin is None else tile_margin
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0 or 2 * margin >= tile_size:
        raise ValueError(f"tile_margin must be an integer with 0 <= 2 * tile_margin < tile_size={tile_size} (a "
                         f"tile's centre must remain), received tile_margin={tile_margin!r}.")
    return size, margin


def _split_pairs(root: Path, images_dir: str, masks_dir: str, mask_suffix: str, split_fractions: Sequence[float],
                 val_fraction: float, seed: int) -> tuple[dict[str, list[tuple[Path, Path]]], str]:
    """The (image, mask) file pairs of each split, and how they were split."""
    from lab.data.datasets.folders import _first_existing, _SPLIT_DIRS

    split_dirs = {split: _first_existing(root, names) for split, names in _SPLIT_DIRS.items()}
    if split_dirs["train"] is None:
        everything = _pairs(root, images_dir, masks_dir, mask_suffix)
        return _pairs_by_fractions(everything, split_fractions, seed, root)
    if split_dirs["test"] is None:
        raise ValueError(f"{root} has a train folder but no test folder; add {root / 'test'}.")
    pairs = {split: _pairs(folder, images_dir, masks_dir, mask_suffix)
             for split, folder in split_dirs.items() if folder is not None}
    if "val" not in pairs:
        train_idx, val_idx = _split_indices(len(pairs["train"]), val_fraction, seed)
        pairs["val"] = [pairs["train"][i] for i in val_idx]
        pairs["train"] = [pairs["train"][i] for i in train_idx]
    return pairs, "split folders"


def _pairs_by_fractions(everything: list[tuple[Path, Path]], split_fractions: Sequence[float], seed: int,
                        root: Path) -> tuple[dict[str, list[tuple[Path, Path]]], str]:
    """Seeded train/val/test split of one folder's pairs by ``split_fractions`` (at least one each)."""
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions <= 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split_fractions must be three positive shares (train, val, test) summing to 1, received "
                         f"{split_fractions}.")
    order = np.random.default_rng(seed).permutation(len(everything))
    n_test = max(1, int(round(fractions[2] * len(order))))
    n_val = max(1, int(round(fractions[1] * len(order))))
    if len(order) - n_test - n_val < 1:
        raise ValueError(f"{root} has {len(order)} image/mask pairs: too few to split into train, val and test.")
    chosen = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    pairs = {split: [everything[i] for i in np.sort(index)] for split, index in chosen.items()}
    return pairs, f"split by fractions {tuple(float(f) for f in fractions)}"


def _read_splits(pairs: dict[str, list[tuple[Path, Path]]], color_mode: str
                 ) -> tuple[dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
                            list[tuple[Path, np.ndarray, np.ndarray]]]:
    """Reads every pair; returns the images and raw masks of each split, and the values of every
    mask with their pixel counts (so that unexpected values can be traced to their files)."""
    mask_values: list[tuple[Path, np.ndarray, np.ndarray]] = []
    loaded: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for split, split_pairs in pairs.items():
        images, masks = [], []
        for image_path, mask_path in split_pairs:
            image, mask = _read_pair(image_path, mask_path, color_mode)
            mask_values.append((mask_path, *np.unique(mask, return_counts=True)))
            images.append(image)
            masks.append(mask)
        loaded[split] = (images, masks)
    return loaded, mask_values


def _class_names(class_names: Sequence[str] | None, num_classes: int, background_class: int) -> list[str]:
    """The given class names, checked against the masks' classes, or default ones."""
    if isinstance(background_class, bool) or not isinstance(background_class, int) \
            or not 0 <= background_class < num_classes:
        raise ValueError(f"background_class must be one of the class ids 0 to {num_classes - 1} the masks map to, "
                         f"received background_class={background_class!r}.")
    if class_names is None:
        if num_classes == 2:
            return ["background", "foreground"] if background_class == 0 else ["foreground", "background"]
        return ["background" if i == background_class else f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"The masks map to {num_classes} classes but class_names has {len(class_names)}: "
                         f"{list(class_names)}. Give one name per class id 0 to {num_classes - 1}.")
    return [str(name) for name in class_names]


def _lookup_table(mapping: dict[int, int], mask_values: list[tuple[Path, np.ndarray, np.ndarray]]) -> np.ndarray:
    """A table indexed by mask value that gives its class id (``table[mask]`` maps a mask)."""
    raw_values = {int(v) for _, values, _ in mask_values for v in values}
    lookup = np.zeros(max(max(raw_values), max(mapping)) + 1, dtype=np.uint8)
    for value, class_id in mapping.items():
        lookup[value] = class_id
    return lookup


def _prepared(images: list[np.ndarray], masks: list[np.ndarray], size: tuple[int, int] | None
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images and class-id masks of a split, resized to ``size`` when given."""
    if not size:
        return images, masks
    resized = [_resize_pair(image, mask, size) for image, mask in zip(images, masks)]
    return [image for image, _ in resized], [mask for _, mask in resized]


def _stacked(split: str, images: list[np.ndarray], masks: list[np.ndarray], root: Path) -> dict[str, np.ndarray]:
    """A split's images and masks as two arrays, refusing images of several sizes."""
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(f"The images under {root} have several sizes ({sorted(shapes)[:3]}...); pass dataset_size "
                         "to resize them or tile_size to cut them into tiles.")
    return {f"x_{split}": np.stack(images), f"masks_{split}": np.stack(masks)}


def _tiled_splits(splits: dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
                  pairs: dict[str, list[tuple[Path, Path]]], tile: int) -> dict[str, Any]:
    """Every split cut into tiles, the tiles' source images, and the whole val and test images."""
    arrays: dict[str, Any] = {"tile_origins": {}, "originals": {}}
    for split, (images, masks) in splits.items():
        tile_images, tile_masks, origins = cut_tiles(images, masks, tile, [p[0] for p in pairs[split]])
        arrays[f"x_{split}"], arrays[f"masks_{split}"] = np.stack(tile_images), np.stack(tile_masks)
        arrays["tile_origins"][split] = origins
        if split in WHOLE_SPLITS:
            arrays["originals"][split] = (images, masks)
    return arrays


def _pairs(folder: Path, images_dir: str, masks_dir: str, mask_suffix: str) -> list[tuple[Path, Path]]:
    image_folder, mask_folder = folder / images_dir, folder / masks_dir
    for path in (image_folder, mask_folder):
        if not path.is_dir():
            raise ValueError(f"{folder} needs the folders {images_dir}/ and {masks_dir}/; {path} is missing.")
    images = {p.stem: p for p in sorted(image_folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {}
    for path in sorted(mask_folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            stem = path.stem[: len(path.stem) - len(mask_suffix)] if mask_suffix and path.stem.endswith(mask_suffix) \
                else path.stem
            masks[stem] = path
    if not images:
        raise ValueError(f"No images found in {image_folder}.")
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        problems = []
        if lonely_images:
            problems.append(f"images without a mask: {lonely_images[:5]}")
        if lonely_masks:
            problems.append(f"masks without an image: {lonely_masks[:5]}")
        raise ValueError(f"Images and masks under {folder} are matched by file name (mask_suffix={mask_suffix!r}); "
                         + "; ".join(problems) + ".")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _read_pair(image_path: Path, mask_path: Path, color_mode: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as image:
            image_array = np.asarray(to_8bit(image, image_path).convert("RGB" if color_mode == "rgb" else "L"),
                                     dtype=np.uint8)
        with Image.open(mask_path) as mask:
            mask_array = np.asarray(mask)  # as stored: mask values are class values, never rescaled
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"Cannot read {image_path} or {mask_path}: {error}.") from error
    # Casting fractions to class ids would truncate them without a word.
    if np.issubdtype(mask_array.dtype, np.floating) and not np.array_equal(mask_array, np.round(mask_array)):
        raise ValueError(f"Mask {mask_path} holds fractional values (from {mask_array.min():g} to "
                         f"{mask_array.max():g}); masks must hold whole class values. Save it as an 8-bit (or "
                         "16-bit) grayscale or palette PNG of class values.")
    if image_array.ndim == 2:
        image_array = image_array[..., np.newaxis]
    if mask_array.ndim == 3:
        channels = mask_array[..., :3] if mask_array.shape[-1] >= 3 else mask_array
        if not (channels == channels[..., :1]).all():
            raise ValueError(f"Mask {mask_path} is a colour image; masks must be single-channel class values "
                             "(save them as grayscale or palette PNGs).")
        mask_array = mask_array[..., 0]
    mask_array = mask_array.astype(np.int64)
    if mask_array.shape != image_array.shape[:2]:
        raise ValueError(f"Mask {mask_path} is {mask_array.shape[0]}x{mask_array.shape[1]} but its image is "
                         f"{image_array.shape[0]}x{image_array.shape[1]}; a mask must match its image.")
    return image_array, mask_array


def _value_mapping(class_values: dict[int, int] | None,
                   mask_values: list[tuple[Path, np.ndarray, np.ndarray]]) -> dict[int, int]:
    """The {mask value: class id} mapping, refusing values it does not cover.

    Args:
        class_values: the user's mapping, or None for the default reading (0/255 black and
            white, or class ids 0..k-1 each used).
        mask_values: (mask file, its values, their pixel counts) of every mask.
    """
    found = sorted({int(v) for _, values, _ in mask_values for v in values})
    if class_values is None:
        if set(found) <= {0, 255}:
            return {0: 0, 255: 1}
        if found == list(range(len(found))):
            return {v: v for v in found}
        # Name the values that fit neither reading, under the reading they fit best: a pixel of
        # 128 in a 0/255 mask is the odd one out, not 0 and 255.
        first_gap = next(i for i in range(len(found) + 1) if i not in found)
        binary_odd = [v for v in found if v not in (0, 255)]
        ids_odd = [v for v in found if v < 0 or v > first_gap]
        unexpected = min(binary_odd, ids_odd, key=len)
        reason = ("that are neither a black-and-white mask (only 0 and 255) nor the class ids 0, 1, ..., k-1 "
                  "(each of them used)")
        raise _unmapped_values_error(unexpected, found, reason, mask_values)
    mapping = {int(k): int(v) for k, v in class_values.items()}
    if not mapping or min(mapping) < 0:
        raise ValueError(f"class_values must map mask values (0 or more) to class ids, received {class_values}.")
    if min(mapping.values()) < 0 or max(mapping.values()) > 255 or 0 not in mapping.values():
        raise ValueError(f"class_values must map to class ids 0, 1, ... (at most 255, class 0 among them), "
                         f"received {mapping}.")
    unmapped = [v for v in found if v not in mapping]
    if unmapped:
        raise _unmapped_values_error(unmapped, found, f"that class_values {mapping} does not map", mask_values)
    return mapping


def _unmapped_values_error(unexpected: list[int], found: list[int], reason: str,
                           mask_values: list[tuple[Path, np.ndarray, np.ndarray]]) -> ValueError:
    """A ValueError naming the unexpected values, a few files that hold them, and the fix."""
    holders = []
    for path, values, counts in mask_values:
        odd = np.isin(values, unexpected)
        if odd.any():
            holders.append(f"{path} ({values[odd][:5].tolist()}{'...' if odd.sum() > 5 else ''} in "
                           f"{int(counts[odd].sum())} pixel(s))")
    shown = "; ".join(holders[:3]) + (f"; and {len(holders) - 3} more file(s)" if len(holders) > 3 else "")
    example = ", ".join(f"{value}: {class_id}" for class_id, value in enumerate(found[:8])) + \
        (", ..." if len(found) > 8 else "")
    hint = (" Masks saved as JPEG pick up in-between values from compression; save masks as PNG."
            if any(path.suffix.lower() in (".jpg", ".jpeg") for path, _, _ in mask_values) else "")
    return ValueError(
        f"The masks hold the values {unexpected[:10]}{'...' if len(unexpected) > 10 else ''} {reason}, in "
        f"{len(holders)} file(s): {shown}. Values found in all masks: {found[:20]}{'...' if len(found) > 20 else ''}. "
        f"Pass class_values={{value: class_id, ...}} giving the class of every value, e.g. class_values={{{example}}} "
        f"(a stray value goes to the class it belongs to, e.g. to 0 to count it as class 0); in a run it is the "
        f"SegmentationConfig field class_values.{hint}"
    )


def _resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    height, width = size
    mode = "RGB" if image.shape[-1] == 3 else "L"
    resized = np.asarray(Image.fromarray(image if mode == "RGB" else image[..., 0], mode)
                         .resize((width, height), Image.BILINEAR), dtype=np.uint8)
    resized_mask = np.asarray(Image.fromarray(mask.astype(np.uint8), "L").resize((width, height), Image.NEAREST))
    return resized.reshape(height, width, image.shape[-1]), resized_mask


def cut_tiles(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], tile: int,
              paths: Sequence[Path | str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Cuts every image and its mask into tile x tile squares covering the whole image.

    The tiles of a row start every ``tile`` pixels, the last one flush with the border (so it
    overlaps its neighbour rather than dropping pixels).

    Args:
        images, masks: (H, W, C) images and their (H, W) masks; sizes may differ.
        tile: the tile side.
        paths: the images' files, named in the error for an image smaller than a tile.

    Returns:
        The image tiles, the mask tiles, and the index of the image each tile comes from.
    """
    out_images, out_masks, origins = [], [], []
    for index, (image, mask) in enumerate(zip(images, masks)):
        height, width = mask.shape
        if height < tile or width < tile:
            where = f"Image {paths[index]}" if paths is not None else f"Image {index}"
            raise ValueError(f"{where} is {height}x{width}, smaller than tile_size={tile}: choose a smaller "
                             "tile_size (or resize the images larger).")
        for top in tile_starts(height, tile):
            for left in tile_starts(width, tile):
                out_images.append(image[top:top + tile, left:left + tile])
                out_masks.append(mask[top:top + tile, left:left + tile])
                origins.append(index)
    return out_images, out_masks, np.asarray(origins, dtype=np.int64)


def tile_starts(side: int, tile: int) -> list[int]:
    """Where the tiles along one side start: every ``tile`` pixels, the last flush with the end."""
    starts = list(range(0, side - tile + 1, tile))
    if starts[-1] + tile < side:
        starts.append(side - tile)  # a last tile flush with the border (overlapping the previous one)
    return starts
