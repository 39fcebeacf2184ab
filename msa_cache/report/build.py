"""`report`: one self-contained HTML page about a manifest's finished runs.

    path = write_report("runs/mvsa-single")          # -> runs/mvsa-single/report.html
    html = build_report("runs/mvsa-single", explain=3)

The leaderboard is `compare --heads '' --all-runs` (the same rows, intervals and tests: it is
computed by `summarise` and printed by `leaderboard_markdown`), followed by its bar chart,
per-class F1, confusion matrices, training curves, the oracle analysis and, optionally, a few
`explain` pictures. Scores are on dev (and on test where it is labeled).
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from msa_cache import __version__
from msa_cache.atomic import write_text_atomic
from msa_cache.provenance import library_versions
import msa_cache.report.figures as figures
import msa_cache.report.page as page
from msa_cache.report.collect import (
    Family, OracleAnalysis, finished_families, oracle_analysis, read_families, report_monitor, unfinished_folders,
)
from msa_cache.report.examples import Examples, explain_examples
from msa_cache.study.compare import Entry, leaderboard_markdown, leaderboard_rows, summarise
from msa_cache.metrics import METRICS, MONITOR_NAMES
from msa_cache.study.stats import N_RESAMPLES
from msa_cache.report import REPORT_FILE

SECTIONS = [("leaderboard", "Leaderboard"), ("chart", "Bar chart"), ("per-class", "Per-class F1"),
            ("confusion", "Confusion matrices"), ("curves", "Training curves"), ("oracle", "Oracle analysis"),
            ("explain", "Explain examples")]


def build_report(runs_dir: str | Path, explain: int = 0, monitor: str | None = None,
                 n_resamples: int = N_RESAMPLES, ensembles: bool = True) -> str:
    """The report's HTML for the finished runs under runs_dir (runs/<manifest>/).

    monitor: the metric rows are ranked and tested on [default: the one the runs selected on];
    explain: draw this many dev examples of the best explainable run (needs its caches and images)."""
    runs_dir = Path(runs_dir)
    entries = finished_families(runs_dir)
    families = read_families(entries)
    monitor = monitor or report_monitor(families)
    if monitor not in MONITOR_NAMES:
        raise ValueError(f"monitor '{monitor}': choose one of {', '.join(MONITOR_NAMES)}")
    rows = summarise(entries, monitor, ensembles=ensembles, n_resamples=n_resamples)
    order = {id(e): i for i, e in enumerate(rows)}
    families.sort(key=lambda f: order[id(f.entry)])

    command = _command(runs_dir, explain, monitor, n_resamples, ensembles)
    body = [_header(runs_dir, families, monitor),
            page.section("leaderboard", "Leaderboard", _leaderboard(rows, monitor)),
            page.section("chart", "Bar chart", _chart(rows, monitor)),
            page.section("per-class", "Per-class F1", _per_class(families)),
            page.section("confusion", "Confusion matrices", _confusions(families)),
            page.section("curves", "Training curves", _curves(families, monitor)),
            page.section("oracle", "Oracle analysis", _oracle(oracle_analysis(families))),
            page.section("explain", "Explain examples", _examples(explain_examples(families, explain, monitor))),
            f'<p class="note small">Written by <code>{page.esc(command)}</code> '
            f"(msa-cache {page.esc(__version__)}).</p>"]
    return page.document(f"msa-cache report: {runs_dir.name}", "\n".join(body))


def write_report(runs_dir: str | Path, out: str | Path | None = None, **options) -> Path:
    """build_report written to `out` [default: runs_dir/report.html] atomically (a temporary file
    beside it, renamed when complete, so a reader never sees half a page)."""
    out = Path(out) if out is not None else Path(runs_dir) / REPORT_FILE
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the report file's name, e.g. {out / REPORT_FILE}")
    html = build_report(runs_dir, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, html)


def _command(runs_dir: Path, explain: int, monitor: str, n_resamples: int, ensembles: bool) -> str:
    """The command line that writes this report again (the monitor made explicit)."""
    parts = ["msa-cache report", str(runs_dir), "--monitor", monitor]
    if explain:
        parts += ["--explain", str(explain)]
    if n_resamples != N_RESAMPLES:
        parts += ["--resamples", str(n_resamples)]
    if not ensembles:
        parts.append("--no-ensembles")
    return " ".join(parts)


# ---------------------------------------------------------------------------
# sections


def _splits_sentence(families: list[Family]) -> str:
    dev_n = next((m["dev"]["n"] for f in families for m in f.metrics if "dev" in m), None)
    test_n = next((m["test"]["n"] for f in families for m in f.metrics if "test" in m), None)
    text = (f"dev ({dev_n} labeled rows): every run's early stopping and the leaderboard's order use it. "
            if dev_n is not None else "no dev scores. ")
    if test_n is not None:
        text += f"Test ({test_n} labeled rows) is shown next to dev where labeled; it never picks anything."
    else:
        text += "Test: not labeled in this manifest, so not scored here (compare --export-test writes predictions)."
    return text


def _header(runs_dir: Path, families: list[Family], monitor: str) -> str:
    manifests = sorted({f.configs[0]["spec"].get("manifest", "?") for f in families})
    prints = sorted({str(f.configs[0].get("manifest_fingerprint", "?")) for f in families})
    running, stale = unfinished_folders(runs_dir)
    n_runs = sum(len(f.runs) for f in families)
    left_out = []
    if running:
        left_out.append(f"{running} run(s) still training")
    if stale:
        left_out.append(f"{stale} unfinished folder(s) of stopped processes")
    meta = [
        ["manifest", f"{runs_dir.name}  ({', '.join(manifests)}; fingerprint {', '.join(prints)})"],
        ["runs folder", str(runs_dir.resolve())],
        ["generated", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")],
        ["runs", f"{n_runs} finished run(s) in {len(families)} families"
                 + (f"; left out: {', '.join(left_out)}" if left_out else "")],
        ["monitor", f"{monitor} (rows are ranked and tested on it)"],
        ["scores on", _splits_sentence(families)],
        ["classes", ", ".join(families[0].classes)],
    ]
    versions = library_versions()
    meta.append(["versions", "; ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")])
    meta.append(["platform", versions.get("platform", "?")])
    nav = " ".join(f'<a href="#{a}">{page.esc(t)}</a>' for a, t in SECTIONS)
    return (f"<h1>msa-cache report: {page.esc(runs_dir.name)}</h1>\n"
            + page.table(None, meta, cls="meta")
            + f"\n<nav>{nav}</nav>")


def _leaderboard(rows: list[Entry], monitor: str) -> str:
    header, cells, legend = page.parse_markdown_table(leaderboard_markdown(rows, monitor))
    classes = ["picked" if e is rows[0] else "ensemble" if e.kind == "ensemble"
               else "tied" if e.stats.get("dev") and e.stats["dev"].tied_with_top else "" for e in rows]
    buf = io.StringIO()
    data = leaderboard_rows(rows, monitor)
    w = csv.DictWriter(buf, fieldnames=list(data[0]))
    w.writeheader()
    w.writerows(data)
    return (page.table(header, cells, classes, cls="leaderboard") + page.note(legend)
            + page.note("Rows: every finished run family of this manifest (as msa-cache compare --heads '' "
                        "--all-runs lists them), with a seed-ensemble row for each family of 2+ seeds.")
            + '<p class="small">' + page.download_link(buf.getvalue().encode(), "leaderboard.csv", "text/csv",
                                                      "leaderboard.csv (every column, as compare writes it)")
            + "</p>")


def _chart(rows: list[Entry], monitor: str) -> str:
    return page.figure(figures.bar_chart_png(rows, monitor), "leaderboard bar chart",
                       "dev scores, mean over seeds; error bars: 95% bootstrap interval over examples")


def _pct(mean: float, std: float, seeds: int) -> str:
    return f"{100 * mean:.2f}" if seeds == 1 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _per_class(families: list[Family]) -> str:
    out = []
    for split in ("dev", "test"):
        fams = [f for f in families if split in f.splits()]
        if not fams:
            continue
        classes = fams[0].classes
        support = fams[0].per_class_f1(split)
        f1s = [m for m in METRICS if m.hf_type == "f1"]  # beside the per-class F1s: their macro and weighted means
        header = ["model", "seeds"] + [f"{c} (n={support[c][2]})" for c in classes] + [m.title for m in f1s]
        rows = []
        for f in fams:
            pc = f.per_class_f1(split)
            cells = [f.label, len(f.runs)] + [_pct(*pc[c][:2], len(f.runs)) if c in pc else "-" for c in classes]
            for metric in f1s:
                vals = [m[split][metric.key] for m in f.metrics]
                cells.append(_pct(float(np.mean(vals)), float(np.std(vals)), len(f.runs)))
            rows.append(cells)
        out.append(f"<h3>{split}</h3>" + page.table(header, rows, cls=f"per-class {split}"))
    if not out:
        return page.note("no labeled split in the runs' metrics")
    return "\n".join(out) + page.note("F1 per class in %, mean ± std over each family's seeds "
                                      "(from each run's metrics.json).")


def _confusions(families: list[Family]) -> str:
    figs = []
    for f in families:
        if "dev" not in f.splits():
            continue
        n = len(f.runs)
        title = f"{f.label}\ndev, summed over {n} seed{'s' if n > 1 else ''}"
        figs.append(page.figure(figures.confusion_png(f.confusion("dev"), f.classes, title),
                                f"confusion matrix of {f.label}"))
    if not figs:
        return page.note("no dev scores")
    return (page.note("Dev split, rows true class, columns predicted; each family's matrix is the sum over its "
                      "seeds (so a cell counts rows x seeds).")
            + f'<div class="grid cm">{"".join(figs)}</div>')


def _curves(families: list[Family], monitor: str) -> str:
    figs, notes = [], []
    for f in families:
        histories, bad = f.histories()
        notes += bad
        if not figures.has_curves(histories):
            notes.append(f"{f.label}: no per-epoch history to draw")
            continue
        figs.append(page.figure(figures.curves_png(f"{f.label} ({len(histories)} seed(s))", histories, monitor),
                                f"training curves of {f.label}"))
    body = page.note("From each run's history.jsonl: train loss and the dev monitor per epoch, seeds overlaid; "
                     "the kept model is the best epoch (★). The closed-form probe has no epochs: its dev score "
                     "per regularisation strength C.")
    return body + f'<div class="grid">{"".join(figs)}</div>' + "".join(page.note(n) for n in notes)


def _oracle(o: OracleAnalysis) -> str:
    if o.base is None:
        return "".join(page.note(n) for n in o.notes)
    b = o.base
    split = b["split"]
    intro = (f"On {split} ({b['rows']} labeled rows; "
             f"{'test is labeled' if split == 'test' else 'test is unlabeled, so dev'}), mean over "
             f"{b['seeds']} seed pair(s) of the best text-only family ({o.text.label}) and the best image-only "
             f"family ({o.image.label}). The oracle counts a row right when either uni-modal run gets it right: "
             "the most a perfect chooser between the two could reach.")
    base = page.table(["text-only acc", "image-only acc", "oracle acc", "both right", "only text right",
                       "only image right", "neither right"],
                      [[f"{100 * b['text_accuracy']:.2f}", f"{100 * b['image_accuracy']:.2f}",
                        f"{100 * b['oracle_accuracy']:.2f}", f"{b['both_right']:.1f}", f"{b['only_text_right']:.1f}",
                        f"{b['only_image_right']:.1f}", f"{b['neither_right']:.1f}"]])
    rows = [[f.label, r["seeds"], f"{100 * r['multimodal_accuracy']:.2f}", f"{100 * r['oracle_accuracy']:.2f}",
             f"{100 * r['multimodal_share_of_oracle']:.1f}", f"{r['only_multimodal_right']:.1f}",
             f"{r['multimodal_right_where_unimodal_disagree']:.1f} of {r['unimodal_disagree']:.1f}"]
            for f, r in o.rows]
    multi = page.table(["multimodal family", "seed pairs", "accuracy", "oracle acc", "share of oracle (%)",
                        "rows only it gets right", "right where uni-modal disagree"], rows) if rows else ""
    return (page.note(intro) + base + multi + page.note("Same figures as msa-cache analyze oracle --text-run "
                                                         "--image-run --multi-run on these families.")
            + "".join(page.note(n) for n in o.notes))


def _examples(ex: Examples) -> str:
    out = [page.note(n) for n in ex.notes]
    if ex.run is not None:
        out.append(page.note(f"Run {ex.run} ({ex.family}, its best seed on dev): dev examples drawn with RNG seed "
                             "0, half it gets right and half wrong; msa-cache explain draws each."))
    out += [page.figure(png, f"explain picture of example {row_id}",
                        f"dev id {row_id}: the run gets it {'right' if right else 'wrong'}")
            for row_id, right, png in ex.pictures]
    return "\n".join(out)
