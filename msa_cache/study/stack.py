"""Stacking a cross-validated grid's families: a multinomial logistic regression on their
out-of-fold class probabilities (`compare --cv K --stack`).

Features: per family, the mean over its seeds of the out-of-fold probabilities (one column per
class), the families side by side. Seeds are exchangeable, so per-seed columns would only multiply
the features by the seed count (and tie the stacker to that count and order) for the same
information; the refit and the test rows are built the same way, from seed means.

Stacker: scikit-learn's LogisticRegressionCV (lbfgs, L2, multinomial for 3+ classes), C chosen
from a fixed grid by its own inner stratified CV (shuffled, fixed seed) on log loss.

Its own scores come from an outer CV over the SAME K folds the heads used (read from the fold
runs, checked equal across families): the stacker for fold k is fitted on the out-of-fold rows of
the other folds and predicts fold k, so a row's stacked probabilities come from heads that never
trained on it and a stacker that never saw its label (the other folds' features do come from fold
models that trained on fold k's rows: stacking's usual second-order overlap, short of nested CV of
the heads). The stacker fitted on all out-of-fold rows
is the one written to stacker.json; it predicts the test rows from the families' test
probabilities (mean of their fold models) and, with --refit, every row from the refit runs.

    runs/<manifest>/stack-cvK-<hash>/      hash: members (family folders and seeds), K, cv seed, stacker settings
        config.json  stacker.json  predictions.parquet (out-of-fold rows as "dev", test rows)  metrics.json (last)
        refit/  config.json  predictions.parquet (every manifest row)  metrics.json      (--refit)

No test label is read: labels come from the out-of-fold ("dev") rows only; test labels are
copied into predictions.parquet (as every run does) and scored in metrics.json, never fitted on.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from msa_cache import __version__
from msa_cache.atomic import write_atomic
from msa_cache.errors import UserError
from msa_cache.fit.cv import CVResult, metrics_of
from msa_cache.metrics import classification_metrics
from msa_cache.provenance import library_versions
from msa_cache.train.identity import config_hash
from msa_cache.train.predictions import (
    PREDICTIONS_FILE, SplitPredictions, read_predictions_table, read_run_predictions, stack,
)

STACK_KIND = "stack"
STACKER_FILE = "stacker.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"  # written last: marks a stack folder finished
REFIT_DIR = "refit"


@dataclass(frozen=True)
class StackerSettings:
    """What the stacker is: part of the stack folder's identity."""

    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # inverse L2 strengths tried
    inner_folds: int = 5  # StratifiedKFold of the inner CV choosing C (fewer where a class is rarer)
    seed: int = 0  # the inner folds' shuffle
    scoring: str = "neg_log_loss"
    max_iter: int = 1000
    features: str = "seed-mean out-of-fold probabilities per family"


@dataclass
class StackMember:
    """One family of the grid: its leaderboard label and each seed's cross-validation result."""

    label: str
    results: list[CVResult]

    @property
    def folder(self) -> Path:
        return self.results[0].path.parent


@dataclass
class StackResult:
    path: Path
    label: str
    classes: list[str]
    predictions: dict[str, SplitPredictions]  # "dev": out of fold, "test": the full stacker
    metrics: dict
    seeds: int  # seeds pooled per family
    refit: Path | None = None
    outer_C: list[float] = field(default_factory=list)


def stack_label(labels: list[str]) -> str:
    return f"stack [{'+'.join(labels)}]"


def is_stack_folder(folder: Path) -> bool:
    """A finished stack folder: its config says so and metrics.json is there."""
    config = folder / CONFIG_FILE
    if not (folder / METRICS_FILE).is_file() or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("kind") == STACK_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _fold_ids(member: StackMember) -> list[np.ndarray]:
    """The held-out ids of each fold (each fold run's "dev" rows), the same for every seed of the family."""
    per_seed = [[read_run_predictions(f.path)[1]["dev"].ids for f in r.folds] for r in member.results]
    for other in per_seed[1:]:
        if len(other) != len(per_seed[0]) or not all(np.array_equal(a, b) for a, b in zip(other, per_seed[0])):
            raise ValueError(f"--stack: the seeds of {member.folder} were cross-validated on other folds; "
                             "retrain the family with one --cv-seed")
    return per_seed[0]


def require_members(labels: list[str]) -> None:
    """A stack needs two families or more: one line otherwise (checked before the grid trains)."""
    if len(labels) < 2:
        raise ValueError(f"--stack needs at least 2 run families in the grid, got {len(labels)}"
                         f"{' (' + labels[0] + ')' if labels else ''}: give more --heads or option values")


