"""What defines a fine-tune run: the manifest, the encoders, the head (or a
baseline), the staged trainer settings and the seed. Its hash names the run
directory, runs/<manifest>/finetune-<head>-<encoders>-<hash>/seed-K, next to the
cached-feature runs and in the same format."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from msa_cache.manifest import CLEANERS
from msa_cache.provenance import from_saved
from msa_cache.train.identity import FINETUNE, head_revision
from msa_cache.metrics import MONITOR_NAMES
from msa_cache.settings import check_settings, identity_fields

TEXT_AUGS = ("none", "translation", "synonyms")
MODALITIES = ("text", "image")
EXPORTABLE = MODALITIES  # `export-encoder --modality`: a run's encoders by modality
VISUALBERT_DEFAULT = "uclanlp/visualbert-vqa-coco-pre"  # `--baseline visualbert` without --model
# The lr schedule fine-tune runs use (recorded in their identity); finetune/optim.py implements it. Here, not
# there, so the options load without torch and transformers.
LR_SCHEDULE = "transformers-linear-warmup"


@dataclass
class FinetuneConfig:
    # The CLI flags (cli/finetune.py) are generated from these fields and their metadata (help, type,
    # min / max / min_open / max_open, choices), as the trainer's and the heads' are.
    lr: float = field(default=1e-3, metadata={"min": 0, "min_open": True, "help": "head learning rate"})  # + new projections
    encoder_lr: float = field(default=2e-5, metadata={"min": 0, "min_open": True,
                                                      "help": "unfrozen encoders' learning rate"})
    weight_decay: float = field(default=0.01, metadata={"min": 0, "help": "AdamW weight decay"})
    # fits MiniLM/ViT-B fine-tuning in ~4 GB with AMP
    batch_size: int = field(default=16, metadata={"min": 1})
    # optimizer step every N batches (effective batch N * batch_size)
    accumulate: int = field(default=1, metadata={"min": 1,
                                                 "help": "gradient accumulation: one optimizer step per N batches"})
    max_epochs: int = field(default=10, metadata={"min": 1})
    patience: int = field(default=3, metadata={"min": 1, "help": "early stopping: epochs without a better dev score"})
    monitor: str | None = field(default=None, metadata={  # None: the manifest's default (its papers' metric)
        "choices": MONITOR_NAMES,
        "help": "dev metric for early stopping and model selection [default: the manifest's]"})
    head_epochs: int = field(default=1, metadata={"min": 0, "help": "epochs with frozen encoders before unfreezing"})
    # which encoders are unfrozen later (its flag, --unfreeze text,image|none, is built in cli/finetune.py)
    unfreeze: list[str] = field(default_factory=lambda: list(MODALITIES))
    # first epoch with unfrozen encoders; None = head_epochs + 1
    unfreeze_from: int | None = field(default=None, metadata={
        "type": int, "min": 1, "help": "first epoch with unfrozen encoders (overrides --head-epochs)"})
    warmup: float = field(default=0.1, metadata={  # fraction of each param group's steps spent warming up linearly
        "min": 0, "max": 1, "max_open": True,
        "help": "linear warm-up fraction of each parameter group's steps, then linear decay"})
    class_weights: str = field(default="none", metadata={"choices": ("none", "balanced")})
    text_pool: str = field(default="cls", metadata={"choices": ("cls", "mean"),
                                                    "help": "text vector used as the pooled text feature"})
    max_length: int = field(default=128, metadata={"min": 2})
    clean: str = field(default="none", metadata={"choices": tuple(sorted(CLEANERS))})
    augment: bool = field(default=True, metadata={  # on train rows
        "help": "train images: flip, random crop with padding, random erasing"})
    text_aug: str = field(default="none", metadata={
        "choices": TEXT_AUGS,
        "help": "translation: the back-translated text (translation.json) with p=0.5; synonyms: built-in table"})
    limit_train: int | None = field(default=None, metadata={  # slow machines
        "type": int, "min": 1,
        "help": "train on a fixed random subset of N train rows (slow machines; recorded in the run)"})
    # CUDA only: bf16 where the GPU has it natively, else fp16 + GradScaler
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA (bf16 on Ampere+, else fp16 + GradScaler)"})
    # Not part of the run's identity (memory and speed, not results):
    grad_checkpointing: bool = field(default=False, metadata={
        "identity": False, "help": "trade compute for memory where the encoder supports it (HF models)"})
    device: str = field(default="auto", metadata={"identity": False})  # its flag is cli/options.device_option
    workers: int = field(default=0, metadata={"min": 0, "identity": False, "help": "DataLoader workers decoding images"})

    # The order of the flags in `finetune --help` (the fields' order is kept for saved configs).
    FLAG_ORDER = ("lr", "encoder_lr", "weight_decay", "warmup", "batch_size", "accumulate", "max_epochs", "patience",
                  "monitor", "head_epochs", "unfreeze", "unfreeze_from", "class_weights", "text_pool", "max_length",
                  "clean", "augment", "text_aug", "limit_train", "amp", "grad_checkpointing", "device", "workers")

    def __post_init__(self):
        # ValueError naming the flag, by the same rule as the CLI's flags (settings.check_settings).
        check_settings(self)
        check_unfreeze(self.unfreeze)

    def resolved(self) -> "FinetuneConfig":
        """With --unfreeze-from folded into head_epochs (one way to say one thing)."""
        c = dataclasses.replace(self, unfreeze=sorted(set(self.unfreeze)))
        if c.unfreeze_from is not None:
            c.head_epochs, c.unfreeze_from = c.unfreeze_from - 1, None
        return c

    @property
    def first_unfrozen_epoch(self) -> int:
        return self.head_epochs + 1 if self.unfreeze_from is None else self.unfreeze_from

    def identity(self) -> dict:
        return identity_fields(self)


def parse_unfreeze(value: str) -> list[str]:
    """--unfreeze's value: "text", "image", "text,image" or "none" -> the modalities (checked)."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return [] if parts == ["none"] else check_unfreeze(parts)


