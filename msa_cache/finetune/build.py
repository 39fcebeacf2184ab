"""Building a fine-tune model from its spec: the encoders (pretrained, by role) and the model around them
(FinetuneModel over a registered head, or a registered baseline). Above model.py and the baselines,
so neither imports the other's builder."""
from __future__ import annotations

import dataclasses

from msa_cache.encoders import Encoder, EncoderOptions, build_encoder
from msa_cache.finetune.baselines import get_baseline
from msa_cache.finetune.config import FinetuneSpec
from msa_cache.finetune.model import ROLE_OF_MODALITY, FinetuneModel, FinetuneModule
from msa_cache.heads import get_head


def open_encoders(spec: FinetuneSpec) -> dict[str, Encoder]:
    """Load the spec's encoders (pretrained weights) keyed by role."""
    tc = spec.train
    options = EncoderOptions(max_length=tc.max_length, clean=tc.clean)
    if spec.baseline is not None:
        return get_baseline(spec.baseline).open_encoders(spec, options)
    if not spec.encoders:
        raise ValueError("fine-tuning needs encoders: --encoder NAME (text) --encoder NAME (image)")
    head_cls = get_head(spec.head)
    if head_cls.fit_mode == "closed_form":
        raise ValueError(f"head '{spec.head}' is fitted in closed form on frozen features; "
                         f"use `msa-cache fit --head {spec.head}`")
    layers = head_cls.encoder_layers(spec.head_options)
    encoders: dict[str, Encoder] = {}
    for name in spec.encoders:
        enc = build_encoder(name, options=options)
        if layers and enc.modality != "both" and enc.supports_layers:
            # Loaded again, asking for the hidden layers the head aligns (a CNN has none and is kept as is).
            enc = build_encoder(name, options=dataclasses.replace(options, layers=layers))
        role = ROLE_OF_MODALITY[enc.modality]
        if role in encoders:
            raise ValueError(f"--encoder {name}: a {enc.modality} encoder is already given "
                             f"({encoders[role].name}); pass one text and one image encoder")
        encoders[role] = enc
    return encoders


def assemble_model(spec: FinetuneSpec, num_classes: int, encoders: dict[str, Encoder],
                   image_pool: str | None = None) -> FinetuneModule:
    """The model for `spec` around already-loaded encoders (fresh from the hub, or rebuilt from a run).
    image_pool: the image vector a rebuilt run was trained on (its record); None = what the head asks for."""
    if spec.baseline is not None:
        return get_baseline(spec.baseline).assemble(spec, num_classes, encoders)
    if image_pool is None:
        image_pool = get_head(spec.head).image_pool(spec.head_options)
    return FinetuneModel(encoders, spec.head, num_classes, spec.head_options, spec.train.text_pool, image_pool)
