"""An MVSA-Single-sized world of pooled features for bench/seeds.py and bench/epoch.py.

4,511 rows (3,611 train / 450 dev / 450 test, the size of MVSA-Single's 80/10/10 split),
3 classes, a MiniLM-sized text cache (cls + mean, 384-d) and an EfficientNet-Lite0-sized
image cache (pooled, 1,280-d), fp16 as `extract` stores them. Made-up features, written by
the real extraction pipeline (`extract()` with `ArrayEncoder`): standard normal values
with a weak class signal (a shifted coordinate per class), so training learns something
and early stopping stops seeds at different epochs, as on real data.

Kept under /tmp/msa-bench/pooled-world (or $MSA_BENCH_DIR); a rerun reuses it.
"""
from __future__ import annotations

from pathlib import Path

import common

N_TRAIN, N_DEV, N_TEST = 3611, 450, 450
TEXT_D, IMAGE_D = 384, 1280
CLASSES = ["positive", "neutral", "negative"]
SIGNAL = 0.6  # shift of the class coordinate, in standard deviations: weak, as pooled features are


def _labels():
    import numpy as np

    return np.random.default_rng(24).integers(0, len(CLASSES), N_TRAIN + N_DEV + N_TEST)


def _row_fn(fields: list[str], dim: int, salt: int):
    import numpy as np

    y = _labels()

    def fn(rows):
        x = np.stack([np.random.default_rng([salt, int(r)]).standard_normal(dim, dtype=np.float32) for r in rows])
        x[np.arange(len(rows)), y[rows]] += SIGNAL
        return {f: x for f in fields}

    return fn


def ensure_world(root: Path | None = None, dims: tuple[int, int] = (TEXT_D, IMAGE_D)) -> tuple[Path, Path]:
    """(manifest path, cache root) of the world with (text, image) feature widths `dims`, written the
    first time (about half a minute)."""
    from msa_cache.encoders.synthetic import ArrayEncoder
    from msa_cache.extract import extract
    from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest

    text_d, image_d = dims
    default = common.SCRATCH / ("pooled-world" if dims == (TEXT_D, IMAGE_D) else f"pooled-world-{text_d}-{image_d}")
    root = Path(root or default)
    manifest = root / "manifests" / "pooled.parquet"
    y = _labels()
    if not manifest.is_file():
        n = len(y)
        split = ["train" if i < N_TRAIN else "dev" if i < N_TRAIN + N_DEV else "test" for i in range(n)]
        rows = [{"id": f"r{i}", "text": "", "image": "none.jpg", "label": int(y[i]), "split": split[i]}
                for i in range(n)]
        meta = ManifestMeta(dataset="pooled", classes=CLASSES, root=str(root), builder="bench/pooled_world.py")
        write_manifest(rows_to_table(rows), meta, manifest)
    text = ArrayEncoder("bench-minilm", "text", {"text/cls": (text_d,), "text/mean": (text_d,)},
                        _row_fn(["text/cls", "text/mean"], text_d, 1), tag="bench/pooled_world v1")
    image = ArrayEncoder("bench-effnet", "image", {"image/pooled": (image_d,)},
                         _row_fn(["image/pooled"], image_d, 2), tag="bench/pooled_world v1")
    report = extract(manifest, [text, image], out=root / "cache", workers=0, progress=False, log=lambda m: None)
    if not all(e.complete for e in report.encoders):
        raise RuntimeError(report.summary())
    return manifest, root / "cache"
