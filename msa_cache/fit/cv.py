"""K-fold cross-validation of one run spec: K normal run directories (one per fold, each
resumable and skipped when finished), their out-of-fold predictions of every labeled
train+dev row, and optionally a refit on all of train+dev.

Out-of-fold ("cv") predictions: each pooled row predicted by the fold model that held it
out (that fold also early-stopped on it, as a normal run does on dev). Test predictions
of a CV row: the mean of its K fold models' probabilities. Refit: one model on all
train+dev rows, trained for the median of the folds' best epochs (rounded, at least 1);
a closed-form head (probe) takes the C most folds chose (ties: the smaller C).
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from msa_cache.errors import UserError
from msa_cache.manifest import read_manifest
from msa_cache.fit.config import RunSpec, refit_name
from msa_cache.metrics import ACCURACY, classification_metrics
from msa_cache.train.predictions import SplitPredictions, concat_rows, read_run_predictions
from msa_cache.train.rundir import read_history

if TYPE_CHECKING:  # the trainer's modules load torch: imported where a fold is trained
    from msa_cache.fit.features import FeatureSet
from msa_cache.train.rundir import RunResult

MAX_RECORDED_FOLDS = 1000
RETRAIN_HINT = "delete this run family's folder and train it again"


@dataclass
class CVResult:
    path: Path  # the seed directory holding fold-*/ (and refit-*/)
    folds: list[RunResult]
    classes: list[str]
    predictions: dict[str, SplitPredictions]  # "dev": out-of-fold rows; "test": mean of the fold models
    metrics: dict  # per split, as in metrics.json ("dev" = out-of-fold)
    refit: RunResult | None = None

    @property
    def skipped(self) -> bool:
        """Every fold (and the refit, if any) was finished before: nothing trained now."""
        return all(f.skipped for f in self.folds) and (self.refit is None or self.refit.skipped)

    @property
    def seconds(self) -> float:
        """Training time of the folds (and the refit) trained now."""
        return sum(r.seconds for r in self.folds + ([self.refit] if self.refit is not None else []))


def fold_specs(spec: RunSpec, num_folds: int) -> list[RunSpec]:
    return [dataclasses.replace(spec, head_options=dict(spec.head_options), cv_folds=num_folds, cv_fold=k,
                                refit=None) for k in range(num_folds)]


def cv_predictions(fold_runs: list[Path]) -> tuple[list[str], dict[str, SplitPredictions]]:
    """Out-of-fold predictions (each fold run's "dev" rows) and the fold models' mean test probabilities."""
    read = [read_run_predictions(p) for p in fold_runs]
    classes = read[0][0]
    out = {"dev": concat_rows([r["dev"] for _, r in read])}
    if all("test" in r for _, r in read):
        tests = [r["test"] for _, r in read]
        out["test"] = SplitPredictions(tests[0].ids, tests[0].labels,
                                       np.mean([t.probs for t in tests], axis=0))
    return classes, out


def metrics_of(predictions: dict[str, SplitPredictions], classes: list[str]) -> dict:
    """metrics.json-style metrics of each labeled split of one model's predictions (member 0)."""
    out = {}
    for split, p in predictions.items():
        lab = p.labeled()
        if len(lab.labels):
            out[split] = classification_metrics(lab.labels, lab.preds[0], classes)
    return out


def refit_choice(fold_runs: list[Path]) -> dict:
    """What a refit takes from the folds: {"epochs": median best epoch} or {"C": most chosen C}."""
    epochs, cs = [], []
    for run in fold_runs:
        for h in read_history(run):
            if "best_epoch" in h:
                epochs.append(int(h["best_epoch"]))
            if "C" in h:
                cs.append(float(h["C"]))
    if len(epochs) == len(fold_runs):
        return {"epochs": max(1, int(round(float(np.median(epochs)))))}
    if len(cs) == len(fold_runs):
        counts = Counter(cs)
        return {"C": min(c for c in counts if counts[c] == max(counts.values()))}
    raise ValueError(f"{fold_runs[0].parent}: the folds' history.jsonl record neither best epochs nor C")


def fit_cv(spec: RunSpec, num_folds: int, runs_root: str | Path, features: "FeatureSet | None" = None,
           refit: bool = False, log: Callable[[str], None] = print, tensorboard: bool = False,
           on_epoch_end: Callable[[int, dict], None] | None = None) -> CVResult:
    """Train (or read back) the K folds of `spec`'s seed, and the refit when asked (tensorboard: each
    fold's and the refit's events, see fit_run). on_epoch_end: fold 0's epoch hook (a tuner's pruner
    watches fold 0; an exception it raises stops before the other folds)."""
    from msa_cache.fit.features import open_head_features
    from msa_cache.fit.trainer import fit_run

    if features is None:  # open the caches once for all folds
        features = open_head_features(read_manifest(spec.manifest), spec.caches, spec.head, spec.head_options,
                                      spec.train.text_pool)
    folds = []
    for fs in fold_specs(spec, num_folds):
        r = fit_run(fs, runs_root, features, log=log, tensorboard=tensorboard,
                    on_epoch_end=on_epoch_end if fs.cv_fold == 0 else None)
        log(f"  fold {fs.cv_fold}/{num_folds} seed {spec.seed}: held-out acc {r.metrics['dev'][ACCURACY.key]:.4f} "
            f"[{'skipped (finished)' if r.skipped else f'{r.seconds:.1f}s'}]  {r.path}")
        folds.append(r)
    paths = [r.path for r in folds]
    classes, preds = cv_predictions(paths)
    result = CVResult(paths[0].parent, folds, classes, preds, metrics_of(preds, classes))
    if refit:
        choice = refit_choice(paths)
        rs = dataclasses.replace(spec, head_options=dict(spec.head_options), cv_folds=num_folds, cv_fold=0,
                                 refit=choice)
        result.refit = fit_run(rs, runs_root, features, log=log, tensorboard=tensorboard)
        log(f"  refit on train+dev ({choice}): {result.refit.path}")
    return result


def fit_family(spec: RunSpec, cv: int, refit: bool, runs_root: str | Path, features: "FeatureSet | None" = None,
               log: Callable[[str], None] = print, progress: Callable[[str], None] | None = None,
               tensorboard: bool = False, on_epoch_end: Callable[[int, dict], None] | None = None
               ) -> RunResult | CVResult:
    """One seed of a configuration, either way it is scored: its run on the manifest's split (cv 0;
    progress: its per-epoch lines, see fit_run), or its `cv` fold runs and, with `refit`, the refit on
    all of train+dev (fit_cv). Both results have path, metrics ("dev" = out-of-fold with cv), skipped
    and seconds. on_epoch_end: the run's epoch hook (with cv: fold 0's)."""
    from msa_cache.fit.trainer import fit_run

    if cv:
        spec = dataclasses.replace(spec, head_options=dict(spec.head_options), cv_folds=cv)
        return fit_cv(spec, cv, runs_root, features, refit=refit, log=log, tensorboard=tensorboard,
                      on_epoch_end=on_epoch_end)
    if refit:
        raise ValueError("refit goes with cross-validation (--cv K): it trains for the epoch count the folds chose")
    return fit_run(spec, runs_root, features, log=log, progress=progress, tensorboard=tensorboard,
                   on_epoch_end=on_epoch_end)


def finished_cv_seeds(family: Path) -> list[tuple[Path, list[Path], Path | None]]:
    """(seed dir, fold runs, refit run or None) of each seed of a CV family folder whose folds all
    finished; the refit is the one trained with what these folds chose."""
    out = []
    for seed_dir in sorted(p for p in family.glob("seed-*") if p.is_dir()):
        config = next((c for c in sorted(seed_dir.glob("fold-*/config.json"))), None)
        if config is None:
            continue
        try:
            k = int(json.loads(config.read_text())["spec"].get("cv_folds", 0))
        except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"config.json is unreadable ({type(e).__name__})", config, RETRAIN_HINT) from None
        if not 0 <= k <= MAX_RECORDED_FOLDS:  # a tampered count would list that many fold folders
            raise UserError(f"config.json: cv_folds {k} is not a fold count", config, RETRAIN_HINT)
        folds = [seed_dir / f"fold-{i}" for i in range(k)]
        if k and all((f / "metrics.json").is_file() for f in folds):
            refit = seed_dir / refit_name(refit_choice(folds))
            out.append((seed_dir, folds, refit if (refit / "metrics.json").is_file() else None))
    return out
