"""The flat run configurations: the same values a notebook's ``parameters`` cell holds.

One configuration describes one run completely (data, model, optimiser, training, hardware,
record) and is saved beside the run's results. ``RunConfig`` is a classification run,
``SegmentationConfig`` a segmentation or autoencoder run; both extend ``BaseConfig``, which
holds the fields every run has. Model switches are flat fields too: those left at None take
the model builder's default, and only the ones a model has may be set.

Importing this module does not import TensorFlow: a batch or a search checks its
configurations before anything heavy is loaded. (Validating a model's options reads its
builder's signature, which imports that builder, and with it Keras.)

Size fields are named after where they act:

    dataset_size         the data as loaded: MedMNIST's 28/64/128/224 files, the side shapes are
                         generated at, the side a TFDS set or an image folder is resized to
    dataset_resize       an image folder only: the shorter side before a centre crop to
                         dataset_size (E11: 256, then 224)
    pipeline_size        resized in the tf.data pipeline (8x8 digits to 32x32)
    backbone_input_size  resized inside a transfer model, before its backbone (28 to 224 px)

What trains is said one way, ``unfreeze``: 0 trains only the new head (a transfer model's head,
the new output layer of an ``init_from`` model, a ``pretrained_unet``'s decoder), n also the
backbone's last n stages, "all" everything. None leaves each model's default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

from lab.models import model_entry, model_options
from lab.optimizers import OPTIMIZERS
from lab.schedules import DEFAULT_DECAY_FACTOR, DEFAULT_PLATEAU_PATIENCE, check_schedule

DISTRIBUTE = (None, "mirrored", "multiworker", "tpu")
INPUT_SCALINGS = ("unit", "imagenet", "none")
FEATURE_CACHES = (None, "memory", "disk")
# Test-time augmentation: which flips are averaged with the image (RandomFlip's mode names).
TTA_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")
# How a classification run reads its data (RunConfig.data_path).
DATA_PATHS = ("auto", "memory", "stream")
SEGMENTATION_LOSSES = ("crossentropy", "dice", "combined")
RECONSTRUCTION_LOSSES = ("binary_crossentropy", "mse")
# What may pick the best epoch (restored, checkpointed, early stopping), and its direction.
MONITORS = {
    "classification": {"val_loss": "min", "val_accuracy": "max"},
    "segmentation": {"val_loss": "min", "val_accuracy": "max", "val_mean_iou": "max", "val_mean_dice": "max"},
    "reconstruction": {"val_loss": "min"},
    # Instance segmentation has no validation loss (Model Garden computes its losses only while
    # training): the best epoch is the one with the best validation COCO AP.
    "instance": {"val_mask_ap": "max", "val_box_ap": "max", "val_mask_ap50": "max"},
}
# Old names, refused with the new one, so that an old notebook or batch fails clearly.
RENAMED = {
    "image_size": "pipeline_size (resized in the tf.data pipeline)",
    "input_size": "backbone_input_size (resized inside a transfer model)",
    "resize_to": "dataset_resize (an image folder's shorter side before the centre crop)",
    "trainable": "unfreeze (0: only the new output layer; 'all': everything)",
    "trainable_encoder": "unfreeze (0: frozen encoder; 'all': the encoder trains too)",
    "encoder_weights": "weights ('imagenet' or None)",
    "run_name": "name",
    "run_tags": "tags",
}
# Not part of what a run computes, so not part of its hash.
NOT_HASHED = ("name", "tags", "reports_dir", "verbose", "tensorboard")


def model_option(name: str | None = None, default: Any = None) -> Any:
    """A field that is a model builder's keyword option (``name``: the builder's name for it)."""
    return dataclasses.field(default=default, metadata={"option": name or True})


class _CheckedKeys(type):
    """Refuses unknown keys before the dataclass sees them: a clear error for a keyword too."""

    def __call__(cls, *args: Any, **values: Any):
        if args:
            raise TypeError(f"{cls.__name__} takes keyword arguments only (received {len(args)} positional).")
        cls.check_keys(values)
        return super().__call__(**values)


@dataclasses.dataclass
class BaseConfig(metaclass=_CheckedKeys):
    """The fields every run has. Fields left at None take the task's default (``DEFAULTS``).

    Data:
        dataset: registry name (see ``lab.datasets``).
        dataset_size: the side the data is loaded at (see the module docstring).
        limit: at most this many images per split (quick runs).
        val_fraction: validation share carved from train where a dataset has no val split.
        split_fractions: [train, val, test] shares of an image or mask folder without split
            folders (None: the loader's default: image folders E11's [0.5, 0.25, 0.25], mask
            folders [0.7, 0.15, 0.15]); seeded by ``seed``. Folders only.
        color_mode: "rgb" or "grayscale": how a folder's image files are read (None: "rgb").
            Folders only.
        input_scaling: "unit", "imagenet" or "none".
        cache: cache the decoded images in the pipeline (classification: a folder path caches
            them in files).
        augment: random flips/rotations... of training batches (the aug_* values below; for
            segmentation the same transformation is applied to the image and its mask).
    Model:
        model: a registered model of the task (``lab.models.MODELS``); depth, filters,
            convs_per_block, normalization, dropout_rate, dense_units take the builder's
            default when None.
        weights: pretrained weights of a transfer backbone or a pretrained_unet encoder:
            "imagenet", None (random), a kit-saved run folder / .keras file, or (transfer)
            "pretrain-offline": a backbone pretrained here on embedded data (``lab.pretraining``).
        unfreeze: what trains (see the module docstring); freeze_batchnorm keeps BatchNorm in
            inference mode in the stages that train.
    Training:
        optimizer, learning_rate, momentum (sgd/rmsprop), weight_decay (adamw), epochs,
        batch_size, class_weighting ("balanced", or for segmentation a list of per-class
        weights), early_stopping_patience (None: off), divergence_patience, seed,
        deterministic.
        monitor: what picks the best epoch, which is restored, checkpointed and drives early
            stopping ("val_loss"; "val_accuracy"; segmentation also "val_mean_iou",
            "val_mean_dice").
        lr_schedule: None (constant), "cosine" (per-step, after warmup_epochs of linear
            warm-up), "step" (times lr_decay_factor at the fractions lr_decay_at of the epochs;
            None: MedMNIST's [0.5, 0.75]) or "plateau" (times lr_decay_factor after
            plateau_patience epochs without a better monitor); see ``lab.schedules``.
    Hardware (off by default; for a GPU or TPU in Colab):
        mixed_precision, jit_compile (XLA), distribute (None, "mirrored", "multiworker", "tpu").
        steps_per_execution: training steps per compiled call (the callbacks' batch hooks run
            once per call); runs with several replicas use 1 (keras-team/keras#19246).
    Record:
        name: a readable run name; tags: free labels; reports_dir: where runs are written;
        save_model: keep the best model file; verbose: print the epoch line.
        tensorboard: write TensorBoard logs into the run folder (per-epoch scalars, the final
            figures, the HParams session; ``lab.tensorboard``); False writes none.
    """

    TASKS: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # The dataset prefixes whose loaders take split_fractions and color_mode.
    FOLDER_PREFIXES: ClassVar[tuple[str, ...]] = ("folder:",)
    FOLDER_DATA: ClassVar[str] = "image and mask folders"

    # data
    dataset: str | None = None
    dataset_size: int | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    split_fractions: list[float] | None = None
    color_mode: str | None = None
    input_scaling: str = "unit"
    cache: bool | str = True
    augment: bool = False
    aug_flip: str | None = "horizontal"
    aug_rotation: float | None = None
    aug_zoom: float = 0.0
    aug_translation: float = 0.0
    aug_contrast: float = 0.0
    # model
    model: str | None = None
    depth: int | None = model_option()
    filters: int | list[int] | None = model_option()
    convs_per_block: int | None = model_option()
    normalization: str | None = model_option()
    dropout_rate: float | None = model_option()
    dense_units: int | None = model_option()
    weights: str | None = "imagenet"
    unfreeze: int | str | None = None
    freeze_batchnorm: bool | None = model_option()
    # training
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 4e-3
    epochs: int = 30
    batch_size: int | None = None
    class_weighting: str | list[float] | None = None
    early_stopping_patience: int | None = 10
    divergence_patience: int = 3
    monitor: str = "val_loss"
    lr_schedule: str | None = None
    warmup_epochs: int = 0
    lr_decay_at: list[float] | None = None
    lr_decay_factor: float = DEFAULT_DECAY_FACTOR
    plateau_patience: int = DEFAULT_PLATEAU_PATIENCE
    seed: int = 0
    deterministic: bool = True
    # hardware
    mixed_precision: bool = False
    jit_compile: bool = False
    steps_per_execution: int | None = None
    distribute: str | None = None
    # record
    name: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    reports_dir: str | None = None
    save_model: bool = True
    verbose: int = 1
    tensorboard: bool = True

    # -- building and comparing ------------------------------------------------------------------

    @classmethod
    def check_keys(cls, values: dict[str, Any]) -> None:
        """Refuses keys that are not fields: a renamed one names its new name, a typo the closest."""
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        problems = []
        for key in unknown:
            if key in RENAMED:
                problems.append(f"{key!r} is now called {RENAMED[key]}")
            else:
                close = difflib.get_close_matches(key, known, n=1)
                problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if problems:
            raise ValueError(f"Unknown configuration key(s) {unknown}: {'; '.join(problems)}. Valid keys "
                             f"of {cls.__name__}: {', '.join(sorted(known))}.")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Builds a config from flat values, refusing unknown keys (a typo must not pass silently)."""
        return cls(**values)

    @classmethod
    def from_any(cls, config: Any = None, overrides: dict[str, Any] | None = None, **defaults: Any):
        """A configuration from a config object, a flat dict or None, with ``overrides`` applied
        (``defaults`` only where neither gives a value): what the ``train`` calls accept."""
        overrides = overrides or {}
        if config is None:
            return cls(**{**defaults, **overrides})
        if isinstance(config, dict):
            return cls.from_dict({**config, **overrides})
        if not isinstance(config, cls):
            raise TypeError(f"Expected a {cls.__name__}, a dict of its fields or None; received "
                            f"{type(config).__name__}.")
        return config.replace(**overrides) if overrides else config

    def replace(self, **changes: Any):
        """Returns a copy with some values changed (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hashed_values(self) -> dict[str, Any]:
        """The values that affect results: everything but the name, tags and output place."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED}

    def config_hash(self, data: Any = None) -> str:
        """A short hash of everything that affects results (not the name, tags or output place).

        Args:
            data: the loaded dataset the run trains on; its content hash is then part of the
                hash, so runs on different data never share one (a run's record holds this).
        """
        relevant = self.hashed_values()
        if data is not None:
            relevant["data_content_sha256"] = data.content_hash()
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]

    def __post_init__(self) -> None:
        for key, value in self.DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.validate()

    # -- what the run is ---------------------------------------------------------------------------

    @property
    def task(self) -> str:
        """"classification", "segmentation" or "reconstruction": which task trains the model."""
        return model_entry(self.model).task

    @property
    def monitor_mode(self) -> str:
        return MONITORS[self.task][self.monitor]

    def model_options(self) -> dict[str, Any]:
        """The builder's keyword arguments: the model switches that were set, plus the
        pretrained weights and the freeze policy where the builder takes them."""
        options = {}
        for field in dataclasses.fields(self):
            option, value = field.metadata.get("option"), getattr(self, field.name)
            if option and value is not None:
                options[field.name if option is True else option] = tuple(value) if isinstance(value, list) else value
        accepted = model_options(self.model)
        if "weights" in accepted:
            options["weights"] = self.weights  # None is meaningful here: random initialisation
        if self.unfreeze is not None and "unfreeze" in accepted:
            options["unfreeze"] = self.unfreeze
        elif self.unfreeze is not None and "trainable_encoder" in accepted:
            options["trainable_encoder"] = self.unfreeze != 0
        return options

    # -- validation ----------------------------------------------------------------------------------

    def _validate_folder_options(self) -> None:
        """split_fractions and color_mode: how an image or mask folder is split and read (folders only)."""
        given = [key for key in ("split_fractions", "color_mode") if getattr(self, key) is not None]
        if given and not str(self.dataset).lower().startswith(self.FOLDER_PREFIXES):
            where = " or ".join(f"dataset='{prefix}<path>'" for prefix in self.FOLDER_PREFIXES)
            raise ValueError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to {self.FOLDER_DATA} "
                             f"({where}); received dataset={self.dataset!r}. Leave "
                             f"{' and '.join(given)} unset (None).")
        if self.split_fractions is not None:
            fractions = self.split_fractions
            if len(fractions) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0
                                          for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
                raise ValueError(f"split_fractions must be three positive shares [train, val, test] summing to 1, "
                                 f"received split_fractions={fractions!r}.")
            self.split_fractions = [float(f) for f in fractions]
        if self.color_mode is not None:
            from lab.datasets.segmentation import COLOR_MODES  # the folder loaders' own list

            _one_of("color_mode", self.color_mode, COLOR_MODES)

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value and what is allowed."""
        model_entry(self.model, *self.TASKS)  # an unknown name lists the valid ones
        self._validate_types()
        self._validate_model_options()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}. Available optimizers: {', '.join(OPTIMIZERS)}.")
        _one_of("input_scaling", self.input_scaling, INPUT_SCALINGS)
        _one_of("distribute", self.distribute, DISTRIBUTE)
        _one_of("monitor", self.monitor, tuple(MONITORS[self.task]))
        _positive("learning_rate", self.learning_rate)
        check_schedule(self)
        for key in ("epochs", "batch_size", "divergence_patience", "steps_per_execution"):
            _positive_int(key, getattr(self, key))
        for key in ("limit", "dataset_size", "early_stopping_patience"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, received val_fraction={self.val_fraction}.")
        self._validate_folder_options()
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received momentum={self.momentum}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, received weight_decay={self.weight_decay}.")
        if self.dropout_rate is not None and not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), received dropout_rate={self.dropout_rate}.")
        if self.unfreeze is not None and self.unfreeze != "all" and (
                isinstance(self.unfreeze, bool) or not isinstance(self.unfreeze, int) or self.unfreeze < 0):
            raise ValueError(f"unfreeze must be 0 (head only), a number of last stages, or 'all'; received "
                             f"unfreeze={self.unfreeze!r}.")
        if self.jit_compile and self.deterministic:
            raise ValueError("jit_compile=True needs deterministic=False: Keras disables XLA while TensorFlow's op "
                             "determinism is on. Set deterministic=False to compile with XLA (results then vary "
                             "slightly from run to run).")

    def _validate_types(self) -> None:
        """Values of the wrong kind, refused by name before a builder or a loader trips on them."""
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, received seed={self.seed!r}.")
        if not isinstance(self.tags, (list, tuple)) or not all(isinstance(t, str) for t in self.tags):
            hint = f" Write tags=[{self.tags!r}]." if isinstance(self.tags, str) else ""
            raise ValueError(f"tags must be a list of strings, received tags={self.tags!r}.{hint}")
        scalars = {"int": int, "str": str}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or "list[" not in str(field.type) or isinstance(value, (list, tuple)):
                continue
            # A list field may also take a scalar where its type says so (filters: one width for
            # every block; class_weighting: "balanced").
            alternatives = [kind.strip() for kind in str(field.type).split("|")]
            if any(isinstance(value, scalars[kind]) and not isinstance(value, bool)
                   for kind in alternatives if kind in scalars):
                continue
            raise ValueError(f"{field.name} must be a list, received {field.name}={value!r}. Write "
                             f"{field.name}=[{value!r}] for a single value.")
        if not isinstance(self.tensorboard, bool):
            raise ValueError(f"tensorboard must be True (write TensorBoard logs) or False, received "
                             f"tensorboard={self.tensorboard!r}.")
        for key in ("cache", "reports_dir"):
            value = getattr(self, key)
            if isinstance(value, str) and value and Path(value).expanduser().exists() \
                    and not Path(value).expanduser().is_dir():
                raise ValueError(f"{key} must be a folder, but {value} is a file. Choose a folder path (it is "
                                 "created if missing).")

    def _validate_model_options(self) -> None:
        accepted = model_options(self.model)
        names = {(f.name if f.metadata["option"] is True else f.metadata["option"]): f.name
                 for f in dataclasses.fields(self) if f.metadata.get("option")}
        for field in dataclasses.fields(self):
            option = field.metadata.get("option")
            value = getattr(self, field.name)
            builder_name = field.name if option is True else option
            if option and value is not None and builder_name not in accepted:
                raise ValueError(f"Model {self.model!r} has no option {field.name!r} (received {field.name}={value!r}). "
                                 f"Its options: {', '.join(names.get(o, o) for o in accepted) or 'none'}.")


@dataclasses.dataclass
class RunConfig(BaseConfig):
    """A classification run. Defaults are the course's settings (E1).

    Data (besides BaseConfig's):
        num_classes: train on a seeded subset of this many classes (E9).
        dataset_resize: an image folder's shorter side before the centre crop to dataset_size.
        pipeline_size: resize images in the pipeline (e.g. to enlarge 8x8 digits).
        data_path: how the run reads its data. "memory" loads every split as arrays; "stream"
            converts the dataset once to sharded TFRecords (reading its source a chunk at a
            time, never all of it) and trains, evaluates and predicts from the shards with
            bounded memory; "auto" (default) streams when tfrecord_dir is set or the images
            would take more than ``lab.datasets.STREAM_ABOVE_BYTES`` (2 GiB), estimated from
            the registry's metadata without loading. The record's ``data.access`` says which.
        tfrecord_dir: where the streamed data's shards are (exported there first if missing;
            default: a folder under ``<data dir>/tfrecords`` named by the data fields), for data
            that does not fit in memory (E9).
    Model:
        model: "simple", "basic", "cnn", "mlp", "resnet18", "resnet50" or "transfer"; l2,
            hidden_units, activation are the CNN's and MLP's switches; stem the ResNets'
            ("small": 3x3 stride 1, no max-pool, MedMNIST's 28 px model; "standard": 7x7/2 and
            max-pool, for 224 px; None: chosen by the input size, see ``lab.models.resnet``).
        init_from: start from a saved model instead (a run folder or a ``.keras`` file): its
            output layer is replaced by a new one for this dataset's classes; unfreeze=0 trains
            only that layer (E5).
    Transfer models (model="transfer", see ``lab.models.transfer.transfer_model``):
        backbone: a keras.applications or keras-hub backbone name ("resnet50", "vgg16",
            "efficientnetb0", "convnexttiny", "resnet18", "vit_b16", ...).
        backbone_input_size: the side images are resized to inside the model (28 px to 224).
        pooling, head_units (hidden Dense widths, E11: [256]), head_dropout.
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
        label_smoothing (E4).
    Evaluation:
        tta: test-time augmentation: test and validation predictions are the mean over the
            image and its flips: "horizontal", "vertical", "horizontal_and_vertical" or None.
            It is never chosen for you: use flips the class survives and the model saw in
            training (aug_flip); a mirrored digit is not the same digit.
    """

    TASKS: ClassVar[tuple[str, ...]] = ("classification",)
    # steps_per_execution 16 made the E1 CNN's stall-free CPU epoch about 14% shorter, and
    # fewer calls per epoch help on GPUs too.
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "digits", "model": "cnn", "batch_size": 64,
                                          "steps_per_execution": 16, "aug_rotation": 0.1}

    num_classes: int | None = None
    dataset_resize: int | None = None
    pipeline_size: int | None = None
    data_path: str = "auto"
    tfrecord_dir: str | None = None
    l2: float | None = model_option()
    hidden_units: list[int] | None = model_option()
    activation: str | None = model_option()
    init_from: str | None = None
    backbone: str | None = model_option()
    backbone_input_size: int | None = model_option("input_size")
    pooling: str | None = model_option()
    head_units: list[int] | None = model_option()
    head_dropout: float | None = model_option()
    stem: str | None = model_option()
    backbone_lr_factor: float = 1.0
    feature_cache: str | None = "memory"
    feature_cache_passes: int = 1
    unfreeze_schedule: list[int | str] | None = None
    phase_epochs: list[int] | None = None
    phase_lr_factor: float = 0.1
    label_smoothing: float = 0.0
    tta: str | None = None

    def validate(self) -> None:
        super().validate()
        _one_of("tta", self.tta, TTA_MODES)
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, received l2={self.l2}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received label_smoothing={self.label_smoothing}.")
        if self.class_weighting not in (None, "balanced"):
            raise ValueError(f"class_weighting must be None or 'balanced', received {self.class_weighting!r}.")
        if isinstance(self.cache, str) and not self.cache:
            raise ValueError("cache must be True, False or a folder path, received an empty string.")
        _one_of("data_path", self.data_path, DATA_PATHS)
        if self.data_path == "memory" and self.tfrecord_dir:
            raise ValueError(f"tfrecord_dir={self.tfrecord_dir!r} streams the data from TFRecords, but data_path='memory' "
                             "loads it into memory. Set data_path='stream' (or 'auto') to stream, or drop tfrecord_dir.")
        if self.dataset_resize is not None and not self.dataset.lower().startswith("folder:"):
            raise ValueError(f"dataset_resize applies to image folders (dataset='folder:<path>'); received dataset="
                             f"{self.dataset!r}. Use pipeline_size to resize other data in the pipeline.")
        for key in ("num_classes", "pipeline_size", "dataset_resize"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        self._validate_init_from()
        self._validate_transfer()

    def _validate_init_from(self) -> None:
        if not self.init_from:
            return
        if self.model == "transfer":
            raise ValueError("init_from does not apply to model='transfer': pass the saved model as weights= "
                             "(its backbone is reused and a new head is built).")
        if self.unfreeze not in (None, 0, "all"):
            raise ValueError(f"A saved model (init_from) has no stages to count: unfreeze must be 0 (only the new "
                             f"output layer trains) or 'all' (everything trains); received unfreeze={self.unfreeze!r}.")

    def _validate_transfer(self) -> None:
        transfer = self.model == "transfer"
        if transfer:
            from lab.models.backbones import BACKBONES, backbone_spec

            if not self.backbone:
                raise ValueError(f"model='transfer' needs a backbone, e.g. backbone='resnet50'. Available backbones: "
                                 f"{', '.join(BACKBONES)}.")
            backbone_spec(self.backbone)  # an unknown name lists the valid ones
            if self.input_scaling == "imagenet":
                raise ValueError("input_scaling='imagenet' would normalise twice: a transfer model applies its "
                                 "backbone's own preprocessing inside. Use input_scaling='unit' (or 'none').")
        elif self.unfreeze is not None and not self.init_from:
            raise ValueError(f"unfreeze applies to transfer models, to a saved model (init_from) and to "
                             f"pretrained_unet; model {self.model!r} trains whole. Received unfreeze={self.unfreeze!r}.")
        if not transfer and self.weights == "pretrain-offline":
            raise ValueError("weights='pretrain-offline' pretrains a transfer backbone: set model='transfer'.")
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
        _one_of("feature_cache", self.feature_cache, FEATURE_CACHES)
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


@dataclasses.dataclass
class SegmentationConfig(BaseConfig):
    """A segmentation or autoencoder run (E6, E12).

    Data: dataset is "shapes", "tfds:oxford_iiit_pet" or "folder:<path>"; dataset_size the
        image side (shapes: generated at this size, default 32; pets: resized, default 128;
        folders: resized).
        background_class: the class id that is background (None: the data's own, 0). The
            foreground shares, the foreground IoU and the all_background flag are computed
            against it (EM membranes: the membrane may be class 0 and the foreground).
    Mask folders only (``lab.datasets.segmentation.load_mask_folder``; None: its default):
        tile_size: cut the images (after the dataset_size resize, if any) into tiles of this
            side to train on; the validation and test images are predicted whole by
            overlap-tile and scored per image (``lab.segmentation.tiling``).
        tile_margin: the context each predicted tile keeps around its centre, 0 <= 2 *
            tile_margin < tile_size (None: tile_size // 8; 0: naive tiling, seams).
        class_names: the name of every class id, e.g. ["membrane", "cell"].
        class_values: {mask value: class id}, e.g. {0: 0, 255: 1} or {0: 0, 128: 1, 255: 2}.
        mask_suffix, images_dir, masks_dir: how masks are named and where images and masks
            are (defaults "", "images", "masks").
    Model: "unet", "pretrained_unet", "deeplab", "fcn" (segmentation) or "autoencoder",
        "denoising_autoencoder", "vae"; upsampling, output_activation, encoder, decoder_filters,
        output_stride, atrous_rates, aspp_filters, skip_levels, latent_channels, latent_dim,
        noise_stddev, kl_weight are their switches (None: the builder's default).
    Training:
        loss: segmentation "crossentropy" (per pixel), "dice" (soft Dice, E12) or "combined"
            (crossentropy_weight * CE + dice_weight * Dice); autoencoders "binary_crossentropy"
            or "mse". None: "combined" (it reached a mean IoU of 0.9 on shapes in fewer epochs
            than either alone, benchmarks/segmentation.py) or "binary_crossentropy".
        class_weighting: None, "balanced" (inverse pixel frequency of the training masks) or a
            list of one weight per class, background first (E6's "weight the background down").
    Record:
        background_flag_ratio: the run is flagged ``all_background`` when its predicted
            foreground share is below this fraction of the true one (E6).
    """

    TASKS: ClassVar[tuple[str, ...]] = ("segmentation", "reconstruction")
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "shapes", "model": "unet", "batch_size": 16,
                                          "steps_per_execution": 1, "aug_rotation": 0.0}

    background_class: int | None = None
    tile_size: int | None = None
    tile_margin: int | None = None
    class_names: list[str] | None = None
    class_values: dict[int, int] | None = None
    mask_suffix: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    upsampling: str | None = model_option()
    output_activation: str | None = model_option()
    encoder: str | None = model_option()
    decoder_filters: list[int] | None = model_option()
    output_stride: int | None = model_option()
    atrous_rates: list[int] | None = model_option()
    aspp_filters: int | None = model_option()
    skip_levels: int | None = model_option()
    latent_channels: int | None = model_option()
    latent_dim: int | None = model_option()
    noise_stddev: float | None = model_option()
    kl_weight: float | None = model_option()
    loss: str | None = None
    crossentropy_weight: float = 1.0
    dice_weight: float = 1.0
    background_flag_ratio: float = 0.1

    @property
    def loss_name(self) -> str:
        """The loss, with None resolved to the task's default."""
        if self.loss is not None:
            return self.loss
        return "binary_crossentropy" if self.task == "reconstruction" else "combined"

    def validate(self) -> None:
        super().validate()
        reconstruction = self.task == "reconstruction"
        if self.loss is not None:
            _one_of("loss", self.loss, RECONSTRUCTION_LOSSES if reconstruction else SEGMENTATION_LOSSES,
                    f" for {self.task} model {self.model!r}")
        weighting = self.class_weighting
        if weighting is not None and not (weighting == "balanced" or isinstance(weighting, (list, tuple))):
            raise ValueError(f"class_weighting must be None, 'balanced' or a list of per-class weights, received "
                             f"{weighting!r}.")
        if isinstance(weighting, (list, tuple)) and (
                not weighting or any(not isinstance(w, (int, float)) or w < 0 for w in weighting)):
            raise ValueError(f"class_weighting as a list needs one weight >= 0 per class, received {weighting}.")
        if weighting is not None and reconstruction:
            raise ValueError("class_weighting applies to segmentation models only.")
        if self.crossentropy_weight < 0 or self.dice_weight < 0 or self.crossentropy_weight + self.dice_weight == 0:
            raise ValueError(f"crossentropy_weight and dice_weight must be >= 0 and not both 0, received "
                             f"{self.crossentropy_weight} and {self.dice_weight}.")
        if reconstruction and self.input_scaling != "unit":
            raise ValueError(f"Autoencoders reconstruct images in [0, 1]: input_scaling must be 'unit', received "
                             f"{self.input_scaling!r}.")
        if not isinstance(self.cache, bool):
            raise ValueError(f"cache must be True or False for {self.task} runs, received cache={self.cache!r}.")
        if self.weights not in (None, "imagenet"):
            raise ValueError(f"weights must be 'imagenet' or None (random initialisation) for a segmentation "
                             f"encoder, received weights={self.weights!r}.")
        if self.unfreeze not in (None, 0, "all"):
            raise ValueError(f"unfreeze must be 0 (frozen encoder) or 'all' (the encoder trains too), received "
                             f"unfreeze={self.unfreeze!r}.")
        if self.unfreeze is not None and "trainable_encoder" not in model_options(self.model):
            raise ValueError(f"unfreeze applies to pretrained_unet's encoder; model {self.model!r} trains whole. "
                             f"Received unfreeze={self.unfreeze!r}.")
        if not 0.0 < self.background_flag_ratio < 1.0:
            raise ValueError(f"background_flag_ratio must be between 0 and 1, received {self.background_flag_ratio}.")
        self._validate_mask_folder_options()

    def _validate_mask_folder_options(self) -> None:
        """The background class and the mask-folder options, each refused by name; class_values
        is normalised to int keys (a JSON record gives them back as strings)."""
        from lab.datasets.segmentation import FOLDER_OPTIONS

        if self.background_class is not None and (isinstance(self.background_class, bool) or
                                                  not isinstance(self.background_class, int) or
                                                  self.background_class < 0):
            raise ValueError(f"background_class must be a class id (0 or more), received "
                             f"background_class={self.background_class!r}.")
        given = [key for key in FOLDER_OPTIONS if getattr(self, key) is not None]
        if given and not str(self.dataset).lower().startswith("folder:"):
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to mask folders "
                             f"(dataset='folder:<path>'); received dataset={self.dataset!r}. Leave "
                             f"{' and '.join(given)} unset (None).")
        if self.tile_size is not None:
            _positive_int("tile_size", self.tile_size)
            if self.dataset_size is not None and self.tile_size > self.dataset_size:
                raise ValueError(f"tile_size={self.tile_size} is larger than the images resized to dataset_size="
                                 f"{self.dataset_size} (they are resized first, then cut into tiles): choose "
                                 "tile_size <= dataset_size.")
        if self.tile_margin is not None:
            if self.tile_size is None:
                raise ValueError(f"tile_margin={self.tile_margin!r} is the context margin of tiles: set tile_size too.")
            if isinstance(self.tile_margin, bool) or not isinstance(self.tile_margin, int) or self.tile_margin < 0 \
                    or 2 * self.tile_margin >= self.tile_size:
                raise ValueError(f"tile_margin must be an integer with 0 <= 2 * tile_margin < tile_size="
                                 f"{self.tile_size} (a tile's centre must remain), received "
                                 f"tile_margin={self.tile_margin!r}.")
        if self.class_names is not None:
            names = self.class_names
            if len(names) < 2 or any(not isinstance(n, str) or not n.strip() for n in names) or \
                    len(set(names)) != len(names):
                raise ValueError(f"class_names must be two or more distinct, non-empty names, one per class id, "
                                 f"received class_names={names!r}.")
            if self.background_class is not None and self.background_class >= len(names):
                raise ValueError(f"background_class={self.background_class} is not a class id of class_names "
                                 f"{names} (ids 0 to {len(names) - 1}).")
        if self.class_values is not None:
            self.class_values = _class_values(self.class_values)
            classes = max(self.class_values.values()) + 1
            if self.class_names is not None and len(self.class_names) != classes:
                raise ValueError(f"class_values {self.class_values} maps to {classes} class ids but class_names has "
                                 f"{len(self.class_names)} names {self.class_names}: give one name per class id.")
        for key in ("mask_suffix", "images_dir", "masks_dir"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or (key != "mask_suffix" and not value.strip())):
                raise ValueError(f"{key} must be a{' non-empty' if key != 'mask_suffix' else ''} string, "
                                 f"received {key}={value!r}.")


def _class_values(values: Any) -> dict[int, int]:
    """``{mask value: class id}`` with int keys in order, refusing anything else by name."""
    problem = None
    if not isinstance(values, dict) or not values:
        problem = "a non-empty dict"
    else:
        # Keys are ints, or their digits as a JSON record gives them back; 1.5 is not truncated to 1.
        whole = all((isinstance(k, int) and not isinstance(k, bool) and k >= 0) or
                    (isinstance(k, str) and k.strip().isdigit()) for k in values)
        mapping = {int(k): v for k, v in values.items()} if whole else {}
        if not whole:
            problem = "whole-number mask values (0 or more) as keys"
        elif any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in mapping.values()):
            problem = "mask values (0 or more) mapped to class ids 0 to 255"
        elif 0 not in mapping.values():
            problem = "class ids counted from 0 (class 0 among them)"
    if problem is not None:
        raise ValueError(f"class_values must be {problem}, e.g. class_values={{0: 0, 255: 1}}; received "
                         f"class_values={values!r}.")
    return dict(sorted(mapping.items()))


def _one_of(key: str, value: Any, allowed: tuple, context: str = "") -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}{context}, received "
                         f"{key}={value!r}.")


