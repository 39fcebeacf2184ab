"""A tiny world for the report's tests: a manifest with a labeled test split and real JPEGs, token
caches written by the real extraction pipeline (tests/worlds.py), and a small grid of runs trained on it
(text-only, image-only, the closed-form probe, late fusion and an explainable attention head; two seeds)."""
from __future__ import annotations

from pathlib import Path

from msa_cache.study.compare import compare
from msa_cache.fit.config import TrainConfig
from worlds import CLASSES, TokenWorld, extract_toy, split_column, write_toy_manifest  # noqa: F401  (CLASSES: for the tests)

N, N_TRAIN, N_DEV = 150, 100, 30  # the other 20 rows: a labeled test split
L, P, DT, DI = 6, 4, 12, 10
HEADS = ["uni-text", "uni-image", "probe", "late", "ab-add"]
SEEDS = [0, 1]
# A third of the rows carry the class only in the image, another third only in the text.
WORLD = TokenWorld(N, L, P, DT, DI, strength=2.0, carriers="thirds", text_fields=(
    "text/cls", "text/mean", "text/tokens", "text/mask", "text/input_ids"))


def make_report_world(root: Path) -> tuple[Path, Path, dict[str, Path]]:
    """(manifest, runs/<manifest>/ folder with the finished grid, caches)."""
    manifest = write_toy_manifest(root, WORLD.labels(), split_column(N, N_TRAIN, N_DEV), jpegs=True)
    caches = extract_toy(manifest, root, WORLD.encoders())
    compare(manifest, caches, HEADS, {"latent": [16]}, SEEDS, TrainConfig(max_epochs=4, patience=2), root / "runs",
            log=lambda m: None)
    return Path(manifest), root / "runs" / "toy", caches
