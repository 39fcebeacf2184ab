"""The VisualBERT baseline: transformers' VisualBertModel over the text tokens and the image
encoder's patch (or grid) features, projected to its visual_embedding_dim; its pooled output -> MLP
classifier. (`--baseline visualbert --encoder vit [--model uclanlp/visualbert-vqa-coco-pre | FOLDER]`)

It loads from any HF id or local folder (offline, a hub id fails with the usual one-line
EncoderUnavailable); `--unfreeze text` trains VisualBERT's transformer, `--unfreeze image` the image
encoder.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from msa_cache.encoders import Encoder, EncoderOptions, EncoderUnavailable, build_encoder
from msa_cache.encoders.base import TextSpec
from msa_cache.encoders.hub import load_pretrained
from msa_cache.encoders.text import clamp_max_length
from msa_cache.finetune.baseline import Baseline, ConcatHead, head_config, register_baseline
from msa_cache.finetune.config import VISUALBERT_DEFAULT, FinetuneSpec
from msa_cache.finetune.model import FinetuneModule, role_inputs, zero_bad_rows
from msa_cache.heads.base import Batch, ModalityInput, ModalitySpec

# The uclanlp checkpoints ship no tokenizer; VisualBERT was pre-trained with this one.
VISUALBERT_TOKENIZER = "bert-base-uncased"


class VisualBertEncoder(Encoder):
    """VisualBertModel as an Encoder: tokenises text like any text encoder; its forward also takes
    `visual_embeds` [B, N, visual_embedding_dim] and returns the joint sequence's pooled output."""

    modality = "text"
    supports_layers = False

    def __init__(self, model: nn.Module, tokenizer, *, model_id: str, revision: str | None = None,
                 options: EncoderOptions = EncoderOptions()):
        max_length, notes = clamp_max_length(options.max_length, tokenizer, model.config)
        super().__init__("visualbert", model, model_id=model_id, revision=revision, options=options,
                         text=TextSpec(tokenizer, max_length, options.clean), notes=notes)
        self.visual_dim = int(model.config.visual_embedding_dim)

    def dummy_batch(self) -> dict[str, torch.Tensor]:
        return {**super().dummy_batch(), "visual_embeds": torch.zeros(1, 1, self.visual_dim)}

    def _forward(self, batch: dict) -> dict[str, torch.Tensor]:
        ids, mask, visual = batch["input_ids"], batch["attention_mask"], batch["visual_embeds"]
        b, n = visual.shape[:2]
        out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                         visual_embeds=visual,
                         visual_attention_mask=torch.ones(b, n, dtype=mask.dtype, device=mask.device),
                         visual_token_type_ids=torch.ones(b, n, dtype=torch.long, device=ids.device))
        return {"fused/pooled": out.pooler_output, "fused/tokens": out.last_hidden_state}


def visualbert_encoder(source: str = VISUALBERT_DEFAULT, *, model=None, tokenizer=None,
                       options: EncoderOptions = EncoderOptions()) -> VisualBertEncoder:
    """VisualBERT from a hub id (`uclanlp/...`, `hf:...`) or a local folder."""
    from transformers import AutoTokenizer, VisualBertModel

    source = source[3:] if source.startswith("hf:") else source
    if Path(source).is_dir():
        source = str(Path(source).resolve())
    if model is None:
        model = load_pretrained("visualbert", source, VisualBertModel.from_pretrained)
    if tokenizer is None:
        try:
            tokenizer = load_pretrained("visualbert", source, AutoTokenizer.from_pretrained)
        except (EncoderUnavailable, KeyError):
            tokenizer = load_pretrained("visualbert", VISUALBERT_TOKENIZER, AutoTokenizer.from_pretrained)
    return VisualBertEncoder(model, tokenizer, model_id=source, revision=getattr(model.config, "_commit_hash", None),
                             options=options)


class VisualBertBaseline(FinetuneModule):
    pad_to_max = False  # pooled output only: pad each batch to its longest text

    def __init__(self, fusion: VisualBertEncoder, image: Encoder, num_classes: int, head_options: dict):
        super().__init__()
        self.fusion, self.image = fusion, image
        self.fusion_model, self.image_model = fusion.model, image.model  # registered, so .to() and state_dict see them
        shapes = image.field_shapes()
        if "image/tokens" not in shapes:
            raise ValueError(f"--baseline visualbert needs the image encoder's patch features; '{image.name}' "
                             "gives none (use vit, resnet50, efficientnet-lite0, ...)")
        self.project = nn.Linear(shapes["image/tokens"][-1], fusion.visual_dim)
        spec = {"visualbert": ModalitySpec(pooled_dim=int(fusion.model.config.hidden_size))}
        self.head = ConcatHead(spec, num_classes, head_config("visualbert", head_options))
        self.set_trainable(())  # frozen until the trainer's schedule says otherwise

    def input_specs(self):
        return {"visualbert": (self.fusion.text, None), "image": (None, self.image.image)}

    def parts(self) -> dict[str, list[nn.Module]]:
        return {"text": [self.fusion.model], "image": [self.image.model]}

    def encoders_list(self) -> list[Encoder]:
        return [self.fusion, self.image]

    def head_fields(self):
        return {"visualbert": ("fused/pooled", None, None)}  # VisualBERT's pooled output over text + patches

    def head_batch(self, inputs: dict) -> Batch:
        patches = zero_bad_rows(self.image._forward(role_inputs(inputs, "image")), inputs["ok"])["image/tokens"]
        text = role_inputs(inputs, "visualbert")
        text["visual_embeds"] = self.project(patches.float())
        pooled = self.fusion._forward(text)["fused/pooled"]
        return Batch({"visualbert": ModalityInput(pooled.float())}, inputs["labels"], inputs.get("modality_labels", {}))


@register_baseline
class VisualBert(Baseline):
    name = "visualbert"
    paper = 'Li et al., "VisualBERT: A Simple and Performant Baseline for Vision and Language", 2019'
    own_encoders = {"visualbert": visualbert_encoder}  # rebuilt from a run's record by its model_id

    def spec_encoders(self, model: str | None, encoders: list[str]) -> list[str]:
        if len(encoders) != 1:
            raise ValueError("--baseline visualbert needs exactly one image encoder: --encoder vit")
        return [model or VISUALBERT_DEFAULT, encoders[0]]

    def open_encoders(self, spec: FinetuneSpec, options: EncoderOptions) -> dict[str, Encoder]:
        if len(spec.encoders) != 2:
            raise ValueError("--baseline visualbert needs one image encoder: --encoder vit (or another image encoder)")
        model, image_name = spec.encoders
        image = build_encoder(image_name, options=options)
        if image.modality != "image":
            raise ValueError(f"--baseline visualbert: --encoder {image_name} is a {image.modality} encoder; "
                             "give an image encoder (vit, resnet50, efficientnet-lite0, ...)")
        return {"visualbert": visualbert_encoder(model or VISUALBERT_DEFAULT, options=options), "image": image}

    def assemble(self, spec: FinetuneSpec, num_classes: int, encoders: dict[str, Encoder]) -> FinetuneModule:
        return VisualBertBaseline(encoders["visualbert"], encoders["image"], num_classes, spec.head_options)
