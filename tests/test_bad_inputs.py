"""Bad inputs a student could give the kit: each is refused with a clear error, and leaves nothing.

One table of cases. Each case is

    setup(inputs) -> call      builds the student's files (images, masks, notebooks, shards...)
                               under ``inputs`` and returns the zero-argument call to refuse;
    expected exception type;
    match                      a regex of the phrase that says what was received or what to do.

The shared test body takes a snapshot of the kit's data and reports directories
(``LAB_DATA_DIR`` and ``LAB_REPORTS_DIR``, fresh per test) and, separately, of the student's own
inputs, makes the call under ``pytest.raises``, and then checks that the refusal wrote nothing:
no new file in the data or reports directories (no run folder, no index line, no ``.partial-*``,
no ``.tmp-*``, no search or batch folder), no changed file there, and the inputs untouched.
Empty cache folders under the data directory (``data/keras/`` made before a refused download)
are allowed: they hold nothing a later run could trust.

Every case runs offline: the kit's downloads (``lab.system.download.fetch``, which Keras' ImageNet
weights and keras-hub's presets go through too) are refused by a proxy on the loopback, and
Keras' cache is empty, so no case can reach the network and the offline cases see exactly what a
student without network sees.
Cases on a bad network (a proxy that never answers, a 404, a redirect loop) use loopback servers.

Refusals must come before training. Where a call would train if the kit did not refuse it, its
settings are tiny (digits, limit 60, a 4-unit MLP, one epoch), so a missing refusal costs a second.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from unittest import mock
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow as tf
from download_servers import fault_server, silent_server

from lab.system import paths
from lab.studies.batch import load_spec, spec_from_dict
from lab.config import RunConfig
from lab.data.datasets import DATA_FIELDS, from_arrays, load_data, load_dataset
from lab.data.datasets import medmnist as mm
from lab.data.datasets.folders import write_image_folder
from lab.data.datasets.segmentation import load_mask_folder
from lab.system.download import ChecksumError, DatasetNotAvailableError, DownloadError
from lab.runs.lr_finder import find_learning_rate
from lab.models.backbones import WeightsNotAvailableError
from lab.runs.records import RESULT_STATUSES
from lab.report import build_report
from lab.report.sources import UnknownSourceError
from lab.tasks.segmentation import train_autoencoder, train_segmentation
from lab.data.tfrecord import export_dataset, make_tfrecord_pipeline, manifest_path
from lab.runs.training import train
from lab.studies.tuning import search

# -- settings ---------------------------------------------------------------------------------

# A run that would take a second if it were not refused.
TINY = dict(dataset="digits", limit=60, model="mlp", hidden_units=[4], epochs=1, verbose=0)
TINY_SEGMENTATION = dict(dataset="shapes", limit=8, model="unet", depth=2, filters=4, epochs=1, verbose=0)
# A transfer run on a small backbone, small inputs and random weights: built in about a second.
TINY_TRANSFER = dict(dataset="digits", limit=60, model="transfer", backbone="mobilenetv2", backbone_input_size=32,
                     weights=None, epochs=1, verbose=0)
DROP = object()  # tiny(key=DROP) leaves the key out


def tiny(**changes: Any) -> dict[str, Any]:
    """TINY with some values changed."""
    return {k: v for k, v in {**TINY, **changes}.items() if v is not DROP}


def tiny_transfer(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**TINY_TRANSFER, **changes}.items() if v is not DROP}


def tiny_segmentation(**changes: Any) -> dict[str, Any]:
    return {**TINY_SEGMENTATION, **changes}


def tiny_autoencoder(**changes: Any) -> dict[str, Any]:
    return {"dataset": "shapes", "limit": 8, "epochs": 1, "verbose": 0, **changes}


def call(fn: Callable, *args: Any, **kwargs: Any) -> Callable[[Path], Callable[[], Any]]:
    """A case that needs no files of its own: ``fn(*args, **kwargs)``."""
    return lambda inputs: functools.partial(fn, *args, **kwargs)


# -- the student's network ----------------------------------------------------------------------

REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


def behind_silent_proxy(fn: Callable, *args: Any, **kwargs: Any) -> Callable[[Path], Callable[[], Any]]:
    """``fn(*args, **kwargs)`` behind a proxy that accepts connections and never answers (a campus
    or hotel network): every download must give up after its timeout."""
    def run():
        with silent_server() as proxy, mock.patch.dict(os.environ, {"http_proxy": proxy, "https_proxy": proxy}):
            return fn(*args, **kwargs)
    return lambda inputs: run


def checkpoint_served_with(fault: str) -> Callable[[Path], Callable[[], Any]]:
    """The Model Garden checkpoint's download from a loopback server with ``fault`` (download_servers)."""
    from lab.tasks.instance import model as garden

    def run():
        with fault_server() as server, mock.patch.object(garden, "CHECKPOINT_BUCKET", f"{server.base}/{fault}"), \
                mock.patch.dict(os.environ, {"no_proxy": "127.0.0.1"}):
            return garden.imagenet_checkpoint("resnet50")
    return lambda inputs: run


def keras_hub_preset_with(fault: str | None) -> Callable[[Path], Callable[[], Any]]:
    """keras-hub's pretrained resnet18 on a machine that never had the preset (an empty kagglehub
    cache): Kaggle's API and storage are a loopback server with ``fault`` (download_servers), or,
    for None, behind the offline fixture's refusing proxy."""
    from kagglesdk import kaggle_env

    from lab.models.backbones import build_backbone

    def setup(inputs):
        def run():
            env = {"KAGGLEHUB_CACHE": str(inputs.parent / "kagglehub")}
            with contextlib.ExitStack() as stack:
                if fault is not None:
                    server = stack.enter_context(fault_server())
                    server.redirect_to = f"{server.base}/{fault}"
                    stack.enter_context(mock.patch.dict(kaggle_env._env_to_endpoint,
                                                        {kaggle_env.KaggleEnv.PROD: f"{server.base}/kaggle-api"}))
                    env["no_proxy"] = "127.0.0.1"
                stack.enter_context(mock.patch.dict(os.environ, env))
                return build_backbone("resnet18", 32, weights="imagenet")
        return run
    return setup