def check_members(members: list[StackMember]) -> list[np.ndarray]:
    """The K folds the members share (held-out ids per fold); one line where they do not share rows and folds."""
    require_members([m.label for m in members])
    first = members[0]
    folds = _fold_ids(first)
    for m in members[1:]:
        if m.results[0].classes != first.results[0].classes:
            raise ValueError(f"--stack: {m.folder} and {first.folder} have other classes; stack families of one manifest")
        other = _fold_ids(m)
        if len(other) != len(folds) or not all(np.array_equal(a, b) for a, b in zip(other, folds)):
            raise ValueError(f"--stack: {m.folder} and {first.folder} were cross-validated on other rows or folds "
                             "(another manifest, --cv K or --cv-seed); stack families of one manifest, K and cv seed")
    return folds


def _features(members: list[StackMember], split: str) -> SplitPredictions:
    """[1, N, F*C]: each family's seed-mean probabilities of `split`, side by side (rows checked equal)."""
    means = [stack([r.predictions[split] for r in m.results], f"seeds of {m.folder}").ensemble() for m in members]
    return SplitPredictions(means[0].ids, means[0].labels, np.concatenate([p.probs for p in means], axis=-1))


def fit_stacker(x: np.ndarray, y: np.ndarray, settings: StackerSettings, num_classes: int):
    """LogisticRegressionCV on (x, y), C chosen by its inner stratified CV."""
    from sklearn.linear_model import LogisticRegressionCV  # sklearn's linear models: imported where fitted
    from sklearn.model_selection import StratifiedKFold

    rarest = int(np.bincount(y, minlength=num_classes).min())
    inner = min(settings.inner_folds, rarest)
    if inner < 2:
        raise ValueError(f"--stack: a class has {rarest} out-of-fold row(s) in a stacker's training rows; "
                         "the inner CV needs 2 per class (use fewer --cv folds or more data)")
    cv = StratifiedKFold(n_splits=inner, shuffle=True, random_state=settings.seed)
    model = LogisticRegressionCV(Cs=list(settings.Cs), cv=cv, scoring=settings.scoring, max_iter=settings.max_iter)
    with warnings.catch_warnings():
        # sklearn >= 1.8 announces new defaults (l1_ratios, fitted attributes) that change neither this L2 fit
        # nor coef_ / intercept_ / C_, which are all that is read; spelling them out would refuse older versions
        warnings.simplefilter("ignore", FutureWarning)
        return model.fit(x, y)


def stacker_params(model, feature_names: list[str], classes: list[str]) -> dict:
    """The fitted stacker as plain numbers: what stacker.json holds and `apply_stacker` reads."""
    return {"classes": classes, "features": feature_names, "C": float(np.ravel(model.C_)[0]),
            "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}


def apply_stacker(params: dict, x: np.ndarray) -> np.ndarray:
    """Class probabilities [N, C] from stacker.json's numbers (as sklearn's predict_proba: softmax of
    the scores; two classes: one score, sigmoid)."""
    z = x @ np.asarray(params["coef"], dtype=np.float64).T + np.asarray(params["intercept"], dtype=np.float64)
    if z.shape[1] == 1:
        z = np.concatenate([-z, z], axis=1) / 2  # softmax of (-z/2, z/2) = (1 - sigmoid(z), sigmoid(z))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def out_of_fold(x: np.ndarray, y: np.ndarray, held: list[np.ndarray], settings: StackerSettings,
                feature_names: list[str], classes: list[str]) -> tuple[np.ndarray, list[float]]:
    """The stacker's own out-of-fold probabilities: fold k predicted by a stacker fitted on the other
    folds' rows (held: positions of each fold's rows). Also each fold stacker's C."""
    out = np.zeros((len(y), len(classes)))
    chosen = []
    for rows in held:
        train = np.setdiff1d(np.arange(len(y)), rows)
        model = fit_stacker(x[train], y[train], settings, len(classes))
        params = stacker_params(model, feature_names, classes)
        out[rows] = apply_stacker(params, x[rows])
        chosen.append(params["C"])
    return out, chosen


