"""Image checks and the one image loader every stage uses (manifest checks, extraction,
fine-tuning, predict), so a file decodes the same way everywhere.

`Image.open` only reads the header, so a truncated JPEG looks fine until its
pixels are decoded; `img.load()` decodes them all and catches it here instead of
in the middle of feature extraction.

High-bit-depth images (16-bit PNG/TIFF: modes I;16, I, F) are scaled to 8 bits;
PIL's `convert("RGB")` would clip them (most of a 16-bit image turns white).
Very large JPEGs are decoded reduced (PIL's draft mode: the DCT scales by 1/2..1/8
while decoding), since every encoder resizes to a few hundred pixels anyway; other
formats above PIL's decompression-bomb limit are flagged instead of decoded.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

# JPEGs with more pixels than this are decoded reduced; still >= DRAFT_SIDE pixels a side.
# (High enough that ordinary photos decode exactly as before, keeping caches reproducible.)
DRAFT_PIXELS = 4096 * 4096
DRAFT_SIDE = 1024


class ImageTooLarge(ValueError):
    """A non-JPEG image above PIL's decompression-bomb limit."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """Grayscale of more than 8 bits (I;16*, I, F) -> 8-bit L, scaled rather than clipped."""
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        a = np.nan_to_num(a)
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0 if a.max(initial=0) <= 255.0 else a.max()
        a = np.clip(a / top * 255.0, 0, 255)
    else:  # integer: 16-bit range unless the values fit in 8 bits already
        a = a.astype(np.int64)
        top = 255 if a.max(initial=0) <= 255 else 65535
        a = np.clip(a, 0, top) * 255 / top
    return Image.fromarray(np.round(a).astype(np.uint8), mode="L")


def _open(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        # Our own check below replaces PIL's anonymous DecompressionBombWarning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    w, h = img.size
    if w * h > DRAFT_PIXELS and img.format == "JPEG":
        img.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
    elif Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        img.close()
        raise ImageTooLarge(f"{w} x {h} pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS}; "
                            "save it smaller (or as JPEG, which is decoded reduced)")
    return img


def load_rgb(path: str | Path) -> Image.Image:
    """The image at `path` as 8-bit RGB, fully decoded (raises on a missing or bad file)."""
    with _open(Path(path)) as img:
        img.load()
        if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return _to_8bit(img).convert("RGB")
        return img.convert("RGB")


def check_image(path: str | Path) -> tuple[bool, str]:
    """(ok, problem): problem names the file and why it is unusable, "" when ok. Never raises."""
    path = Path(path)
    try:
        if not path.is_file():
            return False, f"image missing: {path.name[:80]}"
    except OSError as e:  # e.g. a name too long for the file system
        return False, f"image path unusable: {path.name[:80]}{'...' if len(path.name) > 80 else ''} " \
                      f"({e.strerror or type(e).__name__})"
    try:
        with _open(path) as img:
            img.load()
    except (ImageTooLarge, Image.DecompressionBombError) as e:
        return False, f"image too large: {path.name} ({e})"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad files
        kind = "truncated" if "truncated" in str(e).lower() else "undecodable"
        return False, f"image {kind}: {path.name} ({e})"
    return True, ""


def check_images(paths: Iterable[str | Path], workers: int | None = None) -> list[tuple[bool, str]]:
    """`check_image` for many files, in order. Threads: the work is file reads and C decoding
    that releases the GIL, so they overlap well even on two cores. A file listed by several rows
    (Twitter-15/17: one tweet per target) is decoded once."""
    paths = [str(p) for p in paths]
    distinct = list(dict.fromkeys(paths))
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    if workers <= 1 or len(distinct) < 2:
        results = [check_image(p) for p in distinct]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check_image, distinct, chunksize=32))
    by_path = dict(zip(distinct, results))
    return [by_path[p] for p in paths]
