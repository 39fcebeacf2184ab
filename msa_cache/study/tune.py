"""Hyper-parameter search for one head with Optuna, on the dev split only.

The space is what the head's Config and the trainer's TrainConfig declare in
their field metadata (msa_cache/search_space.py), less the options the user fixed.
Every trial is a normal run directory (seed 0), so `compare --all-runs` lists it;
its objective is the dev monitor score (the test split is never looked at), and
its per-epoch dev scores go to a median pruner that stops weak trials early.

With cross-validation (cv_folds=K, fit/cv.py) a trial is instead the K fold runs of
train+dev pooled (seed 0, folds cut with cv_seed), and its objective the out-of-fold
monitor score: the number `compare --cv K` shows for that config. Pruning watches
fold 0's per-epoch held-out score (every trial's fold 0 holds out the same rows), so a
pruned trial stops inside fold 0 and leaves no run directory; a trial past fold 0
runs all its folds.

The study lives in an Optuna journal file, so any number of processes (SLURM array
tasks, torchrun ranks) that run the same command share one study without a
database server; together they run `n_trials` trials. The process that finds no
trial left running reports the best config as the `msa-cache fit` command that
reproduces it and runs that config over seeds 0..K-1.

Optuna is an optional dependency: `pip install "msa-cache[tune]"`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa_cache.heads import HEADS, get_head
from msa_cache.manifest import read_manifest
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.train.identity import config_hash, monitor_for
from msa_cache.fit.cv import fit_family, fold_specs
from msa_cache.fit.features import open_head_features
from msa_cache.fit.folds import DEFAULT_CV_SEED, cv_folds, pooled_rows
from msa_cache.metrics import monitor_key, monitor_metric
from msa_cache.fit.trainer import RunResult, plan_run
from msa_cache.search_space import Choice, Range, field_default, searched_fields
from msa_cache.study.journal import check_journal

TRIAL_SEED = 0  # every trial trains seed 0; the best config is then run over --seeds
PRUNER_STARTUP_TRIALS = 5  # trials that always run to the end before the median means anything
PRUNER_WARMUP_EPOCHS = 2  # epochs a trial always gets (early dev scores are noisy)


@dataclass(frozen=True)
class SearchParam:
    name: str
    scope: str  # "head" (its Config) or "train" (TrainConfig)
    space: Range | Choice
    default: Any


def search_space(head: str, fixed: set[str] = frozenset()) -> list[SearchParam]:
    """The head's declared space plus the trainer's, less the options in `fixed`."""
    cfg = get_head(head).Config
    head_space = searched_fields(cfg)
    if not head_space:
        tunable = sorted(name for name, cls in HEADS.items() if searched_fields(cls.Config))
        raise ValueError(f"head '{head}' ({cfg.__module__}.{cfg.__qualname__}) declares no search space: tune one of "
                         f"{', '.join(tunable)}, or add metadata={{'search': Range(...)}} to its Config fields")
    params = [SearchParam(n, "head", s, field_default(cfg, n)) for n, s in head_space.items()]
    params += [SearchParam(n, "train", s, field_default(TrainConfig, n)) for n, s in searched_fields(TrainConfig).items()]
    params = [p for p in params if p.name not in fixed]
    if not params:
        raise ValueError(f"every searched option of '{head}' is fixed on the command line: leave one free to tune")
    return params


def fixed_options(head_options: dict, train: TrainConfig) -> set[str]:
    """Options the user set, which leave the space: any given head option, and searched trainer
    options that are not None (their None default means "not set")."""
    return set(head_options) | {k for k in searched_fields(TrainConfig) if getattr(train, k) is not None}


def format_space(params: list[SearchParam]) -> str:
    width = max(len(p.name) for p in params)
    return "\n".join(f"  {p.name:<{width}}  {p.scope:<5}  {p.space.describe():<34} default {p.default}"
                     for p in params)


def _rounded(value: float) -> float:
    # Three significant digits: readable run names and `fit` commands; finer than any score difference.
    return float(f"{value:.3g}")


def _suggest(trial, p: SearchParam):
    if isinstance(p.space, Choice):
        return trial.suggest_categorical(p.name, list(p.space.values))
    return _rounded(trial.suggest_float(p.name, p.space.low, p.space.high, log=p.space.log))


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError("optuna is not installed (msa-cache tune needs it): pip install 'msa-cache[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def journal_storage(path: str | Path):
    """An Optuna JournalStorage on one file: several processes (also on NFS) share it via file locks."""
    optuna = _optuna()
    path = Path(path)
    check_journal(path)  # before Optuna appends to a damaged file
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # Optuna < 4.0
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def fit_command(spec: RunSpec, runs_root: str | Path, seeds: list[int], refit: bool = False) -> str:
    """The `msa-cache fit` command line that trains `spec` (with these seeds) into `runs_root`;
    with `--cv K [--cv-seed S]` where the spec cross-validates (and `--refit` if asked)."""
    args = ["msa-cache", "fit", "--head", spec.head, "--manifest", str(spec.manifest)]
    roots = {str(Path(p).parent.parent) for p in spec.caches.values()}
    if len(roots) == 1:
        args += ["--cache-root", roots.pop()]
    for role, path in sorted(spec.caches.items()):
        args += [f"--{role}-cache", Path(path).name]
    args += ["--runs", str(runs_root)]
    defaults = dataclasses.asdict(TrainConfig())
    train = spec.train.identity()
    head_defaults = dataclasses.asdict(get_head(spec.head).Config())
    head = {k: v for k, v in spec.head_options.items() if head_defaults.get(k) != v}
    for name, value in [*((k, v) for k, v in train.items() if defaults[k] != v), *sorted(head.items())]:
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    if spec.cv_folds:
        args += ["--cv", str(spec.cv_folds)]
        if spec.cv_seed != DEFAULT_CV_SEED:
            args += ["--cv-seed", str(spec.cv_seed)]
        if refit:
            args.append("--refit")
    for s in seeds:
        args += ["--seed", str(s)]
    return " ".join(shlex.quote(a) for a in args)


@dataclass
class TuneResult:
    study_name: str
    storage: Path
    counts: dict[str, int]  # trial state -> number of trials in the study
    ran: int  # trials this process ran
    seconds: float
    best_value: float | None = None
    best_number: int | None = None
    best_spec: RunSpec | None = None
    best_run: Path | None = None
    fit_command: str | None = None
    refit_command: str | None = None  # with cv: the command that also trains the final model on train+dev
    seed_results: list[RunResult] = field(default_factory=list)  # with cv: one per seed, its out-of-fold metrics
    refits: list[Path] = field(default_factory=list)  # with cv and refit: each seed's refit run
    still_running: int = 0

    def seed_stat(self, key: str) -> tuple[float, float] | None:
        vals = [r.metrics["dev"][key] for r in self.seed_results if "dev" in r.metrics]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else None


def tune(manifest_path: str | Path, caches: dict[str, Path], head: str, n_trials: int,
         head_options: dict | None = None, train: TrainConfig | None = None, runs_root: str | Path = "runs",
         storage: str | Path | None = None, timeout: float | None = None, seeds: int = 3,
         sampler_seed: int | None = None, cv: int = 0, cv_seed: int = DEFAULT_CV_SEED, refit: bool = False,
         log: Callable[[str], None] = print, tensorboard: bool = False) -> TuneResult:
    """Run trials of `head` until the study holds `n_trials` (counting other processes' trials).

    head_options / train: fixed settings; what they set leaves the space (`fixed_options`). storage: the journal file [default:
    <runs>/<manifest>/tune-<study>.journal, the study named by everything fixed]. timeout: seconds
    after which this process starts no new trial. seeds: the best config's seeds 0..K-1.
    cv: K > 0 scores each trial by K-fold cross-validation (folds cut with cv_seed) instead of the
    dev split; refit: the best config's seed runs also train the refit on all of train+dev.
    tensorboard: every trial's and seed's run writes TensorBoard events (fit_family; a pruned trial leaves
    no run directory, so none).
    """
    optuna = _optuna()
    from optuna.trial import TrialState

    head_options = dict(head_options or {})
    train = train or TrainConfig()
    params = search_space(head, fixed_options(head_options, train))
    manifest = read_manifest(manifest_path)
    if train.monitor is None:  # the dataset's default, resolved as fit's plan_run does
        train = dataclasses.replace(train, monitor=monitor_for(train, manifest))
    if refit and not cv:
        raise ValueError("refit goes with cv K (it trains for the epoch count the folds chose)")
    labels, splits = manifest.labels("label"), np.array(manifest.column("split"))
    if cv:  # fails here, before any trial, on too few rows per class (or K < 2)
        cv_folds(labels[pooled_rows(splits, labels)], cv, cv_seed)
    elif not ((splits == "dev") & (labels >= 0)).any():
        raise ValueError(f"{manifest.path}: no labeled dev rows; tune's objective is the dev score, so the "
                         f"manifest needs a labeled dev split")
    features = open_head_features(manifest, caches, head, head_options, train.text_pool)
    base = RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head, head_options, train, TRIAL_SEED,
                   cv_folds=cv, cv_seed=cv_seed)
    key = monitor_key(train.monitor)
    scored = f"{cv}-fold out-of-fold" if cv else "dev"

    # The study's name covers everything a trial's score depends on besides the sampled values,
    # so a journal never mixes trials of other data, caches or fixed settings (nor CV and
    # dev-split trials: the identity holds the folds and their seed when cv is on).
    searched = {p.name for p in params}
    identity = base.identity(manifest.fingerprint(), features.cache_fingerprints())
    identity["train"] = {k: v for k, v in identity["train"].items() if k not in searched}
    identity.update(seed=TRIAL_SEED, space=[(p.name, p.scope, repr(p.space)) for p in params])
    study_name = f"{head}{f'-cv{cv}' if cv else ''}-{config_hash(identity)}"
    storage = Path(storage) if storage else Path(runs_root) / manifest.name / f"tune-{study_name}.journal"
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)  # constant liar: parallel workers
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)
    study = optuna.create_study(study_name=study_name, storage=journal_storage(storage), direction="maximize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    log(f"study {study_name} in {storage}: {n_trials} trials in total, objective {scored} {train.monitor}")

    t0, ran = time.time(), 0
    while len(study.get_trials(deepcopy=False)) < n_trials:
        if timeout is not None and time.time() - t0 > timeout:
            log(f"--timeout {timeout:g}s reached: this process starts no new trial")
            break
        trial = study.ask()
        if trial.number >= n_trials:  # another process took the last trial between the count and the ask
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        ran += 1
        _run_trial(optuna, study, trial, base, params, features, runs_root, key, n_trials, scored, log, tensorboard)

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    result = TuneResult(study_name, storage, {k: v for k, v in counts.items() if v}, ran, time.time() - t0)
    result.still_running = counts.get("running", 0)
    if result.still_running:
        log(f"{result.still_running} trial(s) still running in other processes: the last process to finish "
            f"reports the best config (or run this command again once they are done)")
        return result
    if not counts.get("complete"):
        raise ValueError(f"study {study_name} ({storage}): no trial finished; see the errors above")

    best = study.best_trial
    best_spec = copy.deepcopy(base)
    best_spec.head_options = {**head_options, **best.user_attrs["head_options"]}
    best_spec.train = dataclasses.replace(train, **best.user_attrs["train"])
    result.best_value, result.best_number, result.best_spec = best.value, best.number, best_spec
    result.best_run = Path(best.user_attrs["run"])
    result.fit_command = fit_command(best_spec, runs_root, list(range(seeds)), refit=refit)
    log(f"best: trial #{best.number}, {scored} {train.monitor} {best.value:.4f}  {result.best_run}")
    log(f"reproduce: {result.fit_command}")
    if cv and not refit:
        result.refit_command = fit_command(best_spec, runs_root, [0], refit=True)
        log(f"final model on all of train+dev: {result.refit_command}")
    for seed in range(seeds):
        spec = dataclasses.replace(copy.deepcopy(best_spec), seed=seed)
        t_seed = time.time()
        r = fit_family(spec, cv, refit, runs_root, features, log=lambda m: None, tensorboard=tensorboard)
        if getattr(r, "refit", None) is not None:
            result.refits.append(r.refit.path)
        r = RunResult(r.path, r.metrics, skipped=r.skipped, seconds=r.seconds)  # with cv: its out-of-fold metrics
        state = "finished before, skipped" if r.skipped else f"trained in {time.time() - t_seed:.1f}s"
        log(f"  seed {seed}: {scored} {train.monitor} {r.metrics['dev'][key]:.4f}  ({state})  {r.path}")
        result.seed_results.append(r)
    if result.seed_results:
        mean, std = result.seed_stat(key)
        log(f"best config over {seeds} seed(s): {scored} {train.monitor} {mean:.4f} ± {std:.4f}")
    return result


def _run_trial(optuna, study, trial, base: RunSpec, params: list[SearchParam], features, runs_root, key: str,
               n_trials: int, scored: str, log, tensorboard: bool = False) -> None:
    from optuna.trial import TrialState

    values = {p.name: _suggest(trial, p) for p in params}
    head_values = {p.name: values[p.name] for p in params if p.scope == "head"}
    train_values = {p.name: values[p.name] for p in params if p.scope == "train"}
    spec = copy.deepcopy(base)
    spec.head_options = {**base.head_options, **head_values}
    spec.train = dataclasses.replace(base.train, **train_values)
    # With cv the trial's run is the seed folder of its K folds; fold 0 is what the pruner watches.
    watched = fold_specs(spec, spec.cv_folds)[0] if spec.cv_folds else spec
    path = plan_run(copy.deepcopy(watched), runs_root, features)
    run = path.parent if spec.cv_folds else path
    for name, value in (("head_options", head_values), ("train", train_values), ("run", str(run))):
        trial.set_user_attr(name, value)
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    prefix = f"trial #{trial.number} ({trial.number + 1}/{n_trials})"

    def report(epoch: int, record: dict) -> None:
        score = record.get(monitor_metric(spec.train.monitor).dev_key)
        if score is None:
            return
        trial.report(score, epoch)  # step = epoch (from 1), so warm-up covers epochs 1..PRUNER_WARMUP_EPOCHS
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {'fold 0 held-out' if spec.cv_folds else 'dev'} {score:.4f}")

    try:
        r = fit_family(spec, spec.cv_folds, False, runs_root, features, log=lambda m: None,
                       tensorboard=tensorboard, on_epoch_end=report)  # with cv: the pruner watches fold 0
    except optuna.TrialPruned as e:
        study.tell(trial, state=TrialState.PRUNED)
        for folder in (path.parent, path.parent.parent)[:2 if spec.cv_folds else 1]:
            with contextlib.suppress(OSError):  # the run's folders, if the pruned run left them empty
                folder.rmdir()
        log(f"{prefix}: pruned at {e}  {shown}")
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    value = r.metrics["dev"][key]
    study.tell(trial, value)
    state = "finished before, read back" if r.skipped else f"{r.seconds:.1f}s"
    log(f"{prefix}: {scored} {value:.4f} ({state})  {shown}  {r.path}")
