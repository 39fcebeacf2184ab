"""What the user chooses at extraction time, for every encoder (no torch: `extract`'s options read it)."""
from __future__ import annotations

from dataclasses import dataclass

from msa_cache.manifest.text import get_cleaner


@dataclass(frozen=True)
class EncoderOptions:
    """What the user chooses at extraction time (the same for every encoder of a run)."""

    max_length: int = 128
    clean: str = "none"
    layers: tuple[int, ...] = ()
    pooled_only: bool = False

    def __post_init__(self):
        get_cleaner(self.clean)  # fail early on an unknown cleaner name
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the special tokens), got {self.max_length}")
        if self.layers and self.pooled_only:
            raise ValueError("--layers stores token states; it cannot be combined with --pooled-only")
        object.__setattr__(self, "layers", tuple(int(k) for k in self.layers))
