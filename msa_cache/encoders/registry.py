"""The encoder registry: one dict, filled by `@register_encoder` in the encoder modules.

This module only holds the table and the name rules, so the encoder modules can import it; building by
name (and the hf:/folder lookup) is in build.py, which imports every encoder module to fill the table.
The CLI's `--encoder` choices come from `ENCODERS`; besides those names it takes
`hf:ORG/NAME` (any Hugging Face model) or a local model folder, whose modality
is read from the model config (see auto.py).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from msa_cache.encoders.base import Encoder, EncoderEntry

ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, *, modality: str, default_model: str = "", offline: bool = False,
                     help: str = "", blank: Callable[[], torch.nn.Module] | None = None) -> Callable:
    """Decorator for a builder `fn(model=None, tokenizer=None, options=EncoderOptions()) -> Encoder`.

    blank: for encoders that are not Hugging Face models, the architecture without weights
    (what the builder accepts as `model=`), so `export-encoder` folders can be loaded."""

    def deco(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
        if name in ENCODERS:
            raise ValueError(f"encoder '{name}' is registered twice")
        ENCODERS[name] = EncoderEntry(name, modality, fn, default_model, offline, help, blank=blank)
        return fn

    return deco


def is_hf_spec(name: str) -> bool:
    """`hf:ORG/NAME` or an existing local folder (not a registry name)."""
    return name.startswith("hf:") or (name not in ENCODERS and Path(name).is_dir())


def check_encoder_name(name: str) -> str:
    if name in ENCODERS or is_hf_spec(name):
        return name
    raise ValueError(f"unknown encoder '{name}'; choose one of {', '.join(sorted(ENCODERS))}, "
                     "or hf:ORG/NAME, or a local model folder")


def encoder_folder_name(name: str) -> str:
    """Folder under cache/<manifest>/ for an encoder: registry names as is, others slugged."""
    if name in ENCODERS or (re.fullmatch(r"[A-Za-z0-9._-]+", name) and not Path(name).is_dir()):
        return name  # registry names and custom names given to in-memory encoders
    if name.startswith("hf:"):
        return "hf-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name[3:].replace("/", "--"))
    return "path-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).resolve().name)