def with_env(name: str, value: str, fn: Callable, *args: Any, **kwargs: Any) -> Callable[[Path], Callable[[], Any]]:
    def run():
        with mock.patch.dict(os.environ, {name: value}):
            return fn(*args, **kwargs)
    return lambda inputs: run


# -- the student's files ----------------------------------------------------------------------


def image_folder(inputs: Path, *, classes=("cat", "dog"), per_class: int = 6, side: int = 8) -> Path:
    """root/<class>/<n>.png, random 8-bit RGB images: the layout ``folder:<path>`` reads."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(per_class * len(classes), side, side, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(len(classes)), per_class)
    return write_image_folder(images, labels, list(classes), inputs / "images")


def folder_with_empty_class(inputs: Path) -> str:
    root = image_folder(inputs)
    (root / "owl").mkdir()
    return f"folder:{root}"


def folder_with_float_tiff(inputs: Path) -> str:
    from PIL import Image

    root = image_folder(inputs)
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(root / "cat" / "float.tif")
    return f"folder:{root}"


def folder_with_corrupt_image(inputs: Path) -> str:
    root = image_folder(inputs)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    return f"folder:{root}"


def mask_folder(inputs: Path, *, count: int = 10, stray: bool = False, small_mask: bool = False,
                lonely_mask: bool = False) -> Path:
    """root/images/<n>.png and root/masks/<n>.png, black-and-white masks (0 and 255).

    Args:
        stray: one mask holds a pixel of 128 (a mask saved with anti-aliasing).
        small_mask: one mask is 8x8 while its image is 16x16.
        lonely_mask: one mask's name matches no image.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    root = inputs / "masks_dataset"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{index}.png")
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[4:12, 4:12] = 255
        if stray and index == 3:
            mask[0, 0] = 128
        if small_mask and index == 5:
            mask = mask[:8, :8]
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{index}.png")
    if lonely_mask:
        (root / "masks" / "9.png").rename(root / "masks" / "9_mask.png")
    return root


def notebook(inputs: Path, parameters: str = "epochs = 1\nlearning_rate = 0.01") -> Path:
    """A notebook whose parameters cell assigns ``parameters`` (default: epochs and learning_rate)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.cells = [new_code_cell(parameters), new_code_cell("print(epochs, learning_rate)")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = inputs / "tiny.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def spec(inputs: Path, **raw: Any) -> dict[str, Any]:
    """A batch spec dict for the notebook above."""
    return {"notebook": str(notebook(inputs)), **raw}


# A course notebook's parameters: both sizes, so that a close match of image_size is the wrong one.
SIZES_NOTEBOOK = "epochs = 1\nlearning_rate = 0.01\ndataset_size = None\npipeline_size = None"


def sizes_spec(inputs: Path, **raw: Any) -> dict[str, Any]:
    """A batch spec dict for a notebook that defines dataset_size and pipeline_size."""
    return {"notebook": str(notebook(inputs, SIZES_NOTEBOOK)), **raw}


def not_json_spec(inputs: Path) -> Path:
    path = inputs / "batch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"notebook": "tiny.ipynb", "runs": [{"epochs": 2},]\n', encoding="utf-8")  # trailing comma
    return path


def exported(inputs: Path, **config: Any) -> Path:
    """TFRecords exported as a run with these settings exports them (same fingerprint)."""
    run_config = RunConfig(**tiny(**config))
    directory = inputs / "records"
    export_dataset(load_data(run_config), directory,
                   fingerprint={field: getattr(run_config, field) for field in DATA_FIELDS})
    return directory


def with_damaged_shard(inputs: Path) -> Path:
    """An export whose first training shard was damaged in place (same size, other bytes)."""
    directory = exported(inputs)
    shard = sorted(directory.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return directory


def without_manifest(inputs: Path) -> Path:
    directory = exported(inputs)
    manifest_path(directory, "train").unlink()
    return directory


def with_edited_manifest(inputs: Path) -> Path:
    """An export whose train manifest was edited to record 3 channels; its shards hold 1."""
    directory = exported(inputs)
    path = manifest_path(directory, "train")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["shape"] = [8, 8, 3]
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def image_npz(inputs: Path, *, dtype=np.float32, scale: float = 255.0) -> Path:
    """A MedMNIST-format npz of random 8x8 RGB images (2 classes, 20 a split): ``dtype`` uint8
    holds 0-255; float images hold the same pixels times ``scale / 255`` (255: 0..255, the
    mistake; 1: [0, 1], what float images must hold)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        pixels = rng.integers(0, 256, size=(20, 8, 8, 3)).astype(np.uint8)
        # Divided in float32 as the pipeline divides uint8 images, so that [0, 1] floats are the same numbers.
        arrays[f"{split}_images"] = pixels if dtype == np.uint8 else pixels.astype(dtype) / dtype(255.0 / scale)
        arrays[f"{split}_labels"] = np.tile([0, 1], 10)[:, None]
    path = inputs / f"images-{np.dtype(dtype).name}-{scale:g}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def a_file(inputs: Path) -> Path:
    """A plain file where the student meant a folder."""
    path = inputs / "notes.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n", encoding="utf-8")
    return path


def a_folder(inputs: Path) -> Path:
    """An empty folder where the student meant the reports folder."""
    path = inputs / "empty"
    path.mkdir(parents=True)
    return path


def corrupt_medmnist_cache(flag: str) -> str:
    """Puts a file at the registry's cache path (in the data directory) that the registry's md5
    refuses, as an interrupted copy by hand would; returns the flag."""
    path = mm.npz_path(flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8),
             train_labels=np.zeros((4, 1), dtype=np.uint8))
    return flag


# -- the table ----------------------------------------------------------------------------------
# ``later(fn, ...)`` is the call a case makes; a case whose setup builds files is a lambda of
# ``inputs``, the others use ``call``.

later = functools.partial

