"""What every run's configuration has: ``BaseConfig``, its hash, and the checks it shares.

``BaseConfig`` holds the fields every run has and what every configuration does: refusing
unknown and renamed keys (``RENAMED``), building from flat values, ``replace``, ``to_dict`` and
the hash of everything that affects results (``NOT_HASHED`` is what does not). The value checks
at the bottom (``check_frozen_or_all``, ``check_rate``, ``_one_of``, ``_positive``,
``_positive_int``) are shared by the task configurations of ``lab.config`` (the public ones by
the model builders too), so that every invalid value is refused in the same words.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import numbers
from pathlib import Path
from typing import Any, ClassVar, Mapping

from lab.models import model_entry, model_options
from lab.config.optimizers import OPTIMIZERS
from lab.config.schedules import DEFAULT_DECAY_FACTOR, DEFAULT_PLATEAU_PATIENCE, check_schedule
from lab.tasks import TASKS, task_entry, tasks_of

DISTRIBUTE = (None, "mirrored", "multiworker", "tpu")
INPUT_SCALINGS = ("unit", "imagenet", "none")
# Old names, refused with the new one, so that an old notebook or batch fails clearly, and read
# under the new one from an older run record (``lab.runs.records.upgrade_config``):
# {old name: (new name, what it is)}.
RENAMED = {
    "image_size": ("pipeline_size", "resized in the tf.data pipeline"),
    "input_size": ("backbone_input_size", "resized inside a transfer model"),
    "resize_to": ("dataset_resize", "an image folder's shorter side before the centre crop"),
    "trainable": ("unfreeze", "0: only the new output layer; 'all': everything"),
    "trainable_encoder": ("unfreeze", "0: frozen backbone; 'all': the backbone trains too"),
    "encoder_weights": ("weights", "'imagenet' or None"),
    "encoder": ("backbone", "a pretrained_unet's pretrained network"),
    "run_name": ("name", "a readable run name"),
    "run_tags": ("tags", "free labels"),
}
# Where a task's old name took another new name than RENAMED gives: {task: {old name: (new name,
# what it is)}}. Mask R-CNN resizes in its tf.data pipeline (Model Garden's parser), not inside
# the model, so its input_size is a pipeline_size.
RENAMED_IN_TASK = {
    "instance": {"input_size": ("pipeline_size", "Mask R-CNN's square input side, resized and padded to in "
                                                 "the tf.data pipeline")},
}
# Not part of what a run computes, so not part of its hash.
NOT_HASHED = ("name", "tags", "reports_dir", "verbose", "tensorboard")
# mixed_precision's values; "auto" is resolved on the machine that runs (lab.system.hardware).
MIXED_PRECISION = (False, True, "auto")


def renamed_fields(*tasks: str | None) -> dict[str, tuple[str, str]]:
    """``RENAMED`` as it holds for the configurations of ``tasks``: {old name: (new name, what it is)}."""
    renamed = dict(RENAMED)
    for task in tasks:
        renamed.update(RENAMED_IN_TASK.get(task, {}))
    return renamed


def model_option(default: Any = None) -> Any:
    """A field that is a model builder's keyword option, under the same name: a builder takes the
    configuration's word (``backbone_input_size``, ``pipeline_size``), so that one name holds in
    every layer."""
    return dataclasses.field(default=default, metadata={"option": True})


class _CheckedKeys(type):
    """Refuses unknown keys before the dataclass sees them: a clear error for a keyword too."""

    def __call__(cls, *args: Any, **values: Any):
        if args:
            raise TypeError(f"{cls.__name__} takes keyword arguments only (received {len(args)} positional).")
        cls.check_keys(values)
        return super().__call__(**cls.expand(values))


@dataclasses.dataclass
class BaseConfig(metaclass=_CheckedKeys):
    """The fields every run has. Fields left at None take the task's default (``DEFAULTS``).

    Data:
        dataset: registry name (see ``lab.data.datasets``).
        dataset_size: the side the data is loaded at (see ``lab.config``).
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
        weights: pretrained weights of a transfer or pretrained_unet backbone:
            "imagenet", None (random), a kit-saved run folder / .keras file, or (transfer)
            "pretrain-offline": a backbone pretrained here on embedded data (``lab.tasks.pretraining``).
        unfreeze: what trains (see ``lab.config``); freeze_batchnorm keeps BatchNorm in
            inference mode in the stages that train.
    Training:
        optimizer, learning_rate, momentum (sgd/rmsprop), weight_decay (adamw), epochs,
        batch_size, class_weighting ("balanced", or for segmentation a list of per-class
        weights), early_stopping_patience (None: off), divergence_patience, seed,
        deterministic.
        monitor: what picks the best epoch, which is restored, checkpointed and drives early
            stopping: one of the task's monitors (``lab.tasks.TASKS``; None: its first, which
            is "val_loss" but for instance segmentation, which has no validation loss).
        lr_schedule: None (constant), "cosine" (per-step, after warmup_epochs of linear
            warm-up), "step" (times lr_decay_factor at the fractions lr_decay_at of the epochs;
            None: MedMNIST's [0.5, 0.75]) or "plateau" (times lr_decay_factor after
            plateau_patience epochs without a better monitor); see ``lab.config.schedules``.
    Hardware (off by default; for a GPU or TPU in Colab):
        mixed_precision (True, False, or "auto": on for GPUs with tensor cores, off on a CPU;
            ``lab.system.hardware.use_mixed_precision``), jit_compile (XLA), distribute (None,
            "mirrored", "multiworker", "tpu").
        steps_per_execution: training steps per compiled call (the callbacks' batch hooks run
            once per call); runs with several replicas use 1 (keras-team/keras#19246).
    Record:
        name: a readable run name; tags: free labels; reports_dir: where runs are written;
        save_model: keep the best model file; verbose: print the epoch line.
        tensorboard: write TensorBoard logs into the run folder (per-epoch scalars, the final
            figures, the HParams session; ``lab.runs.tensorboard``); False writes none.
    """

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
    monitor: str | None = None
    lr_schedule: str | None = None
    warmup_epochs: int = 0
    lr_decay_at: list[float] | None = None
    lr_decay_factor: float = DEFAULT_DECAY_FACTOR
    plateau_patience: int = DEFAULT_PLATEAU_PATIENCE
    seed: int = 0
    deterministic: bool = True
    # hardware
    mixed_precision: bool | str = False
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
        renamed = renamed_fields(*tasks_of(cls))
        problems = []
        for key in unknown:
            if key in renamed:
                problems.append(f"{key!r} is now called {renamed[key][0]} ({renamed[key][1]})")
            else:
                close = difflib.get_close_matches(key, known, n=1)
                problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if problems:
            raise ValueError(f"Unknown configuration key(s) {unknown}: {'; '.join(problems)}. Valid keys "
                             f"of {cls.__name__}: {', '.join(sorted(known))}.")

    @classmethod
    def expand(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The values a configuration is built from, given those passed: these same ones here;
        a task's configuration may fill in fields that a named setting implies (a recipe)."""
        return values

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
        if self.monitor is None:  # the task's default (an unknown model is refused with the list)
            self.monitor = TASKS[model_entry(self.model, *tasks_of(type(self))).task].default_monitor
        self.validate()

    # -- what the run is ---------------------------------------------------------------------------

    @property
    def task(self) -> str:
        """"classification", "segmentation" or "reconstruction": which task trains the model."""
        return model_entry(self.model).task

    @property
    def monitor_mode(self) -> str:
        return TASKS[self.task].monitors[self.monitor]

    def model_options(self) -> dict[str, Any]:
        """The builder's keyword arguments: the model switches that were set, plus the
        pretrained weights and the freeze policy where the builder takes them."""
        options = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("option") and value is not None:
                options[field.name] = tuple(value) if isinstance(value, list) else value
        accepted = model_options(self.model)
        if "weights" in accepted:
            options["weights"] = self.weights  # None is meaningful here: random initialisation
        if self.unfreeze is not None and "unfreeze" in accepted:
            options["unfreeze"] = self.unfreeze
        return options

    @classmethod
    def unused_fields(cls, values: Mapping[str, Any]) -> list[str]:
        """The fields of a flat configuration (a record's ``config.json``) that its model does
        not use: the fields ``model_options`` hands a builder (the ``model_option`` switches,
        ``weights``, ``unfreeze``) that this model's builder does not take, such as ``weights``
        and the backbone's options of a CNN built from scratch. ``unfreeze`` with ``init_from``
        is used: it says what of the saved model trains.

        Args:
            values: the configuration's values (``model`` names the builder).

        Returns:
            The unused field names, in field order; none for a model whose builder cannot be
            inspected here (an unknown name, or an optional extra that is not installed).
        """
        try:
            accepted = model_options(values.get("model"))
        except (ValueError, ImportError):
            return []
        fields = [f.name for f in dataclasses.fields(cls)
                  if f.metadata.get("option") or f.name in ("weights", "unfreeze")]
        return [name for name in fields if name not in accepted
                and not (name == "unfreeze" and values.get("init_from"))]

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
            from lab.data.datasets.segmentation.mask_folders import COLOR_MODES  # the folder loaders' own list

            _one_of("color_mode", self.color_mode, COLOR_MODES)

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value and what is allowed."""
        model_entry(self.model, *tasks_of(type(self)))  # an unknown name lists the valid ones
        self._validate_types()
        self._validate_model_options()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}. Available optimizers: {', '.join(OPTIMIZERS)}.")
        _one_of("input_scaling", self.input_scaling, INPUT_SCALINGS)
        _one_of("distribute", self.distribute, DISTRIBUTE)
        check_mixed_precision(self.mixed_precision)
        _one_of("monitor", self.monitor, tuple(TASKS[self.task].monitors))
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
        check_rate("momentum", self.momentum)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, received weight_decay={self.weight_decay}.")
        if self.dropout_rate is not None:
            check_rate("dropout_rate", self.dropout_rate)
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
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("option") and value is not None and field.name not in accepted:
                raise ValueError(f"Model {self.model!r} has no option {field.name!r} (received {field.name}={value!r}). "
                                 f"Its options: {', '.join(accepted) or 'none'}.")



def config_for(config: Any = None, overrides: Mapping[str, Any] | None = None, *,
               task: str | None = None) -> BaseConfig:
    """A validated configuration of the right class, from a configuration, a flat dict or None.

    A dict's class is its model's task's (``lab.models.MODELS``), or ``task``'s when given; with
    ``task``, a configuration of another task is refused with the entry point that trains it
    (the task's ``defaults`` apply to ``config=None``, as ``from_any``'s do).

    Raises:
        ValueError: an invalid value, an unknown model, or a model of another task.
        TypeError: with ``task``, a configuration object of another class.
    """
    overrides = dict(overrides or {})
    if task is not None:
        entry = task_entry(task)
        config = entry.config_class.from_any(config, overrides, **entry.defaults)
    elif isinstance(config, BaseConfig):
        config = config.replace(**overrides) if overrides else config
    else:
        model = {**(config or {}), **overrides}.get("model")
        entry = TASKS[model_entry(model).task] if model else TASKS["classification"]
        config = entry.config_class.from_any(config, overrides, **entry.defaults)
    if task is not None and config.task != task:
        raise ValueError(f"{config.model!r} is a {config.task} model: train it with {TASKS[config.task].entry_point} "
                         f"(or lab.run), not {TASKS[task].entry_point}.")
    return config


def check_frozen_or_all(unfreeze: Any) -> None:
    """``unfreeze`` of a model whose backbone trains whole or not at all (pretrained_unet, Mask
    R-CNN): the one check that their configurations and their builders call."""
    if isinstance(unfreeze, bool) or unfreeze not in (0, "all"):
        raise ValueError(f"unfreeze must be 0 (the backbone stays frozen) or 'all' (the backbone trains too), "
                         f"received unfreeze={unfreeze!r}.")


def check_rate(key: str, value: float) -> None:
    """A rate in [0, 1) (dropout_rate, momentum, label_smoothing, head_dropout): the one check of
    that range, which the configurations and the model builders call."""
    # numbers.Real takes NumPy's floats too (a rate drawn from a NumPy grid).
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be in [0, 1), received {key}={value!r}.")


def check_mixed_precision(value: Any) -> None:
    """Refuses a ``mixed_precision`` that is not True, False or "auto" (1 and "yes" included)."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(f"mixed_precision must be one of {', '.join(map(repr, MIXED_PRECISION))}, received "
                         f"mixed_precision={value!r}.")


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

