"""The configuration of a classification run: ``RunConfig`` (E1 to E5, E8 to E11)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from lab.config.base import BaseConfig, _one_of, _positive, _positive_int, check_rate, model_option

FEATURE_CACHES = (None, "memory", "disk")
# Test-time augmentation: which flips are averaged with the image (RandomFlip's mode names).
TTA_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")
# How a classification run reads its data (RunConfig.data_path).
DATA_PATHS = ("auto", "memory", "stream")
# decision_threshold's values: None decides by the largest probability; "validation" applies a
# binary task's threshold chosen on the validation split (lab.runs.evaluation.binary_threshold_metrics).
DECISION_THRESHOLDS = (None, "validation")
# Named recipes: the fields each one sets (RunConfig.recipe). Fields given explicitly win, and the
# record's config holds the expanded values, so it says what ran. "strong" is what the best
# small-data image classifiers combine (timm's and DeiT's training recipes, scaled down): AdamW
# with decoupled weight decay and a cosine schedule after a short warm-up, label smoothing, mixup
# and cutmix, an exponential moving average of the weights for evaluation, and augmentation. It
# sets no flip: whether a mirrored image keeps its class depends on the data (set aug_flip).
RECIPES: dict[str, dict[str, Any]] = {
    "strong": {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 0.05, "lr_schedule": "cosine",
               "warmup_epochs": 2, "label_smoothing": 0.1, "mixup": 0.2, "cutmix": 1.0, "ema": True,
               "ema_momentum": 0.99, "augment": True, "aug_flip": None, "aug_rotation": 0.1,
               "aug_translation": 0.1, "aug_zoom": 0.1},
}


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
            would take more than ``lab.data.datasets.STREAM_ABOVE_BYTES`` (2 GiB), estimated from
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
        recipe: a named set of training fields (``RECIPES``: "strong"), filled in where not
            given explicitly; None: none. The configuration holds the expanded values.
        ema: evaluate and keep an exponential moving average of the weights (Keras' optimizer
            ``use_ema``): validation, the best epoch, the saved model and the test scores all use
            the averaged weights; ema_momentum is the average's decay per step, reached after a
            warm-up (``lab.config.optimizers.ema_decay``).
        mixup, cutmix: the alpha of the Beta distribution that draws each training batch's
            mixing ratio (0: off). Mixup blends every image with another of the batch, cutmix
            pastes a box of it; the labels become the same blend of one-hot labels. With both
            set, each batch uses one of them, half the time each. Validation and test are never
            mixed; the training accuracy is then against each mixed image's larger share.
        balanced_sampling: draw training images class-balanced (``lab.data.pipeline.balanced_classes``):
            every class equally often, epochs as long as the data. The alternative to
            class_weighting (both at once would correct twice); in-memory data only.
    Evaluation:
        decision_threshold: None (the class of largest probability) or "validation": a binary
            task's test confusion matrix and prediction grid use the threshold chosen on the
            validation split (Youden's J, recorded as ``val_threshold``).
        tta: test-time augmentation: test and validation predictions are the mean over the
            image and its flips: "horizontal", "vertical", "horizontal_and_vertical" or None.
            It is never chosen for you: use flips the class survives and the model saw in
            training (aug_flip); a mirrored digit is not the same digit.
    """

    # steps_per_execution 16 made the E1 CNN's stall-free CPU epoch about 14% shorter, and
    # fewer calls per epoch help on GPUs too.
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "digits", "model": "cnn", "batch_size": 64,
                                          "steps_per_execution": 16, "aug_rotation": 0.1}
    # How a transfer run trains its backbone (the "Transfer models" fields above that are not the
    # builder's options): other models ignore them (``unused_fields``).
    TRANSFER_TRAINING: ClassVar[tuple[str, ...]] = ("backbone_lr_factor", "feature_cache", "feature_cache_passes",
                                                    "unfreeze_schedule", "phase_epochs", "phase_lr_factor")

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
    backbone_input_size: int | None = model_option()
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
    recipe: str | None = None
    ema: bool = False
    ema_momentum: float = 0.99
    mixup: float = 0.0
    cutmix: float = 0.0
    decision_threshold: str | None = None
    balanced_sampling: bool = False

    @classmethod
    def expand(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Fills in the fields of the named ``recipe`` that ``values`` do not give."""
        name = values.get("recipe")
        if name is None:
            return values
        if name not in RECIPES:
            raise ValueError(f"Unknown recipe {name!r}. Available recipes: {', '.join(RECIPES)} (or None).")
        return {**RECIPES[name], **values}

    @classmethod
    def unused_fields(cls, values: dict[str, Any]) -> list[str]:
        """``BaseConfig.unused_fields``, and the transfer training fields when the model is no transfer model."""
        unused = super().unused_fields(values)
        return unused + ([] if values.get("model") == "transfer" else list(cls.TRANSFER_TRAINING))

    def validate(self) -> None:
        super().validate()
        _one_of("tta", self.tta, TTA_MODES)
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, received l2={self.l2}.")
        check_rate("label_smoothing", self.label_smoothing)
        self._validate_recipe_options()
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

    def _validate_recipe_options(self) -> None:
        """ema, mixup, cutmix, decision_threshold and balanced_sampling."""
        if not isinstance(self.ema, bool):
            raise ValueError(f"ema must be True or False, received ema={self.ema!r}.")
        if isinstance(self.ema_momentum, bool) or not isinstance(self.ema_momentum, (int, float)) \
                or not 0.0 < self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in (0, 1), received ema_momentum={self.ema_momentum!r}.")
        for key in ("mixup", "cutmix"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} is the Beta distribution's alpha (0: off, e.g. 0.2 or 1.0), received "
                                 f"{key}={value!r}.")
        _one_of("decision_threshold", self.decision_threshold, DECISION_THRESHOLDS)
        if not isinstance(self.balanced_sampling, bool):
            raise ValueError(f"balanced_sampling must be True or False, received balanced_sampling="
                             f"{self.balanced_sampling!r}.")
        if self.balanced_sampling and self.class_weighting is not None:
            raise ValueError(f"balanced_sampling and class_weighting={self.class_weighting!r} both correct for class "
                             "imbalance, and together they would correct twice: choose one.")
        if self.balanced_sampling and (self.data_path == "stream" or self.tfrecord_dir):
            raise ValueError("balanced_sampling draws in-memory images by class; streamed data (data_path='stream' "
                             "or tfrecord_dir) is not supported. Use class_weighting='balanced' instead.")

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

