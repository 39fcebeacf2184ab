"""The evaluations of finished runs (RUN/evals/<name>.json + .parquet, study/evaluate.py) as tables: the
robustness table (per run family and evaluation: mean ± std over seeds, the 95% bootstrap interval with
seeds pooled as compare's leaderboard pools them, the drop against the reference evaluation) and the
transfer matrix (per family: train manifest x evaluated manifest). Reading only: no torch, no printing.

Families: a run family folder's seed-K runs are its seeds. A cross-validation family counts each seed
once: its fold runs' evaluations are pooled, the held-out rows of the folds put together (out-of-fold,
as compare scores CV rows) and rows every fold scored (test, another manifest) averaged over the fold
models' probabilities (as compare's CV test column). Refit runs form their own row ("[refit]").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msa_cache.errors import UserError
from msa_cache.metrics import METRIC_KEYS, monitor_key, monitor_metric
from msa_cache.study.stats import BOOTSTRAP_SEED, N_RESAMPLES, bootstrap_scores, percentile_interval, point_scores
from msa_cache.train.predictions import SplitPredictions, concat_rows, predictions_by_split, stack
from msa_cache.train.rundir import EVALS_DIR, is_finished, read_evaluation, run_family

_HINT = "run `msa-cache evaluate` on the run again"



@dataclass
class Evaluation:
    """One RUN/evals/<name>.json, its run folder and (read on demand) its predictions."""

    path: Path
    run: Path
    data: dict

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def family(self) -> Path:
        """The run family folder (a CV fold's or refit's grandparent)."""
        return run_family(self.run)

    @property
    def seed_dir(self) -> Path:
        return self.run if self.run.name.startswith("seed-") else self.run.parent

    @property
    def refit(self) -> bool:
        return bool(self.data["run"].get("refit"))

    @property
    def reference(self) -> str | None:
        """The evaluation this one's drop is measured against: "clean", or transfer-<m> for a corrupted transfer."""
        if self.data["corruption"] is None:
            return None
        return f"transfer-{self.data['manifest']['name']}" if self.data["kind"] == "transfer" else "clean"

    def predictions(self) -> dict[str, SplitPredictions]:
        """Per split, this evaluation's rows ([1, N, K]), sorted by id."""
        import pyarrow.parquet as pq

        path = self.path.with_suffix(".parquet")
        classes = self.data["classes"]
        try:
            t = pq.read_table(path, columns=["id", "split", "label", *[f"prob_{c}" for c in classes]]).to_pydict()
        except Exception as e:  # a missing file, a column gone: several pyarrow types
            raise UserError(f"{path.name} is missing or unreadable ({type(e).__name__})", path, _HINT) from None
        return predictions_by_split(t, path, _HINT)[1]


def _read(path: Path) -> Evaluation:
    return Evaluation(path, path.parent.parent, read_evaluation(path))


def read_evaluations(paths) -> list[Evaluation]:
    """Every evaluation of the finished runs under `paths` (a run folder, a family folder, runs/<manifest>,
    or a list of them), sorted by path."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[Path, Evaluation] = {}
    for p in map(Path, paths):
        files = sorted(p.glob(f"{EVALS_DIR}/*.json")) + sorted(p.rglob(f"*/{EVALS_DIR}/*.json"))
        for f in files:
            if f not in found and is_finished(f.parent.parent):
                found[f] = _read(f)
    return [found[k] for k in sorted(found)]


def _family_label(e: Evaluation) -> str:
    label = e.family.name.rsplit("-", 1)[0]
    return label + (" [refit]" if e.refit else "")


def _pool_folds(parts: list[dict[str, SplitPredictions]]) -> dict[str, SplitPredictions]:
    """One seed's predictions from its fold runs' evaluations: disjoint rows put together, shared rows averaged."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for split in ("dev", "test"):
        got = [p[split] for p in parts if split in p]
        if len(got) != len(parts):
            continue
        if all(np.array_equal(g.ids, got[0].ids) for g in got):
            out[split] = SplitPredictions(got[0].ids, got[0].labels, np.mean([g.probs for g in got], axis=0))
        else:
            out[split] = concat_rows(got)
    return out


