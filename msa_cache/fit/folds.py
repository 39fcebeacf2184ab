"""Which manifest rows a run trains on, early-stops on, and only predicts: the one place
where the train/dev split of a run is decided.

Normal run: the manifest's own split. Cross-validation fold k of K: the labeled train
and dev rows pooled and cut into K stratified folds (sklearn StratifiedKFold, shuffled
with a recorded seed); fold k is the run's "dev", the rest its "train". Refit: every
pooled row is "train" and there is no dev. The test split is never touched by either.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

DEFAULT_CV_SEED = 0


def pooled_rows(splits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Manifest positions of the labeled train + dev rows (what cross-validation cuts)."""
    return np.flatnonzero(np.isin(splits, ["train", "dev"]) & (labels >= 0))


def cv_folds(labels: np.ndarray, num_folds: int, seed: int = DEFAULT_CV_SEED) -> list[np.ndarray]:
    """Held-out positions (into `labels`) of each of `num_folds` stratified folds."""
    if num_folds < 2:
        raise ValueError(f"--cv needs at least 2 folds, not {num_folds}")
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=int)
    present = counts[counts > 0]
    if len(present) == 0 or present.min() < num_folds:
        raise ValueError(f"--cv {num_folds}: a class has fewer labeled train+dev rows than folds; use fewer folds")
    skf = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [held for _, held in skf.split(np.zeros(len(labels)), labels)]


def run_roles(splits: np.ndarray, labels: np.ndarray, cv_folds_count: int = 0, cv_fold: int = 0,
              cv_seed: int = DEFAULT_CV_SEED, refit: bool = False) -> np.ndarray:
    """Each manifest row's role in the run: "train", "dev", "test" (or the manifest's own
    split name for rows a fold leaves alone, e.g. unlabeled train rows)."""
    roles = np.array(splits, dtype=object).copy()
    if not cv_folds_count:
        return roles
    pool = pooled_rows(np.asarray(splits), labels)
    roles[np.isin(np.asarray(splits), ["train", "dev"])] = "unused"  # unlabeled train/dev rows
    roles[pool] = "train"
    if not refit:
        if not 0 <= cv_fold < cv_folds_count:
            raise ValueError(f"fold {cv_fold} is outside 0..{cv_folds_count - 1}")
        held = cv_folds(labels[pool], cv_folds_count, cv_seed)[cv_fold]
        roles[pool[held]] = "dev"
    return roles
