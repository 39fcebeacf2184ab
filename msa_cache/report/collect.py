"""What the report shows, read from a runs/<manifest>/ folder: the finished run families (the same
ones `compare --heads '' --all-runs` lists), their per-class scores, confusion matrices, training
histories, and the oracle analysis. No drawing here (figures.py) and no HTML (page.py)."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msa_cache.errors import UserError
from msa_cache.metrics import DEFAULT_MONITOR
from msa_cache.settings import shown
from msa_cache.study.compare import Entry, finished_entries
from msa_cache.study.oracle import family_oracle
from msa_cache.train.identity import CACHED, run_mode
from msa_cache.train.rundir import HISTORY_FILE, read_history, read_run, stale_tmp_dirs

UNI_TEXT, UNI_IMAGE = "uni-text", "uni-image"


@dataclass
class Family:
    """One run family (runs/<manifest>/<family>/) with its finished seeds."""

    label: str  # as on the leaderboard
    path: Path
    runs: list[Path]  # finished seed-K folders
    metrics: list[dict]  # each seed's metrics.json
    configs: list[dict]  # each seed's validated config.json
    entry: Entry = field(repr=False, default=None)

    @property
    def head(self) -> str | None:
        return self.configs[0]["spec"].get("head")

    @property
    def mode(self) -> str:
        return run_mode(self.configs[0])

    @property
    def classes(self) -> list[str]:
        return list(self.configs[0]["classes"])

    @property
    def monitor(self) -> str | None:
        return (self.configs[0]["spec"].get("train") or {}).get("monitor")

    def splits(self) -> list[str]:
        """Labeled splits every seed has metrics for."""
        return [s for s in ("dev", "test") if self.metrics and all(s in m for m in self.metrics)]

    def per_class_f1(self, split: str) -> dict[str, tuple[float, float, int]]:
        """class -> (mean F1 over seeds, std, support) on `split`."""
        return self.per_class(split, "f1-score")

    def per_class(self, split: str, score: str) -> dict[str, tuple[float, float, int]]:
        """class -> (mean over seeds, std, support) of one of metrics.json's per-class scores on `split`
        ("precision", "recall" or "f1-score")."""
        scores = {c: [] for c in self.classes}
        support = {}
        for run, m in zip(self.runs, self.metrics):
            with _metrics_of(run, f"{split} per-class scores"):
                for c in self.classes:
                    scores[c].append(float(m[split]["per_class"][c][score]))
                    support.setdefault(c, int(m[split]["per_class"][c]["support"]))
        return {c: (float(np.mean(v)), float(np.std(v)), support[c]) for c, v in scores.items()}

    @property
    def options(self) -> dict:
        """The head's options as the run's spec records them (resolved: defaults included)."""
        spec = self.configs[0]["spec"]
        return dict(spec.get("head_options") or spec.get("options") or {})

    @property
    def num_parameters(self) -> int | None:
        """Trainable parameters of one seed's model (config.json num_parameters)."""
        n = self.configs[0].get("num_parameters")
        return int(n) if isinstance(n, (int, float)) else None

    def best_run(self, key: str) -> Path:
        """The seed folder with the best dev score of metric `key` (the first such seed on a tie; the first
        seed where none is recorded)."""
        scored = [(m["dev"][key], -i) for i, m in enumerate(self.metrics)
                  if isinstance(m.get("dev", {}).get(key), (int, float))]
        return self.runs[-max(scored)[1]] if scored else self.runs[0]

    def training_seconds(self) -> list[float]:
        """Each seed's training time in seconds where recorded: metrics.json or config.json `seconds`, else
        the sum of the epochs' `seconds` in history.jsonl; seeds with none of these are left out."""
        out = []
        for run, m, c in zip(self.runs, self.metrics, self.configs):
            recorded = m.get("seconds", c.get("seconds"))
            if isinstance(recorded, (int, float)):
                out.append(float(recorded))
                continue
            try:
                epochs = [r["seconds"] for r in read_history(run) if "epoch" in r and "seconds" in r]
            except (OSError, ValueError):
                epochs = []
            if epochs:
                out.append(float(sum(epochs)))
        return out

    def confusion(self, split: str) -> np.ndarray:
        """The seeds' confusion matrices on `split`, summed (rows true, columns predicted)."""
        k = len(self.classes)
        matrices = []
        for run, m in zip(self.runs, self.metrics):
            with _metrics_of(run, f"{split} confusion matrix"):
                matrix = np.asarray(m[split]["confusion"], dtype=np.int64)
                if matrix.shape != (k, k):
                    raise ValueError(f"shape {matrix.shape}")
                matrices.append(matrix)
        return np.sum(matrices, axis=0)

    def histories(self) -> tuple[dict[str, list[dict]], list[str]]:
        """{seed name: history records} and notes for seeds whose history.jsonl cannot be read."""
        out, notes = {}, []
        for run in self.runs:
            try:
                out[run.name] = read_history(run)
            except (OSError, ValueError) as e:
                notes.append(f"{run / HISTORY_FILE}: unreadable ({type(e).__name__})")
        return out, notes


