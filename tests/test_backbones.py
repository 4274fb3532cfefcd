"""Every backbone in one table, its stages, and the clear errors of lab.models.backbones."""

import keras
import numpy as np
import pytest

from lab.models.backbones import BACKBONES, WeightsNotAvailableError, backbone_stages, build_backbone
from lab.models.layers import BackboneInput
from lab.models.transfer import stage_names, transfer_model

# The smallest input each backbone accepts is what the table builds at (keeps it fast).
TABLE = sorted(BACKBONES)


# The stages of one backbone per family: the backbone's own names, input to output.
STAGES = {
    "resnet50": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "resnet50v2": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "vgg16": ["block1", "block2", "block3", "block4", "block5"],
    "densenet121": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "efficientnetb0": ["stem"] + [f"block{i}" for i in range(1, 8)],
    "convnexttiny": ["stem", "stage_0", "stage_1", "stage_2", "stage_3"],
    "inceptionv3": [f"mixed{i}" for i in range(11)],
    "xception": [f"block{i}" for i in range(1, 15)],
    "mobilenetv2": ["stride2", "stride4", "stride8", "stride16", "stride32"],
    "resnet18": ["conv1", "stack0", "stack1", "stack2", "stack3"],
    "deit_tiny": ["embedding"] + [f"block{i}" for i in range(1, 13)],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TABLE)
def test_every_backbone_builds_without_weights_and_classifies(name):
    keras.backend.clear_session()
    spec = BACKBONES[name]
    model = transfer_model((28, 28, 1), 7, backbone=name, weights=None, backbone_input_size=spec.min_size)
    out = model(np.zeros((2, 28, 28, 1), np.float32))
    assert tuple(out.shape) == (2, 7)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    stages = stage_names(model)
    assert stages == STAGES.get(name, stages) and len(stages) >= 4, stages
    # Head only by default: the trainable weights are the logits' kernel and bias.
    assert [w.path.split("/")[0] for w in model.trainable_weights] == ["logits", "logits"]


def test_resnet_stages_hold_their_named_layers():
    stages = backbone_stages(build_backbone("resnet50", 32, weights=None), "resnet50")
    # Every layer of conv5 is named conv5_..., and the stem's pooling stays with conv1.
    assert all(layer.name.startswith("conv5_") for layer in stages["conv5"])
    assert {layer.name for layer in stages["conv1"]} >= {"conv1_conv", "pool1_pool"}


def test_backbone_input_converts_grayscale_resizes_and_normalises():
    images = np.full((1, 4, 4, 1), 0.5, np.float32)  # "unit" scaling: 0.5 is pixel 127.5
    torch = BackboneInput(8, "torch")(images).numpy()
    assert torch.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(torch[0, 0, 0], (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               rtol=1e-5)
    np.testing.assert_allclose(BackboneInput(4, "tf")(images).numpy(), 0.0, atol=1e-6)
    caffe = BackboneInput(4, "caffe")(np.stack([np.full((4, 4, 3), [1.0, 0.0, 0.0])]).astype(np.float32)).numpy()
    np.testing.assert_allclose(caffe[0, 0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-5)  # RGB -> BGR
    raw = BackboneInput(4, "builtin", pixel_scale=1.0)(np.full((1, 4, 4, 3), 200.0, np.float32)).numpy()
    np.testing.assert_allclose(raw, 200.0)


def test_an_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet51'.*resnet50.*convnexttiny"):
        build_backbone("resnet51", 32, weights=None)


def test_a_too_small_input_names_the_minimum():
    with pytest.raises(ValueError, match=r"inceptionv3.*at least 75x75.*backbone_input_size=32"):
        transfer_model((32, 32, 3), 3, backbone="inceptionv3", weights=None, backbone_input_size=32)


def test_unfreezing_more_stages_than_exist_says_how_many():
    with pytest.raises(ValueError, match=r"vgg16 has 5 stages \(block1, block2, block3, block4, block5\); "
                                         r"received unfreeze=6"):
        transfer_model((32, 32, 3), 3, backbone="vgg16", weights=None, unfreeze=6)
    with pytest.raises(ValueError, match="unfreeze must be a number of stages"):
        transfer_model((32, 32, 3), 3, backbone="vgg16", weights=None, unfreeze="last")


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch, quick_downloads, keras_cache, silent_url):
    """Behind a proxy that never answers, Keras' download (routed to lab.system.download.fetch) gives up in seconds."""
    monkeypatch.setenv("https_proxy", silent_url)
    with pytest.raises(WeightsNotAvailableError, match=r"ImageNet weights of 'vgg16'.*no answer within 0\.3 s.*"
                                                       r"put it at .*vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5"
                                                       r".*~/.keras/models.*weights=None"):
        build_backbone("vgg16", 32, weights="imagenet")


def test_a_pretrained_transformer_needs_its_backbone_input_size():
    with pytest.raises(ValueError, match="vit_b16 takes 224x224 inputs.*backbone_input_size=224"):
        build_backbone("vit_b16", 64, weights="imagenet")


def test_saved_weights_of_another_backbone_are_refused(tmp_path):
    model = transfer_model((32, 32, 3), 3, backbone="mobilenetv3small", weights=None)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="holds a mobilenetv3small backbone, not vgg16"):
        build_backbone("vgg16", 32, weights=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No saved weights"):
        build_backbone("vgg16", 32, weights=str(tmp_path / "missing.keras"))


def test_a_missing_keras_hub_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "keras_hub", None)  # makes `import keras_hub` fail
    with pytest.raises(ImportError, match="pip install --no-deps keras-hub"):
        build_backbone("resnet18", 32, weights=None)
