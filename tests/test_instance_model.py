"""E7's configuration, Model Garden's Mask R-CNN builder, its weights, the optional extra and the
fit adapter's optimizer view: everything short of training (lab.tasks.instance, lab.config)."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lab.config import InstanceConfig
from lab.tasks.instance import extra

# The quick setting (E7 on a CPU) with the light RPN: a ResNet-18-FPN at 128 px with light heads builds in seconds.
QUICK = dict(backbone="resnet18", pipeline_size=128, fpn_filters=64, head_convs=1, head_filters=64, fc_dims=256,
             sampled_rois=64, norm_momentum=0.9, aspect_ratios=(1.0,), proposals=200)
REPO = Path(__file__).resolve().parents[1]


# -- InstanceConfig (no extra needed) ---------------------------------------------------------------


def test_instance_config_defaults_are_e7s_setting():
    config = InstanceConfig()
    assert (config.model, config.dataset, config.task) == ("maskrcnn", "shapes", "instance")
    assert (config.optimizer, config.momentum, config.epochs, config.batch_size) == ("sgd", 0.9, 15, 4)
    assert (config.monitor, config.monitor_mode) == ("val_mask_ap", "max")
    assert (config.weights, config.unfreeze) == ("imagenet", "all")
    # Nothing set: the builder's defaults (ResNet-50-FPN) apply; weights and unfreeze always go.
    assert config.model_options() == {"weights": "imagenet", "unfreeze": "all"}


def test_instance_config_model_options_carry_every_set_value():
    config = InstanceConfig(**QUICK, weights=None, unfreeze=0)
    assert config.model_options() == {**QUICK, "weights": None, "unfreeze": 0}


def test_instance_config_hash_follows_the_model_options_only():
    base = InstanceConfig(**QUICK)
    assert base.config_hash() == InstanceConfig(**QUICK, name="renamed", tags=["x"]).config_hash()
    assert base.config_hash() != base.replace(fpn_filters=128).config_hash()
    assert base.config_hash() != base.replace(norm_momentum=0.99).config_hash()


@pytest.mark.parametrize("values, message", [
    (dict(pipeline_size=100), ("pipeline_size must be a multiple of 64", "received pipeline_size=100")),
    (dict(pipeline_size=0), "pipeline_size must be a positive integer"),
    (dict(sampled_rois=2), ("sampled_rois must be at least 4", "received sampled_rois=2")),
    (dict(unfreeze=2), "unfreeze must be 0 (the backbone stays frozen) or 'all' (the backbone trains too), "
                       "received unfreeze=2"),
    (dict(optimizer="rmsprop"), "optimizer must be 'sgd' or 'adam' for Mask R-CNN"),
    (dict(aug_rotation=0.1), "aug_rotation=0.1: not used by Mask R-CNN"),
    (dict(input_scaling="imagenet"), "input_scaling='imagenet': not used by Mask R-CNN"),
    (dict(lr_schedule="plateau"), "lr_schedule='plateau': not used by Mask R-CNN"),
    (dict(aug_flip="vertical"), "aug_flip must be 'horizontal' or None for Mask R-CNN"),
    (dict(aug_zoom=1.0), "aug_zoom must be in [0, 1)"),
    (dict(norm_momentum=1.5), "norm_momentum must be between 0 and 1, received norm_momentum=1.5"),
    (dict(monitor="val_loss"), "val_loss"),
    (dict(weights=3), "weights must be 'imagenet', None or a checkpoint path"),
    # Folder options: for instance data, only "coco:" files take them.
    (dict(split_fractions=[0.8, 0.1, 0.1]), "dataset='coco:<path>'); received dataset='shapes'"),
    (dict(color_mode="rgb"), "dataset='coco:<path>'); received dataset='shapes'"),
    (dict(dataset="coco:/x", color_mode="rgb"), "color_mode does not apply to instance data"),
    (dict(dataset="coco:/x", split_fractions=[0.5, 0.5]), "split_fractions must be three positive shares"),
    (dict(model="unet"), "'unet' is a segmentation model: train it with lab.tasks.segmentation.train_segmentation"),
    (dict(depth=3), "Model 'maskrcnn' has no option 'depth'"),
    # Mask R-CNN's input side was input_size: an old batch names the new field, not a transfer model's.
    (dict(input_size=128), "'input_size' is now called pipeline_size (Mask R-CNN's square input side"),
    (dict(proposals=0), "proposals must be a positive integer, received proposals=0"),
])
def test_instance_config_refuses_bad_values_by_name(values, message):
    with pytest.raises(ValueError) as refused:
        InstanceConfig(**values)
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(refused.value)


def test_instance_config_takes_split_fractions_for_coco_files():
    config = InstanceConfig(dataset="coco:/x", split_fractions=[0.8, 0.1, 0.1])
    assert config.split_fractions == [0.8, 0.1, 0.1]


# -- maskrcnn_experiment -------------------------------------------------------------------------------


def test_unknown_backbone_passes_the_config_and_is_refused_by_the_builder():
    from lab.tasks.instance.model import maskrcnn_experiment

    config = InstanceConfig(backbone="vgg16")  # only the builder knows Model Garden's backbones
    with pytest.raises(ValueError, match=r"Unknown backbone 'vgg16' .*Available: resnet18, resnet34, resnet50, "
                                         r"resnet101"):
        maskrcnn_experiment(3, **config.model_options())


def test_imagenet_weights_need_a_backbone_with_a_published_checkpoint():
    from lab.tasks.instance.model import maskrcnn_experiment

    with pytest.raises(ValueError, match=r"no ImageNet checkpoint for resnet18; received weights='imagenet'.*"
                                         r"backbone='resnet50'.*weights=None"):
        maskrcnn_experiment(3, backbone="resnet18", weights="imagenet")


def test_the_builder_refuses_a_stage_count_as_its_configuration_does():
    from lab.tasks.instance.model import maskrcnn_experiment

    # Mask R-CNN's backbone trains whole or not at all: unfreeze=2 must not train it all silently.
    with pytest.raises(ValueError, match=r"unfreeze must be 0 \(the backbone stays frozen\) or 'all'.*received "
                                         r"unfreeze=2"):
        maskrcnn_experiment(3, backbone="resnet18", weights=None, unfreeze=2)


def test_the_builder_refuses_bad_anchors_and_too_few_proposals():
    from lab.tasks.instance.model import maskrcnn_experiment

    with pytest.raises(ValueError, match=r"aspect_ratios must be one or more positive numbers, received "
                                         r"aspect_ratios=\(1.0, -2.0\)"):
        maskrcnn_experiment(3, backbone="resnet18", weights=None, aspect_ratios=(1.0, -2.0))
    with pytest.raises(ValueError, match=r"received aspect_ratios=\(\)"):
        maskrcnn_experiment(3, backbone="resnet18", weights=None, aspect_ratios=())
    # The heads train on sampled_rois of the proposals: fewer proposals than that would starve them.
    with pytest.raises(ValueError, match=r"proposals must be an integer of at least sampled_rois \(64\).*received "
                                         r"proposals=32"):
        maskrcnn_experiment(3, **{**QUICK, "proposals": 32}, weights=None)


def test_experiment_receives_every_flat_value():
    pytest.importorskip("official")
    from lab.tasks.instance.model import maskrcnn_experiment

    experiment = maskrcnn_experiment(5, **QUICK, weights=None, unfreeze=0)
    model, task = experiment.task.model, experiment.task
    assert model.num_classes == 6  # with Model Garden's background class
    assert list(model.input_size) == [128, 128, 3]
    assert model.backbone.type == "resnet" and model.backbone.resnet.model_id == 18
    assert model.decoder.fpn.num_filters == 64 and model.rpn_head.num_filters == 64
    head = model.detection_head
    assert (head.num_convs, head.num_filters, head.fc_dims) == (1, 64, 256)
    assert (model.mask_head.num_convs, model.mask_head.num_filters) == (1, 64)
    assert model.roi_sampler.num_sampled_rois == 64
    assert model.mask_sampler.num_sampled_masks == 16  # at most a quarter of the sampled proposals
    assert model.norm_activation.norm_momentum == pytest.approx(0.9)
    assert list(model.anchor.aspect_ratios) == [1.0]
    proposer = model.roi_generator  # Model Garden's 2000 and 1000 boxes into the suppression, scaled to 200 kept
    assert (proposer.num_proposals, proposer.test_num_proposals) == (200, 200)
    assert (proposer.pre_nms_top_k, proposer.test_pre_nms_top_k) == (400, 200)
    assert model.norm_activation.use_sync_bn is False
    assert task.freeze_backbone is True  # unfreeze=0
    assert task.init_checkpoint is None and task.use_coco_metrics is False
    assert experiment.runtime.mixed_precision_dtype == "float32"

    defaults = maskrcnn_experiment(3, weights=None)  # the builder's defaults: the published sizes
    model = defaults.task.model
    assert model.backbone.resnet.model_id == 50 and list(model.input_size) == [512, 512, 3]
    assert (model.detection_head.num_convs, model.detection_head.fc_dims, model.mask_head.num_filters) == (4, 1024, 256)
    assert model.roi_sampler.num_sampled_rois == 512 and model.mask_sampler.num_sampled_masks == 128
    assert model.norm_activation.norm_momentum == pytest.approx(0.99)
    assert list(model.anchor.aspect_ratios) == [0.5, 1.0, 2.0]
    proposer = model.roi_generator
    assert (proposer.pre_nms_top_k, proposer.num_proposals) == (2000, 1000)
    assert (proposer.test_pre_nms_top_k, proposer.test_num_proposals) == (1000, 1000)
    assert defaults.task.freeze_backbone is False  # unfreeze="all"


# -- build and backbone checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_model():
    """One Mask R-CNN of the quick setting, built with random weights."""
    pytest.importorskip("official")
    from lab.tasks.instance.model import build, maskrcnn_experiment

    task, model, facts = build(maskrcnn_experiment(3, **QUICK, weights=None), None)
    return model, facts, task


def _backbone_weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.backbone.weights]


def test_build_without_weights_loads_nothing(quick_model):
    model, facts, _ = quick_model
    assert facts == {"weights": None}
    assert model.backbone.count_params() > 1_000_000  # a ResNet-18
    assert len(model.backbone.weights) > 50


def test_build_loads_a_backbone_checkpoint(quick_model, tmp_path):
    import tensorflow as tf

    from lab.tasks.instance.model import build, maskrcnn_experiment

    source, _, _ = quick_model
    prefix = tf.train.Checkpoint(backbone=source.backbone).write(str(tmp_path / "ckpt" / "backbone"))
    _, fresh, facts = build(maskrcnn_experiment(3, **QUICK, weights=prefix), prefix)
    assert facts["weights"] == prefix and facts["weights_checkpoint"] == prefix
    loaded, expected = _backbone_weights(fresh), _backbone_weights(source)
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)


def test_load_backbone_takes_a_folder_and_refuses_other_backbones(quick_model, tmp_path):
    import tensorflow as tf
    import tf_keras
    from official.vision.modeling.backbones import resnet

    from lab.tasks.instance.model import _checkpoint_prefix, load_backbone

    model, _, _ = quick_model
    # A folder holding checkpoints: its latest one.
    saved = tf.train.Checkpoint(backbone=model.backbone).save(str(tmp_path / "folder" / "ckpt"))
    assert _checkpoint_prefix(str(tmp_path / "folder")) == saved
    # A ResNet-34's checkpoint does not fit the ResNet-18 (nor the other way round): refused by name.
    resnet34 = resnet.ResNet(model_id=34, input_specs=tf_keras.layers.InputSpec(shape=[None, 128, 128, 3]))
    other = tf.train.Checkpoint(backbone=resnet34).write(str(tmp_path / "r34" / "ckpt"))
    with pytest.raises(ValueError, match=r"The checkpoint .*r34/ckpt does not match this Mask R-CNN's backbone"):
        load_backbone(model, other)

    class Holder:  # load_backbone needs only a .backbone (and a .decoder when the checkpoint has one)
        backbone = resnet34

    with pytest.raises(ValueError, match="another backbone"):
        load_backbone(Holder(), saved)
    # A checkpoint without a backbone at all.
    unrelated = tf.train.Checkpoint(step=tf.Variable(1)).write(str(tmp_path / "unrelated" / "ckpt"))
    with pytest.raises(ValueError, match="does not match"):
        load_backbone(model, unrelated)


def test_build_refuses_a_path_that_is_no_checkpoint(tmp_path):
    pytest.importorskip("official")
    from lab.tasks.instance.model import _checkpoint_prefix

    with pytest.raises(FileNotFoundError, match=r"is not a TensorFlow checkpoint .*Give a checkpoint prefix"):
        _checkpoint_prefix(str(tmp_path / "missing" / "ckpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a TensorFlow checkpoint"):
        _checkpoint_prefix(str(tmp_path / "empty"))


def test_build_with_a_missing_checkpoint_raises_file_not_found(tmp_path):
    pytest.importorskip("official")
    from lab.tasks.instance.model import build, maskrcnn_experiment

    # The error names the path given.
    experiment = maskrcnn_experiment(3, **QUICK, weights=None)
    with pytest.raises(FileNotFoundError, match="missing"):
        build(experiment, str(tmp_path / "missing"))


def test_saved_weights_load_back_whole(quick_model, tmp_path):
    import tf_keras

    from lab.tasks.instance.model import build, maskrcnn_experiment
    from lab.tasks.instance.training import GardenModel

    model, _, task = quick_model
    # Random values everywhere, so that a variable the file leaves out cannot match by chance
    # (tf_keras' ".weights.h5" format leaves out the RPN head's per-level BatchNorms).
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    fitted = GardenModel(task, model, tf_keras.optimizers.SGD())
    path = tmp_path / "run" / GardenModel.WEIGHTS_FILE
    fitted.save(path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    _, fresh, _ = build(maskrcnn_experiment(3, **QUICK, weights=None), None)
    fresh.load_weights(str(path))  # tf_keras' own call, as a student would load them
    saved, loaded = model.get_weights(), fresh.get_weights()
    assert len(saved) == len(loaded) == len(model.weights)
    assert [i for i, (a, b) in enumerate(zip(saved, loaded)) if not np.array_equal(a, b)] == []
    with pytest.raises(ValueError, match="not ending in '.weights.h5'"):
        fitted.save(tmp_path / "model.weights.h5")


# -- the ImageNet checkpoint's cache ---------------------------------------------------------------------


def _checkpoint_files(data_dir: Path) -> list[Path]:
    from lab.tasks.instance.model import CHECKPOINT_FILES, IMAGENET_CHECKPOINTS

    prefix = data_dir / "weights" / "model-garden" / IMAGENET_CHECKPOINTS["resnet50"]
    return [prefix.with_name(prefix.name + suffix) for suffix in CHECKPOINT_FILES]


def test_imagenet_checkpoint_offline_says_where_to_put_it(isolated_dirs):
    from lab.system.download import DatasetNotAvailableError
    from lab.tasks.instance.model import imagenet_checkpoint

    with pytest.raises(DatasetNotAvailableError) as refused:
        imagenet_checkpoint("resnet50", download=False)
    message = str(refused.value)
    assert str(_checkpoint_files(isolated_dirs / "data")[0]) in message
    assert "storage.googleapis.com/cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080.index" in message
    assert "LAB_DATA_DIR" in message


def test_imagenet_checkpoint_records_then_checks_each_files_sha256(isolated_dirs):
    from lab.system.download import ChecksumError
    from lab.tasks.instance.model import imagenet_checkpoint

    files = _checkpoint_files(isolated_dirs / "data")
    files[0].parent.mkdir(parents=True)
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]) * 1000)
    prefix, digests = imagenet_checkpoint("resnet50", download=False)  # cached: no network needed
    assert prefix == files[0].with_suffix("")
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digests[path.name] == digest
        assert path.with_name(path.name + ".sha256").read_text().split() == [digest, path.name]
    assert imagenet_checkpoint("resnet50", download=False) == (prefix, digests)  # reused, checked
    files[1].write_bytes(b"damaged")
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        imagenet_checkpoint("resnet50", download=False)


# -- the optional extra ------------------------------------------------------------------------------------


def _without(monkeypatch, *modules: str) -> None:
    """Makes ``importlib.util.find_spec`` report these modules as not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kwargs: None if name in modules else real(name, *args, **kwargs))


