"""The feature cache: schema (schema.py), reader API for the fit stage, verify and info."""
from msa_cache.cache.info import cache_info, format_info
from msa_cache.cache.reader import EncoderCache, list_caches, open_cache
from msa_cache.cache.schema import SCHEMA_VERSION, CacheError, CacheMismatchError
from msa_cache.cache.verify import VerifyResult, cache_folders, verify_cache

__all__ = ["EncoderCache", "open_cache", "list_caches", "verify_cache", "VerifyResult", "cache_folders",
           "cache_info", "format_info", "CacheError", "CacheMismatchError", "SCHEMA_VERSION"]