def _positive(key: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{key} must be a positive number, received {key}={value!r}.")


def _positive_int(key: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, received {key}={value!r}.")


@dataclasses.dataclass
class InstanceConfig(BaseConfig):
    """An instance-segmentation run (E7): TensorFlow Model Garden's Mask R-CNN (``lab.instance``).

    The defaults are E7's real setting (a ResNet-50-FPN Mask R-CNN on an ImageNet backbone, SGD
    with momentum, 15 epochs), meant for a GPU; a CPU needs the quick setting (a small
    ``input_size``, ``backbone="resnet18"``, light heads, few images).

    Data: dataset is "shapes" (the embedded generated instance set, E7's 300/50 images by
        default; dataset_size is its image side, default 128) or "coco:<path>" (a COCO
        instance-annotation JSON with its images, or a folder with train.json and val.json;
        split_fractions splits a single JSON). limit keeps that many images per split.
    Model ("maskrcnn"; None takes the builder's default, ``lab.instance.model``):
        backbone: "resnet18", "resnet34", "resnet50" or "resnet101" (Model Garden's ResNet).
        input_size: the side of the square input (images are resized keeping their aspect
            ratio and padded).
        fpn_filters, head_convs, head_filters, fc_dims, sampled_rois: the FPN width, the
            convolutions and width of the box and mask heads, the box head's fully connected
            width, and the proposals sampled per image for the heads (the "light heads" of the
            quick setting are small values here).
        norm_momentum: the BatchNorm moving statistics' momentum (default 0.99; 0.9 for a quick
            run of a few dozen steps, whose statistics must settle within them).
        weights: "imagenet" (Model Garden's ResNet-50 ImageNet checkpoint, downloaded once into
            the data folder, loaded into the backbone), None (random initialisation), or the
            path of a TensorFlow checkpoint (prefix) holding a backbone.
        unfreeze: "all" (the default: everything trains) or 0 (the backbone stays frozen; the
            FPN and the heads train).
    Training: optimizer "sgd" (momentum 0.9) or "adam"; weight_decay is the L2 weight decay of
        every kernel (Model Garden's ``l2_weight_decay``); augment=True flips horizontally
        (aug_flip="horizontal") and scales by a factor in [1 - aug_zoom, 1 + aug_zoom] (Model
        Garden's parser; no other aug_* applies). monitor: "val_mask_ap" (default),
        "val_box_ap" or "val_mask_ap50", the validation COCO AP computed after every epoch.
    """

    TASKS: ClassVar[tuple[str, ...]] = ("instance",)
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "shapes", "model": "maskrcnn", "batch_size": 4,
                                          "unfreeze": "all", "steps_per_execution": 1}
    FOLDER_PREFIXES: ClassVar[tuple[str, ...]] = ("coco:",)
    FOLDER_DATA: ClassVar[str] = "COCO annotation files"

    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 4e-5
    epochs: int = 15
    monitor: str = "val_mask_ap"
    aug_flip: str | None = None
    backbone: str | None = model_option()
    input_size: int | None = model_option()
    fpn_filters: int | None = model_option()
    head_convs: int | None = model_option()
    head_filters: int | None = model_option()
    fc_dims: int | None = model_option()
    sampled_rois: int | None = model_option()
    norm_momentum: float | None = model_option()

    def validate(self) -> None:
        super().validate()
        if self.norm_momentum is not None and not 0.0 < self.norm_momentum < 1.0:
            raise ValueError(f"norm_momentum must be between 0 and 1, received norm_momentum={self.norm_momentum!r}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam' for Mask R-CNN (Model Garden's optimizers), "
                             f"received optimizer={self.optimizer!r}.")
        if self.unfreeze not in (0, "all"):
            raise ValueError(f"unfreeze must be 'all' (everything trains) or 0 (the backbone stays frozen), "
                             f"received unfreeze={self.unfreeze!r}.")
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights must be 'imagenet', None or a checkpoint path, received weights={self.weights!r}.")
        if self.color_mode is not None:
            raise ValueError(f"color_mode does not apply to instance data (images are read as RGB), received "
                             f"color_mode={self.color_mode!r}. Leave it unset (None).")
        for key in ("input_size", "fpn_filters", "head_convs", "head_filters", "fc_dims", "sampled_rois"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))
        if self.input_size is not None and self.input_size % 64:
            raise ValueError(f"input_size must be a multiple of 64 (the FPN's coarsest level is 1/64 of the image), "
                             f"received input_size={self.input_size}.")
        if self.sampled_rois is not None and self.sampled_rois < 4:
            raise ValueError(f"sampled_rois must be at least 4 (a quarter of them are foreground for the mask head), "
                             f"received sampled_rois={self.sampled_rois}.")
        if self.aug_flip not in (None, "horizontal"):
            raise ValueError(f"aug_flip must be 'horizontal' or None for Mask R-CNN (Model Garden's parser flips "
                             f"horizontally only), received aug_flip={self.aug_flip!r}.")
        if not 0.0 <= self.aug_zoom < 1.0:
            raise ValueError(f"aug_zoom must be in [0, 1) (scale jitter), received aug_zoom={self.aug_zoom!r}.")
        unused = {key: value for key, value in (("aug_rotation", self.aug_rotation), ("aug_translation", self.aug_translation),
                                                ("aug_contrast", self.aug_contrast), ("class_weighting", self.class_weighting))
                  if value not in (None, 0, 0.0)}
        if self.input_scaling != "unit":
            unused["input_scaling"] = self.input_scaling  # Model Garden's parser normalises with ImageNet's mean and std
        if self.cache is not True:
            unused["cache"] = self.cache
        if self.lr_schedule == "plateau":
            unused["lr_schedule"] = self.lr_schedule
        if unused:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in unused.items())}: not used by Mask R-CNN runs "
                             f"(Model Garden's parser augments with flips and scale jitter only, normalises the images "
                             f"itself, and the learning rate follows a per-step schedule or stays constant). Leave "
                             f"{'it' if len(unused) == 1 else 'them'} at the default.")


__all__ = ["BaseConfig", "InstanceConfig", "MONITORS", "RENAMED", "RunConfig", "SegmentationConfig"]
