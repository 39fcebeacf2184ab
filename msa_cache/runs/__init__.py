"""Runs: train heads on cached features, one directory per head x config x seed."""
from msa_cache.runs.config import RunSpec, TrainConfig
from msa_cache.runs.trainer import fit_run, load_head, predict_probs

__all__ = ["RunSpec", "TrainConfig", "fit_run", "load_head", "predict_probs"]
