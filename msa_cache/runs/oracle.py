"""Seed-000's oracle analysis from finished runs' predictions.

The "maximum theoretical accuracy" of combining a text-only and an image-only
model is the share of rows that at least one of them gets right; a multimodal
run is compared with it by counting the rows only it gets right.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from msa_cache.errors import UserError
from msa_cache.runs.rundir import read_run


def _correct(run: str | Path, split: str) -> dict[str, bool]:
    read_run(run)  # a finished, valid run directory, or one line saying why not
    path = Path(run) / "predictions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; pass a finished run directory (runs/<manifest>/<head>-.../seed-K)")
    try:
        t = pq.read_table(path).to_pydict()
        if not {"id", "split", "label", "pred"} <= set(t):
            raise ValueError("columns missing")
    except Exception as e:
        raise UserError(f"predictions.parquet is unreadable ({type(e).__name__})", path,
                        "delete this run folder and train it again") from None
    return {i: p == l for i, s, l, p in zip(t["id"], t["split"], t["label"], t["pred"]) if s == split and l is not None}


def oracle(text_run: str | Path, image_run: str | Path, multi_run: str | Path | None = None, split: str = "dev") -> dict:
    text, image = _correct(text_run, split), _correct(image_run, split)
    if set(text) != set(image):
        raise ValueError("the text and image runs were made on different manifests (their ids differ)")
    if not text:
        raise ValueError(f"no labeled '{split}' rows in {text_run}")
    ids = sorted(text)
    t = np.array([text[i] for i in ids])
    v = np.array([image[i] for i in ids])
    out = {
        "split": split,
        "rows": len(ids),
        "text_accuracy": float(t.mean()),
        "image_accuracy": float(v.mean()),
        "oracle_accuracy": float((t | v).mean()),
        "both_right": int((t & v).sum()),
        "only_text_right": int((t & ~v).sum()),
        "only_image_right": int((~t & v).sum()),
        "neither_right": int((~t & ~v).sum()),
    }
    if multi_run is not None:
        multi = _correct(multi_run, split)
        if set(multi) != set(text):
            raise ValueError("the multimodal run was made on a different manifest (its ids differ)")
        m = np.array([multi[i] for i in ids])
        out.update({
            "multimodal_accuracy": float(m.mean()),
            "only_multimodal_right": int((m & ~t & ~v).sum()),
            "multimodal_right_where_unimodal_disagree": int((m & (t ^ v)).sum()),
            "unimodal_disagree": int((t ^ v).sum()),
        })
    return out
