"""Pretrained backbones by name, their preprocessing, and their stages.

Every keras.applications family the course uses is here (ResNet, ResNetV2, VGG, DenseNet,
MobileNet, EfficientNet and V2, ConvNeXt, Xception, InceptionV3), plus ResNet-18, ViT and DeiT
from keras-hub. One table says, for each name, how to build it, how its inputs are
preprocessed, the smallest input it accepts, and how its layers fall into stages.

Stages are the backbone's own units, found from its layer names: ResNet's conv1..conv5, VGG's
block1..block5, EfficientNet's block1..block7, ConvNeXt's stage_0..stage_3, a transformer's
blocks. "Unfreeze the last 2 stages" therefore means ResNet's conv4 and conv5, never "the last
40 layers". Families whose layers have generic names (InceptionV3's ``conv2d_12``) are grouped
by the named layer they lead into; MobileNets, whose blocks are numbered without stage names,
are grouped by resolution (stride 2, 4, ..., 32), the usual definition of a CNN stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Callable

import keras
from keras import layers

import lab.models.layers  # noqa: F401  (registers the kit's layers: loading a saved model needs them)
from lab.system.download import DatasetNotAvailableError, keras_downloads_through_fetch
from lab.system.hub_download import keras_hub_downloads_through_fetch


_LAST = "<last>"  # a layer that belongs to the stage before it (ResNetV2's post_bn, DenseNet's bn)


class WeightsNotAvailableError(DatasetNotAvailableError):
    """Pretrained weights are not in the cache and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and read its structure.

    Attributes:
        name: the kit's name (lower case, as in configs: ``"resnet50"``).
        family: the stage rule the layers are grouped by.
        preprocessing: one of PREPROCESSING.
        min_size: the smallest input side it accepts.
        build: (input_shape, weights or None) -> keras.Model without its classifier.
        source: "keras.applications" or "keras-hub".
        fixed_size: transformers are built for one input size (their position embeddings).
    """

    name: str
    family: str
    preprocessing: str
    min_size: int
    build: Callable[[tuple[int, int, int], str | None], keras.Model]
    source: str = "keras.applications"
    fixed_size: int | None = None


def _application(constructor: str, **extra) -> Callable[[tuple[int, int, int], str | None], keras.Model]:
    def build(input_shape, weights):
        return getattr(keras.applications, constructor)(include_top=False, weights=weights,
                                                        input_shape=tuple(input_shape), **extra)
    return build


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError("The resnet18, vit_b16 and deit_* backbones come from keras-hub, which is not installed. "
                          "`make setup` installs it; elsewhere (Colab) run `pip install --no-deps keras-hub` "
                          "(its text dependencies are not needed) plus `pip install kagglehub regex rich tokenizers`."
                          ) from error
    return keras_hub


def _hub_resnet18(input_shape, weights):
    keras_hub = _keras_hub()

    if weights == "imagenet":
        return keras_hub.models.ResNetBackbone.from_preset("resnet_18_imagenet", image_shape=tuple(input_shape))
    # The resnet_18_imagenet preset's architecture, so weights=None needs no download.
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[2, 2, 2, 2], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=tuple(input_shape))


def _hub_transformer(kind: str, preset: str, **architecture):
    def build(input_shape, weights):
        keras_hub = _keras_hub()
        backbone_class = getattr(keras_hub.models, f"{kind}Backbone")
        if weights == "imagenet":
            return backbone_class.from_preset(preset)
        return backbone_class(image_shape=tuple(input_shape), patch_size=16, **architecture)
    return build


def _specs() -> dict[str, BackboneSpec]:
    specs = []
    add = specs.append
    for depth in (50, 101, 152):
        add(BackboneSpec(f"resnet{depth}", "resnet", "caffe", 32, _application(f"ResNet{depth}")))
        add(BackboneSpec(f"resnet{depth}v2", "resnet", "tf", 32, _application(f"ResNet{depth}V2")))
    for depth in (16, 19):
        add(BackboneSpec(f"vgg{depth}", "vgg", "caffe", 32, _application(f"VGG{depth}")))
    for depth in (121, 169, 201):
        add(BackboneSpec(f"densenet{depth}", "densenet", "torch", 32, _application(f"DenseNet{depth}")))
    add(BackboneSpec("mobilenet", "resolution", "tf", 32, _application("MobileNet")))
    add(BackboneSpec("mobilenetv2", "resolution", "tf", 32, _application("MobileNetV2")))
    add(BackboneSpec("mobilenetv3small", "resolution", "builtin", 32, _application("MobileNetV3Small")))
    add(BackboneSpec("mobilenetv3large", "resolution", "builtin", 32, _application("MobileNetV3Large")))
    for variant in "01234567":
        add(BackboneSpec(f"efficientnetb{variant}", "efficientnet", "builtin", 32,
                         _application(f"EfficientNetB{variant}")))
    for variant in ("B0", "B1", "B2", "B3", "S", "M", "L"):
        add(BackboneSpec(f"efficientnetv2{variant.lower()}", "efficientnet", "builtin", 32,
                         _application(f"EfficientNetV2{variant}")))
    for size in ("Tiny", "Small", "Base", "Large", "XLarge"):
        add(BackboneSpec(f"convnext{size.lower()}", "convnext", "builtin", 32, _application(f"ConvNeXt{size}")))
    add(BackboneSpec("xception", "xception", "tf", 71, _application("Xception")))
    add(BackboneSpec("inceptionv3", "inception", "tf", 75, _application("InceptionV3")))
    # keras-hub: the course's ResNet-18 (E2) and vision transformers (E3, E8).
    add(BackboneSpec("resnet18", "hub_resnet", "torch", 32, _hub_resnet18, source="keras-hub"))
    add(BackboneSpec("vit_b16", "transformer", "tf", 32, source="keras-hub", fixed_size=224,
                     build=_hub_transformer("ViT", "vit_base_patch16_224_imagenet", num_layers=12, num_heads=12,
                                            hidden_dim=768, mlp_dim=3072)))
    for size, (heads, width) in {"tiny": (3, 192), "small": (6, 384), "base": (12, 768)}.items():
        add(BackboneSpec(f"deit_{size}", "transformer", "torch", 32, source="keras-hub", fixed_size=224,
                         build=_hub_transformer("DeiT", f"deit_{size}_distilled_patch16_224_imagenet",
                                                num_layers=12, num_heads=heads, hidden_dim=width,
                                                intermediate_dim=4 * width)))
    return {spec.name: spec for spec in specs}


BACKBONES: dict[str, BackboneSpec] = _specs()


def backbone_spec(name: str) -> BackboneSpec:
    """Returns a backbone's spec; an unknown name gets the list of valid ones."""
    key = name.lower().replace("-", "").replace(" ", "")
    if key not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}. Available backbones: {', '.join(BACKBONES)}.")
    return BACKBONES[key]


