"""Building an encoder by registry name, `hf:ORG/NAME` or local folder.

Importing this module imports every encoder module, which fills the registry (registry.py) with
`@register_encoder`; the arrows point from here down to the encoder modules and from them to the registry.
"""
from __future__ import annotations

from pathlib import Path

import torch

# The registration order (the order of ENCODERS) is the one these imports give.
import msa_cache.encoders.text  # noqa: F401  bert, roberta, deberta-v3, minilm
import msa_cache.encoders.vision  # noqa: F401  vit
import msa_cache.encoders.cnn  # noqa: F401  resnet50, vgg19, mobilenet-v2, efficientnet-lite0/1/2, cnn-small
import msa_cache.encoders.clip  # noqa: F401  clip
from msa_cache.encoders.auto import build_auto
from msa_cache.encoders.base import Encoder, EncoderOptions
from msa_cache.encoders.exported import build_exported, is_exported
from msa_cache.encoders.registry import ENCODERS, check_encoder_name


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
    source = name[3:] if name.startswith("hf:") else str(Path(name).resolve())
    if not name.startswith("hf:") and is_exported(source):  # written by `msa-cache export-encoder`
        if model is not None:
            raise ValueError(f"encoder '{name}' is an exported folder; it loads its own weights (no model=)")
        return build_exported(name, source, options=options)
    return build_auto(name, source, model=model, tokenizer=tokenizer, options=options)
