"""Frozen encoders: one registry (`ENCODERS`, registry.py), filled by importing the encoder
modules (build.py does, and builds by name).

    build_encoder("minilm")                       # by name (offline: minilm, efficientnet-lite0)
    build_encoder("hf:ORG/NAME"), build_encoder("/path/to/model")
    build_encoder("bert", model=BertModel(cfg), tokenizer=tok)   # any already-built model
"""
from msa_cache.encoders.base import Encoder, EncoderEntry, EncoderOptions, ImageSpec, TextSpec
from msa_cache.encoders.hub import EncoderUnavailable
from msa_cache.encoders.registry import ENCODERS, check_encoder_name, encoder_folder_name, register_encoder
from msa_cache.encoders.build import build_encoder  # imports the encoder modules, filling ENCODERS

__all__ = [
    "ENCODERS", "Encoder", "EncoderEntry", "EncoderOptions", "EncoderUnavailable", "ImageSpec", "TextSpec",
    "build_encoder", "check_encoder_name", "encoder_folder_name", "register_encoder",
]