def check_backbone_input_size(name: str, size: int) -> None:
    """Raises ValueError if a backbone cannot take ``size`` x ``size`` inputs."""
    spec = backbone_spec(name)
    if size < spec.min_size:
        raise ValueError(f"Backbone {spec.name!r} needs inputs of at least {spec.min_size}x{spec.min_size} pixels; "
                         f"received backbone_input_size={size}. Set it to {spec.min_size} or more (images are "
                         "resized inside the model).")


def build_backbone(name: str, backbone_input_size: int, *, weights: str | None = "imagenet") -> keras.Model:
    """Builds a backbone without its classifier, named ``<name>_backbone``.

    Args:
        name: a key of ``BACKBONES``.
        backbone_input_size: the (square) input side the backbone sees.
        weights: "imagenet" (downloaded once into Keras' cache), None (random), or a file the
            kit saved: a run folder or ``.keras`` model with this backbone inside, or a
            ``.weights.h5``/``.h5`` weights file for the backbone alone (e.g. a keras.applications
            ``*_notop.h5`` file copied by hand onto an offline machine).

    Raises:
        ValueError: unknown backbone, input too small, or saved weights of another architecture.
        WeightsNotAvailableError: ImageNet weights not cached and not downloadable.
    """
    spec = backbone_spec(name)
    check_backbone_input_size(spec.name, backbone_input_size)
    if spec.fixed_size and weights == "imagenet" and backbone_input_size != spec.fixed_size:
        raise ValueError(f"The pretrained {spec.name} takes {spec.fixed_size}x{spec.fixed_size} inputs (its position "
                         f"embeddings are learned for that size); received backbone_input_size={backbone_input_size}. "
                         f"Set backbone_input_size={spec.fixed_size}.")
    saved = None if weights in (None, "imagenet") else Path(weights)
    try:
        # Keras' weight files and keras-hub's preset files both come through the kit's bounded
        # fetch (lab.system.download, lab.system.hub_download).
        hub = keras_hub_downloads_through_fetch() if spec.source == "keras-hub" else contextlib.nullcontext()
        with keras_downloads_through_fetch(), hub:
            backbone = spec.build((backbone_input_size, backbone_input_size, 3),
                                  "imagenet" if weights == "imagenet" else None)
    except DatasetNotAvailableError as error:  # lab.system.download's: already says URL, cause and path
        raise WeightsNotAvailableError(_offline_message(spec, error)) from error
    except Exception as error:  # kagglehub raises plain Exceptions for what Kaggle refuses (401, 403)
        if weights == "imagenet" and _looks_like_download_failure(error):
            raise WeightsNotAvailableError(_offline_message(spec, error)) from error
        raise
    backbone.name = f"{spec.name}_backbone"
    if saved is not None:
        _load_saved_weights(backbone, spec, saved)
    return backbone


