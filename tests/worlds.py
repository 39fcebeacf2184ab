"""Toy worlds for the tests: manifests, and caches written by the real extraction pipeline, with a
known class signal. The one home of the generators that test_runs, test_compare_cv, test_explain,
report_world and pooled_world share; each keeps only its sizes and where its signal lies.

    small world     48 rows of random features (no signal), a finished run on it: the CLI's hostile-input
                    and robustness tests (small_rows, write_small_manifest, extract_small)
    TokenWorld      token caches (text tokens + mask + pooled vectors, image patches + pooled): the
                    class shows as a bump at one token of the modality that carries it
    pooled_rows     pooled-only vectors with a noisy class bump (fast: grids, searches)
    write_toy_manifest, extract_toy   the manifest and the caches of a world
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
from msa_cache.extract import extract
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest

CLASSES = ["positive", "neutral", "negative"]
TEXT_FIELDS = ("text/cls", "text/mean", "text/tokens", "text/mask")
IMAGE_FIELDS = ("image/pooled", "image/tokens")


def labels(n: int) -> np.ndarray:
    """Each row's class (0..2), the same draw in every world."""
    return np.random.default_rng(0).integers(0, 3, n)


def split_column(n: int, n_train: int, n_dev: int) -> np.ndarray:
    """train for the first n_train rows, dev for the next n_dev, test for the rest."""
    i = np.arange(n)
    return np.where(i < n_train, "train", np.where(i < n_train + n_dev, "dev", "test"))


@dataclass(frozen=True)
class TokenWorld:
    n: int
    L: int  # text tokens
    P: int  # image patches
    DT: int
    DI: int
    strength: float  # the class bump
    # which modality carries a row's class: "random" (both / text / image, drawn per row), "thirds"
    # (row % 3 == 0: image only, == 1: text only, else both) or "both"
    carriers: str = "both"
    random_positions: bool = False  # the bump at a random token / patch; else token 0 and patch row % P
    cls_scale: float = 1.0  # text/cls = cls_scale * the mean of the real tokens
    text_fields: tuple[str, ...] = TEXT_FIELDS  # "text/input_ids" too where a test draws words
    image_fields: tuple[str, ...] = IMAGE_FIELDS

    def labels(self) -> np.ndarray:
        return labels(self.n)

    def carries(self) -> tuple[np.ndarray, np.ndarray]:
        """(text carries the class, image carries it) per row."""
        r = np.arange(self.n)
        if self.carriers == "random":
            rng = np.random.default_rng(0)
            rng.integers(0, 3, self.n)  # the labels' draw comes first
            carrier = rng.choice(["both", "text", "image"], self.n)
            return carrier != "image", carrier != "text"
        if self.carriers == "thirds":
            return r % 3 != 0, r % 3 != 1
        return np.ones(self.n, bool), np.ones(self.n, bool)

    def text_rows(self, rows) -> dict[str, np.ndarray]:
        y, (text, _) = self.labels(), self.carries()
        out = {"text/cls": [], "text/mean": [], "text/tokens": [], "text/mask": [], "text/input_ids": []}
        for r in rows:
            rng = np.random.default_rng([1, int(r)])
            n = rng.integers(3, self.L + 1)
            tok = rng.standard_normal((self.L, self.DT)).astype(np.float32)
            tok[n:] = 0
            if text[r]:
                tok[rng.integers(0, n) if self.random_positions else 0, y[r]] += self.strength
            out["text/tokens"].append(tok)
            out["text/mask"].append((np.arange(self.L) < n).astype(np.uint8))
            out["text/cls"].append(tok[:n].mean(0) * self.cls_scale)  # a CLS that summarises the sentence
            out["text/mean"].append(tok[:n].mean(0))
            out["text/input_ids"].append(
                np.where(np.arange(self.L) < n, rng.integers(1000, 2000, self.L), 0).astype(np.int32))
        return {k: np.stack(v) for k, v in out.items() if k in self.text_fields}

    def image_rows(self, rows) -> dict[str, np.ndarray]:
        y, (_, image) = self.labels(), self.carries()
        out = {"image/pooled": [], "image/tokens": []}
        for r in rows:
            rng = np.random.default_rng([2, int(r)])
            tok = rng.standard_normal((self.P, self.DI)).astype(np.float32)
            if image[r]:
                tok[rng.integers(0, self.P) if self.random_positions else int(r) % self.P, 3 + y[r]] += self.strength
            out["image/tokens"].append(tok)
            out["image/pooled"].append(tok.mean(0))
        return {k: np.stack(v) for k, v in out.items() if k in self.image_fields}

    def encoders(self) -> list[ArrayEncoder]:
        """The text and the image encoder (names toytext, toyimage) that write this world's caches."""
        text_shapes = {"text/cls": (self.DT,), "text/mean": (self.DT,), "text/tokens": (self.L, self.DT),
                       "text/mask": (self.L,), "text/input_ids": (self.L,)}
        image_shapes = {"image/pooled": (self.DI,), "image/tokens": (self.P, self.DI)}
        return [ArrayEncoder("toytext", "text", {k: v for k, v in text_shapes.items() if k in self.text_fields},
                             self.text_rows),
                ArrayEncoder("toyimage", "image", {k: v for k, v in image_shapes.items() if k in self.image_fields},
                             self.image_rows)]


