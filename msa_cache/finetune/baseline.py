"""What a fine-tune baseline is: a whole model the seed papers compare against (not a registry head),
registered by name with its traits, so a new baseline is one file (a `Baseline` subclass decorated
with `@register_baseline`) plus its entry in finetune/baselines.py.

A baseline says
    name, paper                 --baseline NAME, its paper (model cards); its --help line and default
                                --model are in its entry in finetune/baselines.py (read without torch)
    spec_encoders(model, encoders)   --model / --encoder -> FinetuneSpec.encoders: its model first (where
                                recorded), then its --encoder's (train/command.py maps them back this way)
    open_encoders(spec, options), assemble(spec, num_classes, encoders)   its encoders and its model
    own_encoders                encoder names it builds itself -> their builder (record.py rebuilds them)

Its classifier is `ConcatHead` (every modality's pooled vector concatenated -> MLP), taking only the
HeadConfig options.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from msa_cache.encoders import ENCODERS, Encoder, EncoderOptions
from msa_cache.finetune.config import FinetuneSpec
from msa_cache.finetune.model import FinetuneModule
from msa_cache.heads.base import Batch, Head, HeadConfig, HeadOutput, ModalitySpec, mlp_classifier

BASELINES: dict[str, "Baseline"] = {}


class Baseline:
    name: str = ""
    paper: str = ""
    own_encoders: dict[str, Callable[..., Encoder]] = {}

    def spec_encoders(self, model: str | None, encoders: list[str]) -> list[str]:
        """FinetuneSpec.encoders from --model and --encoder; ValueError (one line) where they do not fit."""
        raise NotImplementedError

    def open_encoders(self, spec: FinetuneSpec, options: EncoderOptions) -> dict[str, Encoder]:
        raise NotImplementedError

    def assemble(self, spec: FinetuneSpec, num_classes: int, encoders: dict[str, Encoder]) -> FinetuneModule:
        raise NotImplementedError


def register_baseline(cls: type[Baseline]) -> type[Baseline]:
    """Register the class under its name (its --help line and default --model are in its entry in
    finetune/baselines.py, the light list `finetune --help` reads)."""
    if cls.name in BASELINES:
        raise RuntimeError(f"baseline '{cls.name}' is registered twice")
    BASELINES[cls.name] = cls()
    return cls


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline '{name}'; choose {' or '.join(sorted(BASELINES))}")
    return BASELINES[name]


class ConcatHead(Head):
    """The baselines' classifier: every modality's pooled vector concatenated (sorted by name) -> MLP."""

    name = "concat"

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: HeadConfig):
        super().__init__(spec, num_classes, cfg)
        self.mods = sorted(spec)
        self.classifier = mlp_classifier(sum(spec[m].pooled_dim for m in self.mods), cfg.hidden, num_classes,
                                         cfg.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.classifier(torch.cat([batch.inputs[m].pooled.float() for m in self.mods], dim=-1)))


def head_config(baseline: str, options: dict) -> HeadConfig:
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"baseline '{baseline}' takes only the head options {sorted(known)}; got {unknown}")
    return HeadConfig(**options)


def concat_head(baseline: str):
    def make(spec: dict[str, ModalitySpec], num_classes: int, options: dict) -> ConcatHead:
        return ConcatHead(spec, num_classes, head_config(baseline, options))

    return make


def hub_name(model: str) -> str:
    """A registry name, hf:ORG/NAME or folder as is; a bare hub id becomes hf:ORG/NAME."""
    return model if model in ENCODERS or model.startswith("hf:") or Path(model).is_dir() else f"hf:{model}"
