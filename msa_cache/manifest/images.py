"""Image checks: a row's image must exist and decode completely.

`Image.open` only reads the header, so a truncated JPEG looks fine until its
pixels are decoded; `img.load()` decodes them all and catches it here instead of
in the middle of feature extraction.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from PIL import Image


def check_image(path: str | Path) -> tuple[bool, str]:
    """(ok, problem): problem names the file and why it is unusable, "" when ok."""
    path = Path(path)
    if not path.is_file():
        return False, f"image missing: {path.name}"
    try:
        with Image.open(path) as img:
            img.load()
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
