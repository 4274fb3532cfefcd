"""Convolutional autoencoders (E12): plain, denoising, and a small variational one.

All three take images scaled to [0, 1] and reconstruct them through a float32 sigmoid layer
named ``predictions``; they are trained with the images as their own targets.

* ``conv_autoencoder``: conv blocks with 2x2 max-pooling down to a narrow ``latent`` map, then
  the mirror image upwards (transposed convolutions, or nearest/bilinear resizing + conv).
* ``denoising_autoencoder``: the same with a ``GaussianNoise`` layer after the input. Keras
  applies it only while training, so the network learns to map noisy images to clean ones;
  evaluate it on images noised with ``add_noise``.
* ``vae``: encoder to a mean and log-variance, a sampling layer that adds the KL divergence
  to the model's losses, and a decoder sub-model (``model.get_layer("decoder")``) that turns
  latent vectors into images. A plain functional model: it compiles with a reconstruction loss
  and saves like any other.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import layers

from lab.models.layers import VAESampling
from lab.models.unet import UPSAMPLINGS, apply_normalization, check_divisible, upsample


def transposed_conv_output_size(input_size: int, kernel_size: int, stride: int, padding: int = 0) -> int:
    """The side of a transposed convolution's output: ``(i - 1) * s + k - 2p`` (E12).

    Keras' ``padding="valid"`` is ``p = 0``; ``padding="same"`` gives ``i * s`` instead.
    """
    return (input_size - 1) * stride + kernel_size - 2 * padding


def conv_autoencoder(
    input_shape: Sequence[int],
    *,
    filters: Sequence[int] = (32, 64),
    latent_channels: int = 16,
    normalization: str | None = None,
    upsampling: str = "transpose",
    noise_stddev: float = 0.0,
    name: str = "autoencoder",
) -> keras.Model:
    """Builds a convolutional autoencoder.

    Args:
        input_shape: (height, width, channels), sides multiples of ``2**len(filters)``.
        filters: filters of each encoder level (the decoder mirrors them).
        latent_channels: channels of the bottleneck map (``latent``), which has
            ``height / 2**len(filters)`` rows: the narrower, the more the code must compress.
        normalization: None/"none", "batch" or "layer".
        upsampling: "transpose", "bilinear" or "nearest".
        noise_stddev: > 0 adds Gaussian noise to the input while training (denoising).
        name: the model's name.
    """
    _check(input_shape, filters, upsampling)
    if not isinstance(latent_channels, int) or latent_channels < 1:
        raise ValueError(f"latent_channels must be a positive integer, received {latent_channels!r}.")
    if noise_stddev < 0:
        raise ValueError(f"noise_stddev must be >= 0, received noise_stddev={noise_stddev}.")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if noise_stddev:
        x = layers.GaussianNoise(noise_stddev, name="noise")(x)
    for level, level_filters in enumerate(filters, start=1):
        x = _conv(x, level_filters, f"enc{level}", normalization)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _conv(x, latent_channels, "latent", normalization)
    for level in range(len(filters), 0, -1):
        x = upsample(x, filters[level - 1], mode=upsampling, name=f"dec{level}_up")
        x = _conv(x, filters[level - 1], f"dec{level}", normalization)
    outputs = layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid", dtype="float32",
                            name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def denoising_autoencoder(
    input_shape: Sequence[int],
    *,
    noise_stddev: float = 0.2,
    filters: Sequence[int] = (32, 64),
    latent_channels: int = 16,
    normalization: str | None = None,
    upsampling: str = "transpose",
    name: str = "denoising_autoencoder",
) -> keras.Model:
    """A ``conv_autoencoder`` that sees Gaussian noise of ``noise_stddev`` on its inputs while training."""
    if not noise_stddev > 0:
        raise ValueError(f"A denoising autoencoder needs noise_stddev > 0, received {noise_stddev}.")
    return conv_autoencoder(input_shape, filters=filters, latent_channels=latent_channels, normalization=normalization,
                            upsampling=upsampling, noise_stddev=noise_stddev, name=name)


def vae(
    input_shape: Sequence[int],
    *,
    latent_dim: int = 2,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 64,
    kl_weight: float | None = None,
    seed: int = 0,
    name: str = "vae",
) -> keras.Model:
    """Builds a small convolutional variational autoencoder (Kingma and Welling 2014).

    The loss is the compiled reconstruction loss plus ``kl_weight`` times the KL divergence
    between the encoder's Gaussian and N(0, I). Keras' reconstruction losses average over the
    pixels, while the ELBO sums over them, so the default ``kl_weight`` is ``1 / (h * w * c)``:
    the ELBO divided by the number of pixels.

    Args:
        input_shape: (height, width, channels), sides multiples of ``2**len(filters)``.
        latent_dim: size of the latent vector (2 can be plotted as a grid).
        filters: filters of the stride-2 convolutions of the encoder (mirrored by the decoder).
        dense_units: the dense layer between the feature map and the latent vector.
        kl_weight: weight of the KL term (default: one over the number of pixel values).
        seed: seeds the sampling of latent vectors.
        name: the model's name.

    Returns:
        A functional keras.Model ``image -> encoder -> sampling -> decoder -> predictions``.
    """
    _check(input_shape, filters, "transpose")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, received {latent_dim!r}.")
    height, width, channels = (int(d) for d in input_shape)
    if kl_weight is None:
        kl_weight = 1.0 / (height * width * channels)
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, received kl_weight={kl_weight}.")

    image = keras.Input(shape=(height, width, channels), name="image")
    x = image
    for level, level_filters in enumerate(filters, start=1):
        x = layers.Conv2D(level_filters, 3, strides=2, padding="same", activation="relu", name=f"enc{level}_conv")(x)
    map_shape = tuple(int(d) for d in x.shape[1:])
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    encoder = keras.Model(image, [z_mean, z_log_var], name="encoder")

    latent = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(math.prod(map_shape), activation="relu", name="dense")(latent)
    x = layers.Reshape(map_shape, name="reshape")(x)
    for level in range(len(filters), 0, -1):
        x = layers.Conv2DTranspose(filters[level - 1], 3, strides=2, padding="same", activation="relu",
                                   name=f"dec{level}_transpose")(x)
    decoded = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="image_out")(x)
    decoder = keras.Model(latent, decoded, name="decoder")

    inputs = keras.Input(shape=(height, width, channels), name="image")
    z = VAESampling(kl_weight=kl_weight, seed=seed, name="sampling")(encoder(inputs))
    outputs = layers.Identity(dtype="float32", name="predictions")(decoder(z))
    return keras.Model(inputs, outputs, name=name)


def add_noise(images: np.ndarray, stddev: float, seed: int = 0) -> np.ndarray:
    """Returns ``images`` (floats in [0, 1]) plus Gaussian noise, clipped to [0, 1], as float32."""
    rng = np.random.default_rng(seed)
    noisy = np.asarray(images, np.float32) + rng.normal(0.0, stddev, size=np.shape(images)).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0)


def _conv(x, filters: int, name: str, normalization: str | None):
    normalized = normalization not in (None, "none")
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not normalized, name=f"{name}_conv")(x)
    x = apply_normalization(x, normalization, f"{name}_norm")
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _check(input_shape: Sequence[int], filters: Sequence[int], upsampling: str) -> None:
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels), received {tuple(input_shape)}.")
    if not filters or any(not isinstance(f, int) or f < 1 for f in filters):
        raise ValueError(f"filters must be one positive integer per level, received {filters!r}.")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, received {upsampling!r}.")
    check_divisible(input_shape, 2 ** len(filters), f"The autoencoder halves the image {len(filters)} times")
