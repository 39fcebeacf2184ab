"""Unimodal baselines: one modality's pooled feature -> MLP.

    p(y | x) = softmax(MLP(x_m)),   x_m = pooled feature of modality m

`uni-text` reads `inputs["text"].pooled` (the trainer fills it with the text
encoder's CLS or masked-mean vector, per its own flag), `uni-image` reads
`inputs["image"].pooled`. Any other modality in the batch is ignored. They set
the floor a fusion head has to clear to show that the second modality helps.
"""
from __future__ import annotations

from msa_cache.heads.base import Batch, Head, HeadOutput, ModalitySpec, head_model, mlp_classifier
from msa_cache.heads.catalog import HeadConfig


class UniHead(Head):
    """MLP on a single modality's pooled feature; subclasses pick the modality."""

    modality: str = ""

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: HeadConfig):
        super().__init__(spec, num_classes, cfg)
        self.classifier = mlp_classifier(spec[self.modality].pooled_dim, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.classifier(batch.inputs[self.modality].pooled.float()))


@head_model("uni-text")
class UniTextHead(UniHead):
    modality = "text"


@head_model("uni-image")
class UniImageHead(UniHead):
    modality = "image"
