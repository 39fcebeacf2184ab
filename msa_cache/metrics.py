"""The one table of classification metrics every other module reads: a metric's monitor name (what
--monitor, manifests and config.json spell: "weighted-f1"), its metrics.json key ("weighted_f1"),
the history.jsonl field of its dev score ("dev_weighted_f1", derived, never spelled), its labels
in logs and tables, its Hugging Face model-index type, and the function that scores it.

Import-light on purpose (the CLI's --help imports it): sklearn is imported inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MONITOR = "weighted-f1"  # for manifests that name none (older files, `table` without --monitor)


@dataclass(frozen=True)
class Metric:
    name: str  # the monitor name: --monitor, manifests, config.json
    key: str  # the metrics.json key (and, prefixed with dev_, the history.jsonl field)
    abbrev: str  # in one-line logs: "dev acc 0.61 wF1 0.60"
    title: str  # in tables and cards: "weighted-F1"
    hf_type: str  # the Hugging Face model-index metric type
    hf_average: str | None  # its `average` argument there
    # MDSE and INFIG (like most MVSA papers) report weighted F1, the default early-stopping metric;
    # seed 000 reports macro F1 (--monitor macro-f1 selects on it).

    @property
    def dev_key(self) -> str:
        """The field of an epoch record (history.jsonl) holding this metric on dev."""
        return f"dev_{self.key}"

    def score(self, y_true, y_pred) -> float:
        from sklearn.metrics import accuracy_score, f1_score

        if self.hf_average is None:
            return float(accuracy_score(y_true, y_pred))
        return float(f1_score(y_true, y_pred, average=self.hf_average, zero_division=0))

    def from_confusion(self, total, tp, support, f1):
        """The same score from confusion-matrix parts ([..., K] arrays, any leading batch shape; see
        metrics_from_confusion): vectorised over bootstrap resamples."""
        import numpy as np

        if self.hf_average is None:
            return np.where(total > 0, tp.sum(-1) / total, 0.0)
        if self.hf_average == "macro":
            return f1.mean(-1)
        return np.where(total > 0, (f1 * support).sum(-1) / total, 0.0)


METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "accuracy", "acc", "accuracy", "accuracy", None),
    Metric("macro-f1", "macro_f1", "mF1", "macro-F1", "f1", "macro"),
    Metric("weighted-f1", "weighted_f1", "wF1", "weighted-F1", "f1", "weighted"),
)
ACCURACY = METRICS[0]  # shown beside the monitor in one-line logs and charts
MONITOR_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)  # the choices of every --monitor
METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)  # the scores metrics.json holds per split
_BY_NAME = {m.name: m for m in METRICS}


def monitor_metric(name: str) -> Metric:
    """The metric a monitor name stands for; ValueError naming the choices for any other name."""
    if name not in _BY_NAME:
        raise ValueError(f"--monitor must be one of {', '.join(MONITOR_NAMES)}, not {name!r}")
    return _BY_NAME[name]


def monitor_key(name: str) -> str:
    """metrics.json key of a monitor name: "weighted-f1" -> "weighted_f1"."""
    return monitor_metric(name).key


def scores_line(scores: dict) -> str:
    """"accuracy 0.6100  macro-F1 0.5800  weighted-F1 0.6012": a split's metrics.json scores on one line."""
    return "  ".join(f"{m.title} {scores[m.key]:.4f}" for m in METRICS)


def metrics_from_confusion(cm) -> dict:
    """Every METRICS key -> its score from confusion matrices [..., K(true), K(pred)] (sklearn's
    definitions, zero_division=0)."""
    import numpy as np

    cm = cm.astype(np.float64)
    total = cm.sum(axis=(-2, -1))
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # true counts per class
    denom = support + cm.sum(axis=-2)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m.key: m.from_confusion(total, tp, support, f1) for m in METRICS}


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """What metrics.json holds per labeled split: n, every METRICS key, macro precision and recall,
    the per-class report and the confusion matrix."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score, precision_recall_fscore_support
    from sklearn.metrics import accuracy_score

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


def dev_metrics(y_true, y_pred, num_classes: int) -> dict[str, float]:
    """Every METRICS key as classification_metrics computes it (the same sklearn calls, so the same values
    to the bit), without its per-class report and confusion matrix: what an epoch's dev pass needs for
    early stopping, at a third of the cost."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
    }
