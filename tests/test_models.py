import keras
import numpy as np
import pytest

from lab.config import RunConfig
from lab.models import build_model, model_options

# (model, input shape, classes, options, parameter count). The counts pin the architectures:
# a change to any builder must show up here. "simple" at 32x32x3 with 10 classes is the
# TensorFlow CNN tutorial's network (122,570 parameters).
ARCHITECTURES = [
    ("simple", (32, 32, 3), 10, {}, 122_570),
    ("simple", (32, 32, 3), 100, {}, 128_420),
    ("basic", (32, 32, 3), 100, {}, 1_490_628),
    ("cnn", (28, 28, 3), 8, {}, 241_864),
    ("cnn", (28, 28, 3), 8, {"normalization": "batch", "dropout_rate": 0.5}, 242_920),
    ("cnn", (28, 28, 1), 8, {"normalization": "layer", "depth": 2, "filters": 16}, 207_016),
    ("mlp", (28, 28, 1), 10, {"hidden_units": (128, 64)}, 109_386),
]


@pytest.mark.parametrize("name,shape,classes,options,params", ARCHITECTURES)
def test_builders(name, shape, classes, options, params):
    model = build_model(name, shape, classes, **options)
    assert model.count_params() == params
    assert not model.compiled, "builders return uncompiled models"
    out = model(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, classes)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"


def test_basic_is_e9_layer_by_layer():
    model = build_model("basic", (32, 32, 3), 100)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Conv2D",
                     "Conv2D", "BatchNormalization", "LeakyReLU", "MaxPooling2D", "Dropout",
                     "Conv2D", "BatchNormalization", "LeakyReLU", "MaxPooling2D", "Dropout",
                     "Conv2D", "BatchNormalization", "LeakyReLU", "MaxPooling2D", "Dropout",
                     "Flatten", "Dense", "LeakyReLU", "Dropout", "Dense"]
    assert [model.get_layer(f"conv{i}").kernel_size for i in (1, 2, 3, 4)] == [(2, 2), (2, 2), (2, 2), (3, 3)]
    assert [model.get_layer(n).rate for n in ("dropout2", "dropout3", "dropout4", "dense_dropout")] == [0.2, 0.2, 0.3, 0.5]
    assert model.get_layer("leaky2").negative_slope == pytest.approx(0.3)


def test_cnn_switches_place_layers_as_e1_says():
    model = build_model("cnn", (28, 28, 3), 8, normalization="batch", dropout_rate=0.5, l2=1e-4, convs_per_block=2)
    names = [layer.name for layer in model.layers]
    # normalisation comes between the convolution and the ReLU
    assert names.index("block1_norm1") == names.index("block1_conv1") + 1
    assert names.index("block1_relu1") == names.index("block1_norm1") + 1
    assert "block3_conv2" in names and "head_dropout" in names
    assert model.get_layer("block2_conv1").filters == 64
    assert model.get_layer("block2_conv1").kernel_regularizer is not None
    assert isinstance(model.get_layer("block1_norm1"), keras.layers.BatchNormalization)


@pytest.mark.parametrize("call,message", [
    (lambda: build_model("resnet", (28, 28, 3), 8), "Unknown model 'resnet'. Available models: simple, basic, cnn, mlp"),
    (lambda: build_model("simple", (32, 32, 3), 8, dropout_rate=0.5), "Model 'simple' has no option"),
    (lambda: build_model("cnn", (28, 28, 3), 8, dropout_rate=1.0), "dropout_rate must be in \\[0, 1\\), received dropout_rate=1.0"),
    (lambda: build_model("cnn", (28, 28, 3), 8, normalization="group"), "normalization must be one of"),
    (lambda: build_model("cnn", (8, 8, 1), 10, depth=4), "at least 16x16 pixels.*received 8x8"),
    (lambda: build_model("simple", (8, 8, 1), 10), "at least 18x18"),
    (lambda: build_model("cnn", (28, 28, 3), 1), "num_classes must be at least 2"),
])
def test_bad_model_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_model_options_lists_builder_defaults():
    options = model_options("cnn")
    assert options["normalization"] == "none" and options["depth"] == 3 and "name" not in options
    assert model_options("simple") == {}


@pytest.mark.parametrize("refuse", [
    lambda: build_model("mlp", (8, 8, 1), 3, dropout_rate=1.5),
    lambda: build_model("unet", (32, 32, 3), 3, dropout_rate=1.5),
    lambda: RunConfig(model="cnn", dropout_rate=1.5),
])
def test_a_rate_is_refused_in_the_same_words_by_the_configuration_and_every_builder(refuse):
    with pytest.raises(ValueError, match=r"^dropout_rate must be in \[0, 1\), received dropout_rate=1\.5\.$"):
        refuse()
