"""The contract between heads and the trainer (the model side; torch).

A head is an nn.Module that takes a `Batch` of cached features and returns
`HeadOutput(logits, aux)`. Its name, options and traits live in its entry in
heads/catalog.py (no torch), and `@head_model(name)` copies them onto the class:

- `Config`: a dataclass of its hyper-parameters. The CLI builds its flags from
  these dataclasses (one catalog, no hand-kept flag maps): a field `latent`
  becomes `--latent`, a bool field `ipfl=True` becomes `--ipfl/--no-ipfl`.
  Field docs go in `field(metadata={"help": ...})`.
- `uses_tokens`: the trainer streams token features (text tokens + mask, image
  patches) from the HDF5 cache only for heads that need them; pooled features
  are always there and live in memory.
- `optimizer`: "adam" (seed-000 heads, lr 1e-3) or "adamw" (default).

The class itself supplies:

- `loss(out, batch, class_weight)`: the total training loss and a dict of named
  terms for history.jsonl. The default is cross-entropy on labeled rows.
- `explain_weights(aux, text_mask)`: the (image, text) weights `msa-cache explain`
  draws, for heads whose catalog entry says what they mean (`explains`).

Modalities are keyed by name ("text", "image", and e.g. "clip_text",
"clip_image" for a CLIP cache); heads that fuse should work for N modalities
unless their method is inherently two-sided (MDSE, INFIG).
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa_cache.heads.catalog import HEADS, HeadConfig, HeadEntry


@dataclass
class ModalitySpec:
    """Shapes of one modality's cached features (what a head is built for)."""

    pooled_dim: int
    token_dim: int | None = None  # None when the cache has no token features
    num_tokens: int | None = None  # L for text, P for image patches


@dataclass
class ModalityInput:
    pooled: torch.Tensor  # [B, d] float
    tokens: torch.Tensor | None = None  # [B, T, d] float
    mask: torch.Tensor | None = None  # [B, T] bool, True = a real (non-padding) token

    def to(self, device) -> "ModalityInput":
        return ModalityInput(
            self.pooled.to(device),
            None if self.tokens is None else self.tokens.to(device),
            None if self.mask is None else self.mask.to(device),
        )


@dataclass
class Batch:
    inputs: dict[str, ModalityInput]
    labels: torch.Tensor  # [B] long, -1 = unlabeled
    # Per-modality labels where the manifest has them (e.g. {"text": ..., "image": ...}), -1 = unknown.
    modality_labels: dict[str, torch.Tensor] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    # Rows whose modality is missing (Head.drop_modalities): modality -> [B] bool, True = missing.
    # Empty when nothing is; a head that handles absence itself (late fusion) reads it.
    missing: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device) -> "Batch":
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.labels.to(device),
            {k: v.to(device) for k, v in self.modality_labels.items()},
            self.ids,
            {k: v.to(device) for k, v in self.missing.items()},
        )

    @property
    def size(self) -> int:
        return self.labels.shape[0]


SIDES = ("text", "image")


def modality_side(modality: str) -> str:
    """The input a modality key comes from: "text" for text, clip_text, text@-2; "image" for image,
    clip_image, image@-3. Corruptions and modality dropout act on a side (all of its keys at once)."""
    base = modality.split("@")[0].removeprefix("clip_")
    if base not in SIDES:
        raise ValueError(f"modality '{modality}' is neither text nor image")
    return base


def zeros_missing(inp: ModalityInput, rows: torch.Tensor) -> ModalityInput:
    """The default missing input: zeros in `rows` for the pooled vector and every token; a missing text
    keeps one "real" (zero) token in its mask so masked means and softmaxes stay defined."""
    keep = (~rows).to(inp.pooled.dtype).unsqueeze(-1)
    tokens, mask = inp.tokens, inp.mask
    if tokens is not None:
        tokens = tokens * keep.unsqueeze(-1).to(tokens.dtype)
    if mask is not None:
        first = torch.zeros_like(mask)
        first[:, 0] = True
        mask = torch.where(rows.unsqueeze(-1), first, mask)
    return ModalityInput(inp.pooled * keep, tokens, mask)


