"""Modality dropout (`--modality-dropout P`): in each train batch, each row loses one modality with
probability P, never both; the head's own missing input stands in (Head.drop_modalities).

Which side a dropped row loses is uniform among the sides the head reads (text, image; every key of a side
goes together: text, clip_text, text@-2). A head that reads one side only (uni-text, uni-image) has nothing
to drop without dropping everything, so dropout is off for it (Head.droppable_sides is empty; the trainer
logs it).

The draws come from their own torch.Generator on the CPU, seeded from the run's seed: a run is reproducible,
the same on every device, and the other random streams (the epoch order, dropout masks, initialisation) draw
exactly what they draw without modality dropout.
"""
from __future__ import annotations

import numpy as np
import torch

from msa_cache.heads.base import Batch, Head

# Mixed into the run's seed so the dropout stream is not the stream torch.manual_seed(seed) starts.
_STREAM = 0x6D6F6464  # "modd"


class ModalityDropout:
    """Draws each train batch's dropped rows and applies them (`__call__(batch)` -> a new Batch)."""

    def __init__(self, head: Head, p: float, seed: int):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"--modality-dropout {p} is out of range; it must be >= 0 and < 1")
        self.head, self.p, self.sides = head, p, head.droppable_sides()
        state = np.random.SeedSequence([int(seed), _STREAM]).generate_state(1, np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(state))

    @property
    def active(self) -> bool:
        return self.p > 0 and bool(self.sides)

    def rows(self, n: int) -> dict[str, torch.Tensor]:
        """{side: [n] bool}: the rows that lose that side; disjoint, so no row loses both."""
        dropped = torch.rand(n, generator=self.generator) < self.p
        which = torch.randint(len(self.sides), (n,), generator=self.generator)
        return {side: dropped & (which == k) for k, side in enumerate(self.sides)}

    def __call__(self, batch: Batch) -> Batch:
        if not self.active:
            return batch
        return self.head.drop_modalities(batch, self.rows(batch.size))
