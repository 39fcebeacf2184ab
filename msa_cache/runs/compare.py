"""Run a grid of heads x options x seeds (skipping finished runs) and summarise
it as a leaderboard: mean +- std over seeds per metric, on dev (and on test
where it is labeled), written as Markdown, CSV and a bar chart.

Model selection inside each run uses dev only; the leaderboard sorts by the dev
monitor metric and never looks at test to choose anything.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msa_cache.heads import get_head
from msa_cache.manifest import read_manifest
from msa_cache.partition import Partition
from msa_cache.runs.config import RunSpec, TrainConfig
from msa_cache.runs.features import open_features
from msa_cache.runs.metrics import MONITOR_KEYS
from msa_cache.runs.rundir import finished_seeds, is_finished, read_metrics, stale_tmp_dirs
from msa_cache.runs.trainer import RunResult, fit_run, plan_run

METRICS = ("accuracy", "macro_f1", "weighted_f1")


def expand_grid(heads: list[str], grid: dict[str, list[Any]]) -> list[tuple[str, dict]]:
    """Every (head, options) pair: each head takes the grid options it has, in all combinations."""
    used: set[str] = set()
    out = []
    for name in heads:
        fields = {f.name for f in dataclasses.fields(get_head(name).Config)}
        mine = {k: v for k, v in grid.items() if k in fields}
        used |= set(mine)
        keys = sorted(mine)
        for values in itertools.product(*(mine[k] for k in keys)):
            out.append((name, dict(zip(keys, values))))
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


def _read_finished(spec: RunSpec, runs_root, features) -> RunResult | None:
    """Another shard's grid run, read back if it has finished."""
    path = plan_run(spec, runs_root, features)
    if not is_finished(path):
        return None
    return RunResult(path, json.loads((path / "metrics.json").read_text()), skipped=True)


@dataclass
class Entry:
    head: str
    options: dict
    results: list[RunResult] = field(default_factory=list)
    pending: int = 0  # grid runs of other shards not finished yet

    @property
    def label(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.head} {opts}".strip()

    def stat(self, split: str, metric: str) -> tuple[float, float] | None:
        vals = [r.metrics[split][metric] for r in self.results if split in r.metrics]
        if not vals:
            return None
        return float(np.mean(vals)), float(np.std(vals))


def compare(manifest_path: str | Path, caches: dict[str, Path], heads: list[str], grid: dict[str, list],
            seeds: list[int], train: TrainConfig, runs_root: str | Path = "runs",
            log: Callable[[str], None] = print, all_runs: bool = False,
            partition: Partition = Partition()) -> list[Entry]:
    """Train the grid (finished runs are read back, not retrained) and return its entries, best first.

    partition: train only this shard's part of the (head, options, seed) grid (`shard_grid`);
    the other shards' runs are read back where finished and counted in `Entry.pending` where not.

    all_runs: also list every other finished run family of this manifest: other options,
    other seeds' grids, and `finetune` runs, which share the run directory format.
    """
    manifest = read_manifest(manifest_path)
    features = {}  # one FeatureSet per (text_pool, hidden layers) so pooled arrays load once
    entries = []
    t0 = time.time()
    cells = expand_grid(heads, grid)
    owned = set(shard_grid(range(len(cells) * len(seeds)), partition.count, partition.index))
    others = []  # other shards' runs: looked up once this shard's own are done
    for i, (head, options) in enumerate(cells):
        entry = Entry(head, options)
        hidden = getattr(get_head(head), "uses_hidden_layers", False)
        key = (train.text_pool, hidden)
        if key not in features:
            features[key] = open_features(manifest, caches, text_pool=train.text_pool, hidden_layers=hidden)
        for j, seed in enumerate(seeds):
            spec = RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head, dict(options),
                           dataclasses.replace(train), seed)
            if i * len(seeds) + j not in owned:
                others.append((entry, spec, features[key]))
                continue
            r = fit_run(spec, runs_root, features[key], log=log)
            _log_run(log, entry, r, "skipped (finished)" if r.skipped else f"{r.seconds:.1f}s")
            entry.results.append(r)
        entries.append(entry)
    for entry, spec, fs in others:
        r = _read_finished(spec, runs_root, fs)
        if r is None:
            entry.pending += 1
        else:
            _log_run(log, entry, r, "another shard's, finished")
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
    return sort_entries(entries, train.monitor or manifest.default_monitor)


def _log_run(log, entry: Entry, r: RunResult, state: str) -> None:
    dev, seed = r.metrics.get("dev", {}), r.path.name.removeprefix("seed-")
    log(f"{entry.label:<28} seed {seed}: dev acc {dev.get('accuracy', float('nan')):.4f} "
        f"wF1 {dev.get('weighted_f1', float('nan')):.4f}  [{state}]  {r.path}")


def sort_entries(entries: list[Entry], monitor: str) -> list[Entry]:
    """Best dev score of the monitor metric first (entries without dev scores last)."""
    key = MONITOR_KEYS[monitor]
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
    return [s for s in ("dev", "test") if any(e.stat(s, "accuracy") for e in entries)]


def leaderboard_rows(entries: list[Entry]) -> list[dict]:
    rows = []
    for e in entries:
        row = {"model": e.label, "seeds": len(e.results)}
        for split in _splits(entries):
            for m in METRICS:
                s = e.stat(split, m)
                row[f"{split}_{m}_mean"] = None if s is None else round(s[0], 4)
                row[f"{split}_{m}_std"] = None if s is None else round(s[1], 4)
        rows.append(row)
    return rows


def leaderboard_markdown(entries: list[Entry]) -> str:
    splits = _splits(entries)
    header = ["model", "seeds"] + [f"{s} {m.replace('_', '-')}" for s in splits for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in entries:
        cells = [e.label, str(len(e.results))]
        for s in splits:
            for m in METRICS:
                st = e.stat(s, m)
                cells.append("-" if st is None else f"{100 * st[0]:.2f} ± {100 * st[1]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(entries: list[Entry], out_prefix: str | Path) -> list[Path]:
    """<prefix>.md, <prefix>.csv and <prefix>.png (dev weighted-F1 with std error bars)."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    final = [out_prefix.with_suffix(s) for s in (".md", ".csv", ".png")]
    # Written aside, then renamed: shards of one grid may write the same leaderboard at once.
    tmps = [p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}") for p in final]
    md, csv_path, png = tmps
    try:
        md.write_text(leaderboard_markdown(entries))
        rows = leaderboard_rows(entries)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model"])
            w.writeheader()
            w.writerows(rows)
        _bar_chart(entries, png)
        for tmp, path in zip(tmps, final):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return final


def _bar_chart(entries: list[Entry], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = [(e.label, e.stat("dev", "weighted_f1"), e.stat("dev", "accuracy")) for e in entries]
    stats = [s for s in stats if s[1] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(stats) + 1.5))
    y = np.arange(len(stats))
    ax.barh(y - 0.2, [100 * s[1][0] for s in stats], 0.4, xerr=[100 * s[1][1] for s in stats], label="weighted F1")
    ax.barh(y + 0.2, [100 * s[2][0] for s in stats], 0.4, xerr=[100 * s[2][1] for s in stats], label="accuracy")
    ax.set_yticks(y, [s[0] for s in stats])
    ax.invert_yaxis()
    ax.set_xlabel("dev score (%), mean ± std over seeds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