@dataclass
class Group:
    """One (family, evaluation) cell: its seeds' pooled predictions per split."""

    family: str
    family_path: Path
    train_manifest: str
    name: str
    kind: str
    manifest: str  # evaluated on
    reference: str | None
    monitor: str
    classes: list[str]
    seeds: dict[str, SplitPredictions]  # split -> [S, N, K]

    @property
    def n_seeds(self) -> int:
        return max((p.probs.shape[0] for p in self.seeds.values()), default=0)


def groups(evaluations: list[Evaluation]) -> list[Group]:
    """The evaluations grouped by (family, refit or not, name): each seed's predictions (CV folds pooled),
    stacked over seeds per split. A fold-based seed counts only when every fold of it was evaluated."""
    cells: dict[tuple, dict[Path, list[Evaluation]]] = {}
    for e in evaluations:
        key = (e.family.resolve(), e.refit, e.name)
        cells.setdefault(key, {}).setdefault(e.seed_dir, []).append(e)
    out = []
    for (family, refit, name), by_seed in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        first = next(iter(by_seed.values()))[0]
        seeds = []
        for seed_dir, evs in sorted(by_seed.items()):
            folds = [e for e in evs if e.data["run"].get("fold") is not None]
            if folds and not refit:
                expected = {p.name for p in seed_dir.glob("fold-*") if is_finished(p)}
                if {e.run.name for e in folds} != expected:
                    continue  # some folds not evaluated under this name: the seed's rows are incomplete
            seeds.append(_pool_folds([e.predictions() for e in evs]))
        if not seeds:
            continue
        splits = [s for s in ("dev", "test") if all(s in p for p in seeds)]
        stacked = {s: stack([p[s] for p in seeds], f"seeds of {family}") for s in splits}
        out.append(Group(_family_label(first), family, first.data["run"].get("manifest"), name, first.data["kind"],
                         first.data["manifest"]["name"], first.reference, first.data["monitor"],
                         list(first.data["classes"]), stacked))
    return out


def _scores(g: Group, split: str, n_resamples: int) -> dict:
    p = g.seeds[split]
    k = len(g.classes)
    per_seed = [point_scores(p.labels, pred, k) for pred in p.preds]
    boot = bootstrap_scores(p.labels, p.preds, k, n_resamples, BOOTSTRAP_SEED)
    out = {}
    for m in METRIC_KEYS:
        vals = [s[m] for s in per_seed]
        lo, hi = percentile_interval(boot[m])
        out[m] = (float(np.mean(vals)), float(np.std(vals)), lo, hi)
    return out


def robustness_rows(evaluations: list[Evaluation], n_resamples: int = N_RESAMPLES) -> list[dict]:
    """One row per (family, evaluation, split): n, seeds, per metric mean / std over seeds and the 95%
    bootstrap interval (seeds pooled, as compare), and the drop against the reference evaluation of the
    same family in points (mean - reference mean, x100; None where there is no reference row)."""
    rows = []
    scored = {}
    gs = groups(evaluations)
    for g in gs:
        for split in g.seeds:
            scored[(g.family_path, g.family, g.name, split)] = _scores(g, split, n_resamples)
    for g in gs:
        for split in g.seeds:
            s = scored[(g.family_path, g.family, g.name, split)]
            ref = scored.get((g.family_path, g.family, g.reference, split)) if g.reference else None
            row = {"family": g.family, "train_manifest": g.train_manifest, "evaluation": g.name, "kind": g.kind,
                   "manifest": g.manifest, "split": split, "monitor": g.monitor, "seeds": g.seeds[split].probs.shape[0],
                   "n": len(g.seeds[split].ids), "reference": g.reference}
            for m in METRIC_KEYS:
                mean, std, lo, hi = s[m]
                row.update({f"{m}_mean": round(mean, 4), f"{m}_std": round(std, 4),
                            f"{m}_ci_low": round(lo, 4), f"{m}_ci_high": round(hi, 4),
                            f"{m}_drop": None if ref is None else round(100 * (mean - ref[m][0]), 2)})
            rows.append(row)
    return rows


