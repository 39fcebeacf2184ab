"""Join encoder caches of one manifest by id into `Batch`es for the heads.

Pooled features (one vector per row and modality) are loaded into memory once;
token features are read lazily from the HDF5 shards batch by batch, so peak
memory does not grow with the dataset.

Modality names a head sees:
    "text", "image"              the text and image caches
    "clip_text", "clip_image"    a `clip` cache (pooled = projected CLIP embedding)
    "text@-2", "image@-3", ...   frozen hidden layers stored with `extract --layers`
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from msa_cache.cache.fields import Fields, fields_record, head_fields
from msa_cache.cache.reader import EncoderCache, list_caches, open_cache
from msa_cache.cache.schema import compat_view
from msa_cache.cache.verify import manifest_mismatch
from msa_cache.errors import UserError
from msa_cache.names import check_name
from msa_cache.heads.base import Batch, ModalityInput, ModalitySpec
from msa_cache.manifest import Manifest


POOLED_BLOCK = 8192  # rows per read when loading pooled features


@dataclass
class _Source:
    """Where one modality's features live in a cache."""

    cache: EncoderCache
    pooled_field: str
    token_field: str | None
    mask_field: str | None


@dataclass
class FeatureSet:
    manifest: Manifest
    sources: dict[str, _Source]
    rows: np.ndarray  # cache row of each manifest row (all caches share the manifest order)
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)
    _ids: list[str] | None = field(default=None, repr=False)

    @property
    def modalities(self) -> list[str]:
        return list(self.sources)

    def spec(self) -> dict[str, ModalitySpec]:
        out = {}
        for name, src in self.sources.items():
            d = src.cache.row_shape(src.pooled_field)[-1]
            tok = src.cache.row_shape(src.token_field) if src.token_field else None
            out[name] = ModalitySpec(pooled_dim=d, token_dim=None if tok is None else tok[-1],
                                     num_tokens=None if tok is None else tok[0])
        return out

    def cache_fingerprints(self) -> dict[str, dict]:
        """Per modality: the cache and fields used, and every extraction setting that changes the
        features (part of a run's identity, so a re-extracted cache never reuses an old run)."""
        return {
            name: {"path": str(src.cache.path), "encoder": src.cache.encoder,
                   "model": src.cache.attrs.get("model_id"), "weights": src.cache.attrs.get("weights_sha256"),
                   "fields": [src.pooled_field, src.token_field],
                   "settings": feature_settings(src.cache.attrs)}
            for name, src in self.sources.items()
        }

    def fields(self) -> dict[str, Fields]:
        """modality -> (pooled, tokens, mask): the fields the head reads (cache.fields.head_fields)."""
        return {name: (src.pooled_field, src.token_field, src.mask_field) for name, src in self.sources.items()}

    def fields_record(self) -> dict[str, dict]:
        return fields_record(self.fields())

    def load_pooled(self) -> None:
        """Every row's pooled features, held in memory in the cache's storage dtype (an fp16 cache:
        half the RAM of float32; `batch` hands out float32, the same values), read a block of rows
        at a time so the peak stays near the final size."""
        for name, src in self.sources.items():
            dtype = torch.float16 if src.cache.dtype(src.pooled_field) == "float16" else torch.float32
            out = torch.empty((len(self.rows), *src.cache.row_shape(src.pooled_field)), dtype=dtype)
            for s in range(0, len(self.rows), POOLED_BLOCK):
                block = self.rows[s:s + POOLED_BLOCK]
                out[s:s + len(block)] = torch.from_numpy(src.cache.read(src.pooled_field, block))
            self.pooled[name] = out

    def batch(self, idx: np.ndarray, labels: np.ndarray, modality_labels: dict[str, np.ndarray],
              with_tokens: bool) -> Batch:
        """Rows `idx` (manifest positions) as a Batch; tokens only when the head needs them."""
        if not self.pooled:
            self.load_pooled()
        idx = np.asarray(idx)
        inputs = {}
        for name, src in self.sources.items():
            tokens = mask = None
            if with_tokens and src.token_field is not None:
                rows = self.rows[idx]
                tokens = torch.from_numpy(src.cache.read(src.token_field, rows))
                if src.mask_field is not None:
                    mask = torch.from_numpy(src.cache.read(src.mask_field, rows).astype(bool))
                    tokens, mask = trim_padding(tokens, mask)
            inputs[name] = ModalityInput(self.pooled[name][idx].float(), tokens, mask)
        if self._ids is None:  # manifest.ids converts the whole Arrow column: once, not per batch
            self._ids = self.manifest.ids
        ids = self._ids
        return Batch(
            inputs=inputs,
            labels=torch.from_numpy(labels[idx]),
            modality_labels={k: torch.from_numpy(v[idx]) for k, v in modality_labels.items()},
            ids=[ids[i] for i in idx],
        )


