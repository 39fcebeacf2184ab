"""Encoders and a head in one nn.Module: raw inputs in, the head's output out, with gradients.

`FinetuneModel` runs each encoder's own forward (the one extraction uses), so a
head sees exactly the fields a cache would give it, built the same way:

    role "text"   -> modality "text":  pooled = text/<text_pool> (cls | mean), tokens, mask
    role "image"  -> modality "image": pooled = image/pooled, tokens (patches / grid)
    role "clip"   -> "clip_text", "clip_image": the projected, normalised CLIP embeddings + tokens
    hidden layers -> "text@-2", "image@-2", ...: tokens of the encoder's layer -k (+ the text mask),
                     when the head asks for them (`Head.encoder_layers`, INFIG's align="encoder")

Image features of bad rows are zeroed, as extraction stores them. `parts()`
names the encoder modules per modality, so `--unfreeze text,image` works the
same for two encoders and for CLIP's two towers; everything else (the head, new
projections) is the "head" parameter group, trained from the first epoch.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from msa_cache.cache.fields import Fields, fields_record, head_fields
from msa_cache.encoders import Encoder
from msa_cache.encoders.clip import CLIPEncoder
from msa_cache.finetune.data import Specs
from msa_cache.heads import Head, create_head
from msa_cache.heads.base import Batch, HeadOutput, ModalityInput, ModalitySpec

ROLE_OF_MODALITY = {"text": "text", "image": "image", "both": "clip"}


def select_fields(role: str, fields, text_pool: str, image_pool: str = "pooled") -> dict[str, Fields]:
    """modality -> (pooled, tokens, mask) field names of an encoder's forward: cache.fields.head_fields,
    the same choice a cached run makes (hidden layers only exist when the head asked for them)."""
    return head_fields(role, sorted(fields), text_pool, image_pool=image_pool)


def modality_input(values: dict[str, torch.Tensor], names: Fields) -> ModalityInput:
    pooled, tokens, mask = names
    return ModalityInput(values[pooled].float(), None if tokens is None else values[tokens].float(),
                         None if mask is None else values[mask].bool())


def detached(batch: Batch) -> Batch:
    """The batch with constant features: losses that use inputs as targets (ae-* reconstruction)
    must not pull the encoders towards easy-to-reconstruct features."""
    inputs = {m: ModalityInput(x.pooled.detach(), None if x.tokens is None else x.tokens.detach(), x.mask)
              for m, x in batch.inputs.items()}
    return Batch(inputs, batch.labels, batch.modality_labels, batch.ids)


def role_inputs(inputs: dict, role: str) -> dict[str, torch.Tensor]:
    prefix = role + "/"
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def zero_bad_rows(values: dict[str, torch.Tensor], ok: torch.Tensor) -> dict[str, torch.Tensor]:
    if bool(ok.all()):
        return values
    out = {}
    for k, v in values.items():
        if k.startswith("image/") and v.is_floating_point():
            v = v * ok.view(-1, *([1] * (v.ndim - 1))).to(v.dtype)
        out[k] = v
    return out


def encoder_parts(encoder: Encoder) -> dict[str, list[nn.Module]]:
    """The modules `--unfreeze` trains, per modality (CLIP: one entry per tower)."""
    if isinstance(encoder, CLIPEncoder):
        m = encoder.model
        return {"text": [m.text_model, m.text_projection], "image": [m.vision_model, m.visual_projection]}
    return {encoder.modality: [encoder.model]}


class FinetuneModule(nn.Module):
    """What the fine-tune trainer and `predict` need from a model; subclasses build `head_batch`."""

    head: Head
    pad_to_max: bool = True  # tokenise to max_length (token heads were built for fixed lengths)

    def __init__(self):
        super().__init__()
        self.trainable: set[str] = set()

    def input_specs(self) -> Specs:  # pragma: no cover - abstract
        raise NotImplementedError

    def parts(self) -> dict[str, list[nn.Module]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_batch(self, inputs: dict) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, inputs: dict) -> HeadOutput:
        return self.head(self.head_batch(inputs))

    def loss(self, inputs: dict, class_weight: torch.Tensor | None = None):
        batch = self.head_batch(inputs)
        return self.head.loss(self.head(batch), detached(batch), class_weight)

    def set_trainable(self, modalities) -> None:
        """Encoders of these modalities train; the others are frozen (no grad, eval mode)."""
        self.trainable = set(modalities)
        for modality, modules in self.parts().items():
            for m in modules:
                m.requires_grad_(modality in self.trainable)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen encoder stays in eval mode: no dropout noise, and BatchNorm statistics do not drift.
        for modality, modules in self.parts().items():
            if modality not in self.trainable:
                for m in modules:
                    m.eval()
        return self

    def encoder_params(self) -> list[nn.Parameter]:
        seen, out = set(), []
        for modules in self.parts().values():
            for m in modules:
                for p in m.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return out

    def head_params(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder_params()}
        return [p for p in self.parameters() if id(p) not in enc]

    def encoders_list(self) -> list[Encoder]:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_fields(self) -> dict[str, Fields]:  # pragma: no cover - abstract
        """modality -> (pooled, tokens, mask): the encoder outputs the head reads."""
        raise NotImplementedError

    def fields_record(self) -> dict[str, dict]:
        """config.json's "fields" (as a cached run records them)."""
        return fields_record(self.head_fields())

    def enable_grad_checkpointing(self) -> list[str]:
        """HF gradient (activation) checkpointing where the encoder supports it; returns those that do not."""
        unsupported = []
        for enc in self.encoders_list():
            m = enc.model
            if not getattr(m, "supports_gradient_checkpointing", False):
                unsupported.append(enc.name)
                continue
            kwargs = {"use_reentrant": False}  # non-reentrant: works when the inputs (frozen embeddings) need no grad
            if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
                m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
                continue
            try:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            except TypeError:  # transformers < 4.35 takes no kwargs
                m.gradient_checkpointing_enable()
        return unsupported


