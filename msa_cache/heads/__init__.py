"""Fusion heads trained on cached features. catalog.py lists every head (name, Config, traits; no
torch); one module per method holds its model, imported when a model is built. Add a head: its
model file + one catalog entry.

The model-side names (Head, Batch, ...) load torch, so they are imported on first use."""
from msa_cache.heads.catalog import HEADS, HeadConfig, HeadEntry, default_heads, register_head
from msa_cache.heads.registry import create_head, get_head, make_config

_MODEL_SIDE = {"Batch", "Head", "HeadOutput", "ModalityInput", "ModalitySpec", "head_model"}


def __getattr__(name: str):
    if name in _MODEL_SIDE:
        from msa_cache.heads import base

        return getattr(base, name)
    raise AttributeError(f"module 'msa_cache.heads' has no attribute {name!r}")


__all__ = ["Batch", "Head", "HeadConfig", "HeadEntry", "HeadOutput", "ModalityInput", "ModalitySpec", "HEADS",
           "create_head", "default_heads", "get_head", "head_model", "make_config", "register_head"]
