"""The flat run configuration: the same parameters a notebook's ``parameters`` cell holds.

One ``RunConfig`` describes one training run completely (data, model, optimiser, training,
hardware) and is saved beside the run's results. Model switches are flat fields too; those
left at None take the model builder's default, and only the ones a model has may be set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from lab.models import MODELS, model_options

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
DISTRIBUTE = (None, "mirrored", "multiworker", "tpu")

# Flat fields that are options of the model builders (passed only when not None).
MODEL_FIELDS = ("depth", "filters", "convs_per_block", "normalization", "dropout_rate", "l2",
                "dense_units", "hidden_units", "activation",
                # transfer models (lab.models.transfer)
                "backbone", "input_size", "pooling", "head_units", "head_dropout", "unfreeze", "freeze_batchnorm")
FEATURE_CACHES = (None, "memory", "disk")


class FlatConfig:
    """What every flat run configuration (a dataclass) can do: build from and compare as flat values.

    Shared by ``RunConfig`` and ``lab.segmentation.SegmentationConfig``.
    """

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Builds a config from flat values, refusing unknown keys (a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown configuration key(s) {unknown}. Valid keys: {', '.join(sorted(known))}.")
        return cls(**values)

    def replace(self, **changes: Any):
        """Returns a copy with some values changed (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """A short hash of everything that affects results (not the name, tags or output place)."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in ("name", "tags", "reports_dir", "verbose")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]

    def __post_init__(self) -> None:
        self.validate()


@dataclasses.dataclass
class RunConfig(FlatConfig):
    """Everything that defines a run. Defaults are the course's settings (E1).

    Data:
        dataset: registry name (see ``lab.datasets``).
        dataset_size: MedMNIST npz size (28/64/128/224) or generated image size; for an image
            folder, the final (centre-cropped) side.
        resize_to: an image folder's shorter side is first resized to this, then centre-cropped
            to dataset_size (E11: 256 then 224).
        num_classes: train on a seeded subset of this many classes (E9).
        limit: at most this many images per split (quick runs).
        val_fraction: validation share carved from train where a dataset has no val split.
        image_size: resize images in the pipeline (e.g. to enlarge 8x8 digits).
        input_scaling: "unit", "imagenet" or "none".
        cache: cache the decoded images (True: memory; a path: files).
        tfrecord_dir: stream the training split from TFRecord shards in this folder (exported
            there first if missing), for data that does not fit in memory (E9).
        augment: random flips/rotations... on training batches (the aug_* values below).
    Model:
        model: "simple", "basic", "cnn" or "mlp"; the model switches (depth, filters,
        normalization, dropout_rate, l2, ...) take the builder's default when None.
        init_from: start from a saved model instead (a run folder or a ``.keras`` file): its
            output layer is replaced by a new one for this dataset's classes.
        trainable: with init_from, "all" (fine-tune everything) or "head" (train only the new
            output layer, E5).
    Transfer models (model="transfer", see lab.models.transfer_model):
        backbone: a keras.applications or keras-hub backbone name ("resnet50", "vgg16",
            "efficientnetb0", "convnexttiny", "resnet18", "vit_b16", ...).
        weights: "imagenet", None (random) or a kit-saved run folder / .keras / .h5 file.
        input_size: the side images are resized to inside the model (28 px MedMNIST to 224).
        pooling, head_units (hidden Dense widths, E11: [256]), head_dropout.
        unfreeze: how many of the backbone's last stages train (0: head only; "all").
        freeze_batchnorm: keep BatchNorm in inference mode in unfrozen stages too.
        backbone_lr_factor: the pretrained part's learning rate is learning_rate times this
            (E12: smaller rates for the pretrained part than for the head).
        feature_cache: with unfreeze=0, compute the frozen backbone's features once and train
            the head on them ("memory", "disk" or None); exact, and much faster per epoch.
        feature_cache_passes: with augmentation the cache is off unless this is > 1: then that
            many augmented passes are cached and epochs cycle through them.
        unfreeze_schedule, phase_epochs, phase_lr_factor: progressive unfreezing in one run,
            e.g. [0, 1, 2] with [3, 3, 3]: head first, then one more stage per phase, each phase
            at phase_lr_factor times the previous learning rate.
    Training:
        optimizer, learning_rate, momentum (sgd/rmsprop), weight_decay (adamw), epochs,
        batch_size, label_smoothing, class_weighting ("balanced" for imbalanced data),
        early_stopping_patience (None: off), divergence_patience, seed, deterministic.
    Hardware (off by default; for a GPU or TPU in Colab):
        mixed_precision, jit_compile (XLA), distribute (None, "mirrored", "multiworker", "tpu").
        steps_per_execution: training steps per compiled call (Keras runs the callbacks' batch
            hooks once per call); 16 made the E1 CNN's stall-free CPU epoch about 14% shorter,
            and fewer calls per epoch help on GPUs too.
    Record:
        name: a readable run name; tags: free labels; reports_dir: where runs are written;
        save_model: keep the best model file; verbose: print the epoch line.
    """

    # data
    dataset: str = "digits"
    dataset_size: int | None = None
    resize_to: int | None = None
    num_classes: int | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    image_size: int | None = None
    input_scaling: str = "unit"
    cache: bool | str = True
    tfrecord_dir: str | None = None
    augment: bool = False
    aug_flip: str | None = "horizontal"
    aug_rotation: float = 0.1
    aug_zoom: float = 0.0
    aug_translation: float = 0.0
    aug_contrast: float = 0.0
    # model
    model: str = "cnn"
    depth: int | None = None
    filters: int | list[int] | None = None
    convs_per_block: int | None = None
    normalization: str | None = None
    dropout_rate: float | None = None
    l2: float | None = None
    dense_units: int | None = None
    hidden_units: list[int] | None = None
    activation: str | None = None
    init_from: str | None = None
    trainable: str = "all"
    backbone: str | None = None
    weights: str | None = "imagenet"
    input_size: int | None = None
    pooling: str | None = None
    head_units: list[int] | None = None
    head_dropout: float | None = None
    unfreeze: int | str | None = None
    freeze_batchnorm: bool | None = None
    backbone_lr_factor: float = 1.0
    feature_cache: str | None = "memory"
    feature_cache_passes: int = 1
    unfreeze_schedule: list[int | str] | None = None
    phase_epochs: list[int] | None = None
    phase_lr_factor: float = 0.1
    # training
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 4e-3
    epochs: int = 30
    batch_size: int = 64
    label_smoothing: float = 0.0
    class_weighting: str | None = None
    early_stopping_patience: int | None = 10
    divergence_patience: int = 3
    seed: int = 0
    deterministic: bool = True
    # hardware
    mixed_precision: bool = False
    jit_compile: bool = False
    steps_per_execution: int = 16
    distribute: str | None = None
    # record
    name: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    reports_dir: str | None = None
    save_model: bool = True
    verbose: int = 1

    def model_options(self) -> dict[str, Any]:
        """The model switches that were set, as the builder's keyword arguments."""
        options = {f: getattr(self, f) for f in MODEL_FIELDS if getattr(self, f) is not None}
        if self.model == "transfer":
            options["weights"] = self.weights  # None is meaningful here: random initialisation
        for key in ("filters", "hidden_units", "head_units"):
            if isinstance(options.get(key), list):
                options[key] = tuple(options[key])
        return options

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value and what is allowed."""
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}. Available models: {', '.join(MODELS)}.")
        accepted = model_options(self.model)
        for key, value in self.model_options().items():
            if key not in accepted:
                raise ValueError(
                    f"Model {self.model!r} has no option {key!r} (received {key}={value!r}). "
                    f"Its options: {', '.join(accepted) or 'none'}."
                )
        if self.trainable not in ("all", "head"):
            raise ValueError(f"trainable must be 'all' or 'head', received trainable={self.trainable!r}.")
        if self.trainable == "head" and not self.init_from:
            raise ValueError("trainable='head' trains only the output layer of a saved model: set init_from "
                             "to a run folder or a .keras file.")
        self._validate_transfer()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}. Available optimizers: {', '.join(OPTIMIZERS)}.")
        _positive("learning_rate", self.learning_rate)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if self.dropout_rate is not None and not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), received dropout_rate={self.dropout_rate}.")
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, received l2={self.l2}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received label_smoothing={self.label_smoothing}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received momentum={self.momentum}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, received weight_decay={self.weight_decay}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, received val_fraction={self.val_fraction}.")
        if self.class_weighting not in (None, "balanced"):
            raise ValueError(f"class_weighting must be None or 'balanced', received {self.class_weighting!r}.")
        if self.early_stopping_patience is not None:
            _positive_int("early_stopping_patience", self.early_stopping_patience)
        _positive_int("divergence_patience", self.divergence_patience)
        _positive_int("steps_per_execution", self.steps_per_execution)
        if self.jit_compile and self.deterministic:
            raise ValueError(
                "jit_compile=True needs deterministic=False: Keras disables XLA while TensorFlow's op "
                "determinism is on. Set deterministic=False to compile with XLA (results then vary slightly "
                "from run to run)."
            )
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {DISTRIBUTE}, received {self.distribute!r}.")
        if self.resize_to is not None and not self.dataset.lower().startswith("folder:"):
            raise ValueError(f"resize_to applies to image folders (dataset='folder:<path>'); received dataset="
                             f"{self.dataset!r}. Use image_size to resize other data in the pipeline.")
        for key in ("num_classes", "limit", "image_size", "dataset_size", "resize_to"):
            value = getattr(self, key)
            if value is not None:
                _positive_int(key, value)

    def _validate_transfer(self) -> None:
        transfer = self.model == "transfer"
        if transfer and not self.backbone:
            from lab.models.backbones import BACKBONES

            raise ValueError(f"model='transfer' needs a backbone, e.g. backbone='resnet50'. Available backbones: "
                             f"{', '.join(BACKBONES)}.")
        if transfer:
            from lab.models.backbones import backbone_spec

            backbone_spec(self.backbone)  # an unknown name lists the valid ones
            if self.input_scaling == "imagenet":
                raise ValueError("input_scaling='imagenet' would normalise twice: a transfer model applies its "
                                 "backbone's own preprocessing inside. Use input_scaling='unit' (or 'none').")
            if self.init_from:
                raise ValueError("init_from does not apply to model='transfer': pass the saved model as weights= "
                                 "(its backbone is reused and a new head is built).")
        transfer_only = {"backbone_lr_factor": self.backbone_lr_factor != 1.0,
                         "unfreeze_schedule": self.unfreeze_schedule is not None,
                         "phase_epochs": self.phase_epochs is not None}
        for key, is_set in transfer_only.items():
            if is_set and not transfer:
                raise ValueError(f"{key} applies to transfer models only (model='transfer'); received model="
                                 f"{self.model!r}.")
        _positive("backbone_lr_factor", self.backbone_lr_factor)
        _positive("phase_lr_factor", self.phase_lr_factor)
        _positive_int("feature_cache_passes", self.feature_cache_passes)
        if self.feature_cache_passes > 1 and not self.augment:
            raise ValueError(f"feature_cache_passes={self.feature_cache_passes} caches that many augmented passes: "
                             "set augment=True, or leave feature_cache_passes=1 (without augmentation one pass is "
                             "exact).")
        if self.feature_cache not in FEATURE_CACHES:
            raise ValueError(f"feature_cache must be one of {FEATURE_CACHES}, received {self.feature_cache!r}.")
        if self.unfreeze_schedule is not None:
            if not self.unfreeze_schedule or self.phase_epochs is None or \
                    len(self.phase_epochs) != len(self.unfreeze_schedule):
                raise ValueError(f"unfreeze_schedule needs phase_epochs of the same length (epochs per phase); "
                                 f"received unfreeze_schedule={self.unfreeze_schedule}, "
                                 f"phase_epochs={self.phase_epochs}.")
            if self.unfreeze is not None:
                raise ValueError("Set either unfreeze (one policy for the whole run) or unfreeze_schedule "
                                 "(progressive unfreezing), not both.")
            for epochs in self.phase_epochs:
                _positive_int("phase_epochs", epochs)
        elif self.phase_epochs is not None:
            raise ValueError("phase_epochs goes with unfreeze_schedule (epochs of each unfreezing phase).")


def _positive(key: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{key} must be a positive number, received {key}={value!r}.")


def _positive_int(key: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, received {key}={value!r}.")
