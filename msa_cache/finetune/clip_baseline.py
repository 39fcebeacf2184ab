"""The CLIP baseline: CLIP's image and text towers fine-tuned; their projected, L2-normalised
embeddings concatenated -> MLP classifier.
(`--baseline clip [--model openai/clip-vit-base-patch32 | hf:ORG/NAME | FOLDER]`)

`--unfreeze text` trains CLIP's text tower, `--unfreeze image` its vision tower.
"""
from __future__ import annotations

from msa_cache.encoders import Encoder, EncoderOptions, build_encoder
from msa_cache.finetune.baseline import Baseline, concat_head, hub_name, register_baseline
from msa_cache.finetune.config import FinetuneSpec
from msa_cache.finetune.model import FinetuneModel, FinetuneModule

CLIP_DEFAULT = "clip"  # the registered encoder: openai/clip-vit-base-patch32


@register_baseline
class ClipBaseline(Baseline):
    name = "clip"
    paper = 'Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021'

    def spec_encoders(self, model: str | None, encoders: list[str]) -> list[str]:
        if encoders:
            raise ValueError("--baseline clip takes its weights from --model, not --encoder")
        return [model] if model else []  # none recorded: the registered `clip` encoder

    def open_encoders(self, spec: FinetuneSpec, options: EncoderOptions) -> dict[str, Encoder]:
        if len(spec.encoders) > 1:
            raise ValueError("--baseline clip takes its model from --model, not --encoder")
        name = hub_name(spec.encoders[0]) if spec.encoders else CLIP_DEFAULT
        enc = build_encoder(name, options=options)
        if enc.modality != "both":
            raise ValueError(f"--baseline clip needs a CLIP model; '{name}' is a {enc.modality} model")
        return {"clip": enc}

    def assemble(self, spec: FinetuneSpec, num_classes: int, encoders: dict[str, Encoder]) -> FinetuneModule:
        model = FinetuneModel(encoders, concat_head("clip"), num_classes, spec.head_options)
        model.pad_to_max = False  # pooled embeddings only
        return model