def stack_folder(runs_dir: Path, members: list[StackMember], num_folds: int, cv_seed: int,
                 settings: StackerSettings) -> Path:
    identity = {"members": [[m.folder.name, [r.path.name for r in m.results]] for m in members],
                "cv_folds": num_folds, "cv_seed": cv_seed, "stacker": asdict(settings)}
    return runs_dir / f"{STACK_KIND}-cv{num_folds}-{config_hash(identity)}"


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def _write_predictions(path: Path, ids, splits, labels, probs: np.ndarray, classes: list[str]) -> None:
    """predictions.parquet with a run's columns (train/rundir.py): id, split, label, pred, prob_<class>."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"id": pa.array(list(ids), pa.string()), "split": pa.array(list(splits), pa.string()),
            "label": pa.array([None if v is None or v < 0 else int(v) for v in labels], pa.int64()),
            "pred": pa.array(probs.argmax(1).astype(np.int64))}
    for c, name in enumerate(classes):
        cols[f"prob_{name}"] = pa.array(probs[:, c].astype(np.float32))
    write_atomic(path, lambda p: pq.write_table(pa.table(cols), p))


def _settings_record(settings: StackerSettings) -> dict:
    return {**asdict(settings), "model": "sklearn.linear_model.LogisticRegressionCV (lbfgs, l2)",
            "inner_cv": "sklearn.model_selection.StratifiedKFold(shuffle=True)",
            "outer_cv": "the heads' K folds (fold runs' dev rows)"}


def _refit_features(members: list[StackMember]) -> tuple[dict, np.ndarray]:
    """(the refit runs' id/split/label columns, [N, F*C] seed-mean refit probabilities of every row)."""
    blocks, table = [], None
    for m in members:
        missing = [r.path for r in m.results if r.refit is None]
        if missing:
            raise ValueError(f"--stack --refit: {missing[0]} has no refit run; run compare with --refit")
        probs = []
        for r in m.results:
            t = read_predictions_table(r.refit.path)
            if table is None:
                table = t
            elif t["id"] != table["id"]:
                raise ValueError(f"--stack --refit: {r.refit.path} predicted other rows than {members[0].folder}")
            probs.append(np.stack([np.asarray(t[f"prob_{c}"], dtype=np.float64) for c in r.classes], axis=1))
        blocks.append(np.mean(probs, axis=0))
    return table, np.concatenate(blocks, axis=1)


def _metrics(splits, labels, probs: np.ndarray, classes: list[str]) -> dict:
    splits, labels, preds = np.asarray(splits, dtype=object), np.asarray(labels), probs.argmax(1)
    out = {}
    for split in ("train", "dev", "test"):
        mask = (splits == split) & (labels >= 0)
        if mask.any():
            out[split] = classification_metrics(labels[mask], preds[mask], classes)
    return out


def fit_stack(members: list[StackMember], num_folds: int, cv_seed: int, runs_dir: str | Path, refit: bool = False,
              settings: StackerSettings = StackerSettings(), log: Callable[[str], None] = print) -> StackResult:
    """Fit the stacker on the members' out-of-fold probabilities, score it out of fold over the heads'
    own folds, write its folder (and, with refit, its predictions of every row from the refit runs)."""
    held_ids = check_members(members)
    classes = members[0].results[0].classes
    oof = _features(members, "dev")
    if not np.array_equal(np.sort(np.concatenate(held_ids)), oof.ids):
        raise ValueError(f"--stack: the folds of {members[0].folder} do not cover its out-of-fold rows; "
                         "delete the family's folder and train it again")
    held = [np.searchsorted(oof.ids, ids) for ids in held_ids]
    x, y = oof.probs[0], oof.labels
    names = [f"{m.label}:{c}" for m in members for c in classes]
    oof_probs, outer_c = out_of_fold(x, y, held, settings, names, classes)
    params = stacker_params(fit_stacker(x, y, settings, len(classes)), names, classes)
    ids, splits, labels, probs = [oof.ids], [["dev"] * len(y)], [y], [oof_probs]
    if all("test" in r.predictions for m in members for r in m.results):
        test = _features(members, "test")
        ids.append(test.ids)
        splits.append(["test"] * len(test.ids))
        labels.append(test.labels)  # copied for scoring, as in a run's predictions.parquet; never fitted on
        probs.append(apply_stacker(params, test.probs[0]))

    path = stack_folder(Path(runs_dir), members, num_folds, cv_seed, settings)
    label = stack_label([m.label for m in members])
    seeds = min(len(m.results) for m in members)
    config = {"kind": STACK_KIND, "label": label, "classes": classes, "cv_folds": num_folds, "cv_seed": cv_seed,
              "seeds": seeds,
              "members": [{"label": m.label, "family": m.folder.name, "seeds": [r.path.name for r in m.results]}
                          for m in members],
              "stacker": _settings_record(settings), "outer_fold_C": outer_c,
              "msa_cache_version": __version__, "versions": library_versions()}
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / CONFIG_FILE, config)
    _write_json(path / STACKER_FILE, params)
    all_splits = np.concatenate([np.asarray(s, dtype=object) for s in splits])
    all_labels = np.concatenate(labels)
    _write_predictions(path / PREDICTIONS_FILE, np.concatenate(ids), all_splits, all_labels,
                       np.concatenate(probs), classes)
    refit_dir = None
    if refit:
        refit_dir = _write_refit(path, members, params, config)
    # metrics.json last (the finished marker), from the file as written, so that a stack read back
    # later (compare --all-runs) is the very same row
    _, preds = read_run_predictions(path)
    _write_json(path / METRICS_FILE, metrics_of(preds, classes))
    result = read_stack(path)
    log(f"{label}: out-of-fold accuracy {result.metrics['dev']['accuracy']:.4f} "
        f"(C {params['C']:g}; outer folds {', '.join(f'{c:g}' for c in outer_c)})  {path}"
        + (f"\n  refit on every row: {refit_dir}" if refit_dir is not None else ""))
    return result


