"""Corrupting one side of a batch at evaluation time: `--corrupt SIDE=KIND` of `msa-cache evaluate`.

    image=drop        the head's own missing input for every image key (Head.drop_modalities)
    text=shuffle      each row gets another evaluated row's text features (pooled, tokens and mask of every
                      text key): one fixed-seed permutation over all evaluated rows of the split, not per
                      batch; a row may draw itself (a permutation, not a derangement: 1 row in N on average)
    image=noise:0.5   Gaussian noise added with std = 0.5 x the feature's per-dimension std over the run's
                      train rows (pooled vectors and tokens; real tokens only, padding stays zero and masked)

Everything is seeded (`seed`): the shuffle's permutation and each row's noise, which is drawn from
(seed, manifest row, cache field) so it does not depend on how the rows are batched.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch: imported where a batch is corrupted
    from msa_cache.fit.features import FeatureSet
    from msa_cache.heads.base import Batch, Head

SIDES = ("text", "image")
KINDS = ("drop", "shuffle", "noise")
_HINT = "write --corrupt SIDE=KIND with SIDE text or image and KIND drop, shuffle or noise:SCALE (SCALE > 0)"
STD_BLOCK = 256  # train rows per read when measuring token stds


@dataclass(frozen=True)
class Corruption:
    side: str  # "text" | "image"
    kind: str  # "drop" | "shuffle" | "noise"
    scale: float | None = None  # noise only: std as a multiple of the feature's train std
    seed: int = 0

    @property
    def name(self) -> str:
        """"image-drop", "text-shuffle", "image-noise0.5": the evaluation's file name."""
        return f"{self.side}-{self.kind}" + (f"{self.scale:g}" if self.kind == "noise" else "")

    def record(self) -> dict:
        """As an evaluation's JSON records it."""
        return {"side": self.side, "type": self.kind, "scale": self.scale, "seed": self.seed}


def parse_corruption(value: str, seed: int = 0) -> Corruption:
    """`SIDE=KIND` (text=drop, image=shuffle, image=noise:0.5) as a Corruption; ValueError (one line) otherwise."""
    text = str(value).strip()
    side, sep, kind = text.partition("=")
    side, kind = side.strip(), kind.strip()
    if not sep or side not in SIDES:
        raise ValueError(f"--corrupt {text!r}: {_HINT}")
    base, colon, scale_text = kind.partition(":")
    if base not in KINDS or (base == "noise") != bool(colon):
        raise ValueError(f"--corrupt {text!r}: {_HINT}")
    scale = None
    if base == "noise":
        try:
            scale = float(scale_text)
        except ValueError:
            raise ValueError(f"--corrupt {text!r}: the noise scale is not a number; {_HINT}") from None
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"--corrupt {text!r}: the noise scale must be a number > 0 (0 changes nothing); {_HINT}")
    return Corruption(side, base, scale, int(seed))


def side_modalities(modalities, side: str) -> list[str]:
    """The modality keys (text, clip_text, text@-2, ...) that come from `side`."""
    from msa_cache.heads.base import modality_side

    return [m for m in modalities if modality_side(m) == side]


def feature_stds(features: "FeatureSet", rows: np.ndarray, modalities: list[str], with_tokens: bool) -> dict:
    """Per modality: (pooled std [d], token std [d] or None) over `rows` (the run's train rows), per dimension;
    token stds over real tokens only (the mask; image patches have none, all count). float64 sums over
    blocks of rows, so a large cache is never held whole."""
    import torch

    from msa_cache.train.loop import manifest_labels

    if len(rows) < 2:
        raise ValueError("noise needs the feature std over the run's train rows, and it has fewer than 2")
    if not features.pooled:
        features.load_pooled()
    out = {}
    for m in modalities:
        pooled = features.pooled[m][rows].double()
        out[m] = [pooled.std(dim=0, unbiased=False), None]
    if with_tokens and any(features.sources[m].token_field for m in modalities):
        labels, modality_labels = manifest_labels(features.manifest)
        sums: dict[str, list] = {}
        for s in range(0, len(rows), STD_BLOCK):
            batch = features.batch(rows[s:s + STD_BLOCK], labels, modality_labels, True)
            for m in modalities:
                inp = batch.inputs[m]
                if inp.tokens is None:
                    continue
                t = inp.tokens.double()
                w = (torch.ones(t.shape[:2], dtype=torch.float64) if inp.mask is None else inp.mask.double())
                acc = sums.setdefault(m, [0.0, 0.0, 0.0])
                acc[0] = acc[0] + w.sum()
                acc[1] = acc[1] + (t * w.unsqueeze(-1)).sum(dim=(0, 1))
                acc[2] = acc[2] + (t * t * w.unsqueeze(-1)).sum(dim=(0, 1))
        for m, (n, s1, s2) in sums.items():
            mean = s1 / n
            out[m][1] = (s2 / n - mean * mean).clamp(min=0).sqrt()
    return {m: (p.float(), None if t is None else t.float()) for m, (p, t) in out.items()}


