"""Run a grid of heads x options x seeds (skipping finished runs) and summarise
it as a leaderboard: mean +- std over seeds per metric, on dev (and on test
where it is labeled), written as Markdown, CSV and a bar chart.

Model selection inside each run uses dev only; the leaderboard sorts by the dev
monitor metric and never looks at test to choose anything.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.model_selection import ParameterGrid

from msa_cache import threads
from msa_cache.heads import get_head
from msa_cache.manifest import read_manifest
from msa_cache.partition import Partition
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.train.identity import monitor_for
from msa_cache.fit.cv import CVResult, cv_predictions, finished_cv_seeds, fit_family, metrics_of
from msa_cache.train.rundir import RunResult
from msa_cache.metrics import ACCURACY, DEFAULT_MONITOR, METRIC_KEYS, METRICS, monitor_key, monitor_metric
from msa_cache.train.predictions import SplitPredictions, family_predictions, stack
from msa_cache.train.rundir import finished_seeds, is_finished, read_metrics, stale_tmp_dirs
from msa_cache.study.stats import N_RESAMPLES, RowStats, compare_rows


def expand_grid(heads: list[str], grid: dict[str, list[Any]]) -> list[tuple[str, dict]]:
    """Every (head, options) pair: each head takes the grid options it has, in all combinations."""
    used: set[str] = set()
    out = []
    for name in heads:
        fields = {f.name for f in dataclasses.fields(get_head(name).Config)}
        mine = {k: v for k, v in grid.items() if k in fields}
        used |= set(mine)
        # sklearn's ParameterGrid: the options sorted by name, the last one varying fastest; no option: one {}
        out += [(name, dict(options)) for options in ParameterGrid(mine)]
    unused = sorted(set(grid) - used)
    if unused:
        raise ValueError(f"option(s) {unused} belong to none of the heads {heads}")
    return out


def shard_grid(items: list, num_shards: int, shard_index: int) -> list:
    """This shard's part of a grid: item k belongs to shard k % num_shards (round robin, so every
    shard gets a mix of heads and seeds); the shards' parts are disjoint and cover the grid."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} (of {num_shards} shards): use 0 <= index < shards")
    return [x for k, x in enumerate(items) if k % num_shards == shard_index]


class GridProgress:
    """"run k/n" and an ETA for the log line of each run this process goes through, in the order given
    by `heads` (the head of each run): each run left counts its own head's mean seconds over the runs
    this process trained (an `mha` run takes several times a `late` one), or the mean of all trained
    runs for a head not timed yet. Finished runs it skipped count as done, not in the means; the ETA is
    an upper bound where later runs turn out finished too."""

    def __init__(self, heads: list[str]):
        self.heads, self.done, self.trained = list(heads), 0, {}
        self.total = len(self.heads)

    def step(self, seconds: float | None) -> tuple[str, str]:
        """Count the next run (seconds: its training time; None: skipped): its `run k/n` (padded, so the
        log's columns line up) and `ETA ...` ("" when nothing is left, or no run has trained yet to time)."""
        from msa_cache.train.loop import format_duration  # (torch: only where a grid trains)

        head = self.heads[self.done]
        self.done += 1
        if seconds is not None:
            self.trained.setdefault(head, []).append(seconds)
        width = len(f"run {self.total}/{self.total}")
        left = self.heads[self.done:]
        eta = ""
        if left and self.trained:
            overall = float(np.mean([s for times in self.trained.values() for s in times]))
            means = {h: float(np.mean(times)) for h, times in self.trained.items()}
            eta = f"ETA {format_duration(sum(means.get(h, overall) for h in left))}"
        return f"run {self.done}/{self.total}".ljust(width), eta


def _read_finished(spec: RunSpec, runs_root, features) -> RunResult | None:
    """Another shard's grid run, read back if it has finished."""
    from msa_cache.fit.trainer import plan_run

    path = plan_run(spec, runs_root, features)
    if not is_finished(path):
        return None
    return RunResult(path, read_metrics(path), skipped=True)


