"""End-to-end fine-tuning: the cache-mode heads (or the CLIP / VisualBERT baselines) with their
encoders in the loop, staged (head first, then encoders), writing the same run directory as `fit`.

    from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
    spec = FinetuneSpec("manifests/mvsa-single.parquet", "ae-cat", ["minilm", "efficientnet-lite0"],
                        train=FinetuneConfig(max_epochs=3, head_epochs=1))
    result = finetune_run(spec, "runs")
"""
from msa_cache.finetune.baselines import BASELINES
from msa_cache.finetune.config import FinetuneConfig, FinetuneSpec
from msa_cache.finetune.load import load_finetune_run
from msa_cache.finetune.model import FinetuneModel, FinetuneModule
from msa_cache.finetune.train import finetune_run, predict_rows

__all__ = ["BASELINES", "FinetuneConfig", "FinetuneModel", "FinetuneModule", "FinetuneSpec", "finetune_run",
           "load_finetune_run", "predict_rows"]
