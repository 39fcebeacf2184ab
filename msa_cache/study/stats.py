"""How sure a leaderboard is: bootstrap intervals and paired tests over examples.

Seeds pooled: a resample draws N of the N examples with replacement; a row's score on
it is the mean over the row's seeds of the metric on those examples. Every row sees
the same resamples (same RNG seed), so two rows' scores are paired resample by resample.
The interval is the 2.5th..97.5th percentile of a row's resampled scores; the paired
bootstrap p-value of "A and B score the same" is twice the smaller tail of the
resampled difference A - B around 0 (the smallest alpha whose percentile interval of
the difference excludes 0), with the usual +1 so it is never 0.

McNemar (accuracy) asks the same of the rows' right/wrong patterns: exact binomial
test (scipy.stats.binomtest) of the discordant rows b (A right, B wrong) against c (A
wrong, B right). With several seeds, b and c are averaged over all pairs of seeds (one
seed pair's worth of evidence: the seeds see the same examples, so they are not
independent extra data) and rounded.

Metrics on a resample come from its confusion matrix (one np.bincount per seed for a
whole block of resamples), with the same definitions as metrics.classification_metrics
(macro over all classes, zero_division=0); tests check them against sklearn with
bootstrap weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msa_cache.metrics import METRIC_KEYS, metrics_from_confusion

N_RESAMPLES = 10_000
MAX_RESAMPLES = 100_000  # ten times the default: more only costs time (the option refuses beyond it)
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05
_BLOCK = 500  # resamples per bincount: bounds memory at ~_BLOCK * N indices



def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """Blocks of bootstrap index arrays [b, n]; the same sequence for the same (n, n_resamples, seed)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BLOCK):
        yield rng.integers(0, n, size=(min(_BLOCK, n_resamples - start), n))


def bootstrap_scores(y: np.ndarray, preds: np.ndarray, num_classes: int, n_resamples: int = N_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """Each metric on each resample, averaged over seeds: {metric: [n_resamples]}.

    y: [N] true classes; preds: [S, N] predicted classes of S seeds (or [N] for one)."""
    y = np.asarray(y, dtype=np.int64)
    preds = np.atleast_2d(np.asarray(preds, dtype=np.int64))
    if preds.shape[1] != len(y):
        raise ValueError(f"predictions cover {preds.shape[1]} rows, labels {len(y)}")
    k2 = num_classes * num_classes
    cells = y[None, :] * num_classes + preds  # [S, N]: confusion cell of each example
    out = {m: [] for m in METRIC_KEYS}
    for idx in resample_indices(len(y), n_resamples, seed):
        b = len(idx)
        offsets = (np.arange(b) * k2)[:, None]
        per_seed = []
        for s in range(len(cells)):
            counts = np.bincount((cells[s][idx] + offsets).ravel(), minlength=b * k2)
            per_seed.append(metrics_from_confusion(counts.reshape(b, num_classes, num_classes)))
        for m in METRIC_KEYS:
            out[m].append(np.mean([p[m] for p in per_seed], axis=0))
    return {m: np.concatenate(v) for m, v in out.items()}


def point_scores(y: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    """Each metric on all examples, averaged over seeds."""
    preds = np.atleast_2d(np.asarray(preds, dtype=np.int64))
    cm = np.stack([np.bincount(np.asarray(y) * num_classes + p, minlength=num_classes ** 2)
                   .reshape(num_classes, num_classes) for p in preds])
    return {m: float(v.mean()) for m, v in metrics_from_confusion(cm).items()}


def percentile_interval(scores: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(scores, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap_p(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Two-sided p-value of "A and B score the same" from paired resampled scores."""
    delta = np.asarray(scores_a) - np.asarray(scores_b)
    n = len(delta)
    low = (1 + np.count_nonzero(delta <= 0)) / (n + 1)
    high = (1 + np.count_nonzero(delta >= 0)) / (n + 1)
    return float(min(1.0, 2 * min(low, high)))


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test on right/wrong per example ([S, N] or [N] bool each): (p, b, c).

    b, c: rows only A / only B gets right, averaged over all pairs of seeds and rounded."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    bb = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    only_a = np.mean([np.count_nonzero(x & ~z) for x in a for z in bb])
    only_b = np.mean([np.count_nonzero(~x & z) for x in a for z in bb])
    b, c = int(round(only_a)), int(round(only_b))
    if b + c == 0:
        return 1.0, b, c
    from scipy.stats import binomtest  # here, not at the top: `compare --help` reads N_RESAMPLES without scipy

    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue), b, c


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (family-wise error rate), in the input order.

    Sorted ascending, the i-th smallest (from 0) becomes max over j <= i of min(1, (m - j) p_(j)).
    Written here: scipy has no Holm (stats.false_discovery_control is Benjamini-Hochberg/Yekutieli)
    and statsmodels' multipletests would be a dependency for these few lines."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return [float(v) for v in out]


@dataclass
class RowStats:
    """One leaderboard row's uncertainty on one split."""

    point: dict[str, float]  # metric -> mean over seeds on all examples
    interval: dict[str, tuple[float, float]]  # metric -> 95% percentile interval
    p_top: float | None = None  # paired bootstrap, monitored metric, vs the top row
    p_probe: float | None = None  # ... vs the reference row (probe)
    mcnemar_top: float | None = None  # McNemar on accuracy vs the top row
    mcnemar_probe: float | None = None
    n_resamples: int = N_RESAMPLES

    @property
    def tied_with_top(self) -> bool:
        return self.p_top is not None and self.p_top >= ALPHA


def compare_rows(y: np.ndarray, preds: dict[str, np.ndarray], num_classes: int, monitor: str,
                 top: str | None = None, reference: str | None = None, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> dict[str, RowStats]:
    """Interval of every row, and paired tests against `top` and `reference` (rows on the same examples).

    preds: row name -> [S, N] predicted classes; monitor: a metric name of METRIC_KEYS."""
    y = np.asarray(y)
    boot = {name: bootstrap_scores(y, p, num_classes, n_resamples, seed) for name, p in preds.items()}
    correct = {name: np.atleast_2d(p) == y[None, :] for name, p in preds.items()}
    out = {}
    for name, p in preds.items():
        st = RowStats(point_scores(y, p, num_classes), {m: percentile_interval(boot[name][m]) for m in METRIC_KEYS},
                      n_resamples=n_resamples)
        if top is not None and name != top:
            st.p_top = paired_bootstrap_p(boot[name][monitor], boot[top][monitor])
            st.mcnemar_top = mcnemar_p(correct[name], correct[top])[0]
        if reference is not None and name != reference:
            st.p_probe = paired_bootstrap_p(boot[name][monitor], boot[reference][monitor])
            st.mcnemar_probe = mcnemar_p(correct[name], correct[reference])[0]
        out[name] = st
    return out
