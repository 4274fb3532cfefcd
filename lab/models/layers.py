"""The kit's own Keras layers, in one module so that every saved model finds them.

Each is registered under the package name "lab" (``lab>BackboneInput``...): importing this
module is all ``keras.models.load_model`` needs to read a model the kit saved, whichever
builder made it.
"""

from __future__ import annotations

import keras
from keras import layers, ops

# Input normalisations, as keras.applications.imagenet_utils names them. "builtin" means the
# backbone rescales inside (EfficientNet, ConvNeXt, MobileNetV3); inputs stay in [0, 255].
PREPROCESSING = ("caffe", "tf", "torch", "builtin")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="lab")
class BackboneInput(layers.Layer):
    """Turns the kit's pipeline images into what a backbone expects, inside the model.

    Steps: rescale to [0, 255] (``pixel_scale``), grayscale to RGB, resize to ``size``
    (bilinear), then the backbone's own normalisation. Doing this in the model keeps cached
    images small (28 px, not 224 px) and makes a saved model usable on raw images.

    Args:
        size: output side in pixels.
        preprocessing: "caffe" (BGR, ImageNet mean subtracted), "tf" ([-1, 1]), "torch"
            ([0, 1], ImageNet mean/std) or "builtin" (left in [0, 255]; the backbone rescales).
        pixel_scale: factor taking the input to [0, 255] (255 for the pipeline's "unit" scaling).
    """

    def __init__(self, size: int, preprocessing: str, pixel_scale: float = 255.0, **kwargs):
        super().__init__(**kwargs)
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, received {preprocessing!r}.")
        self.size = int(size)
        self.preprocessing = preprocessing
        self.pixel_scale = float(pixel_scale)

    def call(self, images):
        x = ops.cast(images, self.compute_dtype) * self.pixel_scale
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if x.shape[1] != self.size or x.shape[2] != self.size:
            x = ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
        if self.preprocessing == "caffe":
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        elif self.preprocessing == "tf":
            x = x / 127.5 - 1.0
        elif self.preprocessing == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            x = (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "preprocessing": self.preprocessing,
                "pixel_scale": self.pixel_scale}


@keras.saving.register_keras_serializable(package="lab")
class ClassToken(layers.Layer):
    """A transformer's class token (position 0 of its output sequence), as ViT/DeiT classify."""

    def call(self, sequence):
        return sequence[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="lab")
class EncoderPreprocessing(layers.Layer):
    """Turns [0, 1] images into what a keras.applications encoder expects.

    ``mode`` is keras.applications' preprocessing mode: "tf" (to [-1, 1]: MobileNet),
    "caffe" (BGR, ImageNet means subtracted: ResNet, VGG), "torch" (ImageNet mean and std) or
    None (0-255 as they are: EfficientNet normalises inside).
    """

    def __init__(self, mode: str | None, **kwargs):
        super().__init__(**kwargs)
        if mode not in (None, "tf", "caffe", "torch"):
            raise ValueError(f"mode must be None, 'tf', 'caffe' or 'torch', received {mode!r}.")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype) * 255.0
        if self.mode is None:
            return images
        return keras.applications.imagenet_utils.preprocess_input(images, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="lab")
class VAESampling(layers.Layer):
    """Draws ``z = mean + exp(log_var / 2) * eps`` while training (the mean otherwise) and adds
    ``kl_weight * KL(N(mean, exp(log_var)) || N(0, I))``, averaged over the batch, to the losses."""

    def __init__(self, kl_weight: float = 1.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = float(kl_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        z_mean, z_log_var = inputs
        # The KL term in float32, whatever the layer's compute dtype (mixed precision).
        mean32, log_var32 = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        kl = -0.5 * ops.sum(1.0 + log_var32 - ops.square(mean32) - ops.exp(log_var32), axis=-1)
        self.add_loss(self.kl_weight * ops.mean(kl))
        if not training:
            return z_mean
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight, "seed": self.seed}
