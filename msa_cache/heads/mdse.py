"""MDSE: Modality-Dependent Sentiments Exploring (Li et al., ICASSP 2024), the model (`mdse`).

The equations, the choices made where the paper is silent or inconsistent, and how this
differs from the paper are in docs/methods.md ("mdse"); the options are `MDSEConfig`
in heads/catalog.py.

Interface:
- inputs: the "text" (tokens + padding mask) and "image" (tokens) modalities of a
  token cache, each projected to `--width`; padding never takes part.
- `forward` -> logits and aux: "shared" (f^s), "emb_image" / "emb_text" / "emb_fused"
  (f_v, f_z, f: MACL's embeddings), "w_image" [B, M] /
  "w_text" [B, N] (the private-feature weights 1 - s, 0 at padding; absent for a
  side ablated with --no-ipfl / --no-tpfl), which `explain_weights` returns.
- `loss` -> L_SC + lambda * L_MACL (`--lambda-macl`, temperature `--tau`), logged as
  "ce" and "macl"; per-modality labels come from `batch.modality_labels` (rows whose
  label is -1 there use the multimodal label).
- a missing modality (batch.missing): zeros stand in (the default missing input:
  its tokens project to the projection's bias, one constant token); MACL leaves
  out that side's embedding f_v or f_z in those rows (it holds no sentiment of
  its own to contrast), the fused f stays.
- ablations: --no-ipfl, --no-tpfl, --pfl-no-ada, --no-macl, --macl-unimodal.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from msa_cache.heads.base import (Batch, Head, HeadOutput, ModalitySpec, head_model, masked_ce, masked_mean,
                                  mlp_classifier)
from msa_cache.heads.catalog import MDSEConfig


# ---------------------------------------------------------------------------
# building blocks


class Attention(nn.Module):
    """Multi-head attention with an explicit key mask (True = real key).

    Written out rather than nn.MultiheadAttention so masking behaves the same on
    every torch version (no fast paths, no NaN rows) and stays readable.
    """

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, d = x.shape
        S, h = ctx.shape[1], self.heads
        q = self.q(x).view(B, T, h, d // h).transpose(1, 2)  # [B, h, T, dh]
        k, v = self.kv(ctx).view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x [B, h, S, dh]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)  # [B, h, T, S]
        if ctx_mask is not None:
            # finfo.min, not -inf: a row with no real key stays finite instead of NaN.
            att = att.masked_fill(~ctx_mask[:, None, None, :], torch.finfo(att.dtype).min)
        att = self.drop(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.out(y)


class AttentionLayer(nn.Module):
    """A post-LN transformer layer: x = LN(x + A(x, ctx)); x = LN(x + FF(x)).

    Cross attention when ctx is the other modality (co-attention stream),
    self-attention when ctx is x (the private "ada" filter).
    """

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn = Attention(d, heads, dropout)
        self.ln1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, ctx, ctx_mask):
        x = self.ln1(x + self.drop(self.attn(x, ctx, ctx_mask)))
        return self.ln2(x + self.drop(self.ff(x)))


def fuse_mlp(in_dim: int, d: int, dropout: float) -> nn.Sequential:
    """The paper's FF over pooled features: [k*d] -> d."""
    return nn.Sequential(nn.Linear(in_dim, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))


def fp32(t: torch.Tensor):
    """A block where autocast stays off, for the sums below that overflow or lose precision in fp16/bf16."""
    if t.device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=t.device.type, enabled=False)
    return contextlib.nullcontext()


def shared_similarity(x: torch.Tensor, shared_tokens: torch.Tensor) -> torch.Tensor:
    """S = x f^s^T ([B, T_x, d] x [B, T_s, d] -> [B, T_x, T_s]), in fp32 (sums of d products)."""
    with fp32(x):
        return torch.einsum("bid,bjd->bij", x.float(), shared_tokens.float())


