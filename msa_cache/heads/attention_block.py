"""Cross-modal attention-block fusion (seed 000): `ab-cat` and `ab-add`.

For modalities i = 1..N with token features X_i [T_i, d_i] and real-token mask m_i:

    E_i  = X_i W_i^E                                   (encoder, d_i -> D)
    Q_i  = E_i W_i^Q,  K_i = E_i W_i^K,  V_i = E_i W_i^V
    for each ordered pair (i, j), i != j:
        a_ij = softmax(Q_i K_j^T / sqrt(D))            [T_i, T_j], padding keys of j get -inf
        h_ij = a_ij V_j                                [T_i, D]   (modality i reads modality j)
        p_ij = sum_t m_i[t] h_ij[t] / sum_t m_i[t]     [D]        (mean over i's real tokens)
    ab-cat: f = [p_ij for all pairs]  (N(N-1)*D),   ab-add: f = sum_pairs p_ij  (D)
    logits = MLP(f)

Why tokens and not pooled vectors: the seed applied this block to one vector per
modality. With a single key the softmax is exactly 1 whatever the scores are, so
h_ij = V_j and the "attention" is a plain linear map; nothing was attended to,
which is why the seed's AB heads collapsed to predicting one class. Here the
block runs over the cached token sequences (text tokens with their padding
mask, image patches), so each weight is a real choice among T_j keys, and the
pooling happens after the attention, not before it.

`aux["attn"][(i, j)]` holds a_ij as [B, T_i, T_j]; rows of padded queries are
zeroed so each real row sums to 1 over j's real keys.
"""
from __future__ import annotations

import math
import torch
from torch import nn

from msa_cache.heads.base import (Batch, Head, HeadOutput, ModalityInput, ModalitySpec, head_model, masked_mean,
                                  mlp_classifier)
from msa_cache.heads.catalog import ABConfig


def tokens_and_mask(name: str, x: ModalityInput) -> tuple[torch.Tensor, torch.Tensor]:
    """A modality's tokens as float and its mask (all True when the cache has none, e.g. image patches)."""
    if x.tokens is None:
        raise ValueError(f"modality {name!r} has no token features in this batch; this head needs them")
    tokens = x.tokens.float()
    mask = x.mask if x.mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return tokens, mask.bool()


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis of scores [B, Tq, Tk], padding keys (key_mask [B, Tk] False) weighted 0.

    A row with no real key at all gets all-zero weights instead of NaN (softmax over only -inf).
    """
    has_key = key_mask.any(dim=-1)  # [B]
    allowed = (key_mask | ~has_key[:, None])[:, None, :]
    attn = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return attn * has_key[:, None, None].to(attn.dtype)


class AttentionBlockHead(Head):
    fusion: str = ""  # "cat" or "add", set by the registered subclasses

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: ABConfig):
        super().__init__(spec, num_classes, cfg)
        if len(spec) < 2:
            raise ValueError(f"head '{self.name}' fuses across modalities and needs at least two; got {sorted(spec)}")
        self.mods = sorted(spec)
        self.pairs = [(i, j) for i in self.mods for j in self.mods if i != j]
        d = cfg.latent
        self.encoders = nn.ModuleDict({m: nn.Linear(spec[m].token_dim, d) for m in self.mods})
        self.query = nn.ModuleDict({m: nn.Linear(d, d) for m in self.mods})
        self.key = nn.ModuleDict({m: nn.Linear(d, d) for m in self.mods})
        self.value = nn.ModuleDict({m: nn.Linear(d, d) for m in self.mods})
        fused_dim = d * len(self.pairs) if self.fusion == "cat" else d
        self.classifier = mlp_classifier(fused_dim, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        masks, q, k, v = {}, {}, {}, {}
        for m in self.mods:
            tokens, masks[m] = tokens_and_mask(m, batch.inputs[m])
            e = self.encoders[m](tokens)
            q[m], k[m], v[m] = self.query[m](e), self.key[m](e), self.value[m](e)

        scale = 1.0 / math.sqrt(self.cfg.latent)
        pooled, attn_maps = [], {}
        for i, j in self.pairs:
            attn = masked_softmax(q[i] @ k[j].transpose(1, 2) * scale, masks[j])  # [B, T_i, T_j]
            attn = attn * masks[i][:, :, None].to(attn.dtype)  # padded queries read nothing
            pooled.append(masked_mean(attn @ v[j], masks[i]))  # [B, D]
            attn_maps[(i, j)] = attn
        fused = torch.cat(pooled, dim=-1) if self.fusion == "cat" else torch.stack(pooled).sum(dim=0)
        return HeadOutput(self.classifier(fused), {"attn": attn_maps})

    def explain_weights(self, aux: dict, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's attention over the other's tokens, averaged over the real query tokens."""
        attn = aux["attn"]
        # text queries over image keys [B, L, P]: mean over real text queries (padded rows are zero).
        n_text = text_mask.sum(1, keepdim=True).clamp(min=1).to(torch.float32)
        image = attn[("text", "image")].float().sum(1) / n_text
        # image queries over text keys [B, P, L]: every patch is a real query.
        text = attn[("image", "text")].float().mean(1)
        return image, text


@head_model("ab-cat")
class ABCatHead(AttentionBlockHead):
    fusion = "cat"


@head_model("ab-add")
class ABAddHead(AttentionBlockHead):
    fusion = "add"