CONFIG_NAMES = [
    pytest.param(call(train, **tiny(learning_rte=0.01)), ValueError,
                 r"'learning_rte' \(did you mean 'learning_rate'\?\)", id="names-unknown-key-keyword"),
    pytest.param(call(train, {**tiny(epochs=DROP), "epoch": 1}), ValueError,
                 r"'epoch' \(did you mean 'epochs'\?\)", id="names-unknown-key-in-dict"),
    pytest.param(call(train, **tiny(image_size=32)), ValueError,
                 r"'image_size' is now called pipeline_size", id="names-renamed-image_size"),
    pytest.param(call(train, **tiny_transfer(input_size=96)), ValueError,
                 r"'input_size' is now called backbone_input_size", id="names-renamed-input_size"),
    pytest.param(call(train, **tiny(resize_to=256)), ValueError,
                 r"'resize_to' is now called dataset_resize", id="names-renamed-resize_to"),
    pytest.param(call(train, **tiny_transfer(trainable=True)), ValueError,
                 r"'trainable' is now called unfreeze", id="names-renamed-trainable"),
    pytest.param(call(train, **tiny(run_name="first")), ValueError,
                 r"'run_name' is now called name", id="names-renamed-run_name"),
    pytest.param(call(train_segmentation, **tiny_segmentation(trainable_encoder=False)), ValueError,
                 r"'trainable_encoder' is now called unfreeze", id="names-renamed-trainable_encoder"),
    pytest.param(call(train_autoencoder, **tiny_autoencoder(encoder_weights=None)), ValueError,
                 r"'encoder_weights' is now called weights", id="names-renamed-encoder_weights"),
    pytest.param(call(train, **tiny(model="resnet")), ValueError,
                 r"Unknown model 'resnet'\. Available models: .*mlp", id="names-unknown-model"),
    pytest.param(call(train, **tiny(model="unet")), ValueError,
                 r"'unet' is a segmentation model: train it with lab\.tasks\.segmentation\.train_segmentation",
                 id="names-segmentation-model-in-train"),
    pytest.param(call(train, **tiny(optimizer="adamax")), ValueError,
                 r"Unknown optimizer 'adamax'\. Available optimizers: adam, sgd", id="names-unknown-optimizer"),
    pytest.param(call(train, **tiny_transfer(backbone="resnet51")), ValueError,
                 r"Unknown backbone 'resnet51'\. Available backbones: .*resnet50", id="names-unknown-backbone"),
    pytest.param(call(train, **tiny(dataset="cifar_10")), ValueError,
                 r"Unknown dataset 'cifar_10'\. Did you mean 'cifar10'\?", id="names-unknown-dataset"),
    pytest.param(call(train, **tiny(dataset="bloodmnst")), ValueError,
                 r"Unknown dataset 'bloodmnst'\. Did you mean 'bloodmnist'\?", id="names-misspelt-medmnist-flag"),
    pytest.param(call(train, **tiny(recipe="strongest")), ValueError,
                 r"Unknown recipe 'strongest'\. Available recipes: strong", id="names-unknown-recipe"),
]

VALUES = [
    pytest.param(call(train, **tiny(learning_rate=-0.01)), ValueError,
                 r"learning_rate must be a positive number, received learning_rate=-0\.01", id="values-negative-lr"),
    pytest.param(call(train, **tiny(dropout_rate=1.0)), ValueError,
                 r"dropout_rate must be in \[0, 1\), received dropout_rate=1\.0", id="values-dropout-1"),
    pytest.param(call(train, **tiny(batch_size=0)), ValueError,
                 r"batch_size must be a positive integer, received batch_size=0", id="values-batch_size-0"),
    pytest.param(call(train, **tiny(epochs=2.5)), ValueError,
                 r"epochs must be a positive integer, received epochs=2\.5", id="values-epochs-2.5"),
    pytest.param(call(train, **tiny(label_smoothing=1.0)), ValueError,
                 r"label_smoothing must be in \[0, 1\), received label_smoothing=1\.0", id="values-label_smoothing-1"),
    pytest.param(call(train, **tiny_transfer(unfreeze=-1)), ValueError,
                 r"unfreeze must be 0 \(head only\), a number of last stages, or 'all'; received unfreeze=-1",
                 id="values-unfreeze-negative"),
    pytest.param(call(train, **tiny_transfer(unfreeze=99)), ValueError,
                 r"mobilenetv2 has 5 stages .*received unfreeze=99\. Use at most 5, or unfreeze='all'",
                 id="values-unfreeze-more-stages-than-the-backbone"),
    pytest.param(call(train, **tiny(jit_compile=True)), ValueError,
                 r"jit_compile=True needs deterministic=False.*Set deterministic=False", id="values-jit-deterministic"),
    pytest.param(call(train, **tiny(dataset_resize=256)), ValueError,
                 r"dataset_resize applies to image folders.*received dataset='digits'.*Use pipeline_size",
                 id="values-dataset_resize-not-a-folder"),
    pytest.param(call(train, **tiny_transfer(feature_cache_passes=3)), ValueError,
                 r"feature_cache_passes=3 .*set augment=True", id="values-feature_cache_passes-without-augment"),
    pytest.param(call(train, **tiny(filters=[8, 16])), ValueError,
                 r"Model 'mlp' has no option 'filters' \(received filters=\[8, 16\]\)\. Its options: .*hidden_units",
                 id="values-option-the-model-lacks"),
    pytest.param(call(train_autoencoder, **tiny_autoencoder(loss="dice")), ValueError,
                 r"loss must be one of 'binary_crossentropy', 'mse' for reconstruction model 'autoencoder', "
                 r"received loss='dice'", id="values-segmentation-loss-for-autoencoder"),
    pytest.param(call(train_segmentation, **tiny_segmentation(class_weighting=[0.2, 1.0])), ValueError,
                 r"class_weighting has 2 weights but shapes has 7 classes .*give one per class, background first",
                 id="values-class_weighting-wrong-length"),
    pytest.param(call(train, **tiny(val_fraction=1.0)), ValueError,
                 r"val_fraction must be between 0 and 1, received val_fraction=1\.0", id="values-val_fraction-1"),
    pytest.param(call(train, **tiny(monitor="val_mean_iou")), ValueError,
                 r"monitor must be one of 'val_loss', 'val_accuracy'.*received monitor='val_mean_iou'",
                 id="values-segmentation-monitor-for-classifier"),
    # A width where a list of widths belongs: today the MLP builder fails on min(4) with a TypeError.
    pytest.param(call(train, **tiny(hidden_units=4)), ValueError,
                 r"hidden_units.*received (hidden_units=)?4\b", id="values-hidden_units-not-a-list"),
    # A string where a list belongs: today it is recorded as tags ['b', 'a', 's', ...] and the run trains.
    pytest.param(call(train, **tiny(tags="baseline")), ValueError,
                 r"tags.*received tags='baseline'", id="values-tags-a-string"),
    # An infinite bound: the ramp was NaN by step 3 and the record said "completed, run more steps".
    pytest.param(call(find_learning_rate, **tiny(), max_lr=math.inf), ValueError,
                 r"max_lr must be a finite positive number, received max_lr=inf", id="values-lr-finder-max_lr-inf"),
    pytest.param(call(find_learning_rate, **tiny(), min_lr=math.nan), ValueError,
                 r"min_lr must be a finite positive number, received min_lr=nan", id="values-lr-finder-min_lr-nan"),
    # Today scikit-learn's random_state check answers, without naming seed.
    pytest.param(call(train, **tiny(seed="0")), ValueError,
                 r"seed.*received seed='0'", id="values-seed-a-string"),
    pytest.param(call(train, **tiny(mixup=-1)), ValueError,
                 r"mixup is the Beta distribution's alpha.*received mixup=-1", id="values-mixup-negative"),
    pytest.param(call(train, **tiny(ema_momentum=1.5)), ValueError,
                 r"ema_momentum must be in \(0, 1\), received ema_momentum=1\.5", id="values-ema_momentum-above-1"),
    pytest.param(call(train, **tiny(balanced_sampling=True, class_weighting="balanced")), ValueError,
                 r"balanced_sampling and class_weighting='balanced' both correct", id="values-balanced-twice"),
    # Refused when the data says the task has 10 classes, before a run folder exists.
    pytest.param(call(train, **tiny(decision_threshold="validation")), ValueError,
                 r"decision_threshold='validation' applies to binary tasks; this one has 10 classes",
                 id="values-decision-threshold-multiclass"),
]

