"""Caches of made-up features, written through the real extraction pipeline.

Tests and benchmarks need caches with a known signal, or far bigger than any
model could fill here (bench/scale: 50k rows of MiniLM + EfficientNet-Lite0
sized tokens). `ArrayEncoder` is an `Encoder` whose "model" computes each row's
features with a function of the row index, so the cache is written by the same
sharded, resumable writer as a real one, without holding it in memory.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from msa_cache.encoders.base import Encoder

RowFn = Callable[[np.ndarray], dict[str, np.ndarray]]


class _NoWeights(torch.nn.Module):
    """Placeholder model: `Encoder` expects one to move and hash."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))


class ArrayEncoder(Encoder):
    """Features from `row_fn(rows) -> {field: array [len(rows), ...]}` with fixed per-row `shapes`."""

    supports_layers = False
    per_image = False  # features come from the row index, not the image

    def __init__(self, name: str, modality: str, shapes: dict[str, tuple[int, ...]], row_fn: RowFn, tag: str = ""):
        self.modality = modality
        super().__init__(name, _NoWeights(), model_id=f"synthetic:{name}")
        self._shapes, self._row_fn = {k: tuple(v) for k, v in shapes.items()}, row_fn
        # Stands in for a weights hash: two caches with another generator must not mix.
        self._weights_sha256 = hashlib.sha256(f"{name}:{tag}:{sorted(self._shapes.items())}".encode()).hexdigest()[:16]

    def _field_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._shapes

    def _forward(self, batch: dict) -> dict[str, torch.Tensor]:
        arrays = self._row_fn(batch["rows"].cpu().numpy())
        return {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}


def random_rows(shapes: dict[str, tuple[int, ...]], seed: int = 0, real_tokens: tuple[int, int] | None = None) -> RowFn:
    """Deterministic random features per row (same row -> same values, whatever the batching).

    real_tokens=(lo, hi): masks ("*/mask" fields) get a random count of real tokens in [lo, hi].
    """

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list] = {k: [] for k in shapes}
        for r in rows:
            rng = np.random.default_rng([seed, int(r)])
            for name, shape in shapes.items():
                if name.endswith("/mask"):
                    n = rng.integers(real_tokens[0], real_tokens[1] + 1) if real_tokens else shape[0]
                    out[name].append((np.arange(shape[0]) < n).astype(np.uint8))
                elif name.endswith("/input_ids"):
                    out[name].append(rng.integers(0, 30000, shape).astype(np.int32))
                else:
                    out[name].append(rng.standard_normal(shape, dtype=np.float32))
        return {k: np.stack(v) for k, v in out.items()}

    return fn
