"""The cached mode: train a head on features `extract` stored (trainer, features, its config,
cross-validation folds). Sits beside `finetune/`, on top of `train/`."""
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run, load_head, predict_probs

__all__ = ["RunSpec", "TrainConfig", "fit_run", "load_head", "predict_probs"]