class Corrupter:
    """A Corruption bound to one split's evaluated rows: `corrupter(idx, batch)` is `batch` (rows `idx`,
    manifest positions of `features`) with the corruption applied; the input batch is not changed."""

    def __init__(self, corruption: Corruption, head: "Head", features: "FeatureSet", rows: np.ndarray,
                 stds: dict | None = None):
        self.c, self.head, self.features = corruption, head, features
        # Empty for a head that reads no features of this side (uni-text and image=drop): the batch is left
        # as it is, so the evaluation scores what the corruption changes for it, nothing.
        self.modalities = side_modalities(features.modalities, corruption.side)
        rows = np.asarray(rows)
        self.source: dict[int, int] = {}
        if corruption.kind == "shuffle":
            perm = np.random.default_rng(corruption.seed).permutation(len(rows))
            self.source = dict(zip(rows.tolist(), rows[perm].tolist()))
        if corruption.kind == "noise" and stds is None:
            raise ValueError("noise needs the train rows' feature stds")
        self.stds = stds or {}

    def __call__(self, idx: np.ndarray, batch: "Batch") -> "Batch":
        import torch

        from msa_cache.heads.base import Batch

        if not self.modalities:
            return batch
        if self.c.kind == "drop":
            return self.head.drop_modalities(batch, {self.c.side: torch.ones(batch.size, dtype=torch.bool)})
        inputs = dict(batch.inputs)
        if self.c.kind == "shuffle":
            from msa_cache.train.loop import manifest_labels

            labels, modality_labels = manifest_labels(self.features.manifest)
            with_tokens = any(batch.inputs[m].tokens is not None for m in self.modalities)
            src = self.features.batch(np.array([self.source[int(i)] for i in idx]), labels, modality_labels,
                                      with_tokens)
            for m in self.modalities:
                inputs[m] = src.inputs[m]
        else:
            for m in self.modalities:
                inputs[m] = self._noisy(m, np.asarray(idx), batch.inputs[m])
        return Batch(inputs, batch.labels, batch.modality_labels, batch.ids, batch.missing)

    def _noisy(self, modality: str, idx: np.ndarray, inp):
        import torch

        from msa_cache.heads.base import ModalityInput

        pooled_std, token_std = self.stds[modality]
        # Keyed by the cache field, so two keys that read one field (text and text@-2 share the pooled
        # vector) get the same noise there.
        source = self.features.sources[modality]
        pooled_key, token_key = (zlib.crc32(str(f).encode()) for f in (source.pooled_field, source.token_field))
        pooled_noise, token_noise = [], []
        for r in idx.tolist():
            pooled_noise.append(np.random.default_rng([self.c.seed, int(r), pooled_key])
                                .standard_normal(inp.pooled.shape[-1]))
            if inp.tokens is not None:
                token_noise.append(np.random.default_rng([self.c.seed, int(r), token_key])
                                   .standard_normal(tuple(inp.tokens.shape[1:])))
        pooled = inp.pooled + self.c.scale * pooled_std * torch.from_numpy(np.stack(pooled_noise)).float()
        tokens = inp.tokens
        if tokens is not None and token_std is not None:
            noise = self.c.scale * token_std * torch.from_numpy(np.stack(token_noise)).float()
            if inp.mask is not None:  # padding stays zero (and masked)
                noise = noise * inp.mask.unsqueeze(-1).to(noise.dtype)
            tokens = tokens.float() + noise
        return ModalityInput(pooled, tokens, inp.mask)
