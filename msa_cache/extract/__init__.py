"""The extraction stage: manifest + encoders -> sharded fp16 HDF5 feature cache."""
from msa_cache.partition import Partition, resolve_partition
from msa_cache.extract.config import ExtractConfig, default_workers

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
_LAZY = {
    "BadRow": "msa_cache.extract.pipeline",
    "EncoderReport": "msa_cache.extract.pipeline",
    "ExtractReport": "msa_cache.extract.pipeline",
    "ExtractSettings": "msa_cache.extract.pipeline",
    "extract": "msa_cache.extract.pipeline",
    "extract_encoder": "msa_cache.extract.pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BadRow", "EncoderReport", "ExtractConfig", "ExtractReport", "ExtractSettings", "Partition", "default_workers", "extract", "extract_encoder", "resolve_partition"]
