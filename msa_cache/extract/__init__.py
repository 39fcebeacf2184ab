"""The extraction stage: manifest + encoders -> sharded fp16 HDF5 feature cache."""
from msa_cache.lazy import lazy_getattr
from msa_cache.partition import Partition, resolve_partition
from msa_cache.extract.config import ExtractConfig, default_workers

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
__getattr__ = lazy_getattr(__name__, {
    "BadRow": "msa_cache.extract.pipeline",
    "EncoderReport": "msa_cache.extract.pipeline",
    "ExtractReport": "msa_cache.extract.pipeline",
    "ExtractSettings": "msa_cache.extract.pipeline",
    "extract": "msa_cache.extract.pipeline",
    "extract_encoder": "msa_cache.extract.pipeline",
})


__all__ = ["BadRow", "EncoderReport", "ExtractConfig", "ExtractReport", "ExtractSettings", "Partition", "default_workers", "extract", "extract_encoder", "resolve_partition"]
