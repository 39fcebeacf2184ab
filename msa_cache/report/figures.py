"""The report's pictures as PNG bytes, rendered in memory (nothing written to disk): the
leaderboard's bar chart and the confusion matrices come from the functions that draw them
for `compare` and for each run directory; the training curves are drawn here."""
from __future__ import annotations

import io
import math

import numpy as np

from msa_cache.study.compare import Entry, bar_chart
from msa_cache.metrics import monitor_metric
from msa_cache.train.rundir import plot_confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (class, family names): a $ is text
    import matplotlib.pyplot as plt

    return plt


def bar_chart_png(rows: list[Entry], monitor: str) -> bytes:
    buf = io.BytesIO()
    bar_chart(rows, buf, monitor)
    return buf.getvalue()


def confusion_png(cm: np.ndarray, classes: list[str], title: str) -> bytes:
    buf = io.BytesIO()
    plot_confusion(cm, classes, buf, title=title)
    return buf.getvalue()


def _epochs(records: list[dict]) -> list[dict]:
    return [r for r in records if isinstance(r.get("epoch"), (int, float)) and "train_loss" in r]


def _best_epoch(records: list[dict]) -> int | None:
    return next((r["best_epoch"] for r in records if "best_epoch" in r), None)


def has_curves(histories: dict[str, list[dict]]) -> bool:
    """Epoch-by-epoch records (trained heads), or a probe's dev score per C."""
    return any(_epochs(h) or any("dev_scores" in r for r in h) for h in histories.values())


def curves_png(title: str, histories: dict[str, list[dict]], monitor: str) -> bytes:
    """Train loss and the dev monitor per epoch, one line per seed (the best epoch marked); for a
    closed-form probe, its dev score per regularisation strength C instead."""
    plt = _pyplot()
    key = monitor_metric(monitor).dev_key
    trained = {s: h for s, h in histories.items() if _epochs(h)}
    if trained:
        fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(6.8, 2.8))  # two side by side on the page
        for i, (seed, records) in enumerate(sorted(trained.items())):
            colour = f"C{i}"
            ep = _epochs(records)
            x = [r["epoch"] for r in ep]
            ax_loss.plot(x, [r["train_loss"] for r in ep], color=colour, marker=".", label=seed)
            dev = [(r["epoch"], 100 * r[key]) for r in ep if key in r]
            if dev:
                ax_dev.plot(*zip(*dev), color=colour, marker=".", label=seed)
            best = _best_epoch(records)
            if best is not None and any(e == best for e, _ in dev):
                ax_dev.plot(best, dict(dev)[best], color=colour, marker="*", markersize=13, linestyle="none")
        ax_loss.set(xlabel="epoch", ylabel="train loss", title="train loss")
        ax_dev.set(xlabel="epoch", ylabel=f"dev {monitor} (%)", title=f"dev {monitor} (★ = kept epoch)")
        ax_loss.legend(fontsize=8)
        for ax in (ax_loss, ax_dev):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        fig, ax = plt.subplots(figsize=(5.0, 2.9))
        for i, (seed, records) in enumerate(sorted(histories.items())):
            sweep = next((r for r in records if "dev_scores" in r), None)
            if sweep is None:
                continue
            pts = sorted((float(c), 100 * v) for c, v in sweep["dev_scores"].items())
            ax.plot(*zip(*pts), color=f"C{i}", marker=".", label=seed)
            if "C" in sweep:
                ax.plot(float(sweep["C"]), dict(pts).get(float(sweep["C"]), math.nan), color=f"C{i}", marker="*",
                        markersize=13, linestyle="none")
        ax.set_xscale("log")
        ax.set(xlabel="C (inverse regularisation)", ylabel=f"dev {monitor} (%)",
               title="dev score per C (★ = chosen)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=90, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()
