"""What defines a run: the manifest, the caches, the head with its options, the
trainer settings and the seed. Its hash names the run directory, so a finished
run is found and skipped instead of recomputed."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from msa_cache.heads import HEADS
from msa_cache.provenance import from_saved


@dataclass
class TrainConfig:
    lr: float | None = None  # None: 1e-3 (the seed-000 Adam setting; also fine for AdamW heads)
    weight_decay: float | None = None  # None: 0 for Adam heads, 0.01 for AdamW heads
    optimizer: str | None = None  # None: the head's own choice ("adam" for seed-000 heads, else "adamw")
    batch_size: int = 64
    max_epochs: int = 30
    patience: int = 5
    monitor: str = "weighted-f1"
    class_weights: str = "none"  # "none" | "balanced"
    oversample: bool = False
    text_pool: str = "cls"  # which text vector is the pooled text feature: "cls" | "mean"
    amp: bool = True  # mixed precision, used on CUDA only
    # Not part of the run's identity (they change speed, not results on one device):
    device: str = "auto"
    workers: int = 0

    IDENTITY_EXCLUDED = ("device", "workers")

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.IDENTITY_EXCLUDED}


@dataclass
class RunSpec:
    manifest: str
    caches: dict[str, str]  # role ("text", "image", "clip") -> cache folder
    head: str
    head_options: dict[str, Any] = field(default_factory=dict)  # resolved: every Config field
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def identity(self, manifest_fingerprint: str, cache_identity: dict) -> dict:
        return {
            "manifest_fingerprint": manifest_fingerprint,
            "caches": cache_identity,
            "head": self.head,
            "head_options": self.head_options,
            "train": self.train.identity(),
            **head_revision(self.head),
        }

    def to_dict(self) -> dict:
        return asdict(self)  # recurses into the nested train config

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        train = from_saved(TrainConfig, d["train"])
        return cls(d["manifest"], d["caches"], d["head"], d.get("head_options", {}), train, d.get("seed", 0))


def head_revision(head: str) -> dict:
    """{"head_revision": n} for a head whose computation changed (Head.revision > 0), else {} (hashes kept)."""
    revision = getattr(HEADS.get(head), "revision", 0)
    return {"head_revision": revision} if revision else {}


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_dir(runs_root: str | Path, manifest_name: str, spec: RunSpec, chash: str, changed: dict) -> Path:
    """runs/<manifest>/<head>[-<changed options>]-<hash>/seed-<k>: readable, unique."""
    slug = "".join(f"-{k}{v}" for k, v in sorted(changed.items()))[:60].replace("/", "_").replace(" ", "")
    return Path(runs_root) / manifest_name / f"{spec.head}{slug}-{chash}" / f"seed-{spec.seed}"