FILES = [
    pytest.param(lambda inputs: later(train, **tiny(init_from=str(inputs / "runs" / "no-such-run"))),
                 FileNotFoundError, r"No saved model at .*no-such-run: init_from takes a run folder",
                 id="files-init_from-missing-folder"),
    pytest.param(lambda inputs: later(train, **tiny_transfer(weights=str(inputs / "missing.keras"))),
                 FileNotFoundError, r"No saved weights at .*missing\.keras: weights= takes 'imagenet', None",
                 id="files-weights-missing-file"),
    pytest.param(lambda inputs: later(load_spec, not_json_spec(inputs)), ValueError,
                 r"Batch spec .*batch\.json is not valid JSON", id="files-spec-not-json"),
    pytest.param(lambda inputs: later(load_spec, inputs / "no-such-spec.json"), FileNotFoundError,
                 r"Batch spec .*no-such-spec\.json does not exist", id="files-spec-missing"),
    pytest.param(lambda inputs: later(spec_from_dict, {"notebook": "missing.ipynb", "runs": [{}]}, base_dir=inputs),
                 FileNotFoundError, r"Notebook missing\.ipynb does not exist \(looked in",
                 id="files-spec-missing-notebook"),
    # A file where a folder belongs: the error must name the setting, not only the OS's errno.
    pytest.param(lambda inputs: later(train, **tiny(cache=str(a_file(inputs)))), (ValueError, OSError),
                 r"cache", id="files-cache-path-is-a-file"),
    pytest.param(lambda inputs: later(train, **tiny(reports_dir=str(a_file(inputs)))), (ValueError, OSError),
                 r"reports_dir", id="files-reports_dir-is-a-file"),
    # A mistyped --reports-dir: today the refusal creates the folder and a runs/ inside it.
    pytest.param(lambda inputs: later(build_report, "e4-adam", reports_dir=inputs / "reprots"), UnknownSourceError,
                 r"reports folder .*reprots does not exist: is it the wrong folder\? Pass the folder that holds "
                 r"runs/ \(--reports-dir", id="files-report-reports_dir-mistyped"),
    pytest.param(lambda inputs: later(build_report, "e4-adam", reports_dir=a_folder(inputs)), UnknownSourceError,
                 r"reports folder .*empty holds no run records, batches, sweeps or searches: is it the wrong folder",
                 id="files-report-reports_dir-empty"),
]

IMAGES = [
    pytest.param(lambda inputs: later(train, **tiny(dataset=folder_with_empty_class(inputs), dataset_size=8)),
                 ValueError, r"class folder\(s\) hold no images.*owl.*remove the empty folder\(s\) or add images",
                 id="images-empty-class-folder"),
    pytest.param(lambda inputs: later(train, **tiny(dataset=folder_with_float_tiff(inputs), dataset_size=8)),
                 ValueError, r"float\.tif holds 32-bit floating-point values.*Save it as an 8-bit or 16-bit PNG",
                 id="images-float32-tiff"),
    pytest.param(lambda inputs: later(train, **tiny(dataset=folder_with_corrupt_image(inputs), dataset_size=8)),
                 ValueError, r"Cannot read image .*broken\.png.*Remove or replace this file", id="images-corrupt-file"),
    pytest.param(lambda inputs: later(train, **tiny(dataset=f"folder:{inputs / 'no-such-folder'}")),
                 FileNotFoundError, r"Image folder .*no-such-folder does not exist", id="images-missing-folder"),
    # The crop is larger than the resized image: the message must name the setting the student set
    # (dataset_resize); today it names the loader's argument resize_to, a renamed configuration key.
    pytest.param(lambda inputs: later(train, **tiny(dataset=f"folder:{image_folder(inputs)}", dataset_size=32,
                                                    dataset_resize=16)),
                 ValueError, r"Cannot centre-crop .*dataset_resize", id="images-dataset_resize-below-dataset_size"),
    # A segmentation folder (images/ and masks/) given to the classifier: today it silently trains a
    # two-class classifier whose classes are "images" and "masks".
    pytest.param(lambda inputs: later(train, **tiny(dataset=f"folder:{mask_folder(inputs)}", dataset_size=8)),
                 ValueError, r"images/ and masks/.*train_segmentation", id="images-segmentation-folder-in-train"),
]

