"""The cached mode: train a head on features `extract` stored (trainer, features, its config,
cross-validation folds). Sits beside `finetune/`, on top of `train/`."""
from msa_cache.fit.config import RunSpec, TrainConfig

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
_LAZY = {
    "fit_run": "msa_cache.fit.trainer",
    "load_head": "msa_cache.fit.trainer",
    "predict_probs": "msa_cache.fit.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RunSpec", "TrainConfig", "fit_run", "load_head", "predict_probs"]
