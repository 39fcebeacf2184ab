"""The encoder registry: one dict, filled by `@register_encoder` in the encoder modules.

The CLI's `--encoder` choices come from `ENCODERS`; besides those names it takes
`hf:ORG/NAME` (any Hugging Face model) or a local model folder, whose modality
is read from the model config (see auto.py).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from msa_cache.encoders.base import Encoder, EncoderEntry, EncoderOptions

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


def build_encoder(name: str, model: torch.nn.Module | None = None, tokenizer=None, *,
                  options: EncoderOptions | None = None, **option_kwargs) -> Encoder:
    """Build an encoder by registry name, `hf:ORG/NAME` or local folder.

    model/tokenizer: use these instead of loading weights (tests pass tiny random models).
    options or keyword options: max_length, clean, layers, pooled_only.
    """
    options = options or EncoderOptions(**option_kwargs)
    check_encoder_name(name)
    if name in ENCODERS:
        return ENCODERS[name].build(model=model, tokenizer=tokenizer, options=options)
    from msa_cache.encoders.auto import build_auto
    from msa_cache.encoders.exported import build_exported, is_exported

    source = name[3:] if name.startswith("hf:") else str(Path(name).resolve())
    if not name.startswith("hf:") and is_exported(source):  # written by `msa-cache export-encoder`
        if model is not None:
            raise ValueError(f"encoder '{name}' is an exported folder; it loads its own weights (no model=)")
        return build_exported(name, source, options=options)
    return build_auto(name, source, model=model, tokenizer=tokenizer, options=options)


def encoder_folder_name(name: str) -> str:
    """Folder under cache/<manifest>/ for an encoder: registry names as is, others slugged."""
    if name in ENCODERS or (re.fullmatch(r"[A-Za-z0-9._-]+", name) and not Path(name).is_dir()):
        return name  # registry names and custom names given to in-memory encoders
    if name.startswith("hf:"):
        return "hf-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name[3:].replace("/", "--"))
    return "path-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).resolve().name)
