"""A tiny labeled dataset with pooled-only caches written by the real extraction pipeline:
fast enough for tests that train many runs (grids, searches) in several processes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from msa_cache.encoders.synthetic import ArrayEncoder
from msa_cache.extract import extract
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest

N, N_TRAIN, N_DEV = 240, 150, 45  # the other 45 rows: a labeled test split
DT, DI = 12, 10
CLASSES = ["positive", "neutral", "negative"]


def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, N)


def _rows(kind: str, dim: int, fields: list[str], offset: int):
    y = labels()

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        x = np.stack([np.random.default_rng([offset, int(r)]).standard_normal(dim).astype(np.float32) for r in rows])
        x[np.arange(len(rows)), offset + y[rows]] += 1.5  # a noisy class signal in each modality
        return {f: x for f in fields}

    return fn


def make_world(root: Path, poison_test: bool = False) -> tuple[Path, Path]:
    """manifests/toy.parquet and cache/toy/{toytext,toyimage}; returns (manifest, cache root).

    poison_test: the test split's labels are replaced by a constant wrong-looking class, so
    anything that reads them (model selection, an objective) changes its result."""
    y = labels()
    split = np.where(np.arange(N) < N_TRAIN, "train", np.where(np.arange(N) < N_TRAIN + N_DEV, "dev", "test"))
    label = np.where(split == "test", 2, y) if poison_test else y
    rows = [{"id": f"p{i}", "text": f"post {i}", "image": f"img/{i}.jpg", "label": int(label[i]), "split": split[i]}
            for i in range(N)]
    meta = ManifestMeta(dataset="toy", classes=CLASSES, root=str(root), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, root / "manifests" / "toy.parquet")
    text = ArrayEncoder("toytext", "text", {"text/cls": (DT,), "text/mean": (DT,)},
                        _rows("text", DT, ["text/cls", "text/mean"], 1))
    image = ArrayEncoder("toyimage", "image", {"image/pooled": (DI,)}, _rows("image", DI, ["image/pooled"], 4))
    extract(manifest, [text, image], out=root / "cache", shard_size=64, batch_size=64, workers=0, progress=False,
            log=lambda m: None)
    return Path(manifest), root / "cache"