def pooled_rows(y: np.ndarray, dim: int, fields: list[str], offset: int, strength: float = 1.5):
    """Rows of pooled vectors: noise with a class bump at offset + class (the same vector in each field)."""

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        x = np.stack([np.random.default_rng([offset, int(r)]).standard_normal(dim).astype(np.float32) for r in rows])
        x[np.arange(len(rows)), offset + y[rows]] += strength
        return {f: x for f in fields}

    return fn


def write_toy_manifest(root: Path, label: np.ndarray, split: np.ndarray, labeled_test: bool = True,
                       jpegs: bool = False, missing: tuple[str, ...] = (), builder: str = "test") -> Path:
    """manifests/toy.parquet of a world (posts p0.., images img/<i>.jpg); jpegs: write each image (a
    solid colour), except the ids in `missing`; labeled_test False: the test rows get no label."""
    if jpegs:
        (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(label)):
        if jpegs and f"p{i}" not in missing:
            colour = tuple(int(c) for c in np.random.default_rng(i).integers(0, 256, 3))
            Image.new("RGB", (40, 30), colour).save(root / "img" / f"{i}.jpg")
        rows.append({"id": f"p{i}", "text": f"post {i}", "image": f"img/{i}.jpg",
                     "label": None if split[i] == "test" and not labeled_test else int(label[i]), "split": split[i]})
    meta = ManifestMeta(dataset="toy", classes=CLASSES, root=str(root), builder=builder)
    return write_manifest(rows_to_table(rows), meta, root / "manifests" / "toy.parquet")


def write_other_manifest(root: Path, name: str, label: np.ndarray, classes=CLASSES, n: int = 45) -> Path:
    """manifests/<name>.parquet: another labeled dataset of a world (its own ids q0.., dataset "other";
    25 train / 10 dev / 10 test of `n` = 45), for transfer: extract_toy gives it caches like toy's."""
    split = split_column(n, 25, 10)
    rows = [{"id": f"q{i}", "text": f"other post {i}", "image": f"img/{i}.jpg", "label": int(label[i]),
             "split": split[i]} for i in range(n)]
    meta = ManifestMeta(dataset="other", classes=list(classes), root=str(root), builder="test")
    return Path(write_manifest(rows_to_table(rows), meta, root / "manifests" / f"{name}.parquet"))


def extract_toy(manifest: Path, root: Path, encoders: list, batch_size: int = 32) -> dict[str, Path]:
    """The world's caches under root/cache by the real pipeline; {"text": ..., "image": ...}."""
    extract(manifest, encoders, out=root / "cache", shard_size=64, batch_size=batch_size, workers=0, progress=False,
            log=lambda m: None)
    return {"text": root / "cache/toy/toytext", "image": root / "cache/toy/toyimage"}


# -- the small world: random features, every row labeled i % 3 (train 32, dev 8, unlabeled test 8) -------------
SMALL_N = 48
SMALL_TEXT_SHAPES = {"text/cls": (8,), "text/mean": (8,), "text/tokens": (5, 8), "text/mask": (5,)}
SMALL_IMAGE_SHAPES = {"image/pooled": (6,), "image/tokens": (4, 6)}


def small_rows(labels=None) -> list[dict]:
    """The small world's manifest rows (images img/<i>.png under root/data, never read)."""
    split = ["train"] * 32 + ["dev"] * 8 + ["test"] * 8
    labels = labels if labels is not None else [i % 3 for i in range(SMALL_N)]
    return [{"id": f"p{i}", "text": f"post {i}", "image": f"img/{i}.png",
             "label": None if split[i] == "test" else labels[i], "split": split[i]} for i in range(SMALL_N)]


def small_encoders() -> list[ArrayEncoder]:
    return [ArrayEncoder("toytext", "text", SMALL_TEXT_SHAPES,
                         random_rows(SMALL_TEXT_SHAPES, 1, real_tokens=(2, 5))),
            ArrayEncoder("toyimage", "image", SMALL_IMAGE_SHAPES, random_rows(SMALL_IMAGE_SHAPES, 2))]


def write_small_manifest(root: Path, name: str, rows) -> Path:
    meta = ManifestMeta(dataset="toy", classes=CLASSES, root=str(root / "data"), builder="test")
    return write_manifest(rows_to_table(rows), meta, root / "manifests" / f"{name}.parquet")


def extract_small(root: Path, manifest: Path) -> None:
    extract(manifest, small_encoders(), out=root / "cache", shard_size=16, batch_size=16, workers=0, progress=False,
            log=lambda m: None)
