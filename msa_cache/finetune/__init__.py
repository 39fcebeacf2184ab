"""End-to-end fine-tuning: the cache-mode heads (or the CLIP / VisualBERT baselines) with their
encoders in the loop, staged (head first, then encoders), writing the same run directory as `fit`.

    from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
    spec = FinetuneSpec("manifests/mvsa-single.parquet", "ae-cat", ["minilm", "efficientnet-lite0"],
                        train=FinetuneConfig(max_epochs=3, head_epochs=1))
    result = finetune_run(spec, "runs")
"""
from msa_cache.lazy import lazy_getattr
from msa_cache.finetune.config import FinetuneConfig, FinetuneSpec

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
__getattr__ = lazy_getattr(__name__, {
    "BASELINES": "msa_cache.finetune.baselines",
    "load_finetune_run": "msa_cache.finetune.load",
    "FinetuneModel": "msa_cache.finetune.model",
    "FinetuneModule": "msa_cache.finetune.model",
    "finetune_run": "msa_cache.finetune.train",
    "predict_rows": "msa_cache.finetune.train",
})


__all__ = ["BASELINES", "FinetuneConfig", "FinetuneModel", "FinetuneModule", "FinetuneSpec", "finetune_run", "load_finetune_run", "predict_rows"]
