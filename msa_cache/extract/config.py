"""What the user chooses for one `extract` call, declared once: the Python API's defaults and the CLI flags
(cli/extract.py generates them with cli/options.dataclass_options) both come from these fields."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from msa_cache.cache.schema import DEFAULT_SHARD_SIZE, FLOAT_DTYPES
from msa_cache.encoders.options import EncoderOptions
from msa_cache.manifest import CLEANERS


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ExtractConfig:
    # Field order is the flags' order in `msa-cache extract --help`; metadata as TrainConfig's
    # (help, type, min/max, choices). Encoder options take their defaults from EncoderOptions.
    batch_size: int = field(default=32, metadata={"min": 1,
                                                  "help": "rows per forward pass (halves itself on CUDA out-of-memory)"})
    max_length: int = field(default=EncoderOptions.max_length, metadata={
        "min": 2, "help": "text tokens per row (padding/truncation)"})
    clean: str = field(default=EncoderOptions.clean, metadata={
        "choices": sorted(CLEANERS),
        "help": "text cleaning applied before tokenising; seed000-v3: seed 000's four rules "
                "(lowercase, URLs -> <url>, @user -> <USER>, hashtags split into words by the pinned "
                "wordsegment); seed000-v2 (no .@user, no bare trailing http, lowercase tags kept whole) "
                "and seed000-v1 (rewrote e-mail addresses): superseded, kept to reproduce old caches"})
    layers: tuple[int, ...] = field(default=EncoderOptions.layers, metadata={
        "help": "also store these hidden layers' token states, e.g. -1,-2,-3"})
    pooled_only: bool = field(default=EncoderOptions.pooled_only, metadata={
        "help": "store pooled vectors only (small cache, no tokens)"})
    dtype: str = field(default="float16", metadata={"choices": FLOAT_DTYPES})
    shard_size: int = field(default=DEFAULT_SHARD_SIZE, metadata={"min": 1, "help": "rows per HDF5 shard file"})
    num_shards: int | None = field(default=None, metadata={
        "type": int, "min": 1,
        "help": "split the work over N processes (default: torchrun/SLURM array variables, else 1)"})
    shard_index: int | None = field(default=None, metadata={
        "type": int, "min": 0, "help": "this process writes shards k with k % N == INDEX"})
    workers: int | None = field(default=None, metadata={
        "type": int, "min": 0,
        "help": f"DataLoader workers decoding images/tokenising [default: min(4, cpus) = {default_workers()}]"})
    device: str = "auto"
    autocast: str = field(default="auto", metadata={
        "choices": ["auto", "fp16", "bf16", "off"], "help": "mixed precision on CUDA (auto: fp16 on CUDA, off on CPU)"})
    progress: bool = field(default=True, metadata={"help": "progress bar with samples/s"})
    force: bool = field(default=False, metadata={
        "help": "extract with an exported fine-tuned text encoder even under another --clean / --max-length "
                "than its fine-tuning used (a warning instead of the error)"})

    def encoder_options(self) -> EncoderOptions:
        return EncoderOptions(max_length=self.max_length, clean=self.clean, layers=tuple(self.layers),
                              pooled_only=self.pooled_only)
