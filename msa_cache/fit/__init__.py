"""The cached mode: train a head on features `extract` stored (trainer, features, its config,
cross-validation folds). Sits beside `finetune/`, on top of `train/`."""
from msa_cache.lazy import lazy_getattr
from msa_cache.fit.config import RunSpec, TrainConfig

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
__getattr__ = lazy_getattr(__name__, {
    "fit_run": "msa_cache.fit.trainer",
    "load_head": "msa_cache.fit.trainer",
    "predict_probs": "msa_cache.fit.trainer",
})


__all__ = ["RunSpec", "TrainConfig", "fit_run", "load_head", "predict_probs"]
