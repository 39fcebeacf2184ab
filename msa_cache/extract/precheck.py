"""Refusals that need no model: a cache folder that already holds a cache made from another manifest
(stale) or with other settings is refused before any encoder loads (`extract` checks here first, the
CLI before it even imports the extraction pipeline and torch). `CachePlan.prepare` (plan.py) checks
the rest (weights, model id, field shapes) once the model is built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py

from msa_cache.cache.schema import (
    INDEX_FILE,
    SCHEMA_VERSION,
    CacheMismatchError,
    config_differences,
    decode_attr,
    ids_sha256,
    read_index,
)
from msa_cache.encoders.catalog import ENCODERS
from msa_cache.encoders.options import EncoderOptions
from msa_cache.encoders.registry import encoder_folder_name
from msa_cache.manifest.schema import Manifest
from msa_cache.names import check_name


def existing_attrs(folder: Path) -> dict | None:
    """The provenance of the cache in `folder` (index.json, else a shard's), None where there is none."""
    if (folder / INDEX_FILE).is_file():
        return read_index(folder)["attrs"]
    done = sorted(folder.glob("shard-*.h5")) if folder.is_dir() else []
    if done:  # index deleted but shards left: judge by a shard
        with h5py.File(done[0], "r") as f:
            return {k: decode_attr(v) for k, v in f.attrs.items()}
    return None


def same_modality_inputs(old: dict, new: dict) -> bool:
    """Two cache setups whose modality read the same inputs (same ids, texts or images): they may differ
    in the manifest fingerprint only where the manifest changed elsewhere. False for caches made before
    modality_inputs_fingerprint was recorded."""
    fingerprint = old.get("modality_inputs_fingerprint")
    return fingerprint is not None and fingerprint == new.get("modality_inputs_fingerprint") \
        and old.get("modality") == new.get("modality")


def refuse_early(manifest: Manifest, name: str, out: str | Path, options: EncoderOptions, *, dtype: str,
                 shard_size: int) -> None:
    """CacheMismatchError, before the encoder's model is loaded, where the cache folder of encoder `name`
    already holds a cache that differs in what is known without the model: the manifest (a stale cache),
    dtype, shard size, pooled-only, layers, the text cleaner. `CachePlan.prepare` checks everything else
    (weights, model id, field shapes) once the model is built."""
    folder = Path(out) / check_name(manifest.name, "manifest name") / check_name(
        encoder_folder_name(name), "encoder folder name")
    old = existing_attrs(folder)
    if old is None:
        return
    new = {"schema_version": SCHEMA_VERSION, "manifest_fingerprint": manifest.fingerprint(),
           "manifest_rows": len(manifest.ids), "ids_sha256": ids_sha256(manifest.ids), "dtype": dtype,
           "pooled_only": options.pooled_only, "layers": list(options.layers), "shard_size": shard_size}
    known = {k: old.get(k) for k in new}
    entry = ENCODERS.get(name)
    if entry is not None:
        new["encoder"], known["encoder"] = name, old.get("encoder")
        new["modality"], known["modality"] = entry.modality, old.get("modality")
    modality = entry.modality if entry is not None else old.get("modality")  # hf:/folder: the cache's own
    if modality is not None and same_modality_inputs(
            old, {"modality": modality, "modality_inputs_fingerprint": manifest.inputs_fingerprint(modality)}):
        # the manifest changed only where this modality never reads (CachePlan.prepare keeps the cache)
        new["manifest_fingerprint"] = old.get("manifest_fingerprint")
    if modality in ("text", "both"):  # a text encoder's cleaner, and whether texts come with a target
        before = old.get("preprocessing") or {}
        new["preprocessing"] = {"clean": options.clean, "text_pair": True if manifest.has_text_pair else None}
        known["preprocessing"] = {"clean": before.get("clean", options.clean), "text_pair": before.get("text_pair")}
    diffs = config_differences(known, new)
    if diffs:
        raise CacheMismatchError(
            f"{folder} holds a cache made with a different setup ({'; '.join(diffs)}); "
            f"use another --out, or delete {folder} to rebuild it")


def refuse_before_loading(manifest: str | Path, encoders: Sequence, out: str | Path, **options) -> None:
    """`refuse_early_all` from `extract`'s own arguments (the CLI calls it before importing the pipeline)."""
    from msa_cache.extract.config import ExtractConfig
    from msa_cache.manifest.schema import read_manifest

    config = ExtractConfig(**options)
    refuse_early_all(read_manifest(manifest), encoders, out, config.encoder_options(), dtype=config.dtype,
                     shard_size=config.shard_size)


def refuse_early_all(manifest: Manifest, encoders: Sequence, out: str | Path, options: EncoderOptions, *,
                     dtype: str, shard_size: int) -> None:
    """`refuse_early` for every encoder given by name (built Encoder objects are checked once built)."""
    for spec in encoders:
        if isinstance(spec, str):
            refuse_early(manifest, spec, out, options, dtype=dtype, shard_size=shard_size)
