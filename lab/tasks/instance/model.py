"""The Mask R-CNN of E7: Model Garden's ``maskrcnn_resnetfpn_coco`` experiment, set from flat values.

``maskrcnn_experiment`` is the registered builder (``lab.models.MODELS["maskrcnn"]``): it returns
Model Garden's ``ExperimentConfig`` with the course's values as defaults (ResNet-50-FPN, the
published head sizes, a 512 px input), and ``build`` turns it into Model Garden's task (its
input parser, losses and train step) and its tf_keras model. The model is Keras 2 (tf_keras),
not Keras 3: ``lab.tasks.instance.training`` adapts it to the kit's fit loop.

Weights: only ImageNet backbone checkpoints are published for Model Garden's ResNets (the
ResNet-50 one at ``IMAGENET_CHECKPOINTS``); they are loaded into the backbone alone, because the
heads of a checkpoint trained on COCO's 91 classes cannot take another class count. This module
imports without Model Garden; every function that needs it says how to install it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from lab.config.base import check_frozen_or_all
from lab.tasks.instance.extra import require_model_garden

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# Model Garden's published ImageNet checkpoints of its ResNet backbones (the files of one
# TensorFlow checkpoint: its index and its data), by backbone.
CHECKPOINT_BUCKET = "https://storage.googleapis.com/cloud-tpu-checkpoints/vision-2.0"
IMAGENET_CHECKPOINTS = {"resnet50": "resnet50_imagenet/ckpt-28080"}
CHECKPOINT_FILES = (".index", ".data-00000-of-00001")


def maskrcnn_experiment(num_classes: int, *, backbone: str = "resnet50", pipeline_size: int = 512,
                        fpn_filters: int = 256, head_convs: int = 4, head_filters: int = 256, fc_dims: int = 1024,
                        sampled_rois: int = 512, norm_momentum: float = 0.99, weights: str | None = "imagenet", unfreeze: int | str = "all",
                        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), proposals: int = 1000) -> Any:
    """Model Garden's Mask R-CNN experiment for ``num_classes`` foreground classes.

    Args:
        num_classes: foreground classes (Model Garden adds the background class 0).
        backbone: one of ``BACKBONES``.
        pipeline_size: side of the square model input, a multiple of 64: Model Garden's parser
            resizes (keeping the aspect ratio) and pads every image to it in the tf.data pipeline.
        fpn_filters: channels of the FPN levels and of the RPN head.
        head_convs: convolutions of the box head and of the mask head (Model Garden: 4).
        head_filters: channels of those convolutions.
        fc_dims: width of the box head's fully connected layer.
        sampled_rois: proposals sampled per image to train the heads (a quarter foreground; the
            mask head trains on at most a quarter of them).
        norm_momentum: the momentum of every BatchNorm's moving statistics, which the model
            predicts with. Model Garden's 0.997 suits COCO's 90,000 steps; after E7's few hundred
            the statistics would still be mostly their initial values and the predictions
            garbage, so the default is Keras' 0.99 (and 0.9 for a quick run of a few dozen steps).
        weights: "imagenet", None or a checkpoint path (see the module docstring); checked here,
            loaded by ``build``.
        unfreeze: "all" or 0 (the backbone frozen).
        aspect_ratios: the anchors' aspect ratios at every location of every FPN level (Model
            Garden's 0.5, 1 and 2); (1.0,) for objects whose boxes are square, as the easy
            generated set's are: a third of the anchors, each one a better match.
        proposals: the RPN's proposals kept after its non-maximum suppression for the heads,
            in training and in evaluation (Model Garden's 1000); the boxes that enter the
            suppression scale with it (Model Garden's 2000 in training, 1000 in evaluation).
            A 128 px image with a few objects needs far fewer, and each costs time on a CPU.

    Returns:
        An ``official.core.config_definitions.ExperimentConfig`` without data paths (the task
        sets them).

    Raises:
        ValueError: an unknown backbone, ImageNet weights for a backbone without a checkpoint,
            no or a non-positive aspect ratio, or fewer proposals than sampled_rois.
        ImportError: Model Garden is not installed (with how to install it).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r} for Mask R-CNN. Available: {', '.join(BACKBONES)}.")
    check_frozen_or_all(unfreeze)
    if weights == "imagenet" and backbone not in IMAGENET_CHECKPOINTS:
        raise ValueError(f"Model Garden publishes no ImageNet checkpoint for {backbone}; received weights='imagenet' "
                         f"with backbone={backbone!r}. Use backbone='resnet50' for ImageNet weights, or weights=None "
                         f"(random initialisation) or a checkpoint path.")
    if not aspect_ratios or any(isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0
                                for ratio in aspect_ratios):
        raise ValueError(f"aspect_ratios must be one or more positive numbers, received "
                         f"aspect_ratios={aspect_ratios!r}.")
    if isinstance(proposals, bool) or not isinstance(proposals, int) or proposals < sampled_rois:
        raise ValueError(f"proposals must be an integer of at least sampled_rois ({sampled_rois}): the heads train "
                         f"on sampled_rois of them; received proposals={proposals!r}.")
    require_model_garden()
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401  (registers the experiments)

    experiment = exp_factory.get_exp_config("maskrcnn_resnetfpn_coco")
    model = experiment.task.model
    model.num_classes = num_classes + 1  # Model Garden counts the background class
    model.input_size = [pipeline_size, pipeline_size, 3]  # Model Garden's name; its parser resizes to it
    model.backbone.resnet.model_id = int(backbone.removeprefix("resnet"))
    model.decoder.fpn.num_filters = fpn_filters
    model.rpn_head.num_filters = fpn_filters
    model.detection_head.num_convs = head_convs
    model.detection_head.num_filters = head_filters
    model.detection_head.fc_dims = fc_dims
    model.mask_head.num_convs = head_convs
    model.mask_head.num_filters = head_filters
    model.anchor.aspect_ratios = [float(ratio) for ratio in aspect_ratios]
    proposer = model.roi_generator
    proposer.pre_nms_top_k = round(proposer.pre_nms_top_k * proposals / proposer.num_proposals)
    proposer.test_pre_nms_top_k = round(proposer.test_pre_nms_top_k * proposals / proposer.test_num_proposals)
    proposer.num_proposals = proposer.test_num_proposals = proposals
    model.roi_sampler.num_sampled_rois = sampled_rois
    model.mask_sampler.num_sampled_masks = min(model.mask_sampler.num_sampled_masks, max(1, sampled_rois // 4))
    # Synchronised BatchNorm is for TPU pods; on one device it is plain BatchNorm, slower.
    model.norm_activation.use_sync_bn = False
    model.norm_activation.norm_momentum = norm_momentum
    task = experiment.task
    task.freeze_backbone = unfreeze == 0
    task.init_checkpoint = None  # loaded by ``build`` from the kit's cache, not from gs://
    task.annotation_file = None
    task.use_coco_metrics = False  # the kit scores with pycocotools itself (lab.tasks.instance.metrics)
    experiment.runtime.mixed_precision_dtype = "float32"
    experiment.runtime.enable_xla = False
    return experiment


def build(experiment: Any, weights: str | None, *, download: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Model Garden's task and model for an experiment, with the backbone weights loaded.

    Args:
        experiment: from ``maskrcnn_experiment``.
        weights: "imagenet", None or a checkpoint path.
        download: fetch a missing ImageNet checkpoint (False: a missing one is an error).

    Returns:
        ``(task, model, facts)``: facts name the weights loaded and their files' sha256.
    """
    require_model_garden()
    from official.core import task_factory

    task = task_factory.get_task(experiment.task)
    model = task.build_model()
    facts: dict[str, Any] = {"weights": weights}
    if weights is not None:
        backbone = f"resnet{experiment.task.model.backbone.resnet.model_id}"
        prefix, facts["weights_sha256"] = (imagenet_checkpoint(backbone, download=download) if weights == "imagenet"
                                           else (_checkpoint_prefix(weights), None))
        load_backbone(model, prefix)
        facts["weights_checkpoint"] = str(prefix)
    return task, model, facts


def load_backbone(model: Any, prefix: str | Path) -> None:
    """Loads a checkpoint's backbone (and its FPN when it has one) into the model.

    Raises:
        ValueError: the checkpoint has no variable for some of the backbone's (another
            architecture), named with the checkpoint.
    """
    import tensorflow as tf

    items = {"backbone": model.backbone}
    reader = tf.train.load_checkpoint(str(prefix))
    if any(name.startswith("decoder/") for name in reader.get_variable_to_shape_map()):
        items["decoder"] = model.decoder
    try:
        tf.train.Checkpoint(**items).read(str(prefix)).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        # AssertionError: objects without a value in the checkpoint; ValueError (raised while
        # restoring): a variable of another shape (resnet34's blocks read into a resnet18).
        raise ValueError(f"The checkpoint {prefix} does not match this Mask R-CNN's {' and '.join(items)} "
                         f"({str(error).splitlines()[0]}): was it saved from another backbone?") from error


def imagenet_checkpoint(backbone: str, *, download: bool = True) -> tuple[Path, dict[str, str]]:
    """The cached ImageNet checkpoint of ``backbone`` (downloaded once into the data folder).

    Model Garden publishes no checksum for its checkpoints: ``lab.system.download.fetch`` writes the
    sha256 of each file beside it when it is downloaded (or first found, placed by hand) and
    checks it every time it is reused, so a file damaged in the cache is never loaded silently.

    Returns:
        The checkpoint prefix and the sha256 of each of its files.

    Raises:
        lab.system.download.DatasetNotAvailableError: not cached and not downloadable (offline, no answer), with
            where to put the files by hand.
        lab.system.download.ChecksumError: a cached file no longer matches its recorded sha256.
    """
    from lab.system import download as downloads
    from lab.system.paths import data_dir

    name = IMAGENET_CHECKPOINTS[backbone]
    folder = data_dir() / "weights" / "model-garden" / Path(name).parent
    prefix = folder / Path(name).name
    digests = {}
    for suffix in CHECKPOINT_FILES:
        path = downloads.fetch(f"{CHECKPOINT_BUCKET}/{name}{suffix}", prefix.with_name(prefix.name + suffix),
                               download=download)
        digests[path.name] = downloads.recorded_sha256(path).read_text(encoding="utf-8").split()[0]
    return prefix, digests


def _checkpoint_prefix(weights: str) -> str:
    """A checkpoint path as given: a prefix, or a folder whose latest checkpoint is used."""
    import tensorflow as tf

    path = Path(weights).expanduser()
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if not prefix or not Path(f"{prefix}.index").exists():
        raise FileNotFoundError(f"weights={weights!r} is not a TensorFlow checkpoint (no {prefix or weights}.index). "
                                f"Give a checkpoint prefix (the path without .index) or a folder holding one, "
                                f"'imagenet', or None.")
    return prefix


@contextlib.contextmanager
def precision(mixed: bool | str) -> Iterator[str]:
    """tf_keras' global dtype policy for one run (the model is Keras 2: Keras 3's policy, which
    ``lab.system.hardware.precision`` sets, does not reach it), restored afterwards."""
    import tf_keras

    from lab.system.hardware import policy_name

    previous = tf_keras.mixed_precision.global_policy()
    policy = policy_name(mixed)
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)
