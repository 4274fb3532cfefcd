"""The dense-prediction builders: output shapes, named layers, size and argument errors."""

import re

import keras
import numpy as np
import pytest

from lab.models.autoencoder import add_noise, transposed_conv_output_size
from lab.models.unet import UNET_BACKBONES, pretrained_unet, unet
from lab.models import build_model, model_options, models_for

AUTOENCODERS = models_for("reconstruction")
SEGMENTATION_MODELS = models_for("segmentation")

SEGMENTERS = [
    ("unet", dict(depth=2, filters=4)),
    ("unet", dict(depth=3, filters=4, upsampling="bilinear", normalization="batch", dropout_rate=0.1)),
    ("unet", dict(depth=2, filters=4, upsampling="nearest", normalization="layer")),
    ("pretrained_unet", dict(backbone="mobilenetv2", weights=None, decoder_filters=(16, 8, 8, 4))),
    ("deeplab", dict(filters=4)),
    ("deeplab", dict(filters=4, output_stride=8, atrous_rates=(1, 2, 3), normalization=None)),
    ("fcn", dict(depth=3, filters=4)),
    ("fcn", dict(depth=3, filters=4, skip_levels=0, upsampling="bilinear")),
]


def _auto_named(layer) -> bool:
    """True when Keras named the layer itself (``conv2d_3``, ``batch_normalization``...)."""
    default = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
    return re.fullmatch(rf"{default}(_\d+)?", layer.name) is not None


@pytest.mark.parametrize("name, options", SEGMENTERS, ids=lambda v: v if isinstance(v, str) else None)
def test_segmentation_models_give_one_probability_map_per_class(name, options):
    model = build_model(name, (32, 32, 3), 5, **options)
    probabilities = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32)))
    assert probabilities.shape == (2, 32, 32, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    assert model.layers[-1].name == "predictions" and model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert not [layer.name for layer in model.layers if _auto_named(layer)]
    assert not model.compiled, "builders return uncompiled models"


@pytest.mark.parametrize("name", list(SEGMENTATION_MODELS))
def test_two_classes_with_a_sigmoid_give_one_channel(name):
    options = {"unet": dict(depth=2, filters=4), "fcn": dict(depth=2, filters=4), "deeplab": dict(filters=4),
               "pretrained_unet": dict(weights=None, decoder_filters=(8, 8, 4, 4))}[name]
    model = build_model(name, (32, 32, 3), 2, output_activation="sigmoid", **options)
    assert model.output.shape == (None, 32, 32, 1)
    with pytest.raises(ValueError, match="needs num_classes=2"):
        build_model(name, (32, 32, 3), 3, output_activation="sigmoid", **options)


def test_unet_layers_read_like_the_architecture():
    names = [layer.name for layer in unet((16, 16, 1), 3, depth=2, filters=4).layers]
    assert names[:6] == ["image", "enc1_conv1", "enc1_relu1", "enc1_conv2", "enc1_relu2", "enc1_pool"]
    assert "dec2_up_transpose" in names and "dec2_concat" in names and "dec1_conv2" in names
    # Two convolutions after each merge, the encoder map concatenated at each scale.
    concat = unet((16, 16, 1), 3, depth=2, filters=4).get_layer("dec1_concat")
    assert [t.shape[-1] for t in concat.input] == [4, 4]
    bilinear = [layer.name for layer in unet((16, 16, 1), 3, depth=2, filters=4, upsampling="bilinear").layers]
    assert "dec2_up_resize" in bilinear and "dec2_up_conv" in bilinear


def test_sizes_that_do_not_divide_name_the_sizes_that_do():
    with pytest.raises(ValueError, match=r"multiples of 16, received 28x28.*16 or 32"):
        unet((28, 28, 3), 3, depth=4)
    with pytest.raises(ValueError, match="multiples of 32"):
        pretrained_unet((48, 48, 3), 3, weights=None)
    with pytest.raises(ValueError, match="at least 2"):
        unet((32, 32, 3), 1)
    with pytest.raises(ValueError, match="upsampling must be one of"):
        unet((32, 32, 3), 3, upsampling="unpool")


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Available backbones: mobilenetv2, resnet50, vgg16, efficientnetb0"):
        pretrained_unet((64, 64, 3), 3, backbone="resnet18", weights=None)


@pytest.mark.parametrize("backbone", list(UNET_BACKBONES))
def test_pretrained_unet_backbones_and_frozen_weights(backbone):
    model = pretrained_unet((32, 32, 3), 3, backbone=backbone, weights=None, decoder_filters=(8, 8, 4, 4))
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 32, 32, 3)
    backbone_model = model.get_layer("backbone")
    assert not backbone_model.trainable and backbone_model.count_params() > 0
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable < model.count_params() - backbone_model.count_params() + 1


