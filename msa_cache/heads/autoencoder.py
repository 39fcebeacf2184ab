"""Autoencoder fusion (seed 000): `ae-cat` and `ae-add`.

For modalities i = 1..N with pooled features x_i:

    e_i   = E_i(x_i) = ReLU(W_i x_i + b_i)                 (encoder, d_i -> D)
    z     = W_f [e_1; ...; e_N] + b_f                      (ae-cat: concatenate, then linear N*D -> D)
    z     = W_f (e_1 + ... + e_N) + b_f                    (ae-add: sum, then linear D -> D)
    x̂_i   = G_i(z) = V_i z + c_i                           (decoder, D -> d_i)
    logits = MLP(z)

    loss  = lambda_ce * CE(logits, y) + sum_i lambda_i * MSE(x̂_i, x_i)

The decoders force the fused code z to keep every modality's content rather than
only what the labels reward, which is the regulariser the method relies on. The
reconstruction term needs no label, but both trainers (`fit`, `finetune`) feed only
labeled train rows, so it regularises on the rows the CE sees; it is not trained on
unlabeled rows (masked_ce would let a batch hold some: the head supports it, the
trainers do not do it).
`lambda_i` is `lambda_rec` unless `lambda_rec_per` overrides it for modality i.

A missing modality (batch.missing) gets zeros as its input, as in the bimodal
autoencoders trained with one input zeroed (Ngiam et al., "Multimodal Deep
Learning", ICML 2011); its reconstruction term skips those rows, which have no
input to reconstruct (the MSE is the mean over the rows where it is there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msa_cache.heads.base import Batch, Head, HeadOutput, ModalitySpec, head_model, masked_ce, mlp_classifier
from msa_cache.heads.catalog import AEConfig


def parse_per_modality(text: str, mods: list[str], default: float, what: str = "lambda_rec_per") -> dict[str, float]:
    """'text=1,image=0.5' -> {"text": 1.0, "image": 0.5, <others>: default}; bad input is a ValueError."""
    out = {m: float(default) for m in mods}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in out:
            raise ValueError(f"{what}: expected 'modality=weight' with modality in {mods}, got {item!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{what}: weight for {name!r} is not a number: {value!r}") from None
    return out


class AutoencoderHead(Head):
    fusion: str = ""  # "cat" or "add", set by the registered subclasses

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: AEConfig):
        super().__init__(spec, num_classes, cfg)
        self.mods = sorted(spec)
        self.lambda_rec = parse_per_modality(cfg.lambda_rec_per, self.mods, cfg.lambda_rec)
        d = cfg.latent
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(spec[m].pooled_dim, d), nn.ReLU()) for m in self.mods})
        self.fuse = nn.Linear(d * len(self.mods) if self.fusion == "cat" else d, d)
        self.decoders = nn.ModuleDict({m: nn.Linear(d, spec[m].pooled_dim) for m in self.mods})
        self.classifier = mlp_classifier(d, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        codes = [self.encoders[m](batch.inputs[m].pooled.float()) for m in self.mods]
        fused = torch.cat(codes, dim=-1) if self.fusion == "cat" else torch.stack(codes).sum(dim=0)
        z = self.fuse(fused)
        recon = {m: self.decoders[m](z) for m in self.mods}
        return HeadOutput(self.classifier(z), {"z": z, "recon": recon})

    def loss(self, out: HeadOutput, batch: Batch, class_weight: torch.Tensor | None = None):
        ce = masked_ce(out.logits, batch.labels, class_weight)
        total = self.cfg.lambda_ce * ce
        log = {"ce": float(ce.detach())}
        for m, x_hat in out.aux["recon"].items():
            target = batch.inputs[m].pooled.float()
            if m in batch.missing:  # rows whose input is a stand-in: nothing to reconstruct
                there = ~batch.missing[m]
                mse = F.mse_loss(x_hat[there], target[there]) if bool(there.any()) else x_hat.sum() * 0.0
            else:
                mse = F.mse_loss(x_hat, target)
            total = total + self.lambda_rec[m] * mse
            log[f"rec_{m}"] = float(mse.detach())
        return total, log


@head_model("ae-cat")
class AECatHead(AutoencoderHead):
    fusion = "cat"


@head_model("ae-add")
class AEAddHead(AutoencoderHead):
    fusion = "add"