@dataclass
class Entry:
    head: str
    options: dict
    results: list[RunResult] = field(default_factory=list)
    pending: int = 0  # grid runs of other shards not finished yet
    # Seed-ensemble and cross-validation rows carry their predictions (and `results` hold
    # metrics computed from them); plain rows read predictions.parquet of their runs.
    preds: dict[str, SplitPredictions] | None = None
    classes: list[str] | None = None
    kind: str = "seeds"  # "seeds" | "ensemble" | "cv" | "stack"
    members: int | None = None  # seeds behind an ensemble row (a stack row: seeds pooled per family)
    refits: list[Path] = field(default_factory=list)  # CV rows: refit runs on all of train+dev
    stats: dict[str, RowStats] = field(default_factory=dict)  # split -> interval and tests

    @property
    def label(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.head} {opts}".strip()

    @property
    def n_seeds(self) -> int:
        return self.members if self.members is not None else len(self.results)

    def predictions(self) -> dict[str, SplitPredictions]:
        """Per split, the row's predictions ([seeds, rows, classes]); {} where its runs have none."""
        if self.preds is None:
            runs = [r.path for r in self.results]
            if not runs or not all((p / "predictions.parquet").is_file() for p in runs):
                self.preds, self.classes = {}, None
            else:
                self.classes, self.preds = family_predictions(runs)
        return self.preds

    def stat(self, split: str, metric: str) -> tuple[float, float] | None:
        vals = [r.metrics[split][metric] for r in self.results if split in r.metrics]
        if not vals:
            return None
        return float(np.mean(vals)), float(np.std(vals))


