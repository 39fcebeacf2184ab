"""Test-split predictions of every leaderboard family, in the dataset's own layout, for
scoring where the test labels are (the shared MVSA copy has none).

One file per family, `<family>.json`: a JSON list in the layout the manifest's builder
declares (its `submission` trait; CLMLF: {"id", "emotion_label"} with CLMLF's label ids),
else [{"id", "label": <class name>}]. A family's
prediction is the mean of its seeds' probabilities; a cross-validated family uses its
refit runs where they exist, else the mean of its fold models. The folder is written
whole or not at all.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from msa_cache.atomic import building_folder
from msa_cache.manifest import Manifest
from msa_cache.manifest.builders import BUILDERS
from msa_cache.train.predictions import family_predictions


def submission_items(builder: str, classes: list[str], ids: list[str], preds: list[int]) -> list[dict]:
    """One family's file: in the layout the manifest's builder declares (its `submission` trait, e.g.
    CLMLF's emotion_label ids), else [{"id", "label": <class name>}]."""
    own = getattr(BUILDERS.get(builder), "submission", None)
    if own is not None:
        return own(classes, ids, preds)
    return [{"id": i, "label": classes[p]} for i, p in zip(ids, preds)]


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).strip("_") or "model"


def family_test_predictions(entry) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, mean probabilities [N, K]) of one leaderboard row's test split, or None."""
    if entry.refits:
        _, preds = family_predictions(entry.refits)
        test = preds.get("test")
    else:
        test = entry.predictions().get("test")
    if test is None:
        return None
    return test.ids, test.probs.mean(0)


def export_test(entries, manifest: Manifest, out_dir: str | Path) -> list[Path]:
    """Write one file per family (seed-ensemble rows are the same families; skipped)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: not empty; give a new or empty folder for --export-test")
    classes = manifest.classes
    submission_items(manifest.meta.builder, classes, [], [])  # a class the layout cannot say: fail before any work
    written, names = [], set()
    with building_folder(out_dir) as tmp:
        for e in entries:
            if e.kind == "ensemble":
                continue
            got = family_test_predictions(e)
            if got is None:
                continue
            ids, probs = got
            items = submission_items(manifest.meta.builder, classes, ids.tolist(), probs.argmax(1).tolist())
            name = _slug(e.label)
            while name in names:
                name += "_"
            names.add(name)
            (tmp / f"{name}.json").write_text(json.dumps(items))
            written.append(out_dir / f"{name}.json")
        if not written:
            raise ValueError("no family has test predictions (does the manifest have a test split?)")
    return written
