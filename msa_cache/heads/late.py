"""Late fusion: one classifier per modality, probabilities averaged.

    p_i(y | x_i) = softmax(MLP_i(x_i))             for each modality i = 1..N
    p(y | x)     = (1/N) sum_i p_i(y | x_i)
    logits       = log p(y | x)                    (so softmax(logits) = p exactly)
    loss         = sum_i CE(p_i, y)

Each classifier is trained by its own cross-entropy rather than by the CE of
the average: the CE of an average lets a confident modality carry a useless one,
so the useless one never has to learn anything; separate CEs make every
modality's classifier a real classifier and the average a true ensemble.

A missing modality (batch.missing) leaves the ensemble: a row averages the
probabilities of its present modalities only, and in training a classifier's CE
counts only the rows where its modality is there (its stand-in input carries
nothing to learn from). Rows with nothing missing compute exactly as above.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from msa_cache.heads.base import Batch, Head, HeadOutput, ModalitySpec, head_model, masked_ce, mlp_classifier
from msa_cache.heads.catalog import HeadConfig


@head_model("late")
class LateFusionHead(Head):
    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: HeadConfig):
        super().__init__(spec, num_classes, cfg)
        self.mods = sorted(spec)
        self.classifiers = nn.ModuleDict(
            {m: mlp_classifier(spec[m].pooled_dim, cfg.hidden, num_classes, cfg.dropout) for m in self.mods}
        )

    def forward(self, batch: Batch) -> HeadOutput:
        per = {m: self.classifiers[m](batch.inputs[m].pooled.float()) for m in self.mods}
        log_p = torch.stack([torch.log_softmax(z, dim=-1) for z in per.values()])  # [N, B, C]
        if not any(m in batch.missing for m in self.mods):
            # log of the mean of probabilities, computed in log space for stability.
            logits = torch.logsumexp(log_p, dim=0) - math.log(len(self.mods))
            return HeadOutput(logits, {"logits": per})
        present = self.present(batch).to(log_p.device)  # [N, B]
        # the mean over the present modalities: log sum_i present_i p_i - log sum_i present_i
        logits = torch.logsumexp(log_p + present.float().log().unsqueeze(-1), dim=0) \
            - present.sum(dim=0).float().log().unsqueeze(-1)
        return HeadOutput(logits, {"logits": per, "present": present})

    def present(self, batch: Batch) -> torch.Tensor:
        """[N, B] bool: modality i is there in row b. A row with every modality missing (never made by
        drop_modalities, which leaves one side) averages all of them, stand-ins included, as a row with none."""
        everywhere = torch.ones_like(batch.labels, dtype=torch.bool)
        present = torch.stack([~batch.missing[m] if m in batch.missing else everywhere for m in self.mods])
        return present | ~present.any(dim=0, keepdim=True)

    def loss(self, out: HeadOutput, batch: Batch, class_weight: torch.Tensor | None = None):
        present = out.aux.get("present")
        terms = {m: masked_ce(z, batch.labels if present is None else batch.labels.masked_fill(~present[i], -1),
                              class_weight)
                 for i, (m, z) in enumerate(out.aux["logits"].items())}
        total = sum(terms.values())
        log = {f"ce_{m}": float(v.detach()) for m, v in terms.items()}
        # "ce" keeps its meaning across heads: the CE of the head's output (not optimised directly here).
        log["ce"] = float(masked_ce(out.logits.detach(), batch.labels, class_weight))
        return total, log
