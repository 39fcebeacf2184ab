"""Rows that share one image (Twitter-15/17: one row per target of a tweet) are encoded once.

An image-only encoder's features depend on the image file alone, so within a shard
the first row with a given image (keyed by its resolved path) is computed and the
rows after it get a copy. Sharing stops at shard boundaries: a shard's content then
depends on its own rows only, so resuming after a kill, or splitting the shards
between processes, still gives the same bytes. Rows flagged in the manifest
(image_ok false) are never shared; each keeps its own zeros and reason.
"""
from __future__ import annotations

import os

import numpy as np

from msa_cache.manifest.schema import Manifest


def image_sources(manifest: Manifest, ranges: list[tuple[int, int]]) -> np.ndarray:
    """source[row]: the row whose image features `row` takes (`row` itself where it is computed)."""
    paths = [os.path.realpath(manifest.image_path(p)) for p in manifest.column("image")]
    ok = manifest.column("image_ok")
    source = np.arange(len(paths))
    for start, stop in ranges:
        first: dict[str, int] = {}
        for row in range(start, stop):
            if ok[row]:
                source[row] = first.setdefault(paths[row], row)
    return source


class SharedRows:
    """Expands a computed batch with the copies its rows owe to later rows of the same shard."""

    def __init__(self, source: np.ndarray):
        self.source = source
        self.computed = source == np.arange(len(source))
        self.copies: dict[int, list[int]] = {}
        for row in np.flatnonzero(~self.computed):
            self.copies.setdefault(int(source[row]), []).append(int(row))

    @property
    def n_copied(self) -> int:
        return int((~self.computed).sum())

    def copied_in(self, ranges: list[tuple[int, int]]) -> int:
        return int(sum((~self.computed[a:b]).sum() for a, b in ranges))

    def expand(self, rows: np.ndarray, arrays: dict[str, np.ndarray], ok: np.ndarray,
               problems: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list[str]]:
        """(rows, arrays, ok, problems) of a computed batch -> the same for it plus its copies, by row."""
        if not any(int(r) in self.copies for r in rows):
            return rows, arrays, ok, problems
        out_rows, take = [], []
        for i, r in enumerate(rows.tolist()):
            for target in [r] + self.copies.get(r, []):
                out_rows.append(target)
                take.append(i)
        order = np.argsort(out_rows, kind="stable")
        take = np.asarray(take)[order]
        return (np.asarray(out_rows, dtype=rows.dtype)[order], {k: v[take] for k, v in arrays.items()},
                ok[take], [problems[i] for i in take])