class FinetuneModel(FinetuneModule):
    """Encoders by role ("text", "image", "clip") + a head over their fields: a registered head's
    name, or a factory `head(spec, num_classes, options)` (the baselines' classifier)."""

    def __init__(self, encoders: dict[str, Encoder], head: str | Callable[..., Head], num_classes: int,
                 head_options: dict, text_pool: str = "cls", image_pool: str = "pooled"):
        super().__init__()
        self.encoders = dict(encoders)
        self.encoder_models = nn.ModuleDict({role: enc.model for role, enc in encoders.items()})
        self.text_pool = text_pool
        self.fields = {role: select_fields(role, enc.field_shapes(), text_pool, image_pool)
                       for role, enc in encoders.items()}
        self.spec = {m: _modality_spec(self.encoders[role].field_shapes(), names)
                     for role, names in self.fields.items() for m, names in names.items()}
        if isinstance(head, str):
            self.head = create_head(head, self.spec, num_classes, head_options)
        else:
            self.head = head(self.spec, num_classes, head_options)
        self.pad_to_max = self.head.uses_tokens
        self.set_trainable(())  # frozen until the trainer's schedule says otherwise

    def input_specs(self) -> Specs:
        return {role: (enc.text, enc.image) for role, enc in self.encoders.items()}

    def parts(self) -> dict[str, list[nn.Module]]:
        out: dict[str, list[nn.Module]] = {}
        for enc in self.encoders.values():
            for modality, modules in encoder_parts(enc).items():
                out.setdefault(modality, []).extend(modules)
        return out

    def encoders_list(self) -> list[Encoder]:
        return list(self.encoders.values())

    def head_fields(self) -> dict[str, Fields]:
        return {m: names for per_role in self.fields.values() for m, names in per_role.items()}

    def head_batch(self, inputs: dict) -> Batch:
        modalities = {}
        for role, enc in self.encoders.items():
            values = zero_bad_rows(enc._forward(role_inputs(inputs, role)), inputs["ok"])
            for m, names in self.fields[role].items():
                modalities[m] = modality_input(values, names)
        # Manifest row indices stand in for ids: unique per row, which is what heads use ids for (INFIG's queue).
        ids = [str(int(r)) for r in inputs["rows"]] if "rows" in inputs else []
        return Batch(modalities, inputs["labels"], inputs.get("modality_labels", {}), ids)


def _modality_spec(shapes: dict[str, tuple], names: Fields) -> ModalitySpec:
    pooled, tokens, _ = names
    tok = shapes[tokens] if tokens else None
    return ModalitySpec(pooled_dim=int(shapes[pooled][-1]), token_dim=None if tok is None else int(tok[-1]),
                        num_tokens=None if tok is None else int(tok[0]))