MASKS = [
    pytest.param(lambda inputs: later(load_mask_folder, mask_folder(inputs, stray=True), class_values={0: 0, 255: 1}),
                 ValueError, r"values \[128\] that class_values \{0: 0, 255: 1\} does not map.*3\.png.*"
                             r"Pass class_values=", id="masks-stray-value-not-in-class_values"),
    pytest.param(lambda inputs: later(train_segmentation, **tiny_segmentation(
                     dataset=f"folder:{mask_folder(inputs, stray=True)}", limit=None)),
                 ValueError, r"values \[128\] that are neither a black-and-white mask.*Pass class_values=",
                 id="masks-stray-value-in-a-run"),
    pytest.param(lambda inputs: later(load_mask_folder, mask_folder(inputs, small_mask=True)),
                 ValueError, r"Mask .*5\.png is 8x8 but its image is 16x16; a mask must match its image",
                 id="masks-size-does-not-match-image"),
    pytest.param(lambda inputs: later(load_mask_folder, mask_folder(inputs, lonely_mask=True)),
                 ValueError, r"images without a mask: \['9'\]; masks without an image: \['9_mask'\]",
                 id="masks-names-do-not-match-images"),
    pytest.param(lambda inputs: later(load_mask_folder, mask_folder(inputs), class_values={0: 0, 255: 1},
                                      class_names=["background", "cell", "nucleus"]),
                 ValueError, r"The masks map to 2 classes but class_names has 3", id="masks-class_names-wrong-length"),
]

DATA = [
    pytest.param(call(train, **tiny(limit=5)), ValueError,
                 r"limit=5 would drop classes.*use limit >= 10 \(or num_classes", id="data-limit-below-classes"),
    pytest.param(call(train, **tiny(dataset_size=32)), ValueError,
                 r"'digits' has a fixed image size of 8x8, received size=32.*set pipeline_size=32",
                 id="data-dataset_size-digits"),
    pytest.param(call(train, **tiny(dataset="cifar10", dataset_size=64)), ValueError,
                 r"'cifar10' has a fixed image size of 32x32, received size=64.*set pipeline_size=64",
                 id="data-dataset_size-cifar10"),
    pytest.param(call(train, **tiny(dataset="bloodmnist", dataset_size=32)), ValueError,
                 r"size must be one of \(28, 64, 128, 224\), received size=32", id="data-unknown-medmnist-size"),
    pytest.param(call(train, **tiny(num_classes=11)), ValueError,
                 r"num_classes must be between 2 and 10 for 'digits', received 11", id="data-num_classes-too-many"),
    pytest.param(call(train, **tiny(dataset="chestmnist")), ValueError,
                 r"'chestmnist' is multi-label.*Pick a single-label flag", id="data-multilabel-medmnist"),
    # The generated shapes need 16 px: the message must name the setting (dataset_size); today it
    # names the loader's argument image_size, a renamed configuration key.
    pytest.param(call(train_segmentation, **tiny_segmentation(dataset_size=8)), ValueError,
                 r"dataset_size.*16", id="data-shapes-dataset_size-too-small"),
    # Float images in 0..255: today they train, and a pretrained backbone sees them 255 times too bright.
    pytest.param(lambda inputs: later(train, **tiny_transfer(dataset=f"npz:{image_npz(inputs)}")), ValueError,
                 r"train_images: images 0 to 19 are float32 values from 0 to 255, but float images must hold "
                 r"\[0, 1\].*Divide them by 255 \(or store them as uint8", id="data-npz-float-images-0-255"),
    pytest.param(lambda inputs: later(load_dataset, f"npz:{image_npz(inputs, scale=-255.0)}"), ValueError,
                 r"float32 values from -255 to -?0.*Rescale them to \[0, 1\]", id="data-npz-float-images-negative"),
    pytest.param(lambda inputs: later(from_arrays, *[np.full((4, 8, 8, 1), 128.0, np.float32), np.arange(4) % 2] * 2,
                                      x_val=np.zeros((2, 8, 8, 1), np.float32), y_val=np.arange(2)), ValueError,
                 r"Dataset 'arrays': the train images are float32 values from 128 to 128.*Divide them by 255",
                 id="data-arrays-float-images-0-255"),
]

TFRECORDS = [
    pytest.param(lambda inputs: later(train, **tiny(seed=1, tfrecord_dir=str(exported(inputs, seed=0)))),
                 ValueError, r"were exported from digits \(seed 0\) but this run uses digits \(seed 1\).*"
                             r"point tfrecord_dir at an empty one", id="tfrecords-another-seed"),
    pytest.param(lambda inputs: later(train, **tiny(tfrecord_dir=str(exported(inputs, dataset="shapes")))),
                 ValueError, r"were exported from shapes but this run uses digits.*Delete the folder",
                 id="tfrecords-another-dataset"),
    pytest.param(lambda inputs: later(train, **tiny(tfrecord_dir=str(with_damaged_shard(inputs)))),
                 tf.errors.DataLossError, r"TFRecord shard .*train-.*\.tfrecord is corrupt.*Re-export split 'train'",
                 id="tfrecords-corrupted-shard"),
    pytest.param(lambda inputs: later(make_tfrecord_pipeline, without_manifest(inputs), "train", training=True),
                 FileNotFoundError, r"No TFRecord manifest .*train\.manifest\.json.*Splits found: test, val.*"
                                    r"Export with lab\.data\.tfrecord", id="tfrecords-missing-manifest"),
    # Today TensorFlow fails inside the pipeline with a reshape error naming neither split nor field.
    pytest.param(lambda inputs: later(make_tfrecord_pipeline, with_edited_manifest(inputs), "train", training=True),
                 ValueError, r"train\.manifest\.json \(split 'train'\): its field 'shape' is \[8, 8, 3\] but the "
                             r"shards hold images of shape \[8, 8, 1\].*re-export split 'train' \(export_dataset\)",
                 id="tfrecords-manifest-shape-disagrees-with-shards"),
]

