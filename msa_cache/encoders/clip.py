"""CLIP: both towers in one cache, under text/ and image/.

`*/pooled` is the projected, L2-normalised embedding (what CLIP compares);
`text/cls` is the unprojected EOS state, `image/cls` the post-LayerNorm CLS
state (the inputs of the projections); tokens, mask and input_ids as for the
other encoders (image tokens = patches without CLS).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from msa_cache.encoders.base import Encoder, EncoderOptions, ImageSpec, TextSpec
from msa_cache.encoders.hub import load_pretrained
from msa_cache.encoders.text import check_layers, clamp_max_length, text_fields
from msa_cache.encoders.vision import image_fields, image_spec_from_processor

CLIP_IMAGE = ImageSpec(size=224, resize=224, mean=(0.48145466, 0.4578275, 0.40821073),
                       std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic")


class CLIPEncoder(Encoder):
    modality = "both"

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, image: ImageSpec, *, model_id: str,
                 revision: str | None = None, options: EncoderOptions = EncoderOptions()):
        config = model.config
        # CLIP has 77 text positions: a longer --max-length is clamped (and noted in the provenance).
        max_length, notes = clamp_max_length(options.max_length, tokenizer, config.text_config)
        super().__init__(name, model, model_id=model_id, revision=revision, options=options,
                         text=TextSpec(tokenizer, max_length, options.clean), image=image, notes=notes)
        check_layers(name, options.layers, int(config.text_config.num_hidden_layers) + 1)
        check_layers(name, options.layers, int(config.vision_config.num_hidden_layers) + 1)

    def _forward(self, batch: dict) -> dict:
        m, layers = self.model, self.options.layers
        ids, mask = batch["input_ids"], batch["attention_mask"]
        t = m.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=bool(layers))
        v = m.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=bool(layers))
        out = text_fields("text", t.last_hidden_state, mask, ids, t.hidden_states, layers, cls=t.pooler_output)
        out["text/pooled"] = F.normalize(m.text_projection(t.pooler_output), dim=-1)
        out.update(image_fields(v.last_hidden_state, True, v.hidden_states, layers))
        out["image/cls"] = v.pooler_output
        out["image/pooled"] = F.normalize(m.visual_projection(v.pooler_output), dim=-1)
        return out

    @classmethod
    def from_pretrained(cls, name: str, source: str, *, model=None, tokenizer=None, processor=None,
                        options: EncoderOptions = EncoderOptions()) -> "CLIPEncoder":
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        if tokenizer is None:
            tokenizer = load_pretrained(name, source, AutoTokenizer.from_pretrained)
        image = CLIP_IMAGE
        if model is None:
            model = load_pretrained(name, source, AutoModel.from_pretrained)
            model_id, revision = source, getattr(model.config, "_commit_hash", None)
            if processor is None:
                processor = load_pretrained(name, source, AutoImageProcessor.from_pretrained)
        else:
            model_id, revision = getattr(model.config, "_name_or_path", "") or "in-memory", None
            size = int(model.config.vision_config.image_size)
            image = ImageSpec(size=size, resize=size, mean=image.mean, std=image.std, interpolation=image.interpolation)
        return cls(name, model, tokenizer, image_spec_from_processor(processor, image), model_id=model_id,
                   revision=revision, options=options)


def clip(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions(), processor=None) -> CLIPEncoder:
    return CLIPEncoder.from_pretrained("clip", "openai/clip-vit-base-patch32", model=model, tokenizer=tokenizer,
                                       processor=processor, options=options)