@pytest.mark.skipif(bool(__import__("lab.tasks.instance.extra", fromlist=["missing_extra"]).missing_extra()),
                    reason="the instance-segmentation extra is not installed (the Colab lane)")
def test_extra_is_complete_here():
    assert extra.missing_extra() == []
    extra.require_model_garden()  # does not raise


@pytest.mark.skipif(bool(__import__("lab.tasks.instance.extra", fromlist=["missing_extra"]).missing_extra()),
                    reason="the instance-segmentation extra is not installed (the Colab lane)")
def test_missing_model_garden_is_refused_with_how_to_install(monkeypatch, isolated_dirs):
    from lab.tasks.instance import train_instance

    _without(monkeypatch, "official")
    assert extra.missing_extra() == ["tf-models-official"]
    with pytest.raises(ImportError) as refused:
        extra.require_model_garden()
    assert "not installed: tf-models-official" in str(refused.value) and extra.INSTALL_HINT in str(refused.value)
    reports = isolated_dirs / "somewhere"
    with pytest.raises(ImportError, match="tf-models-official"):
        train_instance(dataset="shapes", **QUICK, weights=None, epochs=1, limit=2, reports_dir=str(reports))
    # Refused before anything was written: no run folder, no TFRecords.
    assert not reports.exists()
    assert not (isolated_dirs / "data" / "instance-records").exists()
    assert not any((isolated_dirs / "reports").glob("**/*.json"))


