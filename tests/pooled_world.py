"""A tiny labeled dataset with pooled-only caches written by the real extraction pipeline
(tests/worlds.py): fast enough for tests that train many runs (grids, searches) in several processes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from msa_cache.encoders.synthetic import ArrayEncoder
from worlds import extract_toy, labels as toy_labels, pooled_rows, split_column, write_toy_manifest

N, N_TRAIN, N_DEV = 240, 150, 45  # the other 45 rows: a labeled test split
DT, DI = 12, 10


def make_world(root: Path, poison_test: bool = False) -> tuple[Path, Path]:
    """manifests/toy.parquet and cache/toy/{toytext,toyimage}; returns (manifest, cache root).

    poison_test: the test split's labels are replaced by a constant wrong-looking class, so
    anything that reads them (model selection, an objective) changes its result."""
    y = toy_labels(N)
    split = split_column(N, N_TRAIN, N_DEV)
    manifest = write_toy_manifest(root, np.where(split == "test", 2, y) if poison_test else y, split)
    text = ArrayEncoder("toytext", "text", {"text/cls": (DT,), "text/mean": (DT,)},
                        pooled_rows(y, DT, ["text/cls", "text/mean"], 1))
    image = ArrayEncoder("toyimage", "image", {"image/pooled": (DI,)}, pooled_rows(y, DI, ["image/pooled"], 4))
    extract_toy(manifest, root, [text, image], batch_size=64)
    return Path(manifest), root / "cache"