def compare(manifest_path: str | Path, caches: dict[str, Path], heads: list[str], grid: dict[str, list],
            seeds: list[int], train: TrainConfig, runs_root: str | Path = "runs",
            log: Callable[[str], None] = print, all_runs: bool = False,
            partition: Partition = Partition(), cv: int = 0, cv_seed: int = 0,
            refit: bool = False, batch_seeds: bool | None = None, stack: bool = False) -> list[Entry]:
    """Train the grid (finished runs are read back, not retrained) and return its entries, best first.

    partition: train only this shard's part of the (head, options, seed) grid (`shard_grid`);
    the other shards' runs are read back where finished and counted in `Entry.pending` where not.

    all_runs: also list every other finished run family of this manifest: other options,
    other seeds' grids, and `finetune` runs, which share the run directory format.
    cv: K > 0 cross-validates every configuration on K folds of train+dev instead (rows
    scored on their out-of-fold predictions; see fit/cv.py); refit: also train each on
    all of train+dev with the folds' epoch count. With all_runs, other finished CV families.
    batch_seeds: None: train a configuration's seeds together where its head allows it and it pays
    (fit/seeds.py; the same runs up to float rounding); True: wherever the head allows it; False: one at a time.
    stack: with cv, also a row stacking the grid's families on their out-of-fold predictions (study/stack.py).
    """
    from msa_cache.fit.seeds import fit_seeds  # training code, and torch: imported where used

    if stack and not cv:
        raise ValueError("--stack goes with --cv K: it stacks the families' out-of-fold predictions")
    if cv:
        return _compare_cv(manifest_path, caches, heads, grid, seeds, train, runs_root, log, all_runs, cv,
                           cv_seed, refit, stack)
    manifest = read_manifest(manifest_path)
    monitor = monitor_for(train, manifest)
    features = {}  # one FeatureSet per (text_pool, hidden layers, image pool) so pooled arrays load once
    entries = []
    t0 = time.time()
    cells = expand_grid(heads, grid)
    owned = set(shard_grid(range(len(cells) * len(seeds)), partition.count, partition.index))
    others = []  # other shards' runs: looked up once this shard's own are done
    progress = GridProgress([cells[k // len(seeds)][0] for k in sorted(owned)])  # this shard's runs, in order
    for i, (head, options) in enumerate(cells):
        entry = Entry(head, options)
        fs = _features_for(features, manifest, caches, train, head, options)
        threads.use(get_head(head).compute)
        mine = []
        for j, seed in enumerate(seeds):
            spec = RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head, dict(options),
                           dataclasses.replace(train), seed)
            if i * len(seeds) + j not in owned:
                others.append((entry, spec, fs))
            else:
                mine.append(spec)
        # this shard's seeds of the cell: trained together where the head allows it (fit/seeds.py)
        for r in fit_seeds(mine, runs_root, fs, log=log, batch=batch_seeds):
            step, eta = progress.step(None if r.skipped else r.seconds)
            state = "skipped (finished)" if r.skipped else f"{r.seconds:.1f}s"
            _log_run(log, entry, r, monitor, state, step, eta)
            entry.results.append(r)
        entries.append(entry)
    for entry, spec, fs in others:
        r = _read_finished(spec, runs_root, fs)
        if r is None:
            entry.pending += 1
        else:
            _log_run(log, entry, r, monitor, "another shard's, finished")
            entry.results.append(r)
    pending = sum(e.pending for e in entries)
    shard = f"shard {partition.index}/{partition.count} " if partition.count > 1 else ""
    log(f"{shard}grid done in {time.time() - t0:.1f}s" + (f"; {pending} run(s) of other shards not finished yet"
                                                          if pending else ""))
    if all_runs:
        in_grid = {r.path.parent.resolve() for e in entries for r in e.results}
        entries += finished_entries(Path(runs_root) / manifest.name, skip=in_grid)
        stale = [p for family in sorted((Path(runs_root) / manifest.name).glob("*/")) for p in stale_tmp_dirs(family)]
        if stale:  # not counted; the next run built in their family removes them
            log(f"ignored {len(stale)} unfinished run folder(s) of stopped processes, e.g. {stale[0]}")
    return sort_entries(entries, monitor)


def _features_for(opened: dict, manifest, caches, train: TrainConfig, head: str, options: dict):
    """The grid's FeatureSet for `head`: one per (text pool, hidden layers, image pool), opened once."""
    from msa_cache.fit.features import open_features

    hidden, image_pool = get_head(head).uses_hidden_layers, get_head(head).image_pool(options)
    key = (train.text_pool, hidden, image_pool)
    if key not in opened:
        opened[key] = open_features(manifest, caches, text_pool=train.text_pool, hidden_layers=hidden,
                                    image_pool=image_pool)
    return opened[key]


def _scores(scores: dict, monitor: str) -> str:
    """"acc 0.6100 wF1 0.6012": accuracy and the monitor's score (accuracy once where it is the monitor)."""
    metric = monitor_metric(monitor)
    shown = [m for m in METRICS if m in (ACCURACY, metric)]
    return " ".join(f"{m.abbrev} {scores.get(m.key, float('nan')):.4f}" for m in shown)


def _log_run(log, entry: Entry, r: RunResult, monitor: str, state: str, step: str = "", eta: str = "") -> None:
    dev, seed = r.metrics.get("dev", {}), r.path.name.removeprefix("seed-")
    log(f"{step + '  ' if step else ''}{entry.label:<28} seed {seed}: dev {_scores(dev, monitor)}  [{state}]  "
        f"{eta + '  ' if eta else ''}{r.path}")


def _compare_cv(manifest_path, caches, heads, grid, seeds, train, runs_root, log, all_runs, num_folds, cv_seed,
                refit, stack=False) -> list[Entry]:
    from msa_cache.study.stack import StackMember, fit_stack, require_members

    manifest = read_manifest(manifest_path)
    monitor = monitor_for(train, manifest)
    features = {}
    entries = []
    t0 = time.time()
    cells = expand_grid(heads, grid)
    if stack:  # before any training
        require_members([Entry(h, o).label for h, o in cells])
    members = []
    progress = GridProgress([head for head, _ in cells for _ in seeds])
    for head, options in cells:
        fs = _features_for(features, manifest, caches, train, head, options)
        threads.use(get_head(head).compute)
        results = []
        for seed in seeds:
            spec = RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head, dict(options),
                           dataclasses.replace(train), seed, cv_folds=num_folds, cv_seed=cv_seed)
            t_run = time.time()
            r = fit_family(spec, num_folds, refit, runs_root, fs, log=log)
            step, eta = progress.step(None if r.skipped else time.time() - t_run)
            oof = r.metrics.get("dev", {})
            log(f"{step}  {Entry(head, options).label:<28} seed {seed}: out-of-fold {_scores(oof, monitor)}  "
                f"{eta + '  ' if eta else ''}{r.path}")
            results.append(r)
        entries.append(cv_entry(head, options, results))
        members.append(StackMember(entries[-1].label, results))
    log(f"cross-validation ({num_folds} folds) done in {time.time() - t0:.1f}s")
    if stack:
        entries.append(stack_entry(fit_stack(members, num_folds, cv_seed, Path(runs_root) / manifest.name, refit,
                                             log=log)))
    if all_runs:
        in_grid = {r.path.parent.resolve() for e in entries for r in e.results}
        in_grid |= {e.results[0].path.resolve() for e in entries if e.kind == "stack"}
        entries += finished_cv_entries(Path(runs_root) / manifest.name, num_folds, skip=in_grid)
    return sort_entries(entries, monitor)


def cv_entry(head: str, options: dict, results: list) -> Entry:
    """One leaderboard row from the CVResults of a configuration's seeds: scored out of fold."""
    splits = [s for s in ("dev", "test") if all(s in c.predictions for c in results)]
    preds = {s: stack([c.predictions[s] for c in results], "seeds") for s in splits}
    runs = [RunResult(c.path, c.metrics, skipped=all(f.skipped for f in c.folds)) for c in results]
    return Entry(head, options, runs, preds=preds, classes=results[0].classes, kind="cv",
                 refits=[c.refit.path for c in results if c.refit is not None])


def stack_entry(s) -> Entry:
    """The leaderboard row of a stack (study/stack.py's StackResult): scored on its out-of-fold rows."""
    return Entry(s.label, {}, [RunResult(s.path, s.metrics, skipped=True)], preds=s.predictions, classes=s.classes,
                 kind="stack", members=s.seeds, refits=[s.refit] if s.refit is not None else [])


def finished_cv_entries(runs_dir: str | Path, num_folds: int, skip: set[Path] = frozenset()) -> list[Entry]:
    """One CV row per family folder under runs/<manifest>/ with `num_folds` finished folds for some seed,
    and one per finished stack of `num_folds`-fold families (stack-cvK-<hash>)."""
    from msa_cache.study.stack import is_stack_folder, read_stack

    runs_dir = Path(runs_dir)
    found, stacks = [], []
    for family in sorted(p for p in runs_dir.glob(f"*-cv{num_folds}-*") if p.is_dir() and p.resolve() not in skip):
        if is_stack_folder(family):
            stacks.append((family.name, read_stack(family)))
            continue
        results = []
        for seed_dir, folds, refit in finished_cv_seeds(family):
            if len(folds) != num_folds:
                continue
            classes, preds = cv_predictions(folds)
            results.append(CVResult(seed_dir, [RunResult(f, {}, True) for f in folds], classes, preds,
                                    metrics_of(preds, classes), None if refit is None else RunResult(refit, {}, True)))
        if results:
            found.append((family.name, results))
    short = [name.rsplit("-", 1)[0].removesuffix(f"-cv{num_folds}") for name, _ in found]
    return [cv_entry(label if short.count(label) == 1 else name, {}, results)
            for label, (name, results) in zip(short, found)] + _stack_entries(stacks)


def _stack_entries(stacks: list) -> list[Entry]:
    """Rows of stack folders read back: labelled by their members, or by folder where two stacks share
    members (other seeds or stacker settings)."""
    labels = [s.label for _, s in stacks]
    rows = [stack_entry(s) for _, s in stacks]
    for row, (name, s) in zip(rows, stacks):
        if labels.count(s.label) > 1:
            row.head = f"{s.label} {name}"
    return rows


def seed_ensembles(entries: list[Entry]) -> list[Entry]:
    """One extra row per row with >= 2 seeds: the mean of its seeds' probabilities (none where
    every seed predicts the same probabilities, e.g. the closed-form probe: it would repeat the row)."""
    out = []
    for e in entries:
        if e.kind in ("ensemble", "stack") or e.n_seeds < 2 or not e.predictions():
            continue
        if all(np.array_equal(p.probs, np.broadcast_to(p.probs[:1], p.probs.shape)) for p in e.predictions().values()):
            continue
        ens = {s: p.ensemble() for s, p in e.predictions().items() if s in ("dev", "test")}
        run = RunResult(e.results[0].path.parent, metrics_of(ens, e.classes), skipped=True)
        out.append(Entry(f"{e.label} [seed ensemble]", {}, [run], preds=ens, classes=e.classes, kind="ensemble",
                         members=e.n_seeds, refits=e.refits))
    return out


def _reference(entries: list[Entry]) -> Entry | None:
    """The row every head must beat: the plain (default-option) probe."""
    return next((e for e in entries if e.kind != "ensemble" and e.label == "probe"), None)


def attach_statistics(entries: list[Entry], monitor: str, n_resamples: int = N_RESAMPLES) -> None:
    """Each row's bootstrap intervals, and paired tests against the top row (entries are sorted
    best first by the dev / CV score) and the probe, per labeled split (rows on the same examples)."""
    key = monitor_key(monitor)
    reference = _reference(entries)
    for split in ("dev", "test"):
        rows = [e for e in entries if split in e.predictions() and e.predictions()[split].is_labeled]
        if not rows:
            continue
        first = rows[0].predictions()[split]
        rows = [e for e in rows if np.array_equal(e.predictions()[split].ids, first.ids)]
        names = {id(e): str(i) for i, e in enumerate(rows)}
        stats = compare_rows(first.labels, {names[id(e)]: e.predictions()[split].preds for e in rows},
                             first.num_classes, key, top=names.get(id(entries[0])),
                             reference=names.get(id(reference)) if reference is not None else None,
                             n_resamples=n_resamples)
        for e in rows:
            e.stats[split] = stats[names[id(e)]]


def summarise(entries: list[Entry], monitor: str, ensembles: bool = True,
              n_resamples: int = N_RESAMPLES) -> list[Entry]:
    """The leaderboard's rows: `entries` plus seed ensembles, best first, with intervals and tests."""
    rows = sort_entries(entries + (seed_ensembles(entries) if ensembles else []), monitor)
    attach_statistics(rows, monitor, n_resamples)
    return rows


def sort_entries(entries: list[Entry], monitor: str) -> list[Entry]:
    """Best dev score of the monitor metric first (entries without dev scores last)."""
    key = monitor_key(monitor)
    return sorted(entries, key=lambda e: -(e.stat("dev", key) or (-1.0, 0))[0])


def finished_entries(runs_dir: str | Path, skip: set[Path] = frozenset()) -> list[Entry]:
    """One entry per run family folder under runs/<manifest>/ that has finished seeds.

    Cached runs (`<head>[-options]-<hash>`) and fine-tuned ones (`finetune-<head>-<encoders>-<hash>`)
    alike; the label is the folder name without its hash, or with it where two folders differ
    only in settings the name does not show (e.g. two fine-tunes with other train options).
    Folders in `skip` are left out.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for family in sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.resolve() not in skip):
        results = [RunResult(seed, read_metrics(seed), skipped=True) for seed in finished_seeds(family)]
        if results:
            found.append((family.name, results))
    short = [name.rsplit("-", 1)[0] for name, _ in found]
    return [Entry(label if short.count(label) == 1 else name, {}, results)
            for label, (name, results) in zip(short, found)]


def _splits(entries: list[Entry]) -> list[str]:
    return [s for s in ("dev", "test") if any(e.stat(s, ACCURACY.key) for e in entries)]


def _split_name(entries: list[Entry], split: str) -> str:
    """Column prefix: a CV leaderboard scores "dev" on the out-of-fold rows of train+dev."""
    return "cv" if split == "dev" and any(e.kind == "cv" for e in entries) else split


def _closed_form(e: Entry) -> bool:
    """A row of a head fitted in closed form (probe): deterministic, so its seeds give identical results."""
    try:
        return e.kind != "ensemble" and get_head(e.head).fit_mode == "closed_form"
    except ValueError:  # a finished family of a head no longer registered
        return False


def _note(entries: list[Entry], e: Entry) -> str:
    notes = []
    if e is entries[0]:
        notes.append(f"picked ({_split_name(entries, 'dev')})")
    else:
        dev = e.stats.get("dev")
        notes.append("≈ top" if dev is not None and dev.tied_with_top else "")
    if _closed_form(e) and e.n_seeds > 1:
        notes.append("std 0 by construction (closed form: every seed gives the same model)")
    return "; ".join(n for n in notes if n)


def format_p(value: float | None) -> str:
    return "—" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def leaderboard_rows(entries: list[Entry], monitor: str = DEFAULT_MONITOR) -> list[dict]:
    key = monitor_key(monitor)
    rows = []
    for e in entries:
        row = {"model": e.label, "seeds": e.n_seeds, "kind": e.kind}
        for split in _splits(entries):
            name = _split_name(entries, split)
            st = e.stats.get(split)
            for m in METRIC_KEYS:
                s = e.stat(split, m)
                row[f"{name}_{m}_mean"] = None if s is None else round(s[0], 4)
                row[f"{name}_{m}_std"] = None if s is None else round(s[1], 4)
                row[f"{name}_{m}_ci_low"] = None if st is None else round(st.interval[m][0], 4)
                row[f"{name}_{m}_ci_high"] = None if st is None else round(st.interval[m][1], 4)
            row[f"{name}_p_vs_top_{key}"] = None if st is None else st.p_top
            row[f"{name}_mcnemar_vs_top"] = None if st is None else st.mcnemar_top
            row[f"{name}_p_vs_probe_{key}"] = None if st is None else st.p_probe
            row[f"{name}_mcnemar_vs_probe"] = None if st is None else st.mcnemar_probe
        row["picked"] = e is entries[0]
        row["tied_with_top"] = bool(e.stats.get("dev") and e.stats["dev"].tied_with_top)
        rows.append(row)
    return rows


def markdown_cell(text: str) -> str:
    """A table cell from a name (a family folder may hold `|` or a line break): one line, `|` escaped."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def leaderboard_markdown(entries: list[Entry], monitor: str = DEFAULT_MONITOR) -> str:
    """The table, then a legend saying how intervals and p-values were computed."""
    key = monitor_key(monitor)
    mname = monitor_metric(monitor).name
    splits = _splits(entries)
    tested = any(e.stats for e in entries)
    header = ["model", "seeds"]
    for s in splits:
        name = _split_name(entries, s)
        header += [f"{name} {m.name}" for m in METRICS]
        if tested:
            header.append(f"{name} {mname} 95% CI")
        if tested and s == "dev":
            header += [f"p vs top ({mname})", "McNemar vs top", f"p vs probe ({mname})", "McNemar vs probe"]
    header.append("note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in entries:
        cells = [markdown_cell(e.label), str(e.n_seeds)]
        for s in splits:
            st = e.stats.get(s)
            for m in METRIC_KEYS:
                v = e.stat(s, m)
                if v is None:
                    cells.append("-")
                elif e.kind == "ensemble" or len(e.results) == 1:
                    cells.append(f"{100 * v[0]:.2f}")
                else:
                    cells.append(f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}")
            if tested:
                cells.append("-" if st is None else f"{100 * st.interval[key][0]:.2f}–{100 * st.interval[key][1]:.2f}")
            if tested and s == "dev":
                cells += ["-"] * 4 if st is None else [format_p(st.p_top), format_p(st.mcnemar_top),
                                                       format_p(st.p_probe), format_p(st.mcnemar_probe)]
        cells.append(markdown_cell(_note(entries, e)))
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if tested:
        sel = _split_name(entries, "dev")
        n = next(st.n_resamples for e in entries for st in e.stats.values())
        out += (f"\nScores in %, mean ± std over seeds. 95% CI: percentile bootstrap over examples, seeds pooled "
                f"({n} resamples, RNG seed 0). p: paired bootstrap of {mname} on the same examples; "
                f"McNemar: exact test on accuracy (discordant rows averaged over seed pairs). Top row: picked on {sel}; ≈: not distinguishable from it "
                f"(p ≥ 0.05). Test scores never pick anything.\n")
        if sel == "cv":
            out += "cv: out-of-fold predictions of every labeled train+dev row; test: mean of the fold models.\n"
    return out


def write_leaderboard(entries: list[Entry], out_prefix: str | Path, monitor: str = DEFAULT_MONITOR) -> list[Path]:
    """<prefix>.md, <prefix>.csv and <prefix>.png (dev scores with their intervals as error bars)."""
    out_prefix = Path(out_prefix)
    if out_prefix.suffix in (".md", ".csv", ".png"):  # a file name given as the prefix: its stem
        out_prefix = out_prefix.with_suffix("")
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    # Appended, not with_suffix: a prefix may hold a dot (leaderboard-md0.3 -> leaderboard-md0.3.md).
    final = [out_prefix.with_name(out_prefix.name + s) for s in (".md", ".csv", ".png")]
    # Written aside, then renamed: shards of one grid may write the same leaderboard at once.
    tmps = [p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}") for p in final]
    md, csv_path, png = tmps
    try:
        md.write_text(leaderboard_markdown(entries, monitor))
        rows = leaderboard_rows(entries, monitor)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model"])
            w.writeheader()
            w.writerows(rows)
        bar_chart(entries, png, monitor)
        for tmp, path in zip(tmps, final):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return final


def _error_bars(entries: list[Entry], metric: str) -> tuple[list[float], np.ndarray]:
    """Means and [2, n] error bar lengths: the bootstrap interval where known, else the seeds' std."""
    means, err = [], []
    for e in entries:
        mean, std = e.stat("dev", metric)
        st = e.stats.get("dev")
        lo, hi = (st.interval[metric] if st is not None else (mean - std, mean + std))
        means.append(100 * mean)
        err.append((100 * max(mean - lo, 0.0), 100 * max(hi - mean, 0.0)))
    return means, np.array(err).T.reshape(2, len(entries))


def bar_chart(entries: list[Entry], path, monitor: str = DEFAULT_MONITOR) -> None:
    """The leaderboard's dev scores as horizontal bars with their 95% intervals as error bars, saved as
    a PNG to `path` (a file path or a binary file object, e.g. io.BytesIO for an inlined image)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (class, family names): a $ is text
    import matplotlib.pyplot as plt

    key = monitor_key(monitor)
    shown = [e for e in entries if e.stat("dev", key) is not None]
    metrics = [key] + ([ACCURACY.key] if key != ACCURACY.key else [])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 2))
    y = np.arange(len(shown))
    low, high = 100.0, 0.0
    for i, m in enumerate(metrics):
        means, err = _error_bars(shown, m)
        ax.barh(y + (0.4 * i - 0.2 * (len(metrics) - 1)), means, 0.4, xerr=err, capsize=2,
                label=m.replace("_", " "))
        low, high = min(low, *(np.array(means) - err[0])), max(high, *(np.array(means) + err[1]))
    # Zoom on the scores: from 0 every bar looks the same length.
    ax.set_xlim(max(0.0, low - 3), min(100.0, high + 2))
    ax.set_yticks(y, [e.label + (" *" if e.stats.get("dev") and e.stats["dev"].tied_with_top else "")
                      for e in shown])
    ax.invert_yaxis()
    sel = _split_name(entries, "dev")
    ax.set_xlabel(f"{sel} score (%), mean over seeds")
    ax.set_title("error bars: 95% bootstrap interval; * = not distinguishable from the top row", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08 - 0.3 / max(len(shown), 1)), ncol=len(metrics))
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
