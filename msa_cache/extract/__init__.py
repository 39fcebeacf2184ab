"""The extraction stage: manifest + encoders -> sharded fp16 HDF5 feature cache."""
from msa_cache.partition import Partition, resolve_partition
from msa_cache.extract.config import ExtractConfig, default_workers
from msa_cache.extract.pipeline import (
    BadRow,
    EncoderReport,
    ExtractReport,
    ExtractSettings,
    extract,
    extract_encoder,
)

__all__ = ["BadRow", "EncoderReport", "ExtractConfig", "ExtractReport", "ExtractSettings", "Partition", "default_workers",
           "extract", "extract_encoder", "resolve_partition"]