def check_unfreeze(modalities) -> list[str]:
    """ValueError naming --unfreeze when it lists anything but text and image."""
    bad = [modalities] if isinstance(modalities, str) else [m for m in modalities if m not in MODALITIES]
    if bad:
        raise ValueError(f"--unfreeze {','.join(map(str, bad))}: choose from text,image (or 'none')")
    return list(modalities)


@dataclass
class FinetuneSpec:
    manifest: str
    head: str  # a registered head, or the baseline's name
    encoders: list[str]  # as given: registry names, hf:ORG/NAME or folders; baselines: their model first
    baseline: str | None = None  # a registered baseline (finetune/baselines.py)
    head_options: dict[str, Any] = field(default_factory=dict)
    train: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0

    def identity(self, manifest_fingerprint: str, encoder_records: dict) -> dict:
        return {
            "mode": FINETUNE,
            "manifest_fingerprint": manifest_fingerprint,
            # The pretrained weights, not the names: a renamed folder with the same weights is the same run.
            "encoders": {role: {k: r.get(k) for k in ("encoder", "weights_sha256", "preprocessing")}
                         for role, r in sorted(encoder_records.items())},
            "head": self.head,
            "baseline": self.baseline,
            "head_options": self.head_options,
            "train": self.train.identity(),
            "lr_schedule": LR_SCHEDULE,
            **({} if self.baseline else head_revision(self.head)),
        }

    def to_dict(self) -> dict:
        return asdict(self)  # recurses into the nested train config

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneSpec":
        train = from_saved(FinetuneConfig, d["train"])
        return cls(d["manifest"], d["head"], list(d["encoders"]), d.get("baseline"), d.get("head_options", {}),
                   train, d.get("seed", 0))


def encoder_slug(name: str) -> str:
    """A short folder-safe name: 'minilm', 'hf:org/tiny-bert' -> 'tiny-bert', '/models/vit/' -> 'vit'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.removeprefix("hf:")).name) or "model"


def finetune_run_dir(runs_root: str | Path, manifest_name: str, spec: FinetuneSpec, chash: str,
                     changed: dict) -> Path:
    """runs/<manifest>/finetune-<head>-<enc>+<enc>[-<changed options>]-<hash>/seed-<k>."""
    encoders = "+".join(encoder_slug(e) for e in spec.encoders)[:60]
    slug = "".join(f"-{k}{v}" for k, v in sorted(changed.items()))[:40].replace("/", "_").replace(" ", "")
    name = f"finetune-{spec.head}" + (f"-{encoders}" if encoders else "") + slug
    return Path(runs_root) / manifest_name / f"{name}-{chash}" / f"seed-{spec.seed}"