def feature_settings(attrs: dict) -> dict:
    """The provenance that decides a cache's features: encoder, weights, preprocessing (max length,
    cleaning, image geometry), layers, pooled-only, dtype, fields and the manifest fingerprint;
    not the shard size, which only splits the same rows into files."""
    view = compat_view(attrs)
    view.pop("shard_size", None)
    return view


def trim_padding(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing positions that are padding in every row of the batch.

    Texts are padded to --max-length (128) at extraction, but MVSA tweets have a
    median of 29 tokens: attention heads then spend most of their time on
    padding they mask out anyway. Results are unchanged (padding never counts).
    """
    real = mask.any(dim=0).nonzero()
    keep = int(real[-1]) + 1 if len(real) else 1
    return tokens[:, :keep], mask[:, :keep]


def resolve_caches(manifest: Manifest, cache_root: str | Path, text: str | None, image: str | None,
                   clip: str | None = None) -> dict[str, Path]:
    """Pick the caches to use: named ones, else the only text and only image cache present."""
    available = list_caches(cache_root, check_name(manifest.name, "manifest name"))
    if not available:
        raise FileNotFoundError(
            f"no caches for manifest '{manifest.name}' under {Path(cache_root) / manifest.name}; "
            f"run `msa-cache extract --manifest {manifest.path} --encoder ...` first"
        )

    def pick(name: str | None, modality: str) -> str | None:
        if name is not None:
            check_name(name, f"--{modality if modality != 'both' else 'clip'}-cache")
            if name not in available:
                raise FileNotFoundError(f"no '{name}' cache for '{manifest.name}'; found {sorted(available)}")
            return name
        found = [n for n, p in available.items() if open_cache(p).modality == modality]
        if len(found) > 1:
            raise ValueError(f"several {modality} caches for '{manifest.name}' ({found}); choose one with --{modality}-cache")
        return found[0] if found else None

    chosen = {"text": pick(text, "text"), "image": pick(image, "image")}
    if clip is not None:
        chosen["clip"] = pick(clip, "both")
    return {k: available[v] for k, v in chosen.items() if v is not None}


def open_head_features(manifest: Manifest, caches: dict[str, Path], head: str, head_options: dict,
                       text_pool: str = "cls") -> "FeatureSet":
    """open_features with the fields head `head` (with these options) reads: its hidden layers, its image vector."""
    from msa_cache.heads import get_head

    entry = get_head(head)
    return open_features(manifest, {k: Path(v) for k, v in caches.items()}, text_pool=text_pool,
                         hidden_layers=entry.uses_hidden_layers, image_pool=entry.image_pool(head_options))


def open_features(manifest: Manifest, caches: dict[str, Path], text_pool: str = "cls",
                  hidden_layers: bool = False, image_pool: str = "pooled") -> FeatureSet:
    """Open the chosen caches and check they were made from this manifest, in its row order."""
    sources: dict[str, _Source] = {}
    rows = None
    for role, path in caches.items():
        cache = open_cache(path)
        problem = manifest_mismatch(cache.ids, cache.attrs, manifest)
        if problem:
            raise UserError(f"stale cache: {problem}", path,
                            f"re-extract it from this manifest (`msa-cache extract --manifest {manifest.path} "
                            "--out NEW_FOLDER`), or train with the manifest it was made from")
        rows = np.arange(len(cache.ids))
        for modality, names in head_fields(role, cache.fields(), text_pool, hidden_layers, image_pool).items():
            sources[modality] = _Source(cache, *names)
    if not sources:
        raise ValueError("no caches chosen")
    return FeatureSet(manifest, sources, rows)