BATCHES = [
    pytest.param(lambda inputs: later(spec_from_dict, spec(inputs, runs=[{"learning_rte": 0.1}])),
                 ValueError, r"does not define the parameter\(s\) 'learning_rte'.*Did you mean 'learning_rate' for",
                 id="batches-parameter-not-in-notebook"),
    pytest.param(lambda inputs: later(spec_from_dict, spec(inputs, grid={"epochs": 3})),
                 ValueError, r"'grid' must map each parameter to a non-empty list of values, received \{'epochs': 3\}",
                 id="batches-grid-not-lists"),
    pytest.param(lambda inputs: later(spec_from_dict, spec(inputs, runs=[{}], grdi={"epochs": [1]})),
                 ValueError, r"Unknown batch spec key\(s\) \['grdi'\]\. Valid keys: .*grid",
                 id="batches-unknown-spec-key"),
    pytest.param(lambda inputs: later(spec_from_dict, spec(inputs, runs=[{}], grid={"epochs": [1]})),
                 ValueError, r"needs exactly one of 'grid' .* or 'runs'", id="batches-grid-and-runs"),
    pytest.param(lambda inputs: later(spec_from_dict, spec(inputs, runs=[{}], workers=0)),
                 ValueError, r"workers must be at least 1, received 0", id="batches-zero-workers"),
    # A renamed key: today "Did you mean 'dataset_size'", the close match, not the new name.
    pytest.param(lambda inputs: later(spec_from_dict, sizes_spec(inputs, runs=[{"image_size": 32}])),
                 ValueError, r"'image_size' \(in 'runs' 'run1'\).*'image_size' is now called 'pipeline_size'\. Fix",
                 id="batches-renamed-parameter"),
]

SPACE = {"learning_rate": {"log": [1e-3, 1e-2]}}
TINY_CNN = tiny(model="cnn", hidden_units=DROP, depth=2, filters=4, dense_units=8)

SEARCHES = [
    pytest.param(call(search, tiny(), SPACE, tuner="grid", verbose=0), ValueError,
                 r"Unknown tuner 'grid'\. Available tuners: random, hyperband, bayesian", id="searches-unknown-tuner"),
    pytest.param(call(search, tiny(), SPACE, objective="test_accuracy", verbose=0), ValueError,
                 r"'test_accuracy' would choose hyperparameters on the test split.*Use a validation metric",
                 id="searches-test-objective"),
    pytest.param(call(search, tiny(), {}, verbose=0), ValueError,
                 r"The search space is empty.*give at least one configuration field", id="searches-empty-space"),
    pytest.param(call(search, tiny(), {"lr": [1e-3, 1e-2]}, verbose=0), ValueError,
                 r"Unknown configuration key\(s\) \['lr'\].*Valid keys.*learning_rate", id="searches-unknown-key"),
    # A configuration names a renamed key's new name; a search space should too (today: "unknown").
    pytest.param(call(search, tiny(), {"image_size": [16, 32]}, verbose=0), ValueError,
                 r"'image_size' is now called pipeline_size", id="searches-renamed-key"),
    pytest.param(call(search, TINY_CNN, {"normalization": ["batch", "bn"]}, verbose=0), ValueError,
                 r"value normalization='bn' makes an invalid configuration.*normalization must be one of",
                 id="searches-bad-value-in-space"),
    # Widths where lists of widths belong; today the reason given is "'int' object is not iterable".
    pytest.param(call(search, tiny(), {"hidden_units": [4, 8]}, verbose=0), ValueError,
                 r"value hidden_units=4 makes an invalid configuration: .*hidden_units",
                 id="searches-hidden_units-not-lists"),
    pytest.param(call(search, tiny(), {"learning_rate": {"log": [0.0, 1e-2]}}, verbose=0), ValueError,
                 r"log sampling needs a positive range, received \[0\.0, 0\.01\]", id="searches-log-range-from-0"),
]