@contextmanager
def _metrics_of(run: Path, what: str):
    """A tampered metrics.json (a key missing, a value of another type) as one UserError naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise UserError(f"metrics.json lacks usable {what} ({type(e).__name__}: {shown(str(e))})",
                        run / "metrics.json", "delete this run folder and train it again") from None


def read_families(entries: list[Entry]) -> list[Family]:
    """The plain (seed) rows of a leaderboard as families, in the leaderboard's order."""
    out = []
    for e in entries:
        if e.kind != "seeds" or not e.results:
            continue
        runs = [r.path for r in e.results]
        out.append(Family(e.label, runs[0].parent, runs, [r.metrics for r in e.results], [read_run(r) for r in runs],
                          entry=e))
    return out


def finished_families(runs_dir: str | Path) -> list[Entry]:
    """The finished run families of one manifest's runs folder (as `compare --heads '' --all-runs`);
    a one-line UserError where there is no such folder or nothing finished in it."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError("no such runs folder", runs_dir, "pass runs/<manifest>/, e.g. runs/mvsa-single")
    entries = finished_entries(runs_dir)
    if not entries:
        nested = [p for p in runs_dir.iterdir() if p.is_dir() and finished_entries(p)]
        hint = (f"pass one manifest's folder, e.g. {nested[0]}" if nested
                else "train some first (msa-cache fit / compare), then pass runs/<manifest>/")
        raise UserError("no finished runs", runs_dir, hint)
    return entries


def unfinished_folders(runs_dir: str | Path) -> tuple[int, int]:
    """(run folders still being built by a live process, folders left by stopped ones): left out."""
    runs_dir = Path(runs_dir)
    all_tmp = [p for fam in runs_dir.iterdir() if fam.is_dir() for p in fam.glob("seed-*.tmp-*") if p.is_dir()]
    stale = sum(len(stale_tmp_dirs(fam)) for fam in runs_dir.iterdir() if fam.is_dir())
    return len(all_tmp) - stale, stale


def report_monitor(families: list[Family]) -> str:
    """The dev metric the runs selected on (the most common one where they differ)."""
    recorded = Counter(f.monitor for f in families if f.monitor)
    return recorded.most_common(1)[0][0] if recorded else DEFAULT_MONITOR


@dataclass
class OracleAnalysis:
    text: Family | None
    image: Family | None
    rows: list[tuple[Family, dict]]  # each multimodal family with family_oracle's figures
    base: dict | None  # the text/image figures (from the first row, or without a multimodal run)
    notes: list[str]


def oracle_analysis(families: list[Family]) -> OracleAnalysis:
    """`analyze oracle` for the best text-only and image-only families against every multimodal family."""
    best = lambda head: next((f for f in families if f.head == head and f.mode == CACHED), None)  # noqa: E731
    text, image = best(UNI_TEXT), best(UNI_IMAGE)
    notes = []
    if text is None or image is None:
        missing = " and ".join(h for h, f in ((UNI_TEXT, text), (UNI_IMAGE, image)) if f is None)
        return OracleAnalysis(text, image, [], None, [f"no finished {missing} runs: the oracle needs both "
                                                       f"(msa-cache compare --heads {UNI_TEXT},{UNI_IMAGE})"])
    rows, base = [], None
    try:
        base = family_oracle(text.path, image.path)
    except (ValueError, FileNotFoundError, UserError) as e:
        return OracleAnalysis(text, image, [], None, [f"oracle not computed: {e}"])
    for f in families:
        if f.head in (UNI_TEXT, UNI_IMAGE):
            continue
        try:
            rows.append((f, family_oracle(text.path, image.path, f.path, split=base["split"])))
        except (ValueError, FileNotFoundError, UserError) as e:
            notes.append(f"{f.label}: not compared ({e})")
    return OracleAnalysis(text, image, rows, base, notes)
