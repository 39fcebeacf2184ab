"""The report's pictures as PNG bytes, rendered in memory (nothing written to disk): the confusion
matrices come from the function that draws them for each run directory; the leaderboard's
dot-and-interval plot and the training curves are drawn here."""
from __future__ import annotations

import io
import math

import numpy as np

from msa_cache.study.compare import Entry
from msa_cache.metrics import monitor_key, monitor_metric
from msa_cache.train.rundir import plot_confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (class, family names): a $ is text
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=90, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def interval_points(rows: list[Entry], monitor: str) -> list[tuple[str, float, float | None, float | None]]:
    """(label, dev mean over seeds, 95% interval low, high) in % per leaderboard row with a dev score,
    in the leaderboard's order; the interval None where the row has no bootstrap statistics."""
    key = monitor_key(monitor)
    out = []
    for e in rows:
        s = e.stat("dev", key)
        if s is None:
            continue
        st = e.stats.get("dev")
        lo, hi = (None, None) if st is None else (100 * st.interval[key][0], 100 * st.interval[key][1])
        tied = " ≈" if st is not None and st.tied_with_top else ""
        out.append((e.label + tied, 100 * s[0], lo, hi))
    return out


def interval_figure(rows: list[Entry], monitor: str):
    """Each row's dev mean (dot) and bootstrap 95% interval (line), one line per row, best at the top.
    Dots, not bars: a bar's length says "from 0" (or from wherever the axis starts), a dot only where
    the score is, so the axis can zoom on the scores without exaggerating their differences."""
    plt = _pyplot()
    points = interval_points(rows, monitor)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(points) + 1.6))
    y = np.arange(len(points))
    for i, (_, mean, lo, hi) in enumerate(points):
        colour = "C2" if i == 0 else "C0"
        if lo is not None:
            ax.hlines(i, lo, hi, color=colour, linewidth=3.5, alpha=0.55)
        ax.plot(mean, i, "o", color=colour, markersize=8, zorder=3)
    ax.set_yticks(y, [p[0] for p in points])
    ax.set_ylim(len(points) - 0.5, -0.5)  # the leaderboard's order: best at the top
    ax.margins(x=0.05)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"dev {monitor_metric(monitor).name} (%)")
    ax.set_title("dot: mean over seeds; line: 95% bootstrap interval\n"
                 "≈: not distinguishable from the top row (p ≥ 0.05)", fontsize=9)
    fig.tight_layout()
    return fig


def interval_png(rows: list[Entry], monitor: str) -> bytes:
    return _png(interval_figure(rows, monitor))


