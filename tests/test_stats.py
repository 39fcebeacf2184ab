"""Bootstrap intervals and paired tests (msa_cache.study.stats) and the metrics they resample (msa_cache.metrics)."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, f1_score

from msa_cache.metrics import metrics_from_confusion
from msa_cache.study import stats


def test_metrics_from_confusion_match_sklearn_with_bootstrap_weights():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    p[:120] = y[:120]
    for idx in stats.resample_indices(200, n_resamples=5, seed=3):
        for row in idx:
            w = np.bincount(row, minlength=200)
            cm = np.bincount(y[row] * 3 + p[row], minlength=9).reshape(3, 3)
            got = metrics_from_confusion(cm)
            assert got["accuracy"] == pytest.approx(accuracy_score(y, p, sample_weight=w))
            assert got["macro_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1, 2], average="macro",
                                                             sample_weight=w, zero_division=0))
            assert got["weighted_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1, 2], average="weighted",
                                                                sample_weight=w, zero_division=0))


def test_accuracy_interval_matches_the_normal_approximation():
    n, acc = 2000, 0.7
    y = np.zeros(n, dtype=int)
    pred = np.where(np.arange(n) < acc * n, 0, 1)  # exactly 70% right
    boot = stats.bootstrap_scores(y, pred, 2, n_resamples=4000)
    lo, hi = stats.percentile_interval(boot["accuracy"])
    half = norm.ppf(0.975) * np.sqrt(acc * (1 - acc) / n)  # Wald interval of a binomial proportion
    assert lo == pytest.approx(acc - half, abs=0.004)
    assert hi == pytest.approx(acc + half, abs=0.004)


def test_degenerate_interval_and_seed_pooling():
    y = np.array([0, 1, 2, 0, 1, 2])
    boot = stats.bootstrap_scores(y, y, 3, n_resamples=200)
    assert stats.percentile_interval(boot["accuracy"]) == (1.0, 1.0)
    # two seeds: one always right, one always wrong -> every resample averages to 0.5
    wrong = (y + 1) % 3
    pooled = stats.bootstrap_scores(y, np.stack([y, wrong]), 3, n_resamples=200)
    assert np.all(pooled["accuracy"] == 0.5)


def test_identical_predictions_give_p_1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 3, 300))
    res = stats.compare_rows(y, {"a": p, "b": p.copy()}, 3, "weighted_f1", top="a", reference="a",
                             n_resamples=1000)
    assert res["b"].p_top == 1.0 and res["b"].mcnemar_top == 1.0
    assert res["b"].tied_with_top
    assert res["a"].p_top is None


def test_planted_large_difference_gives_small_p():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    good = np.where(rng.random((3, 400)) < 0.85, y, (y + 1) % 3)  # 3 seeds, ~85% right
    bad = np.where(rng.random((3, 400)) < 0.55, y, (y + 2) % 3)   # 3 seeds, ~55% right
    res = stats.compare_rows(y, {"good": good, "bad": bad}, 3, "accuracy", top="good", reference="bad",
                             n_resamples=2000)
    assert res["bad"].p_top < 0.01 and res["bad"].mcnemar_top < 0.01
    assert res["good"].p_probe < 0.01
    assert not res["bad"].tied_with_top
    assert res["good"].interval["accuracy"][0] > res["bad"].interval["accuracy"][1]


def test_same_resamples_for_every_row():
    a = [x.copy() for x in stats.resample_indices(50, 700, seed=4)]
    b = list(stats.resample_indices(50, 700, seed=4))
    assert len(a) == 2 and all(np.array_equal(x, z) for x, z in zip(a, b))
