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
from msa_cache.train.predictions import read_predictions_table
from msa_cache.train.rundir import read_run


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


def _seed_runs(path: str | Path) -> dict[str, Path]:
    """A run directory -> {"": it}; a family folder -> {seed name: finished seed run}."""
    path = Path(path)
    if (path / "predictions.parquet").is_file():
        return {"": path}
    runs = {p.name: p for p in sorted(path.glob("seed-*")) if (p / "metrics.json").is_file()}
    if not runs:
        raise FileNotFoundError(f"{path}: neither a finished run nor a family folder with finished seed-*/ runs")
    return runs


def labeled_split(run: str | Path) -> str:
    """"test" where the run's test rows are labeled (the paper's choice), else "dev"."""
    t = read_predictions_table(run, ["split", "label"])
    test = [lab for s, lab in zip(t["split"], t["label"]) if s == "test"]
    return "test" if test and all(lab is not None for lab in test) else "dev"


def family_oracle(text: str | Path, image: str | Path, multi: str | Path | None = None,
                  split: str | None = None) -> dict:
    """`oracle` over run families: seeds matched by name (a single run directory pairs with every
    seed), each figure the mean over the seed pairs. split None: test where labeled, else dev.

    multimodal_share_of_oracle: mean multimodal accuracy / mean oracle accuracy (seed 000's
    "about 81%")."""
    fams = [_seed_runs(p) for p in (text, image) + ((multi,) if multi is not None else ())]
    named = [set(f) for f in fams if "" not in f]
    seeds = sorted(set.intersection(*named)) if named else [""]
    if not seeds:
        raise ValueError("the families share no seed (seed-K folders); pass matching families or single runs")
    pick = lambda fam, s: fam[""] if "" in fam else fam[s]  # noqa: E731
    if split is None:
        split = labeled_split(pick(fams[0], seeds[0]))
    per_seed = [oracle(pick(fams[0], s), pick(fams[1], s), pick(fams[2], s) if multi is not None else None, split)
                for s in seeds]
    out = {"split": split, "seeds": len(seeds), "rows": per_seed[0]["rows"]}
    for key, v in per_seed[0].items():
        if key not in out and isinstance(v, (int, float)):
            out[key] = float(np.mean([r[key] for r in per_seed]))
    out["oracle_accuracy_std"] = float(np.std([r["oracle_accuracy"] for r in per_seed]))
    if multi is not None:
        out["multimodal_share_of_oracle"] = out["multimodal_accuracy"] / out["oracle_accuracy"]
    return out
