"""What the DataLoader workers do: read one manifest row (clean text, decode image).

A row whose image is flagged in the manifest or fails to decode now yields a
zero image with ok=False and the reason; extraction never stops for it.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from msa_cache.encoders.base import ImageSpec, TextSpec
from msa_cache.manifest.images import load_rgb
from msa_cache.manifest.schema import Manifest


class RowDataset(Dataset):
    """text_pair: give the text encoder the manifest's text_pair column as the second segment
    (default: where the manifest has one)."""

    def __init__(self, manifest: Manifest, text: TextSpec | None, image: ImageSpec | None,
                 text_pair: bool | None = None):
        self.text, self.image = text, image
        self.texts = manifest.column("text") if text is not None else None
        use_pairs = manifest.has_text_pair if text_pair is None else text_pair
        self.pairs = manifest.text_pairs() if text is not None and use_pairs else None
        if use_pairs and text is not None and self.pairs is None:
            raise ValueError(f"{manifest.path or 'the posts'}: no text_pair column, but the encoder expects "
                             "sentence + target pairs")
        if image is not None:
            self.paths = [str(manifest.image_path(p)) for p in manifest.column("image")]
            self.image_ok = manifest.column("image_ok")
            self.problems = manifest.column("problem")
            self.transform = image.transform()

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.paths)

    def __getitem__(self, row: int) -> dict:
        item = {"row": row, "ok": True, "problem": ""}
        if self.text is not None:
            item["text"] = self.text.prepare(self.texts[row])
            if self.pairs is not None:
                pair = self.pairs[row]  # None: this row has no second segment
                item["text_pair"] = None if pair is None else self.text.prepare(pair)
        if self.image is not None:
            item["pixels"], item["problem"] = self._load_image(row)
            item["ok"] = not item["problem"]
        return item

    def _load_image(self, row: int) -> tuple[torch.Tensor, str]:
        if not self.image_ok[row]:
            return self._blank(), f"flagged in manifest: {self.problems[row] or 'image_ok=false'}"
        try:
            return self.transform(load_rgb(self.paths[row])), ""
        except Exception as e:  # any decode failure (truncated, not an image, missing) is a bad row
            return self._blank(), f"image does not decode ({self.paths[row]}): {type(e).__name__}: {e}"

    def _blank(self) -> torch.Tensor:
        return torch.zeros(3, self.image.size, self.image.size)


class ShardBatchSampler(Sampler):
    """Batches of consecutive rows that never cross a shard boundary.

    A shard is then always computed from the same batches, whether the run was
    interrupted or not, so a resumed cache is identical to an uninterrupted one.
    `computed` (a boolean mask over all rows) leaves out rows whose features are
    copied from another row of their shard (a shared image); the batches are then
    the shard's computed rows in order, which again depend on the shard alone.
    """

    def __init__(self, ranges: list[tuple[int, int]], batch_size: int, computed: np.ndarray | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.ranges, self.batch_size, self.computed = ranges, batch_size, computed

    def _rows(self, start: int, stop: int) -> list[int]:
        if self.computed is None:
            return list(range(start, stop))
        return (start + np.flatnonzero(self.computed[start:stop])).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in self.ranges:
            rows = self._rows(start, stop)
            for s in range(0, len(rows), self.batch_size):
                yield rows[s:s + self.batch_size]

    def __len__(self) -> int:
        return sum(-(-len(self._rows(start, stop)) // self.batch_size) for start, stop in self.ranges)
