"""Finished runs' predictions (predictions.parquet) as arrays: per split, the rows' ids, labels
and each seed's class probabilities, aligned by id so that rows of a leaderboard can be
compared example by example. Seed ensembles and cross-validation's out-of-fold
predictions are built from these."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from msa_cache.errors import UserError
from msa_cache.settings import shown


@dataclass
class SplitPredictions:
    ids: np.ndarray  # [N] str, sorted
    labels: np.ndarray  # [N] int, -1 where unlabeled
    probs: np.ndarray  # [S, N, K] per seed (or per member model)

    @property
    def preds(self) -> np.ndarray:  # [S, N]
        return self.probs.argmax(-1)

    @property
    def num_classes(self) -> int:
        return self.probs.shape[-1]

    @property
    def is_labeled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    def subset(self, mask: np.ndarray) -> "SplitPredictions":
        return SplitPredictions(self.ids[mask], self.labels[mask], self.probs[:, mask])

    def labeled(self) -> "SplitPredictions":
        return self.subset(self.labels >= 0)

    def ensemble(self) -> "SplitPredictions":
        """One member: the mean of the members' probabilities."""
        return SplitPredictions(self.ids, self.labels, self.probs.mean(0, keepdims=True))


PREDICTIONS_FILE = "predictions.parquet"
_RETRAIN = "delete this run folder and train it again"


def read_predictions_table(run: str | Path, columns: list[str] | None = None) -> dict[str, list]:
    """RUN/predictions.parquet (those columns, default all) as {column: values}; a missing, unreadable or
    tampered file (a column gone) is one UserError naming it."""
    path = Path(run) / PREDICTIONS_FILE
    if not path.is_file():
        raise UserError(f"{PREDICTIONS_FILE} is missing", path, "pass a finished run directory "
                        "(runs/<manifest>/<family>/seed-K)")
    try:
        return pq.read_table(path, columns=columns).to_pydict()
    except Exception as e:  # pyarrow raises several types: a bad file, a column not in its schema
        raise UserError(f"{PREDICTIONS_FILE} is unreadable or lacks a column ({type(e).__name__}: "
                        f"{shown(' '.join(str(e).split()))})", path, _RETRAIN) from None


def read_run_predictions(run: str | Path) -> tuple[list[str], dict[str, SplitPredictions]]:
    """(class names, {split: predictions of this one run}) from RUN/predictions.parquet."""
    return predictions_by_split(read_predictions_table(run), Path(run) / PREDICTIONS_FILE, _RETRAIN)


def predictions_by_split(t: dict[str, list], path: Path, hint: str) -> tuple[list[str], dict[str, SplitPredictions]]:
    """(class names, {split: SplitPredictions sorted by id}) of a predictions table (id, split, label,
    prob_<class> columns: a run's predictions.parquet, an evaluation's); a column gone is one UserError
    naming `path`, with `hint` saying how to get a good file."""
    classes = [c[len("prob_"):] for c in t if c.startswith("prob_")]
    try:
        ids = np.array(t["id"], dtype=object)
        split = np.array(t["split"], dtype=object)
        labels = np.array([-1 if v is None else v for v in t["label"]], dtype=np.int64)
        probs = np.stack([np.asarray(t[f"prob_{c}"], dtype=np.float64) for c in classes], axis=1)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path.name} lacks its id, split, label or prob_ columns ({type(e).__name__}: "
                        f"{shown(str(e))})", path, hint) from None
    out = {}
    for s in ("train", "dev", "test"):
        m = split == s
        if m.any():
            order = np.argsort(ids[m])
            out[s] = SplitPredictions(ids[m][order], labels[m][order], probs[m][order][None])
    return classes, out


def stack(members: list[SplitPredictions], what: str = "runs") -> SplitPredictions:
    """Several runs' predictions of the same rows as one [S, N, K] block."""
    first = members[0]
    for m in members[1:]:
        if not np.array_equal(m.ids, first.ids):
            raise ValueError(f"the {what} predicted different rows (made on other manifests or splits)")
    return SplitPredictions(first.ids, first.labels, np.concatenate([m.probs for m in members]))


def concat_rows(parts: list[SplitPredictions]) -> SplitPredictions:
    """Disjoint row sets of one model (e.g. the folds' held-out rows) as one, sorted by id."""
    ids = np.concatenate([p.ids for p in parts])
    if len(set(ids.tolist())) != len(ids):
        raise ValueError("the parts share rows; out-of-fold predictions must be disjoint")
    order = np.argsort(ids)
    return SplitPredictions(ids[order], np.concatenate([p.labels for p in parts])[order],
                            np.concatenate([p.probs for p in parts], axis=1)[:, order])


def family_predictions(runs: list[Path]) -> tuple[list[str], dict[str, SplitPredictions]]:
    """The seeds of one family, stacked per split (only splits every seed has)."""
    read = [read_run_predictions(r) for r in runs]
    classes = read[0][0]
    splits = [s for s in ("train", "dev", "test") if all(s in p for _, p in read)]
    return classes, {s: stack([p[s] for _, p in read], f"seeds of {runs[0].parent}") for s in splits}
