"""The cache folder for one (manifest, encoder, settings): its layout, provenance and index.

`CachePlan.prepare()` creates the folder and index.json, or, if the folder
already holds a cache, refuses to add to it unless every compat key matches.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msa_cache import __version__
from msa_cache.cache.schema import (
    FLOAT_DTYPES,
    INDEX_FILE,
    SCHEMA_VERSION,
    CacheMismatchError,
    config_differences,
    field_dtype,
    ids_sha256,
    shard_name,
    shard_ranges,
)
from msa_cache.encoders.base import Encoder
from msa_cache.encoders.registry import encoder_folder_name
from msa_cache.extract.precheck import existing_attrs, same_modality_inputs
from msa_cache.manifest.schema import Manifest
from msa_cache.names import check_name
from msa_cache.provenance import library_versions


@dataclass
class CachePlan:
    folder: Path
    ids: list[str]
    shard_size: int
    ranges: list[tuple[int, int]]
    fields: dict[str, tuple[tuple[int, ...], str]]  # name -> (per-row shape, storage dtype)
    attrs: dict

    @classmethod
    def build(cls, manifest: Manifest, encoder: Encoder, out: str | Path, *, dtype: str = "float16",
              shard_size: int = 1024, extract_config: dict | None = None) -> "CachePlan":
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype '{dtype}': choose one of {FLOAT_DTYPES}")
        folder = Path(out) / check_name(manifest.name, "manifest name") / check_name(
            encoder_folder_name(encoder.name), "encoder folder name")
        ids = manifest.ids
        fields = {name: (tuple(shape), field_dtype(name, dtype)) for name, shape in encoder.field_shapes().items()}
        attrs = {
            "schema_version": SCHEMA_VERSION,
            "encoder": encoder.name,
            "modality": encoder.modality,
            "model_id": encoder.model_id,
            "revision": encoder.revision,
            "weights_sha256": encoder.weights_sha256,
            # Sentence + target pairs (Twitter-15/17) are recorded, so a pair cache is never read as a plain one.
            "preprocessing": {**encoder.preprocessing(),
                              **({"text_pair": True} if encoder.text is not None and manifest.has_text_pair else {})},
            # An exported fine-tuned encoder: its run id and weights hash (informational; the
            # weights hash above already keeps other weights out of this cache).
            "encoder_source": encoder.source or None,
            "manifest_name": manifest.name,
            "manifest_path": str(manifest.path) if manifest.path else None,
            "manifest_fingerprint": manifest.fingerprint(),
            "inputs_fingerprint": manifest.inputs_fingerprint(),  # what the features depend on (not labels)
            # what this encoder's modality read: an image cache outlives a change of the texts, and vice versa
            "modality_inputs_fingerprint": manifest.inputs_fingerprint(encoder.modality),
            "manifest_rows": len(ids),
            "ids_sha256": ids_sha256(ids),
            "dtype": dtype,
            "pooled_only": encoder.options.pooled_only,
            "layers": list(encoder.options.layers),
            "shard_size": shard_size,
            "fields": {k: {"shape": list(s), "dtype": d} for k, (s, d) in fields.items()},
            "library_versions": library_versions(),
            "msa_cache_version": __version__,
            "extract_config": extract_config or {},
        }
        return cls(folder, ids, shard_size, shard_ranges(len(ids), shard_size), fields, attrs)

    def shard_path(self, k: int) -> Path:
        return self.folder / shard_name(k)

    def shard_attrs(self, k: int) -> dict:
        start, stop = self.ranges[k]
        return {**self.attrs, "shard_index": k, "row_start": start, "row_stop": stop}

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows) // self.shard_size

    def index(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "num_rows": len(self.ids),
            "shard_size": self.shard_size,
            "shards": [{"file": shard_name(k), "start": a, "stop": b} for k, (a, b) in enumerate(self.ranges)],
            "fields": self.attrs["fields"],
            "attrs": self.attrs,
        }

    def prepare(self) -> None:
        """Create the folder and index, or check that the existing cache is the same setup."""
        existing = self._existing_attrs()
        if existing is not None and same_modality_inputs(existing, self.attrs):
            # Made from another version of the manifest whose changes this modality never read (an image
            # cache after the texts changed): the same features, so the cache is kept as it is; shards
            # still to write carry its manifest fingerprints, so every shard agrees.
            for key in ("manifest_fingerprint", "inputs_fingerprint"):
                self.attrs[key] = existing.get(key)
        if existing is not None:
            diffs = config_differences(existing, self.attrs)
            if diffs:
                raise CacheMismatchError(
                    f"{self.folder} holds a cache made with a different setup ({'; '.join(diffs)}); "
                    f"use another --out, or delete {self.folder} to rebuild it")
            if (self.folder / INDEX_FILE).is_file():
                return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{INDEX_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.index(), indent=1))
        os.replace(tmp, self.folder / INDEX_FILE)  # atomic: concurrent processes write the same layout

    def _existing_attrs(self) -> dict | None:
        return existing_attrs(self.folder)
