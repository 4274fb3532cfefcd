"""MedMNIST's ResNets: parameter counts pinned to PyTorch's, stems, names, and the config switch."""

from __future__ import annotations

import numpy as np
import pytest

from lab.config import RunConfig
from lab.models import build_model
from lab.models.resnet import resolve_stem


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _resnet18_params(channels: int, classes: int, stem_kernel: int) -> int:
    """ResNet-18's trainable parameters counted from its layers (BatchNorm: scale and offset)."""
    stem = stem_kernel**2 * channels * 64 + 2 * 64
    total, width = stem, 64
    for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            in_width = width if block == 0 else filters
            total += 9 * in_width * filters + 2 * filters + 9 * filters * filters + 2 * filters
            if block == 0 and (stride != 1 or in_width != filters):
                total += in_width * filters + 2 * filters
            width = filters
    return total + 512 * classes + classes


# torchvision.models.resnet18(num_classes=10) and resnet50(num_classes=10) have 11,181,642 and
# 23,528,522 parameters (1000 classes: 11,689,512 and 25,557,032, minus the classifier's change);
# MedMNIST's 28 px models differ only by the stem (3x3 instead of 7x7: 49 - 9 = 40 weights per
# input channel and filter fewer).
@pytest.mark.parametrize("name, shape, classes, trainable, total", [
    ("resnet18", (224, 224, 3), 10, 11_181_642, 11_191_242),
    ("resnet18", (28, 28, 3), 10, 11_181_642 - 40 * 3 * 64, 11_191_242 - 40 * 3 * 64),
    ("resnet18", (28, 28, 1), 8, 11_172_810 - 2 * 513, 11_182_410 - 2 * 513),
    ("resnet50", (224, 224, 3), 10, 23_528_522, 23_581_642),
    ("resnet50", (28, 28, 3), 10, 23_528_522 - 40 * 3 * 64, 23_581_642 - 40 * 3 * 64),
])
def test_parameter_counts_match_pytorchs(name, shape, classes, trainable, total):
    model = build_model(name, shape, classes)
    assert _trainable(model) == trainable
    # Keras also counts BatchNorm's moving mean and variance (PyTorch's buffers).
    assert model.count_params() == total
    if name == "resnet18":
        assert trainable == _resnet18_params(shape[2], classes, 7 if shape[0] == 224 else 3)


def test_the_stem_follows_the_input_size_and_can_be_chosen():
    assert resolve_stem("auto", (28, 28, 3)) == "small" and resolve_stem("auto", (64, 64, 3)) == "small"
    assert resolve_stem("auto", (224, 224, 3)) == "standard"
    small = build_model("resnet18", (28, 28, 3), 4)
    assert small.get_layer("conv1_conv").kernel_size == (3, 3) and small.get_layer("conv1_conv").strides == (1, 1)
    assert "pool1_pool" not in [layer.name for layer in small.layers]
    assert small.get_layer("conv5_block2_out").output.shape[1:3] == (4, 4)  # 28, 14, 7, 4
    standard = build_model("resnet18", (28, 28, 3), 4, stem="standard")
    assert standard.get_layer("conv1_conv").kernel_size == (7, 7) and standard.get_layer("pool1_pool")
    assert standard.get_layer("conv5_block2_out").output.shape[1:3] == (1, 1)
    # 8x8 digits still fit the small stem (8, 4, 2, 1 pixels per stage).
    assert build_model("resnet18", (8, 8, 1), 10).output_shape == (None, 10)


def test_layers_are_named_per_stage():
    names = [layer.name for layer in build_model("resnet18", (28, 28, 3), 4).layers]
    for expected in ("conv1_conv", "conv1_bn", "conv2_block1_1_conv", "conv2_block2_out", "conv3_block1_0_conv",
                     "conv5_block2_add", "avg_pool", "predictions"):
        assert expected in names
    assert "conv2_block1_0_conv" not in names, "stage 2 keeps the shape: an identity shortcut"


def test_bad_stems_are_refused():
    with pytest.raises(ValueError, match="stem must be one of"):
        build_model("resnet18", (28, 28, 3), 4, stem="cifar")
    assert RunConfig(model="resnet18", stem="small").model_options() == {"stem": "small"}
    with pytest.raises(ValueError, match="has no option 'stem'"):
        RunConfig(model="cnn", stem="small")
