"""Encoders for any Hugging Face model id (`hf:ORG/NAME`) or local model folder.

The modality comes from the model config: a config with both a text and a
vision sub-config is a two-tower model (CLIP only), one with `num_channels` is
an image model, anything else is a text model.
"""
from __future__ import annotations

from msa_cache.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOptions, ImageSpec
from msa_cache.encoders.clip import CLIPEncoder
from msa_cache.encoders.hub import load_pretrained
from msa_cache.encoders.text import TextEncoder
from msa_cache.encoders.vision import VisionEncoder

# Used when an image model comes without a preprocessor config.
DEFAULT_IMAGE = ImageSpec(size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def modality_of(config) -> str:
    if getattr(config, "text_config", None) is not None and getattr(config, "vision_config", None) is not None:
        return "both"
    if getattr(config, "num_channels", None) is not None:
        return "image"
    return "text"


def build_auto(name: str, source: str, *, model=None, tokenizer=None,
               options: EncoderOptions = EncoderOptions()) -> Encoder:
    from transformers import AutoConfig

    config = model.config if model is not None else load_pretrained(name, source, AutoConfig.from_pretrained)
    modality = modality_of(config)
    if modality == "both":
        if config.model_type != "clip":
            raise ValueError(f"encoder '{name}': two-tower model type '{config.model_type}' is not supported; "
                             "only CLIP-type models (use --encoder clip or a CLIP checkpoint)")
        return CLIPEncoder.from_pretrained(name, source, model=model, tokenizer=tokenizer, options=options)
    if modality == "image":
        return VisionEncoder.from_pretrained(name, source, model=model, default=DEFAULT_IMAGE, options=options)
    return TextEncoder.from_pretrained(name, source, model=model, tokenizer=tokenizer, options=options)