def find_backbone(model: keras.Model) -> tuple[keras.Model, BackboneSpec]:
    """Returns the backbone inside a transfer model and its spec."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.endswith("_backbone"):
            name = layer.name[: -len("_backbone")]
            if name in BACKBONES:
                return layer, BACKBONES[name]
    raise ValueError(f"Model {model.name!r} has no backbone layer (a layer named '<backbone>_backbone'); "
                     "it was not built by lab.models.transfer_model.")


def backbone_stages(backbone: keras.Model, spec: BackboneSpec | str) -> dict[str, list[keras.layers.Layer]]:
    """Groups a backbone's layers into its stages, in input-to-output order.

    Stages without weights (an input rescaling) are left out: there is nothing to train in them.

    Returns:
        ``{stage name: [layers]}``, e.g. ``{"conv1": [...], "conv2": [...], ..., "conv5": [...]}``.
    """
    spec = backbone_spec(spec) if isinstance(spec, str) else spec
    if spec.family == "transformer":
        stages = _transformer_stages(backbone)
    elif spec.family == "resolution":
        stages = _resolution_stages(backbone)
    else:
        rule, generic = _NAME_RULES[spec.family]
        stages = _named_stages(backbone, rule, generic)
    return {name: group for name, group in stages.items() if any(layer.weights for layer in group)}


# -- stage rules ---------------------------------------------------------------------------------


def _resnet_rule(name: str) -> str | None:
    match = re.match(r"^(conv\d|pool1|post|stack\d)_", name)
    if not match:
        return None
    key = match.group(1)
    return {"pool1": "conv1", "post": _LAST}.get(key, key)


def _densenet_rule(name: str) -> str | None:
    if name in ("bn", "relu"):
        return _LAST
    match = re.match(r"^(conv|pool)(\d)", name)
    # pool2..pool4 are the transitions after dense blocks conv2..conv4: they belong to them.
    return f"conv{match.group(2)}" if match else None


def _prefix_rule(pattern: str, aliases: dict[str, str] | None = None) -> Callable[[str], str | None]:
    def rule(name: str) -> str | None:
        match = re.search(pattern, name)
        if not match:
            return None
        key = match.group(1)
        return (aliases or {}).get(key, key)
    return rule


def _convnext_rule(name: str) -> str | None:
    if re.search(r"_(prestem_normalization|stem)$", name):
        return "stem"
    match = re.search(r"_stage_(\d)_", name)
    if match:
        return f"stage_{match.group(1)}"
    match = re.search(r"_downsampling_block_(\d)$", name)
    # downsampling_block_k opens stage k + 1.
    return f"stage_{int(match.group(1)) + 1}" if match else None


# family -> (rule on a layer name, where a generically named layer goes: "previous" or "next")
_NAME_RULES: dict[str, tuple[Callable[[str], str | None], str]] = {
    "resnet": (_resnet_rule, "previous"),
    "hub_resnet": (_resnet_rule, "previous"),
    "densenet": (_densenet_rule, "previous"),
    "vgg": (_prefix_rule(r"^(block\d)_"), "previous"),
    "efficientnet": (_prefix_rule(r"^(stem|top|block\d)[a-z]?_", {"top": _LAST}), "previous"),
    "convnext": (_convnext_rule, "previous"),
    "xception": (_prefix_rule(r"^(block\d+)_"), "previous"),
    # InceptionV3's conv2d_N/activation_N layers lead into the module's "mixedK" concatenation
    # (its inner "mixed9_0"-style concatenations are generic too: mixed9_1 sits in mixed10).
    "inception": (_prefix_rule(r"^(mixed\d+)$"), "next"),
}


def _named_stages(backbone: keras.Model, rule, generic: str) -> dict[str, list]:
    ordered = [layer for layer in backbone.layers if not isinstance(layer, layers.InputLayer)]
    keys = [rule(layer.name) for layer in ordered]
    previous = None
    for i, key in enumerate(keys):
        if key == _LAST:
            keys[i] = previous
        elif key is None and generic == "previous":
            keys[i] = previous
        elif key is not None:
            previous = key
    if generic == "next" or keys[0] is None:
        following = None
        for i in range(len(keys) - 1, -1, -1):
            if keys[i] is None:
                keys[i] = following
            else:
                following = keys[i]
    stages: dict[str, list] = {}
    for layer, key in zip(ordered, keys, strict=True):
        stages.setdefault(key or "top", []).append(layer)
    return stages


def _resolution_stages(backbone: keras.Model) -> dict[str, list]:
    # A stage starts where a spatial convolution lowers the resolution. Only k x k convolutions
    # count: a squeeze-and-excitation block's 1x1 maps would otherwise look like stride 32.
    size = backbone.input.shape[1]
    stages: dict[str, list] = {}
    stride = 1
    for layer in backbone.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        spatial = isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) and max(layer.kernel_size) > 1
        if spatial and layer.output.shape[1]:
            stride = max(stride, round(size / layer.output.shape[1]))
        stages.setdefault(f"stride{stride}", []).append(layer)
    return stages


def _transformer_stages(backbone: keras.Model) -> dict[str, list]:
    embedding = [layer for layer in backbone.layers if "patching_and_embedding" in layer.name]
    encoder = next(layer for layer in backbone.layers if layer.name.endswith("_encoder"))
    blocks = list(encoder.encoder_layers)
    stages = {"embedding": embedding}
    for i, block in enumerate(blocks, start=1):
        stages[f"block{i}"] = [block]
    # The encoder's final LayerNorm (and dropout) run after the last block: they belong to it.
    stages[f"block{len(blocks)}"] += [layer for layer in encoder._layers if layer not in blocks]
    return stages


# -- preprocessing -------------------------------------------------------------------------------


# -- weights -------------------------------------------------------------------------------------


def _looks_like_download_failure(error: Exception) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(word in text for word in ("url fetch failure", "urlopen", "name resolution", "connection",
                                         "network", "kaggle", "http", "timed out", "resolve"))


def _offline_message(spec: BackboneSpec, error: Exception) -> str:
    if spec.source == "keras-hub":
        where = ("keras-hub downloads presets from Kaggle into ~/.cache/kagglehub (or $KAGGLEHUB_CACHE); "
                 "copy that folder from a machine that has it")
    else:
        where = ("Keras downloads them once into ~/.keras/models (or $KERAS_HOME/models); copy the file named "
                 "at the end of the URL above (the weights without the top) there from a machine with network "
                 "access, or pass its path as weights=")
    return (f"The ImageNet weights of {spec.name!r} are not cached and could not be downloaded ({error}). "
            f"{where}. Without network, use weights=None (random initialisation), weights='pretrain-offline' "
            "(a backbone pretrained here on embedded data), or weights=<a run folder or .keras file the kit "
            "saved>.")


def _load_saved_weights(backbone: keras.Model, spec: BackboneSpec, path: Path) -> None:
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"No saved weights at {path}: weights= takes 'imagenet', None, a run folder with a "
                                "model.keras, a .keras file, or a .weights.h5/.h5 weights file of the backbone.")
    if path.suffix == ".keras":
        saved_model = keras.models.load_model(path, compile=False)
        saved, saved_spec = find_backbone(saved_model)
        if saved_spec.name != spec.name:
            raise ValueError(f"{path} holds a {saved_spec.name} backbone, not {spec.name}: set backbone="
                             f"{saved_spec.name!r} or use weights from a {spec.name} model.")
        try:
            backbone.set_weights(saved.get_weights())
        except ValueError as error:
            raise ValueError(f"The {spec.name} weights in {path} do not fit this {spec.name} (different input "
                             f"size for a transformer?): {error}") from error
        return
    backbone.load_weights(str(path))