def test_extra_pins_are_requirements_instance_txt():
    pins = {}
    for line in (REPO / "requirements-instance.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert pins == extra.EXTRA_PINS
    assert set(extra._EXTRA_MODULES.values()) == set(extra.EXTRA_PINS)


@pytest.mark.skipif(bool(__import__("lab.tasks.instance.extra", fromlist=["missing_extra"]).missing_extra()),
                    reason="the instance-segmentation extra is not installed (the Colab lane)")
def test_install_extra_with_nothing_missing_does_not_call_pip(monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was called: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert extra.install_extra() == []


@pytest.mark.skipif(bool(__import__("lab.tasks.instance.extra", fromlist=["missing_extra"]).missing_extra()),
                    reason="the instance-segmentation extra is not installed (the Colab lane)")
def test_install_extra_installs_what_is_missing_without_dependencies(monkeypatch):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    _without(monkeypatch, "pycocotools")
    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert extra.install_extra() == ["pycocotools==2.0.11"]
    assert len(calls) == 1
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "install"] and "--no-deps" in command
    assert command[-1] == "pycocotools==2.0.11"
    assert not any("tf-models-official" in part for part in command)


@pytest.mark.skipif(bool(__import__("lab.tasks.instance.extra", fromlist=["missing_extra"]).missing_extra()),
                    reason="the instance-segmentation extra is not installed (the Colab lane)")
def test_install_extra_reports_a_pip_failure(monkeypatch):
    _without(monkeypatch, "gin")
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(
        command, 1, "", "No matching distribution"))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps gin-config==0.5.0 failed:\nNo matching"):
        extra.install_extra()


