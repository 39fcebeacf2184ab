"""A tiny world for the report's tests: a manifest with a labeled test split and real JPEGs, token
caches written by the real extraction pipeline, and a small grid of runs trained on it (text-only,
image-only, the closed-form probe, late fusion and an explainable attention head; two seeds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from msa_cache.encoders.synthetic import ArrayEncoder
from msa_cache.extract import extract
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest
from msa_cache.study.compare import compare
from msa_cache.fit.config import TrainConfig

N, N_TRAIN, N_DEV = 150, 100, 30  # the other 20 rows: a labeled test split
L, P, DT, DI = 6, 4, 12, 10
CLASSES = ["positive", "neutral", "negative"]
HEADS = ["uni-text", "uni-image", "probe", "late", "ab-add"]
SEEDS = [0, 1]


def _y() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, N)


def _text_rows(rows):
    y = _y()
    out = {"text/cls": [], "text/mean": [], "text/tokens": [], "text/mask": [], "text/input_ids": []}
    for r in rows:
        rng = np.random.default_rng([1, int(r)])
        n = rng.integers(3, L + 1)
        tok = rng.standard_normal((L, DT)).astype(np.float32)
        tok[n:] = 0
        if r % 3:  # a third of the rows carry the class only in the image
            tok[0, y[r]] += 2.0
        out["text/tokens"].append(tok)
        out["text/mask"].append((np.arange(L) < n).astype(np.uint8))
        out["text/cls"].append(tok[:n].mean(0))
        out["text/mean"].append(tok[:n].mean(0))
        out["text/input_ids"].append(np.where(np.arange(L) < n, rng.integers(1000, 2000, L), 0).astype(np.int32))
    return {k: np.stack(v) for k, v in out.items()}


def _image_rows(rows):
    y = _y()
    out = {"image/pooled": [], "image/tokens": []}
    for r in rows:
        tok = np.random.default_rng([2, int(r)]).standard_normal((P, DI)).astype(np.float32)
        if r % 3 != 1:  # another third carry it only in the text
            tok[int(r) % P, 3 + y[r]] += 2.0
        out["image/tokens"].append(tok)
        out["image/pooled"].append(tok.mean(0))
    return {k: np.stack(v) for k, v in out.items()}


def make_report_world(root: Path) -> tuple[Path, Path, dict[str, Path]]:
    """(manifest, runs/<manifest>/ folder with the finished grid, caches)."""
    (root / "img").mkdir(parents=True)
    y = _y()
    split = np.where(np.arange(N) < N_TRAIN, "train", np.where(np.arange(N) < N_TRAIN + N_DEV, "dev", "test"))
    rows = []
    for i in range(N):
        colour = tuple(int(c) for c in np.random.default_rng(i).integers(0, 256, 3))
        Image.new("RGB", (40, 30), colour).save(root / "img" / f"{i}.jpg")
        rows.append({"id": f"p{i}", "text": f"post {i}", "image": f"img/{i}.jpg", "label": int(y[i]),
                     "split": split[i]})
    meta = ManifestMeta(dataset="toy", classes=CLASSES, root=str(root), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, root / "manifests" / "toy.parquet")
    text = ArrayEncoder("toytext", "text", {"text/cls": (DT,), "text/mean": (DT,), "text/tokens": (L, DT),
                                            "text/mask": (L,), "text/input_ids": (L,)}, _text_rows)
    image = ArrayEncoder("toyimage", "image", {"image/pooled": (DI,), "image/tokens": (P, DI)}, _image_rows)
    extract(manifest, [text, image], out=root / "cache", shard_size=64, batch_size=32, workers=0, progress=False,
            log=lambda m: None)
    caches = {"text": root / "cache/toy/toytext", "image": root / "cache/toy/toyimage"}
    compare(manifest, caches, HEADS, {"latent": [16]}, SEEDS, TrainConfig(max_epochs=4, patience=2), root / "runs",
            log=lambda m: None)
    return Path(manifest), root / "runs" / "toy", caches
