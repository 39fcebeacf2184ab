"""Joint multi-head self-attention over all modalities' tokens (seed 002): `mha`.

For modalities i = 1..N with token features X_i [T_i, d_i] and real-token mask m_i:

    H_i = X_i W_i + t_i (+ P_i)                  (project to `width`, plus a learned type embedding t_i;
                                                  --grid-pos: P_i[r*n + c] = R_i[r] + C_i[c] on an n x n grid)
    H   = [H_1; ...; H_N]                         [sum_i T_i, width], mask m = [m_1; ...; m_N]
    H   = TransformerEncoderLayer(H, key_padding_mask = not m)   repeated `layers` times, each
          layer = post-norm MHSA(`num_heads`) + ReLU feed-forward (4*width), as in torch.nn
    f   = sum_t m[t] H[t] / sum_t m[t]           (mean over real tokens of the joint sequence)
    logits = MLP(f)                               (Linear-ReLU-Linear with dropout)

Every token can attend to every other token of either modality, so cross-modal
and within-modal interactions are learned together; the type embedding tells the
modalities apart. Position: text tokens and ViT patches come out of encoders with
position embeddings, so their states carry position. A CNN's grid cells (ResNet,
EfficientNet: 7x7, flattened row-major) carry none beyond what zero padding at the
borders leaks, and self-attention is permutation-invariant, so without help the head
sees the grid as a bag of cells. `--grid-pos` adds a learned 2-D position embedding
(one row and one column vector per cell, summed) to every image modality whose token
count is a square. It is off by default so runs match those made before it existed
(the README's tables); turn it on for CNN image caches.
"""
from __future__ import annotations

import torch
from torch import nn

from msa_cache.heads.attention_block import tokens_and_mask
from msa_cache.heads.base import Batch, Head, HeadOutput, ModalitySpec, head_model, masked_mean, mlp_classifier
from msa_cache.heads.catalog import MHAConfig


def grid_side(name: str, spec: ModalitySpec) -> int | None:
    """n for an image modality whose tokens are an n x n grid, else None."""
    t = spec.num_tokens
    if not name.endswith("image") or not t:
        return None
    n = int(round(t ** 0.5))
    return n if n * n == t else None


@head_model("mha")
class MHAHead(Head):

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: MHAConfig):
        super().__init__(spec, num_classes, cfg)
        if cfg.width % cfg.num_heads:
            raise ValueError(f"mha: width {cfg.width} is not divisible by num_heads {cfg.num_heads}")
        self.mods = sorted(spec)
        self.proj = nn.ModuleDict({m: nn.Linear(spec[m].token_dim, cfg.width) for m in self.mods})
        self.type_emb = nn.Parameter(torch.randn(len(self.mods), cfg.width) * 0.02)
        self.grid = {m: n for m in self.mods if cfg.grid_pos and (n := grid_side(m, spec[m])) is not None}
        if cfg.grid_pos and not self.grid:
            raise ValueError(f"mha --grid-pos: no image modality with a square token grid among {sorted(spec)}")
        self.grid_rows = nn.ParameterDict({m: nn.Parameter(torch.randn(n, cfg.width) * 0.02) for m, n in self.grid.items()})
        self.grid_cols = nn.ParameterDict({m: nn.Parameter(torch.randn(n, cfg.width) * 0.02) for m, n in self.grid.items()})
        # Separate layer objects (not nn.TransformerEncoder's deep copies) so layers start from different inits.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.width, cfg.num_heads, dim_feedforward=4 * cfg.width,
                                       dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.layers)
        )
        self.classifier = mlp_classifier(cfg.width, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        seqs, masks = [], []
        for idx, m in enumerate(self.mods):
            tokens, mask = tokens_and_mask(m, batch.inputs[m])
            h = self.proj[m](tokens) + self.type_emb[idx]
            if m in self.grid:  # row-major grid: cell r*n + c gets R[r] + C[c]
                h = h + (self.grid_rows[m][:, None, :] + self.grid_cols[m][None, :, :]).flatten(0, 1)
            seqs.append(h)
            masks.append(mask)
        h, mask = torch.cat(seqs, dim=1), torch.cat(masks, dim=1)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)  # torch's mask convention: True = ignore
        pooled = masked_mean(h, mask)
        return HeadOutput(self.classifier(pooled), {"embedding": pooled})
