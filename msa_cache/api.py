"""The command-line verbs as Python functions, for notebooks (docs/python.md). Each takes the CLI's
options as keyword arguments, the same dataclass fields the flags are generated from, and returns a
result object instead of printing:

    from msa_cache import api
    api.extract("manifests/m.parquet", ["minilm", "efficientnet-lite0"])          # -> ExtractReport
    run = api.fit("manifests/m.parquet", "ae-cat", latent=64, text_pool="mean")   # -> RunResult
    run.path, run.metrics["dev"]["weighted_f1"]
    board = api.compare("manifests/m.parquet", ["late", "ae-cat"], seeds=3, latent=[32, 64])
    board.rows, board.to_frame(), print(board.markdown())
    model = api.load(run.path)                                                    # -> Predictor
    table = api.evaluate(["runs/m"], corrupt=["image=drop", "text=shuffle"])      # -> Evaluations
    table.rows, print(table.markdown())

The functions live here rather than as `msa_cache.fit` / `msa_cache.extract` because those names are
the subpackages of the pipeline's stages.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from msa_cache.extract import extract
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.cv import fit_family
from msa_cache.fit.features import resolve_caches
from msa_cache.heads import get_head, make_config
from msa_cache.manifest import read_manifest
from msa_cache.predictor import Predictor, load
from msa_cache.study.compare import Entry, compare as compare_grid, leaderboard_markdown, leaderboard_rows
from msa_cache.study.compare import summarise, write_leaderboard
from msa_cache.study.stats import N_RESAMPLES
from msa_cache.train.identity import monitor_for

__all__ = ["extract", "fit", "compare", "evaluate", "load", "Leaderboard", "Evaluations", "Predictor"]

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _split_options(options: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """TrainConfig's fields, and the rest as head options."""
    train = TrainConfig(**{k: v for k, v in options.items() if k in _TRAIN_FIELDS})
    return train, {k: v for k, v in options.items() if k not in _TRAIN_FIELDS}


def _caches(man, cache_root, text_cache, image_cache, clip_cache) -> dict[str, str]:
    caches = resolve_caches(man, cache_root, text_cache, image_cache, clip_cache)
    return {k: str(v) for k, v in caches.items()}


def fit(manifest: str | Path, head: str, seed: int = 0, *, cache_root: str | Path = "cache",
        text_cache: str | None = None, image_cache: str | None = None, clip_cache: str | None = None,
        runs: str | Path = "runs", cv: int = 0, cv_seed: int = 0, refit: bool = False, tensorboard: bool = False,
        log: Callable[[str], None] | None = None, **options):
    """Train one head on cached features, as `msa-cache fit` (a finished run is read back, not retrained).

    options: TrainConfig's fields (max_epochs=20, monitor="macro-f1", text_pool="mean", ...) and the
    head's Config fields (latent=64, ...). Returns the run (`.path`, `.metrics`, `.skipped`, `.seconds`),
    or with cv=K the cross-validated result (`.folds`, `.metrics` out-of-fold, `.refit`)."""
    train, head_options = _split_options(options)
    make_config(head, head_options)  # an option the head lacks is an error before any work
    spec = RunSpec(str(manifest), _caches(read_manifest(manifest), cache_root, text_cache, image_cache, clip_cache), head,
                   head_options, train, seed, cv_folds=cv, cv_seed=cv_seed)
    quiet = log or (lambda message: None)
    return fit_family(spec, cv, refit, runs, log=quiet, progress=log, tensorboard=tensorboard)


