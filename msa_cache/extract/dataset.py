"""What the DataLoader workers do: read one manifest row (clean text, decode image).

A row whose image is flagged in the manifest or fails to decode now yields a
zero image with ok=False and the reason; extraction never stops for it.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from msa_cache.encoders.base import ImageSpec, TextSpec
from msa_cache.manifest.images import load_rgb
from msa_cache.manifest.schema import Manifest


class RowDataset(Dataset):
    def __init__(self, manifest: Manifest, text: TextSpec | None, image: ImageSpec | None):
        self.text, self.image = text, image
        self.texts = manifest.column("text") if text is not None else None
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
    """

    def __init__(self, ranges: list[tuple[int, int]], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.ranges, self.batch_size = ranges, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in self.ranges:
            for s in range(start, stop, self.batch_size):
                yield list(range(s, min(s + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for start, stop in self.ranges)