OFFLINE = [
    pytest.param(call(load_dataset, "cifar10"), DatasetNotAvailableError,
                 r"Download https://www\.cs\.toronto\.edu/.*cifar-10-python\.tar\.gz yourself and put it at "
                 r".*keras/cifar-10-python\.tar\.gz.*set LAB_DATA_DIR", id="offline-cifar10"),
    pytest.param(call(load_dataset, "bloodmnist"), DatasetNotAvailableError,
                 r"Download https://zenodo\.org/.*bloodmnist\.npz.* yourself and put it at .*medmnist/bloodmnist\.npz",
                 id="offline-bloodmnist"),
    pytest.param(call(train, **tiny(dataset="cifar10")), DatasetNotAvailableError,
                 r"put it at .*cifar-10-python\.tar\.gz", id="offline-cifar10-in-a-run"),
    pytest.param(lambda inputs: later(load_dataset, corrupt_medmnist_cache("bloodmnist")), ChecksumError,
                 r"Checksum mismatch for .*bloodmnist\.npz: expected md5 .*delete it and run again",
                 id="offline-medmnist-checksum-mismatch"),
    pytest.param(call(train, **tiny_transfer(weights="imagenet", backbone_input_size=96)), WeightsNotAvailableError,
                 r"ImageNet weights of 'mobilenetv2' are not cached.*~/\.keras/models.*use weights=None",
                 id="offline-imagenet-weights"),
    # Issue 22: behind a proxy that never answers, Keras' own download of the weights waited forever.
    pytest.param(behind_silent_proxy(train, **tiny_transfer(weights="imagenet", backbone_input_size=96)),
                 WeightsNotAvailableError, r"ImageNet weights of 'mobilenetv2' are not cached.*no answer within 0\.3 s "
                 r"\(1 attempt, through the proxy http://127\.0\.0\.1:\d+ set by https_proxy\).*put it at "
                 r".*models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1\.0_96_no_top\.h5",
                 id="offline-proxy-never-answers-weights"),
    pytest.param(behind_silent_proxy(load_dataset, "cifar10"), DownloadError,
                 r"no answer within 0\.3 s.*put it at .*keras/cifar-10-python\.tar\.gz.*LAB_DOWNLOAD_TIMEOUT",
                 id="offline-proxy-never-answers-cifar10"),
    pytest.param(checkpoint_served_with("404"), DownloadError,
                 r"resnet50_imagenet/ckpt-28080\.index: HTTP 404 Not Found \(1 attempt\).*put it at "
                 r".*weights/model-garden/resnet50_imagenet/ckpt-28080\.index", id="offline-checkpoint-404"),
    pytest.param(checkpoint_served_with("loop"), DownloadError, r"a redirect loop .*put it at .*ckpt-28080\.index",
                 id="offline-checkpoint-redirect-loop"),
    pytest.param(with_env("LAB_DOWNLOAD_TIMEOUT", "soon", load_dataset, "cifar10"), ValueError,
                 r"LAB_DOWNLOAD_TIMEOUT must be a positive number of seconds .*received LAB_DOWNLOAD_TIMEOUT='soon'.*"
                 r"Unset them for the defaults", id="offline-bad-download-timeout"),
    # Issue 22: keras-hub's presets came through kagglehub, whose API requests have no timeout.
    pytest.param(keras_hub_preset_with(None), WeightsNotAvailableError,
                 r"ImageNet weights of 'resnet18' are not cached.*connection refused \(1 attempt, through the proxy "
                 r"http://127\.0\.0\.1:9 set by https_proxy\).*put it at .*kagglehub/models/keras/resnetv1/keras/"
                 r"resnet_18_imagenet/\d+/config\.json", id="offline-keras-hub-preset"),
    pytest.param(keras_hub_preset_with("short"), WeightsNotAvailableError,
                 r"'resnet18' are not cached.*cut short after \d+ of \d+ bytes .*kept in .*config\.json\.part",
                 id="offline-keras-hub-preset-cut-short"),
    pytest.param(keras_hub_preset_with("other"), WeightsNotAvailableError,
                 r"'resnet18' are not cached.*Wrong checksum for config\.json downloaded from "
                 r"http://127\.0\.0\.1:\d+/other/config\.json: expected md5",
                 id="offline-keras-hub-preset-other-bytes"),
]

CASES = [*CONFIG_NAMES, *VALUES, *FILES, *IMAGES, *MASKS, *DATA, *TFRECORDS, *BATCHES, *SEARCHES, *OFFLINE]


# -- the shared test body -------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: a file's sha256, or "dir" for a folder."""
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


def left_behind(before: dict[str, str], after: dict[str, str], *, empty_folders_allowed: bool) -> list[str]:
    """New or changed paths. Empty folders are allowed where the kit makes cache folders
    (``data/keras/``): a folder with no file below it holds nothing a later run could trust."""
    problems = []
    for path, digest in after.items():
        if path in before and before[path] == digest:
            continue
        if digest == "dir":
            if path in before:
                continue
            holds_files = any(other.startswith(path + "/") and value != "dir" for other, value in after.items())
            if empty_folders_allowed and not holds_files:
                continue
        problems.append(("changed: " if path in before else "new: ") + path)
    return problems


