"""Frozen encoders: one registry (`ENCODERS`), filled by importing the encoder modules.

    build_encoder("minilm")                       # by name (offline: minilm, efficientnet-lite0)
    build_encoder("hf:ORG/NAME"), build_encoder("/path/to/model")
    build_encoder("bert", model=BertModel(cfg), tokenizer=tok)   # any already-built model
"""
from msa_cache.encoders.base import Encoder, EncoderEntry, EncoderOptions, ImageSpec, TextSpec
from msa_cache.encoders.hub import EncoderUnavailable
from msa_cache.encoders.registry import (
    ENCODERS,
    build_encoder,
    check_encoder_name,
    encoder_folder_name,
    register_encoder,
)

from msa_cache.encoders import text  # noqa: F401,E402  bert, roberta, deberta-v3, minilm
from msa_cache.encoders import vision  # noqa: F401,E402  vit
from msa_cache.encoders import cnn  # noqa: F401,E402  resnet50, vgg19, mobilenet-v2, efficientnet-lite0
from msa_cache.encoders import clip  # noqa: F401,E402  clip

__all__ = [
    "ENCODERS", "Encoder", "EncoderEntry", "EncoderOptions", "EncoderUnavailable", "ImageSpec", "TextSpec",
    "build_encoder", "check_encoder_name", "encoder_folder_name", "register_encoder",
]
