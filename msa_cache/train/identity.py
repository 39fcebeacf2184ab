"""A run's identity, shared by both training modes: its mode, the hash that names its folder, the
head's revision that enters it, and the dev metric a run selects on."""
from __future__ import annotations

import hashlib
import json

from msa_cache.heads import HEADS

# A run's mode. config.json records "mode": "finetune" for fine-tune runs and nothing for cached ones
# (runs made before fine-tuning existed), so `run_mode` is the one reader of that field.
CACHED, FINETUNE = "cached", "finetune"


def run_mode(config: dict) -> str:
    """CACHED or FINETUNE: the training mode a run's config.json (or a fine-tune identity) records."""
    return FINETUNE if config.get("mode") == FINETUNE else CACHED


def monitor_for(train, manifest) -> str:
    """The dev metric a run selects on: the one given (`TrainConfig` or `FinetuneConfig`), else the
    dataset's default from its manifest."""
    return train.monitor or manifest.default_monitor


def head_revision(head: str) -> dict:
    """{"head_revision": n} for a head whose computation changed (Head.revision > 0), else {} (hashes kept)."""
    revision = getattr(HEADS.get(head), "revision", 0)
    return {"head_revision": revision} if revision else {}


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]


def changed_options(options: dict, defaults: dict) -> dict:
    """The head options that differ from the mode's defaults: they name the run folder (rundir slugs)."""
    return {k: v for k, v in options.items() if defaults.get(k) != v}