@dataclass
class HeadOutput:
    logits: torch.Tensor  # [B, C]
    # Anything else a head's loss or `explain` needs (reconstructions, attention maps, embeddings).
    aux: dict = field(default_factory=dict)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over labeled rows only (label -1 ignored); 0 when a batch has none."""
    if (labels >= 0).any():
        return F.cross_entropy(logits.float(), labels, weight=class_weight, ignore_index=-1)
    return logits.sum() * 0.0


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis counting only real tokens ([B, T, d] -> [B, d])."""
    if mask is None:
        return tokens.mean(dim=1)
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def mlp_classifier(in_dim: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


# The catalog traits `@head_model` copies onto a head's class (read as `cls.uses_tokens`, `self.optimizer`, ...).
TRAITS = ("Config", "paper", "uses_tokens", "optimizer", "modalities", "fit_mode", "revision", "finetune_defaults",
          "uses_hidden_layers")


def head_model(name: str):
    """Class decorator: the model of catalog entry `name`; its Config and traits come from the entry."""

    def wrap(cls: type["Head"]) -> type["Head"]:
        entry = HEADS[name]
        where = f"{cls.__module__}:{cls.__qualname__}"
        if entry.model != where:
            raise RuntimeError(f"head '{name}': the catalog names {entry.model} as its model, not {where}")
        cls.name, cls.entry = name, entry
        for trait in TRAITS:
            setattr(cls, trait, getattr(entry, trait))
        return cls

    return wrap


class Head(nn.Module):
    # Defaults for the bare class; a registered head's values come from its catalog entry (see TRAITS).
    name: ClassVar[str] = ""
    entry: ClassVar[HeadEntry | None] = None
    paper: ClassVar[str] = ""
    Config: ClassVar[type] = HeadConfig
    uses_tokens: ClassVar[bool] = False
    optimizer: ClassVar[str] = "adamw"
    modalities: ClassVar[tuple[str, ...] | None] = None
    revision: ClassVar[int] = 0
    finetune_defaults: ClassVar[dict] = {}
    uses_hidden_layers: ClassVar[bool] = False
    fit_mode: ClassVar[str] = "gradient"

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg):
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.cfg = cfg
        # Set by `logits_only()`: a head may then skip terms that only its loss reads.
        self.predicting = False

    @contextlib.contextmanager
    def logits_only(self):
        """Within this block forward() needs to return only logits (and cheap aux for `explain`).

        Heads with costly auxiliary losses skip them here: INFIG's fine-grained cosines are
        B*B*P*L floats per level, 6.6 GB at the predict batch of 256 with 768-d tokens.
        """
        before, self.predicting = self.predicting, True
        try:
            yield self
        finally:
            self.predicting = before

    @classmethod
    def encoder_layers(cls, options: dict) -> tuple[int, ...]:
        """Hidden layers (e.g. (-2, -3)) the encoders must also return in fine-tune mode, as "text@-2", ..."""
        return cls.entry.encoder_layers(options) if cls.entry is not None else ()

    def explain_weights(self, aux: dict, text_mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(image [B, P], text [B, L]) weights for `msa-cache explain` from a forward's aux; None for a side
        the head gives none. Heads that can be explained override it and say in their catalog entry
        (`explains`) what the weights mean."""
        raise ValueError(f"head '{self.name}' cannot be explained")

    @classmethod
    def image_pool(cls, options: dict) -> str:
        """The image vector the head reads as `pooled`: "pooled" (the mean of the image tokens) or "cls"
        (the visual [CLS] where the encoder has one, else that mean); cache.fields.head_fields picks the field.
        The catalog entry answers it (`get_head(name).image_pool`), so it is known before a model is built."""
        return cls.entry.image_pool(options) if cls.entry is not None else "pooled"

    def optimizer_stepped(self) -> None:
        """Called by the trainers once after every optimizer step (after all accumulated micro-batches)."""

    def run_record(self, fields: dict) -> dict:
        """What this head did in training that its options alone do not say (which labels a loss used,
        which cache field stood for a token), as short strings; the trainers store it in config.json
        ("head_record") and the model card lists it. `fields`: the run's fields record ({modality:
        {"pooled", "tokens", "mask"}}). Empty for most heads."""
        return {}

    def missing_input(self, modality: str, inp: ModalityInput, rows: torch.Tensor) -> ModalityInput:
        """This head's stand-in for modality `modality` in the rows where `rows` ([B] bool) is True
        (docs/methods.md lists each head's). Default: zeros (zeros_missing)."""
        return zeros_missing(inp, rows)

    def droppable_sides(self) -> tuple[str, ...]:
        """The sides (in SIDES order) that can go missing while the head still has an input: those its
        modalities cover (the catalog's `modalities` where it names them, else what it was built on), when
        there are two; () for a head that reads one side (uni-text, uni-image)."""
        keys = self.modalities if self.modalities is not None else tuple(self.spec)
        sides = {modality_side(k) for k in keys}
        return tuple(s for s in SIDES if s in sides) if len(sides) >= 2 else ()

    def drop_modalities(self, batch: Batch, rows: dict[str, torch.Tensor]) -> Batch:
        """`batch` with a side missing in some rows: `rows` maps a side ("text", "image") to [B] bool.
        Every modality key of that side (text, clip_text, text@-2, ...) gets this head's missing input
        there, and `batch.missing` records it. The batch passed in is not changed."""
        inputs, missing = dict(batch.inputs), dict(batch.missing)
        for modality, inp in batch.inputs.items():
            side_rows = rows.get(modality_side(modality))
            if side_rows is None or not bool(side_rows.any()):
                continue
            side_rows = side_rows.to(inp.pooled.device)
            inputs[modality] = self.missing_input(modality, inp, side_rows)
            before = missing.get(modality)
            missing[modality] = side_rows if before is None else (before | side_rows)
        return Batch(inputs, batch.labels, batch.modality_labels, batch.ids, missing)

    def forward(self, batch: Batch) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, out: HeadOutput, batch: Batch, class_weight: torch.Tensor | None = None):
        ce = masked_ce(out.logits, batch.labels, class_weight)
        return ce, {"ce": float(ce.detach())}
