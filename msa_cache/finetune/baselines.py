"""The fine-tune baselines, listed without importing their code, so `finetune --help` imports no torch:
one entry each (its name, --help line, default --model and the module that holds its `Baseline`
subclass; finetune/baseline.py says what a baseline is). The module is imported when the baseline is
used. A new baseline is its own file plus its entry here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from msa_cache.finetune.config import VISUALBERT_DEFAULT


@dataclass(frozen=True)
class BaselineEntry:
    name: str
    module: str  # holds the `@register_baseline` class of this name
    summary: str  # its line in `finetune --help` (--baseline)
    default_model: str  # what --model defaults to (shown in --help)

    def load(self):
        """The registered `Baseline` (imports its module, and torch)."""
        importlib.import_module(self.module)
        from msa_cache.finetune.baseline import BASELINES as LOADED

        return LOADED[self.name]


CATALOG: dict[str, BaselineEntry] = {e.name: e for e in (
    BaselineEntry("clip", "msa_cache.finetune.clip_baseline", "CLIP towers + classifier",
                  "openai/clip-vit-base-patch32"),
    BaselineEntry("visualbert", "msa_cache.finetune.visualbert", "VisualBERT over --encoder's patch features",
                  VISUALBERT_DEFAULT),
)}


def get_baseline(name: str):
    """The registered `Baseline` called `name`; ValueError (one line) for an unknown name."""
    if name not in CATALOG:
        raise ValueError(f"unknown baseline '{name}'; choose {' or '.join(sorted(CATALOG))}")
    return CATALOG[name].load()


def __getattr__(name: str):
    if name == "BASELINES":  # every baseline, loaded: name -> Baseline (imports their code)
        return {n: get_baseline(n) for n in CATALOG}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BASELINES", "CATALOG", "BaselineEntry", "get_baseline"]
