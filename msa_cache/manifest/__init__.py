"""Manifests: one validated Parquet file per dataset (see schema.py)."""
from msa_cache.manifest.schema import (
    COLUMNS,
    SPLITS,
    Manifest,
    ManifestError,
    ManifestMeta,
    read_manifest,
    rows_to_table,
    write_manifest,
)
from msa_cache.manifest.text import CLEANERS, decode_bytes, get_cleaner

__all__ = [
    "COLUMNS", "SPLITS", "Manifest", "ManifestError", "ManifestMeta", "read_manifest",
    "rows_to_table", "write_manifest", "CLEANERS", "decode_bytes", "get_cleaner",
]