def private_weights(sim: torch.Tensor, x_mask: torch.Tensor | None, shared_mask: torch.Tensor | None) -> torch.Tensor:
    """1 - s from S [B, T_x, T_s]: s = softmax over the real x tokens of the row sums over the real shared rows.

    Returns [B, T_x] in fp32, 0 at x padding.
    """
    if shared_mask is not None:
        sim = sim.masked_fill(~shared_mask[:, None, :], 0.0)
    c = sim.sum(-1)  # [B, T_x]
    if x_mask is not None:
        # padding gets s = 0; finfo.min, not -inf, keeps an all-padding row finite.
        c = c.masked_fill(~x_mask, torch.finfo(c.dtype).min)
    w = 1.0 - c.softmax(dim=-1)
    if x_mask is not None:
        w = w.masked_fill(~x_mask, 0.0)
    return w


def macl_loss(emb: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised-contrastive MACL over rows of `emb` [R, d] with `labels` [R] (-1 = leave out).

    For each anchor i: -log( sum_{j!=i, l_j=l_i} exp(cos_ij/tau) / sum_{j!=i} exp(cos_ij/tau) ),
    averaged over anchors with at least one positive; 0 (with a graph) when none has.
    """
    keep = labels >= 0
    emb, labels = emb[keep], labels[keep]
    if emb.shape[0] < 2:
        return emb.sum() * 0.0
    with fp32(emb):  # cos / tau spans ~±14 at tau 0.07: too coarse in bf16
        z = F.normalize(emb.float(), dim=-1)
        logits = z @ z.t() / tau  # [R, R]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = (labels[:, None] == labels[None, :]) & not_self
    has_pos = pos.any(dim=1)
    if not has_pos.any():
        return emb.sum() * 0.0
    # Only anchors with a positive: every row below has a finite numerator and denominator.
    logits, pos, not_self = logits[has_pos], pos[has_pos], not_self[has_pos]
    log_all = logits.masked_fill(~not_self, float("-inf")).logsumexp(dim=1)
    log_pos = logits.masked_fill(~pos, float("-inf")).logsumexp(dim=1)
    return (log_all - log_pos).mean()


def macl_label_source(modality: str, own: int, stand_in: int) -> str:
    """How a side's MACL labels were made, from the training rows' counts."""
    if own == 0:
        return "multimodal label (no per-modality labels)"
    if stand_in == 0:
        return f"{modality} labels"
    return f"{modality} labels on {own} of {own + stand_in} training rows, else the multimodal label"


def _real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The token mask, or all-real when the cache gives none."""
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask


# ---------------------------------------------------------------------------
# the head


@head_model("mdse")
class MDSE(Head):

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: MDSEConfig):
        super().__init__(spec, num_classes, cfg)
        d, h, p = cfg.width, cfg.num_heads, cfg.dropout
        self.proj_text = nn.Linear(spec["text"].token_dim, d)
        self.proj_image = nn.Linear(spec["image"].token_dim, d)
        # 1. dual cross-modal interaction: one co-attention layer, a stream per modality.
        self.co_image = AttentionLayer(d, h, p)  # f_v^s: text queries over image keys/values
        self.co_text = AttentionLayer(d, h, p)  # f_z^s: image queries over text keys/values
        # 2. private feature learning; a disabled side builds no private modules at all.
        use_ada = not cfg.pfl_no_ada
        self.ada_image = AttentionLayer(d, h, p) if cfg.ipfl and use_ada else None
        self.ada_text = AttentionLayer(d, h, p) if cfg.tpfl and use_ada else None
        self.fuse_image = fuse_mlp((2 if cfg.ipfl else 1) * d, d, p)  # f_v = FF([f^s, f_v^p]) or FF(f^s)
        self.fuse_text = fuse_mlp((2 if cfg.tpfl else 1) * d, d, p)
        # 3. fusion and classifier.
        self.fuse = fuse_mlp(2 * d, d, p)
        # Training rows whose MACL label was the modality's own / the multimodal stand-in (run_record).
        self.macl_label_rows = {"image": [0, 0], "text": [0, 0]}
        self.classifier = mlp_classifier(d, cfg.hidden, num_classes, p)

    def _private(self, x, x_mask, shared_tokens, shared_mask, ada):
        """(f^p, 1 - s) for one side: reweight tokens by 1 - s from S = x f^s^T, filter (ada), masked mean."""
        w = private_weights(shared_similarity(x, shared_tokens), x_mask, shared_mask).to(x.dtype)
        xp = w.unsqueeze(-1) * x
        if ada is not None:
            xp = ada(xp, xp, x_mask)
        return masked_mean(xp, x_mask), w

    def forward(self, batch: Batch) -> HeadOutput:
        ti, ii = batch.inputs["text"], batch.inputs["image"]
        z, zm = self.proj_text(ti.tokens), ti.mask  # [B, N, d], [B, N]
        v, vm = self.proj_image(ii.tokens), ii.mask  # [B, M, d], [B, M] or None

        fs_v = self.co_image(z, v, vm)  # CA(z, v, v): [B, N, d], a row per text token
        fs_z = self.co_text(v, z, zm)  # CA(v, z, z): [B, M, d], a row per image token
        both_mask = torch.cat([_real(z, zm), _real(v, vm)], dim=1)  # padding text rows excluded
        f_s = masked_mean(torch.cat([fs_v, fs_z], dim=1), both_mask)  # [B, d]

        aux = {"shared": f_s}
        if self.cfg.ipfl:
            fp_v, aux["w_image"] = self._private(v, vm, fs_v, zm, self.ada_image)  # S: M x N
            f_v = self.fuse_image(torch.cat([f_s, fp_v], dim=-1))
        else:
            f_v = self.fuse_image(f_s)
        if self.cfg.tpfl:
            fp_z, aux["w_text"] = self._private(z, zm, fs_z, vm, self.ada_text)  # S: N x M
            f_z = self.fuse_text(torch.cat([f_s, fp_z], dim=-1))
        else:
            f_z = self.fuse_text(f_s)

        f = self.fuse(torch.cat([f_v, f_z], dim=-1))
        aux.update(emb_image=f_v, emb_text=f_z, emb_fused=f)
        return HeadOutput(self.classifier(f), aux)

    def explain_weights(self, aux: dict, text_mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The private-feature weights 1 - s; a side trained with --no-ipfl/--no-tpfl has none."""
        return aux.get("w_image"), aux.get("w_text")

    def macl_set(self, out: HeadOutput, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The contrastive set: embeddings [3B or 2B, d] and their labels (-1 = leave out)."""
        y = batch.labels

        def side(name):  # the modality's own label where known, else the multimodal one
            ml = batch.modality_labels.get(name)
            if self.training and not self.predicting:
                own = 0 if ml is None else int(((ml >= 0) & (y >= 0)).sum())
                counts = self.macl_label_rows[name]
                counts[0] += own
                counts[1] += int((y >= 0).sum()) - own
            return y if ml is None else torch.where(ml >= 0, ml, y)

        embs = [out.aux["emb_image"], out.aux["emb_text"]]
        labels = [side("image"), side("text")]
        for i, name in enumerate(("image", "text")):
            if name in batch.missing:  # a stand-in's embedding is no sample of its side
                labels[i] = labels[i].masked_fill(batch.missing[name].to(labels[i].device), -1)
        if not self.cfg.macl_unimodal:
            embs.append(out.aux["emb_fused"])
            labels.append(y)
        return torch.cat(embs), torch.cat(labels)

    def run_record(self, fields: dict) -> dict:
        """Which labels MACL contrasted: per-modality labels (the manifest's text_label / image_label) or
        the multimodal label standing in for them. Results that differ in this are different methods."""
        if not self.cfg.macl:
            return {"macl_labels": "none (--no-macl)"}
        record = {"macl_labels_" + name: macl_label_source(name, *self.macl_label_rows[name])
                  for name in ("image", "text")}
        if not self.cfg.macl_unimodal:
            record["macl_labels_fused"] = "multimodal label"
        return record

    def loss(self, out: HeadOutput, batch: Batch, class_weight: torch.Tensor | None = None):
        ce = masked_ce(out.logits, batch.labels, class_weight)
        if not self.cfg.macl:
            return ce, {"ce": float(ce.detach())}
        macl = macl_loss(*self.macl_set(out, batch), tau=self.cfg.tau)
        total = ce + self.cfg.lambda_macl * macl
        return total, {"ce": float(ce.detach()), "macl": float(macl.detach())}