@dataclass
class Leaderboard:
    """compare's result: entries best first (seed-ensemble rows included), the monitor they are ranked
    by and the files written (.md, .csv, .png)."""

    entries: list[Entry]
    monitor: str
    paths: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        """One dict per row: the CSV's columns (means, stds, intervals, p-values per split)."""
        return leaderboard_rows(self.entries, self.monitor)

    def markdown(self) -> str:
        return leaderboard_markdown(self.entries, self.monitor)

    def to_frame(self):
        """The rows as a pandas DataFrame (needs pandas: pip install 'msa-cache[pandas]')."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Leaderboard.to_frame needs pandas: pip install 'msa-cache[pandas]'") from None
        return pd.DataFrame(self.rows)

    @property
    def best(self) -> Entry:
        return self.entries[0]


def compare(manifest: str | Path, heads: Sequence[str], seeds: int = 3, *, cache_root: str | Path = "cache",
            text_cache: str | None = None, image_cache: str | None = None, clip_cache: str | None = None,
            runs: str | Path = "runs", cv: int = 0, cv_seed: int = 0, refit: bool = False, stack: bool = False,
            leaderboard: str | Path | None = None, all_runs: bool = False, resamples: int = N_RESAMPLES,
            ensembles: bool = True, log: Callable[[str], None] | None = None, **options) -> Leaderboard:
    """A grid of heads x options x seeds 0..seeds-1, as `msa-cache compare`: trains what is not finished,
    then ranks every row with intervals and paired tests and writes the leaderboard files
    (`leaderboard`: their path prefix, default <runs>/<manifest>/leaderboard[-cvK]).

    options: TrainConfig's fields (one value each) and head options, a value or a list of values (a grid
    axis); an option applies to the heads that have it. stack (with cv): also a row stacking the grid's
    families on their out-of-fold predictions (`compare --stack`)."""
    heads = list(heads)
    for name in heads:
        get_head(name)  # an unknown head: one line, before any work
    train_options = {k: v for k, v in options.items() if k in _TRAIN_FIELDS}
    grid = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in options.items()
            if k not in _TRAIN_FIELDS}
    train = TrainConfig(**train_options)
    quiet = log or (lambda message: None)
    man = read_manifest(manifest)
    caches = {k: Path(v) for k, v in _caches(man, cache_root, text_cache, image_cache, clip_cache).items()}
    entries = compare_grid(manifest, caches, heads, grid, list(range(seeds)), train, runs, log=quiet,
                           all_runs=all_runs, cv=cv, cv_seed=cv_seed, refit=refit, stack=stack)
    monitor = monitor_for(train, man)
    entries = summarise(entries, monitor, ensembles=ensembles, n_resamples=resamples)
    name = f"leaderboard-cv{cv}" if cv else "leaderboard"
    paths = write_leaderboard(entries, leaderboard or Path(runs) / man.name / name, monitor)
    return Leaderboard(entries, monitor, list(paths))


@dataclass
class Evaluations:
    """evaluate's result: the evaluation files written, and the table of every evaluation of those runs
    (`rows`: the robustness table's rows, `transfer`: the transfer matrices' cells)."""

    written: list[Path]
    rows: list[dict]
    transfer: list[dict]

    def markdown(self) -> str:
        from msa_cache.study.eval_table import robustness_markdown, transfer_markdown

        return robustness_markdown(self.rows) + transfer_markdown(self.transfer)


def evaluate(runs: str | Path | Sequence[str | Path], corrupt: Sequence[str] = (), *,
             manifest: str | Path | None = None, cache_root: str | Path = "cache", class_map: dict[str, str] | None = None, seed: int = 0,
             device: str = "auto", out: str | Path | None = None,
             log: Callable[[str], None] | None = None) -> Evaluations:
    """Score finished cached-feature runs with a side corrupted ("image=drop", "text=shuffle",
    "image=noise:0.5") and/or on another manifest, as `msa-cache evaluate`: writes RUN/evals/<name>.json and
    .parquet, and with `out` the table as OUT.md and OUT.csv. runs: run folders, family folders or
    runs/<manifest>."""
    from msa_cache.study.corrupt import parse_corruption
    from msa_cache.study.eval_table import read_evaluations, robustness_rows, transfer_matrix, write_tables
    from msa_cache.study.evaluate import evaluate as evaluate_runs

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    corruptions = [parse_corruption(c, seed) for c in corrupt]
    written = evaluate_runs(paths, corruptions, manifest, cache_root, dict(class_map or {}), device, None,
                            log=log or (lambda message: None))
    evaluations = read_evaluations(paths)
    result = Evaluations(written, robustness_rows(evaluations), transfer_matrix(evaluations))
    if out is not None:
        write_tables(result.rows, result.transfer, out)
    return result
