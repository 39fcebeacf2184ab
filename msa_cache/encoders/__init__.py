"""Frozen encoders: one catalog (`ENCODERS`, catalog.py: names, modalities, help; no torch) and a
builder per entry, imported when that encoder is built (build.py).

    build_encoder("minilm")                       # by name (offline: minilm, efficientnet-lite0)
    build_encoder("hf:ORG/NAME"), build_encoder("/path/to/model")
    build_encoder("bert", model=BertModel(cfg), tokenizer=tok)   # any already-built model

The model-side names (Encoder, EncoderOptions, ...) load torch, so they are imported on first use.
"""
from msa_cache.lazy import lazy_getattr
from msa_cache.encoders.catalog import ENCODERS, EncoderEntry, register_encoder
from msa_cache.encoders.hub import EncoderUnavailable
from msa_cache.encoders.registry import check_encoder_name, encoder_folder_name

from msa_cache.encoders.options import EncoderOptions

# Imported on first use, so the light names above load without torch (`--help`, option checks).
__getattr__ = lazy_getattr(__name__, {"Encoder": "msa_cache.encoders.base",
         "ImageSpec": "msa_cache.encoders.base", "TextSpec": "msa_cache.encoders.base",
         "build_encoder": "msa_cache.encoders.build"})


__all__ = [
    "ENCODERS", "Encoder", "EncoderEntry", "EncoderOptions", "EncoderUnavailable", "ImageSpec", "TextSpec",
    "build_encoder", "check_encoder_name", "encoder_folder_name", "register_encoder",
]