def test_pretrained_unet_unfreeze_trains_the_backbone_or_refuses_a_stage_count():
    options = dict(backbone="mobilenetv2", weights=None, decoder_filters=(8, 8, 4, 4))
    assert pretrained_unet((32, 32, 3), 3, unfreeze="all", **options).get_layer("backbone").trainable
    with pytest.raises(ValueError, match=r"unfreeze must be 0 \(the backbone stays frozen\) or 'all'.*unfreeze=2"):
        pretrained_unet((32, 32, 3), 3, unfreeze=2, **options)
    with pytest.raises(ValueError, match="weights must be 'imagenet' or None .*received weights='random'"):
        pretrained_unet((32, 32, 3), 3, backbone="mobilenetv2", weights="random")


def test_imagenet_weights_offline_say_where_keras_caches_them(monkeypatch, quick_downloads, keras_cache, silent_url):
    monkeypatch.setenv("https_proxy", silent_url)  # a proxy that never answers: the download gives up in seconds
    with pytest.raises(RuntimeError, match=r"no answer within 0\.3 s.*~/.keras/models.*KERAS_HOME.*weights=None"):
        pretrained_unet((64, 64, 3), 3, backbone="mobilenetv2", weights="imagenet")


@pytest.mark.parametrize("size, kernel, stride", [(4, 2, 2), (7, 3, 2), (5, 4, 3), (8, 3, 1)])
def test_transposed_convolution_output_size_formula(size, kernel, stride):
    layer = keras.layers.Conv2DTranspose(1, kernel, strides=stride, padding="valid")
    assert layer(np.zeros((1, size, size, 1), np.float32)).shape[1] == transposed_conv_output_size(size, kernel, stride)
    assert transposed_conv_output_size(size, kernel, stride, padding=1) == (size - 1) * stride + kernel - 2


@pytest.mark.parametrize("name", list(AUTOENCODERS))
def test_autoencoders_reconstruct_the_input_shape(name):
    model = build_model(name, (16, 16, 1), filters=(4, 8))
    out = np.asarray(model(np.full((2, 16, 16, 1), 0.5, np.float32)))
    assert out.shape == (2, 16, 16, 1) and (out >= 0).all() and (out <= 1).all()
    assert model.layers[-1].name == "predictions"
    assert not [layer.name for layer in model.layers if _auto_named(layer)]


def test_denoising_autoencoder_adds_noise_only_while_training():
    model = build_model("denoising_autoencoder", (8, 8, 1), filters=(4,), noise_stddev=0.5)
    x = np.full((1, 8, 8, 1), 0.5, np.float32)
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    assert model.get_layer("noise").stddev == 0.5
    with pytest.raises(ValueError, match="noise_stddev > 0"):
        build_model("denoising_autoencoder", (8, 8, 1), noise_stddev=0.0)
    noisy = add_noise(x, 0.5, seed=1)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.allclose(noisy, x)
    np.testing.assert_array_equal(noisy, add_noise(x, 0.5, seed=1))


def test_vae_adds_its_kl_term_and_saves(tmp_path):
    model = build_model("vae", (8, 8, 1), filters=(4,), latent_dim=2, kl_weight=10.0)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    model.compile(optimizer="adam", loss="mse")
    with_kl = model.evaluate(x, x, verbose=0)
    mse = float(np.mean((np.asarray(model.predict(x, verbose=0)) - x) ** 2))
    assert with_kl > mse + 1e-3, "the KL divergence is part of the loss"
    assert model.get_layer("decoder").input_shape == (None, 2)
    model.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_registry_refuses_unknown_models_and_options():
    with pytest.raises(ValueError, match="Unknown model 'segnet'. Available models: simple, .*unet, pretrained_unet"):
        build_model("segnet", (32, 32, 3), 3)
    with pytest.raises(ValueError, match="'vae' is an autoencoder: it reconstructs its input and takes no num_classes"):
        build_model("vae", (32, 32, 3), 3)
    with pytest.raises(ValueError, match=r"has no option\(s\) \['latent_dim'\]"):
        build_model("unet", (32, 32, 3), 3, latent_dim=2)
    assert model_options("unet")["depth"] == 4 and model_options("pretrained_unet")["backbone"] == "mobilenetv2"


def test_vae_latent_grid_plot():
    from lab.runs import plots

    decoder = build_model("vae", (8, 8, 1), filters=(4,), latent_dim=2).get_layer("decoder")
    figure = plots.latent_grid(decoder, steps=3)
    assert len(figure.axes) == 9
    with pytest.raises(ValueError, match="2-d latent space"):
        plots.latent_grid(build_model("vae", (8, 8, 1), filters=(4,), latent_dim=3).get_layer("decoder"))


def test_mixed_precision_keeps_float32_outputs():
    from lab.system import hardware

    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    with hardware.precision(True):
        segmenter = unet((16, 16, 3), 3, depth=2, filters=4)
        variational = build_model("vae", (16, 16, 3), filters=(4,))
        assert segmenter(x).dtype == "float32"
        assert variational(x, training=True).dtype == "float32"  # sampling in the compute dtype
        assert variational.losses[0].dtype == "float32"  # the KL term in float32