def transfer_matrix(evaluations: list[Evaluation], n_resamples: int = 1000) -> list[dict]:
    """The cells of the transfer matrices: per family label (its folder name without the hash, so one
    configuration trained on two manifests meets itself) and split, train manifest x evaluated manifest,
    the monitor's mean and std over seeds. Uncorrupted evaluations only ("clean" is the in-domain cell)."""
    plain = [e for e in evaluations if e.data["corruption"] is None]
    cells = []
    for r in robustness_rows(plain, n_resamples):
        key = monitor_key(r["monitor"])
        cells.append({"family": r["family"], "split": r["split"], "train_manifest": r["train_manifest"],
                      "eval_manifest": r["manifest"], "monitor": r["monitor"], "mean": r[f"{key}_mean"],
                      "std": r[f"{key}_std"], "seeds": r["seeds"]})
    return cells


def _cell(text) -> str:
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def robustness_markdown(rows: list[dict]) -> str:
    """The robustness table: per family, evaluation and split, the monitor (mean ± std over seeds, 95% CI,
    drop vs the reference in points) and accuracy; scores in %."""
    if not rows:
        return "No evaluations found.\n"
    header = ["family", "train manifest", "evaluation", "split", "seeds", "monitor", "score", "95% CI",
              "drop (points)", "accuracy"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        key = monitor_key(r["monitor"])
        seeds = r["seeds"] > 1
        score = f"{100 * r[f'{key}_mean']:.2f}" + (f" ± {100 * r[f'{key}_std']:.2f}" if seeds else "")
        acc = f"{100 * r['accuracy_mean']:.2f}" + (f" ± {100 * r['accuracy_std']:.2f}" if seeds else "")
        drop = "-" if r[f"{key}_drop"] is None else f"{r[f'{key}_drop']:+.2f}"
        lines.append("| " + " | ".join(_cell(v) for v in (
            r["family"], r["train_manifest"], r["evaluation"], r["split"], r["seeds"],
            monitor_metric(r["monitor"]).title,
            score, f"{100 * r[f'{key}_ci_low']:.2f}–{100 * r[f'{key}_ci_high']:.2f}", drop, acc)) + " |")
    return ("\n".join(lines) + "\n\nScores in %, mean ± std over seeds. 95% CI: percentile bootstrap over examples, "
            f"seeds pooled ({N_RESAMPLES} resamples, RNG seed {BOOTSTRAP_SEED}), as compare's leaderboard. drop: "
            "score minus the same family's reference evaluation (clean; for a corrupted transfer, the transfer "
            "without corruption), in points.\n")


def transfer_markdown(cells: list[dict]) -> str:
    """One matrix per family and split: rows the train manifest, columns the evaluated one (monitor, %)."""
    out = []
    for family in sorted({c["family"] for c in cells}):
        for split in ("dev", "test"):
            mine = [c for c in cells if c["family"] == family and c["split"] == split]
            if not mine or all(c["train_manifest"] == c["eval_manifest"] for c in mine):
                continue
            trains = sorted({c["train_manifest"] for c in mine})
            evals = sorted({c["eval_manifest"] for c in mine})
            monitors = sorted({monitor_metric(c["monitor"]).title for c in mine})
            out.append(f"**{_cell(family)}**, {split} {'/'.join(monitors)} (%), "
                       "rows: trained on, columns: evaluated on\n")
            out.append("| trained on | " + " | ".join(_cell(e) for e in evals) + " |")
            out.append("|" + "---|" * (len(evals) + 1))
            for t in trains:
                row = []
                for e in evals:
                    c = next((c for c in mine if c["train_manifest"] == t and c["eval_manifest"] == e), None)
                    row.append("-" if c is None else f"{100 * c['mean']:.2f}"
                               + (f" ± {100 * c['std']:.2f}" if c["seeds"] > 1 else ""))
                out.append(f"| {_cell(t)} | " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out) + ("\n" if out else "")


def write_tables(rows: list[dict], cells: list[dict], prefix: str | Path) -> list[Path]:
    """PREFIX.md (robustness table, then the transfer matrices) and PREFIX.csv (the robustness rows)."""
    from msa_cache.atomic import write_atomic, write_text_atomic

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    md = robustness_markdown(rows) + ("\n" + transfer_markdown(cells) if transfer_markdown(cells) else "")
    md_path = write_text_atomic(prefix.with_name(prefix.name + ".md"), md)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
            w.writeheader()
            w.writerows(rows)

    return [md_path, write_atomic(prefix.with_name(prefix.name + ".csv"), write_csv)]


__all__ = ["Evaluation", "read_evaluations", "groups", "robustness_rows", "transfer_matrix", "robustness_markdown",
           "transfer_markdown", "write_tables"]
