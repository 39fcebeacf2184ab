"""Classification metrics written to metrics.json and used for early stopping."""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

MONITORS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "macro-f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
    # MDSE and INFIG (like most MVSA papers) report weighted F1, the default early-stopping metric;
    # seed 000 reports macro F1 (--monitor macro-f1 selects on it).
    "weighted-f1": lambda y, p: float(f1_score(y, p, average="weighted", zero_division=0)),
}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(p),
        "macro_recall": float(r),
        "macro_f1": float(f),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
        ),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def dev_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """accuracy, macro_f1 and weighted_f1 as classification_metrics computes them (the same sklearn calls,
    so the same values to the bit), without its per-class report and confusion matrix: what an epoch's
    dev pass needs for early stopping, at a third of the cost."""
    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
    }


# metrics.json key for each monitor name
MONITOR_KEYS = {"accuracy": "accuracy", "macro-f1": "macro_f1", "weighted-f1": "weighted_f1"}