def robustness_figure(rows: list[dict]):
    """Score vs evaluation, one line per family (study/eval_table.robustness_rows of one manifest's runs):
    the monitor in %, dev where the family has it, else test; dot = mean, bar = std over seeds."""
    plt = _pyplot()
    split_of = {}
    for r in rows:
        if split_of.get(r["family"]) != "dev":
            split_of[r["family"]] = r["split"]
    names = sorted({r["evaluation"] for r in rows}, key=lambda n: (n != "clean", n))
    families = sorted(split_of.items())
    # Many families: the legend sits beside the axes (not over the lines), colours and markers both vary.
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(names) + 2) + 3.2, max(4.2, 0.22 * len(families) + 1)))
    markers = "osD^vP*Xh<>"
    for i, (family, split) in enumerate(families):
        mine = {r["evaluation"]: r for r in rows if r["family"] == family and r["split"] == split}
        xs = [i for i, n in enumerate(names) if n in mine]
        key = [monitor_key(mine[names[i]]["monitor"]) for i in xs]
        ys = [100 * mine[names[i]][f"{k}_mean"] for i, k in zip(xs, key)]
        errs = [100 * mine[names[i]][f"{k}_std"] for i, k in zip(xs, key)]
        ax.errorbar(xs, ys, yerr=errs, marker=markers[i % len(markers)], capsize=3, color=f"C{i % 10}",
                    linestyle="-" if i < 10 else "--" if i < 20 else ":", label=f"{family} ({split})")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    titles = sorted({monitor_metric(r["monitor"]).title for r in rows})
    ax.set_ylabel(f"{'/'.join(titles)} (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def robustness_png(rows: list[dict]) -> bytes:
    return _png(robustness_figure(rows))


def confusion_png(cm: np.ndarray, classes: list[str], title: str) -> bytes:
    buf = io.BytesIO()
    plot_confusion(cm, classes, buf, title=title)
    return buf.getvalue()


def _epochs(records: list[dict]) -> list[dict]:
    return [r for r in records if isinstance(r.get("epoch"), (int, float)) and "train_loss" in r]


def has_epochs(records: list[dict]) -> bool:
    """Whether a history holds epoch-by-epoch records (a trained head, not the closed-form probe)."""
    return bool(_epochs(records))


def _best_epoch(records: list[dict]) -> int | None:
    return next((r["best_epoch"] for r in records if "best_epoch" in r), None)


def has_curves(histories: dict[str, list[dict]]) -> bool:
    """Epoch-by-epoch records (trained heads), or a probe's dev score per C."""
    return any(_epochs(h) or any("dev_scores" in r for r in h) for h in histories.values())


def has_dev_loss(histories: dict[str, list[dict]]) -> bool:
    """Whether any seed's history.jsonl records a dev loss per epoch."""
    return any("dev_loss" in r for h in histories.values() for r in _epochs(h))


def curves_png(title: str, histories: dict[str, list[dict]], monitor: str) -> bytes:
    return _png(curves_figure(title, histories, monitor))


def _star(ax, x: float, y: float, colour: str) -> None:
    # clip_on=False: a kept epoch on the axes' edge (the last epoch, the best score) is drawn whole
    ax.plot(x, y, color=colour, marker="*", markersize=13, linestyle="none", clip_on=False, zorder=4)


def curves_figure(title: str, histories: dict[str, list[dict]], monitor: str):
    """Train loss (and dev loss where history.jsonl records it, dashed) and the dev monitor per epoch,
    one colour per seed (the kept epoch starred); for a closed-form probe, its dev score per
    regularisation strength C instead."""
    plt = _pyplot()
    key = monitor_metric(monitor).dev_key
    trained = {s: h for s, h in histories.items() if _epochs(h)}
    if trained:
        fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(6.8, 2.8))  # two side by side on the page
        for i, (seed, records) in enumerate(sorted(trained.items())):
            colour = f"C{i}"
            ep = _epochs(records)
            x = [r["epoch"] for r in ep]
            ax_loss.plot(x, [r["train_loss"] for r in ep], color=colour, marker=".", label=f"{seed} train")
            dev_loss = [(r["epoch"], r["dev_loss"]) for r in ep if "dev_loss" in r]
            if dev_loss:
                ax_loss.plot(*zip(*dev_loss), color=colour, marker=".", linestyle="--", label=f"{seed} dev")
            dev = [(r["epoch"], 100 * r[key]) for r in ep if key in r]
            if dev:
                ax_dev.plot(*zip(*dev), color=colour, marker=".", label=seed)
            best = _best_epoch(records)
            if best is not None and any(e == best for e, _ in dev):
                _star(ax_dev, best, dict(dev)[best], colour)
        loss_title = "train (—) and dev (--) loss" if has_dev_loss(trained) else "train loss (no dev loss recorded)"
        ax_loss.set(xlabel="epoch", ylabel="loss", title=loss_title)
        ax_dev.set(xlabel="epoch", ylabel=f"dev {monitor} (%)", title=f"dev {monitor} (★ = kept epoch)")
        ax_loss.legend(fontsize=7)
        for ax in (ax_loss, ax_dev):
            ax.grid(alpha=0.3)
            ax.margins(x=0.06, y=0.12)  # room for a star at the edge inside the frame
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
                _star(ax, float(sweep["C"]), dict(pts).get(float(sweep["C"]), math.nan), f"C{i}")
        ax.set_xscale("log")
        ax.set(xlabel="C (inverse regularisation)", ylabel=f"dev {monitor} (%)",
               title="dev score per C (★ = chosen)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.margins(x=0.06, y=0.12)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