# -- the fit adapter's optimizer view ---------------------------------------------------------------------


def test_optimizer_view_reads_and_sets_floats_and_schedules():
    pytest.importorskip("tf_keras")
    import keras
    import tf_keras

    from lab.tasks.instance.training import _OptimizerView

    inner = tf_keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    view = _OptimizerView(inner)
    assert isinstance(view.learning_rate, float) and view.learning_rate == pytest.approx(0.1)
    view.learning_rate = 0.05
    assert view.learning_rate == pytest.approx(0.05) and float(inner.learning_rate.numpy()) == pytest.approx(0.05)

    # A callable of the step: applied at once (step 0), then before every step.
    view.learning_rate = lambda step: 0.1 / (step + 1)
    assert view.learning_rate == pytest.approx(0.1)
    inner.iterations.assign_add(3)
    assert int(view.iterations.numpy()) == 3
    view.apply_schedule()
    assert view.learning_rate == pytest.approx(0.025)

    # A Keras 3 schedule (what lab.config.schedules installs) returns a tensor: read as a float.
    view.learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.2, 0.02])
    assert view.learning_rate == pytest.approx(0.2)
    inner.iterations.assign_add(3)
    view.apply_schedule()
    assert view.learning_rate == pytest.approx(0.02)

    # A float clears the schedule: later steps keep it.
    view.learning_rate = 0.3
    assert view.schedule is None
    inner.iterations.assign_add(10)
    view.apply_schedule()
    assert view.learning_rate == pytest.approx(0.3)