@pytest.fixture
def offline(monkeypatch, keras_cache):
    """No network, as on a student's laptop on a train: every download is refused at once.

    The kit's downloads (datasets, the Model Garden checkpoint, Keras' ImageNet weights, all through
    ``lab.system.download.fetch``) go to a proxy on a loopback port where nothing listens, with short waits
    and no retry; Keras' cache is an empty folder and its own ``get_file`` (never called by the kit,
    which routes it to ``fetch``) fails as it does without network.
    """
    from keras.src.utils import file_utils

    def no_get_file(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    for name in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(name, REFUSED)
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("LAB_DOWNLOAD_RETRIES", "0")
    monkeypatch.setattr(file_utils, "get_file", no_get_file)


@pytest.mark.parametrize("setup,error,match", CASES)
def test_a_bad_input_is_refused_clearly_and_leaves_nothing(setup, error, match, tmp_path, offline):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    call_under_test = setup(inputs)
    data, reports = paths.data_dir(), paths.reports_dir()
    assert data.is_relative_to(tmp_path) and reports.is_relative_to(tmp_path)  # the conftest fixture is active
    before = {"data": snapshot(data), "reports": snapshot(reports), "inputs": snapshot(inputs)}

    with pytest.raises(error, match=match):
        call_under_test()

    after = {"data": snapshot(data), "reports": snapshot(reports), "inputs": snapshot(inputs)}
    problems = {
        "data": left_behind(before["data"], after["data"], empty_folders_allowed=True),
        # reports/runs/ itself is the empty folder every run (and RunWriter) makes first; a run
        # folder, .partial-*, index.jsonl, searches/ or batches/ is something written.
        "reports": [p for p in left_behind(before["reports"], after["reports"], empty_folders_allowed=False)
                    if p != "new: runs"],
        # The student's own files: a refusal neither adds to nor changes nor deletes them.
        "inputs": left_behind(before["inputs"], after["inputs"], empty_folders_allowed=False)
                  + [f"removed: {p}" for p in before["inputs"] if p not in after["inputs"]],
    }
    assert not any(problems.values()), f"the refused call left things behind: {json.dumps(problems, indent=1)}"


def test_the_table_covers_every_category_with_enough_cases():
    counts = {name: len(group) for name, group in [
        ("names", CONFIG_NAMES), ("values", VALUES), ("files", FILES), ("images", IMAGES), ("masks", MASKS),
        ("data", DATA), ("tfrecords", TFRECORDS), ("batches", BATCHES), ("searches", SEARCHES),
        ("offline", OFFLINE)]}
    assert sum(counts.values()) >= 45 and min(counts.values()) >= 3, counts
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"


def test_left_behind_sees_run_folders_and_temporary_files_but_allows_empty_cache_folders(tmp_path):
    before = snapshot(tmp_path)
    (tmp_path / "keras").mkdir()  # an empty cache folder made before a refused download
    assert left_behind(before, snapshot(tmp_path), empty_folders_allowed=True) == []
    (tmp_path / "runs" / ".partial-20250101-mlp-abc123" / "plots").mkdir(parents=True)  # RunWriter's first step
    assert "new: runs/.partial-20250101-mlp-abc123" in left_behind(before, snapshot(tmp_path),
                                                                  empty_folders_allowed=False)
    (tmp_path / "keras" / ".tmp-cifar-10-python-x.tar.gz").write_bytes(b"half")
    assert left_behind(before, snapshot(tmp_path), empty_folders_allowed=True) == [
        "new: keras", "new: keras/.tmp-cifar-10-python-x.tar.gz"]


# -- following the advice -----------------------------------------------------------------------
# A message that says what to do is only useful if doing it works: each test below applies the fix
# a refusal above suggests and checks that the call then succeeds.


def recorded(result) -> bool:
    """A run that trained and was recorded. A one-epoch run of a 4-unit MLP (on random images, or
    on 60 digits) rarely beats chance, which the kit records as "stalled": a finished run too."""
    return result.status in RESULT_STATUSES and (result.run_dir / "metrics.json").is_file()


def test_float_images_divided_by_255_train_exactly_as_the_same_uint8_images(tmp_path):
    """The fix of data-npz-float-images-0-255; and a uint8 npz keeps exactly its results."""
    as_uint8 = train(**tiny(dataset=f"npz:{image_npz(tmp_path, dtype=np.uint8)}", name="uint8"))
    as_unit = train(**tiny(dataset=f"npz:{image_npz(tmp_path, scale=1.0)}", name="divided"))
    assert recorded(as_uint8) and recorded(as_unit) and as_uint8.status == as_unit.status
    assert as_unit.history["loss"].tolist() == as_uint8.history["loss"].tolist()
    assert as_unit.metrics["test_accuracy"] == as_uint8.metrics["test_accuracy"]


def test_a_split_re_exported_after_an_edited_manifest_reads(tmp_path):
    """The fix of tfrecords-manifest-shape-disagrees-with-shards: re-export (export_dataset)."""
    directory = with_edited_manifest(tmp_path)
    with pytest.raises(ValueError, match="field 'shape'"):
        make_tfrecord_pipeline(directory, "train", training=True)
    assert exported(tmp_path) == directory  # export_dataset again, into the same folder
    images, _ = next(iter(make_tfrecord_pipeline(directory, "train", training=True)))
    assert tuple(images.shape[1:]) == (8, 8, 1)


@pytest.mark.parametrize("dataset", ["digits", "npz"])
def test_an_export_made_by_hand_from_exactly_the_run_s_data_is_accepted(tmp_path, dataset):
    """export_dataset with its default fingerprint, as a student calls it (today: refused with
    "source.limit unset", and the message suggests export_dataset again). Both a set held in
    memory (digits: its content is compared) and one the run streams from its source (an npz:
    its source's facts are compared)."""
    config = tiny(dataset=f"npz:{image_npz(tmp_path, dtype=np.uint8)}" if dataset == "npz" else "digits")
    directory = tmp_path / "records"
    export_dataset(load_data(RunConfig(**config)), directory)
    result = train(**config, tfrecord_dir=str(directory))
    access = json.loads((result.run_dir / "config.json").read_text(encoding="utf-8"))["data"]["access"]
    assert recorded(result) and access["exported_now"] is False


def test_the_advice_of_a_refused_export_works(tmp_path):
    """tfrecords-another-seed says: point tfrecord_dir at an empty folder, or re-export the folder
    with export_dataset. Both then train."""
    directory = exported(tmp_path, seed=0)
    with pytest.raises(ValueError, match="re-export it with lab.data.tfrecord.export_dataset"):
        train(**tiny(seed=1, tfrecord_dir=str(directory)))
    assert recorded(train(**tiny(seed=1, tfrecord_dir=str(tmp_path / "empty"))))
    export_dataset(load_data(RunConfig(**tiny(seed=1))), directory)
    assert recorded(train(**tiny(seed=1, tfrecord_dir=str(directory))))


def test_a_renamed_batch_parameter_under_its_new_name_is_accepted(tmp_path):
    """The fix of batches-renamed-parameter; and a renamed key the notebook lacks is named too."""
    spec = spec_from_dict(sizes_spec(tmp_path, runs=[{"pipeline_size": 32}]))
    assert [job.parameters["pipeline_size"] for job in spec.jobs] == [32]
    with pytest.raises(ValueError, match=r"'resize_to' is now called 'dataset_resize', which the notebook "
                                         r"does not define either"):
        spec_from_dict(sizes_spec(tmp_path / "other", runs=[{"resize_to": 96}]))


def test_a_finite_max_lr_runs_the_finder():
    """The fix of values-lr-finder-max_lr-inf."""
    result = find_learning_rate(**tiny(), max_lr=10.0, steps=12)
    assert result.metrics["status"] == "completed" and result.metrics["steps_run"] >= 2


def test_the_report_of_the_right_reports_folder_is_written_and_the_cli_refusal_writes_nothing(tmp_path, capsys):
    """The fix of files-report-reports_dir-mistyped: the folder that holds runs/."""
    from lab.report.cli import main

    run = train(**tiny(name="reported"))
    mistyped = tmp_path / "reprots"
    assert main([run.run_dir.name, "--reports-dir", str(mistyped)]) == 2
    assert "is it the wrong folder?" in capsys.readouterr().err and not mistyped.exists()
    assert main([run.run_dir.name, "--reports-dir", str(paths.reports_dir())]) == 0
    assert (run.run_dir / "report" / "report.html").is_file()