def _write_refit(path: Path, members: list[StackMember], params: dict, config: dict) -> Path:
    """refit/: the full stacker on the refit runs' seed-mean probabilities of every manifest row."""
    table, x = _refit_features(members)
    probs = apply_stacker(params, x)
    labels = np.array([-1 if v is None else v for v in table["label"]], dtype=np.int64)
    out = path / REFIT_DIR
    out.mkdir(exist_ok=True)
    refits = {m.label: [str(r.refit.path.relative_to(path.parent)) for r in m.results] for m in members}
    _write_json(out / CONFIG_FILE, {**config, "refit_runs": refits})
    _write_predictions(out / PREDICTIONS_FILE, table["id"], table["split"], labels, probs, config["classes"])
    _write_json(out / METRICS_FILE, _metrics(table["split"], labels, probs, config["classes"]))
    return out


def read_stack(folder: str | Path) -> StackResult:
    """A finished stack folder as written by fit_stack: its out-of-fold (and test) predictions and metrics."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        metrics = json.loads((folder / METRICS_FILE).read_text())
        label, seeds, outer = str(config["label"]), int(config["seeds"]), list(config.get("outer_fold_C", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"stack folder is unreadable ({type(e).__name__})", folder,
                        "delete it; compare --cv K --stack writes it again") from None
    classes, preds = read_run_predictions(folder)
    refit = folder / REFIT_DIR
    return StackResult(folder, label, classes, preds, metrics, seeds,
                       refit if (refit / METRICS_FILE).is_file() else None, outer)


class StackPredictor:
    """A stack fitted with --refit as a predictor of new posts (`msa_cache.load(STACK)`, `msa-cache predict
    STACK`): every member family's refit runs predict (each replays its own encoders), their seed means go
    side by side through stacker.json. The refit runs are found beside the stack folder, in runs/<manifest>/."""

    def __init__(self, folder: str | Path, device: str = "auto", batch_size: int = 32):
        from msa_cache.finished_run import load_predictor  # torch and the encoders: only where a stack predicts

        folder = Path(folder)
        refit = folder / REFIT_DIR
        if not (refit / METRICS_FILE).is_file():
            raise FileNotFoundError(f"{folder}: this stack has no refit; run compare --cv K --stack --refit to "
                                    "predict new posts with it")
        try:
            config = json.loads((refit / CONFIG_FILE).read_text())
            self.params = json.loads((folder / STACKER_FILE).read_text())
            self.classes = list(config["classes"])
            members = [m["label"] for m in config["members"]]
            runs = {label: list(config["refit_runs"][label]) for label in members}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"stack folder is unreadable ({type(e).__name__})", folder,
                            "delete it; compare --cv K --stack --refit writes it again") from None
        if self.params.get("features") != [f"{label}:{c}" for label in members for c in self.classes]:
            raise UserError("stacker.json's features are not its members' classes", folder,
                            "delete it; compare --cv K --stack --refit writes it again")
        self.members = [[load_predictor(folder.parent / p, device=device, batch_size=batch_size) for p in runs[label]]
                        for label in members]

    @property
    def uses(self) -> set[str]:
        return set().union(*(p.uses for seeds in self.members for p in seeds))

    @property
    def text_pair(self) -> bool:
        return any(p.text_pair for seeds in self.members for p in seeds)

    def probs(self, manifest, rows: np.ndarray) -> np.ndarray:
        x = np.concatenate([np.mean([p.probs(manifest, rows) for p in seeds], axis=0) for seeds in self.members],
                           axis=1)
        return apply_stacker(self.params, x.astype(np.float64)).astype(np.float32)
