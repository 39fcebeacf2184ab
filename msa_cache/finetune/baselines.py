"""The registered fine-tune baselines (finetune/baseline.py says what a baseline is): one import line
each, which registers it. A new baseline is its own file plus its line here."""
import msa_cache.finetune.clip_baseline  # noqa: F401  (each import registers its baseline)
import msa_cache.finetune.visualbert  # noqa: F401
from msa_cache.finetune.baseline import BASELINES, Baseline, get_baseline

__all__ = ["BASELINES", "Baseline", "get_baseline"]
