"""A few `explain` pictures for the report: dev examples of the best seed of the best family whose
head can be explained. They need the run's caches and the raw images, so they are optional: any
reason they cannot be drawn becomes a note instead."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msa_cache.errors import UserError
from msa_cache.report.collect import Family
from msa_cache.metrics import monitor_key
from msa_cache.train.identity import CACHED
from msa_cache.train.predictions import read_predictions_table

EXAMPLE_SEED = 0  # which dev rows are drawn: a fixed RNG seed, so a report is reproducible


@dataclass
class Examples:
    run: Path | None = None
    family: str = ""
    pictures: list[tuple[str, bool, bytes]] = field(default_factory=list)  # (row id, run right?, PNG)
    notes: list[str] = field(default_factory=list)


def pick_rows(run: Path, n: int, seed: int = EXAMPLE_SEED) -> list[tuple[str, bool]]:
    """n labeled dev ids of the run, each with whether the run gets it right: half right, half wrong
    (where there are enough), drawn with a fixed RNG seed."""
    t = read_predictions_table(run, ["id", "split", "label", "pred"])
    dev = [(i, lab == p) for i, s, lab, p in zip(t["id"], t["split"], t["label"], t["pred"])
           if s == "dev" and lab is not None]
    right = sorted(i for i, ok in dev if ok)
    wrong = sorted(i for i, ok in dev if not ok)
    rng = np.random.default_rng(seed)
    n_wrong = min(len(wrong), n // 2)
    n_right = min(len(right), n - n_wrong)
    n_wrong = min(len(wrong), n - n_right)
    return ([(str(i), True) for i in rng.choice(right, n_right, replace=False)]
            + [(str(i), False) for i in rng.choice(wrong, n_wrong, replace=False)])


def explain_examples(families: list[Family], n: int, monitor: str) -> Examples:
    if n <= 0:
        return Examples(notes=["not requested (msa-cache report --explain N draws N examples)"])
    from msa_cache.explain import EXPLAINABLE, explain  # draws with the head: torch, only when asked

    family = next((f for f in families if f.head in EXPLAINABLE and f.mode == CACHED), None)
    if family is None:
        return Examples(notes=[f"no finished run of a head explain can draw ({', '.join(EXPLAINABLE)})"])
    key = monitor_key(monitor)
    scores = [m.get("dev", {}).get(key, -1.0) for m in family.metrics]
    run = family.runs[int(np.argmax(scores))]
    out = Examples(run=run, family=family.label)
    if families[0] is not family:
        out.notes.append(f"explain cannot draw the best family's head ({families[0].label}; it draws "
                         f"{', '.join(EXPLAINABLE)}): showing the best family it can draw, {family.label}")
    try:
        rows = pick_rows(run, n)
        with tempfile.TemporaryDirectory(prefix="msa-cache-report-") as tmp:
            for row_id, right in rows:
                path = explain(run, row_id, Path(tmp) / "example.png")
                out.pictures.append((row_id, right, path.read_bytes()))
    except (UserError, ValueError, KeyError, OSError) as e:
        # Typically the caches or the images are not where config.json says (another machine).
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        out.notes.append(f"skipped: {' '.join(str(msg).split())} (run the report from the folder the runs "
                         "were trained in, with their caches and images present)")
    return out
