"""`report`: one self-contained HTML page about a manifest's finished runs.

    path = write_report("runs/mvsa-single")          # -> runs/mvsa-single/report.html
    html = build_report("runs/mvsa-single", explain=3)

The leaderboard is `compare --heads '' --all-runs` (the same rows, intervals and tests: it is
computed by `summarise` and printed by `leaderboard_markdown`; each row also links to its run's card
and shows its options, size and training time), followed by its dot-and-interval plot,
per-class scores, confusion matrices, training curves, the oracle analysis, the robustness table and
chart and the transfer matrices of `msa-cache evaluate` where the runs have evaluations, and, optionally,
a few `explain` pictures. Scores are on dev (and on test where it is labeled).
"""
from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

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
from msa_cache.study.compare import Entry, format_p, leaderboard_markdown, leaderboard_rows, summarise
from msa_cache.metrics import METRICS, MONITOR_NAMES, monitor_key, monitor_metric
from msa_cache.study.eval_table import (
    Evaluation, read_evaluations, robustness_markdown, robustness_rows, transfer_markdown, transfer_matrix,
)
from msa_cache.study.stats import N_RESAMPLES, holm
from msa_cache.report import REPORT_FILE

SECTIONS = [("leaderboard", "Leaderboard"), ("chart", "Scores and intervals"), ("per-class", "Per-class scores"),
            ("confusion", "Confusion matrices"), ("curves", "Training curves"), ("oracle", "Oracle analysis"),
            ("robustness", "Robustness"), ("transfer", "Transfer"), ("explain", "Explain examples")]


def build_report(runs_dir: str | Path, explain: int = 0, monitor: str | None = None,
                 n_resamples: int = N_RESAMPLES, ensembles: bool = True, command: str | None = None,
                 page_dir: str | Path | None = None) -> str:
    """The report's HTML for the finished runs under runs_dir (runs/<manifest>/).

    monitor: the metric rows are ranked and tested on [default: the one the runs selected on];
    explain: draw this many dev examples of the best explainable run (needs its caches and images);
    command: the command line shown in the footer [default: one that writes this report again];
    page_dir: the folder the page will be saved in, which its links to run cards are relative to
    [default: runs_dir]."""
    runs_dir = Path(runs_dir)
    entries = finished_families(runs_dir)
    families = read_families(entries)
    monitor = monitor or report_monitor(families)
    if monitor not in MONITOR_NAMES:
        raise ValueError(f"monitor '{monitor}': choose one of {', '.join(MONITOR_NAMES)}")
    rows = summarise(entries, monitor, ensembles=ensembles, n_resamples=n_resamples)
    order = {id(e): i for i, e in enumerate(rows)}
    families.sort(key=lambda f: order[id(f.entry)])

    evaluations = read_evaluations(runs_dir)
    command = command or _command(runs_dir, explain, monitor, n_resamples, ensembles)
    page_dir = Path(page_dir) if page_dir is not None else runs_dir
    titles = dict(SECTIONS)
    body = [_header(runs_dir, families, monitor),
            page.section("leaderboard", titles["leaderboard"], _leaderboard(rows, families, monitor, page_dir)),
            page.section("chart", titles["chart"], _chart(rows, monitor)),
            page.section("per-class", titles["per-class"], _per_class(families)),
            page.section("confusion", "Confusion matrices", _confusions(families)),
            page.section("curves", "Training curves", _curves(families, monitor)),
            page.section("oracle", "Oracle analysis", _oracle(oracle_analysis(families))),
            page.section("robustness", titles["robustness"], _robustness(runs_dir, evaluations)),
            page.section("transfer", titles["transfer"], _transfer(runs_dir, evaluations)),
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
    html = build_report(runs_dir, page_dir=out.parent, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, html)


def _command(runs_dir: Path, explain: int, monitor: str, n_resamples: int, ensembles: bool) -> str:
    """A command line that writes this report again (the monitor made explicit): the footer's, where the
    Python API (not the CLI, which passes the command as it was run) built the page."""
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


def _leaderboard(rows: list[Entry], families: list[Family], monitor: str, page_dir: Path) -> str:
    header, cells, legend = page.parse_markdown_table(leaderboard_markdown(rows, monitor))
    classes = ["picked" if e is rows[0] else "ensemble" if e.kind == "ensemble"
               else "tied" if e.stats.get("dev") and e.stats["dev"].tied_with_top else "" for e in rows]
    by_folder = {f.path.absolute(): f for f in families}
    key = monitor_key(monitor)
    details = []
    for e, row in zip(rows, cells):
        folder = e.results[0].path.absolute() if e.kind == "ensemble" else e.results[0].path.parent.absolute()
        fam = by_folder.get(folder)
        row[0] = _run_link(e, fam, key, folder, page_dir)
        details.append(_details(e, fam))
    header[2:2] = ["options", "parameters", "training time"]
    for row, extra in zip(cells, details):
        row[2:2] = extra
    holm_note = _add_holm(header, cells, rows, monitor)
    buf = io.StringIO()
    data = leaderboard_rows(rows, monitor)
    w = csv.DictWriter(buf, fieldnames=list(data[0]))
    w.writeheader()
    w.writerows(data)
    return (page.table(header, cells, classes, cls="leaderboard") + page.note(legend) + holm_note
            + page.note("Rows: every finished run family of this manifest (as msa-cache compare --heads '' "
                        "--all-runs lists them), with a seed-ensemble row for each family of 2+ seeds. A row's "
                        "name links to the model card (README.md) of its best seed on dev, an ensemble's to its "
                        "family folder; parameters: one seed's model (config.json); training time: mean per seed "
                        "(metrics.json or config.json where recorded, else the sum of the epochs' seconds in "
                        "history.jsonl), an ensemble's the sum over its seeds.")
            + '<p class="small">' + page.download_link(buf.getvalue().encode(), "leaderboard.csv", "text/csv",
                                                      "leaderboard.csv (every column, as compare writes it)")
            + "</p>")


def _run_link(e: Entry, fam: Family | None, key: str, folder: Path, page_dir: Path) -> page.Html | str:
    """The row's name as a link relative to the page: its best seed's card, else the run or family folder."""
    if fam is not None and e.kind == "seeds":
        best = fam.best_run(key)
        target, slash = (best / "README.md", "") if (best / "README.md").is_file() else (best, "/")
    elif folder.is_dir():
        target, slash = folder, "/"
    else:
        return e.label
    rel = Path(os.path.relpath(target, page_dir.absolute())).as_posix()
    return page.link(quote(rel) + slash, e.label)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _details(e: Entry, fam: Family | None) -> list[str]:
    """The row's options, parameter count and training time ("-" where its runs do not record them)."""
    if fam is None:
        return [" ".join(f"{k}={v}" for k, v in sorted(e.options.items())) or "-", "-", "-"]
    options = " ".join(f"{k}={v}" for k, v in sorted(fam.options.items())) or "(defaults)"
    n = fam.num_parameters
    seconds = fam.training_seconds()
    if e.kind == "ensemble":
        params = "-" if n is None else f"{e.n_seeds} × {n:,}"
        took = f"{_duration(sum(seconds))} in all" if len(seconds) == len(fam.runs) else "-"
    else:
        params = "-" if n is None else f"{n:,}"
        took = "-" if not seconds else _duration(float(np.mean(seconds))) + (" / seed" if len(fam.runs) > 1 else "")
    return [options, params, took]


def _add_holm(header: list[str], cells: list[list], rows: list[Entry], monitor: str) -> str:
    """A "p (Holm)" column after "p vs top": the rows' p-values against the top adjusted together; and the
    note on multiple comparisons (empty where the leaderboard has no tests)."""
    col = f"p vs top ({monitor_metric(monitor).name})"
    if col not in header:
        return ""
    at = header.index(col) + 1
    tested = [i for i, e in enumerate(rows) if e.stats.get("dev") is not None and e.stats["dev"].p_top is not None]
    adjusted = dict(zip(tested, holm([rows[i].stats["dev"].p_top for i in tested])))
    header.insert(at, "p (Holm)")
    for i, (e, row) in enumerate(zip(rows, cells)):
        row.insert(at, format_p(adjusted[i]) if i in adjusted else "-" if e.stats.get("dev") is None else "—")
    return page.note(f"The p-values above are not corrected for multiple comparisons: {len(tested)} rows are each "
                     "tested against the top (and against the probe), so some p < 0.05 are expected by chance "
                     "alone. p (Holm): the p vs top of these rows adjusted together by Holm's step-down method, "
                     "which keeps the chance of any false \"differs from the top\" below 0.05 where p (Holm) < "
                     "0.05.")


def _chart(rows: list[Entry], monitor: str) -> str:
    return page.figure(figures.interval_png(rows, monitor), "leaderboard dot-and-interval plot",
                       f"dev {monitor_metric(monitor).name} per leaderboard row, in its order: dot = mean over "
                       "seeds, line = 95% percentile bootstrap interval over examples (seeds pooled); the axis "
                       "is zoomed on the scores (dots, not bars, so no length is implied)")


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
        header += [f"{c} {score}" for score in ("precision", "recall") for c in classes]
        rows = []
        for f in fams:
            pc = f.per_class_f1(split)
            cells = [f.label, len(f.runs)] + [_pct(*pc[c][:2], len(f.runs)) if c in pc else "-" for c in classes]
            for metric in f1s:
                vals = [m[split][metric.key] for m in f.metrics]
                cells.append(_pct(float(np.mean(vals)), float(np.std(vals)), len(f.runs)))
            for score in ("precision", "recall"):
                by_class = f.per_class(split, score)
                cells += [_pct(*by_class[c][:2], len(f.runs)) if c in by_class else "-" for c in classes]
            rows.append(cells)
        out.append(f"<h3>{split}</h3>" + page.table(header, rows, cls=f"per-class {split}"))
    if not out:
        return page.note("no labeled split in the runs' metrics")
    return "\n".join(out) + page.note("F1 per class, then the F1 means, then precision and recall per class: in %, "
                                      "mean ± std over each family's seeds (from each run's metrics.json).")


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
        caption = ("" if not any(figures.has_epochs(h) for h in histories.values())
                   else "loss: train (solid) and dev (dashed), from history.jsonl" if figures.has_dev_loss(histories)
                   else "loss: train only; these runs' history.jsonl records no dev loss, so none is drawn")
        figs.append(page.figure(figures.curves_png(f"{f.label} ({len(histories)} seed(s))", histories, monitor),
                                f"training curves of {f.label}", caption))
    body = page.note("From each run's history.jsonl: the loss and the dev monitor per epoch, seeds overlaid; "
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


def _evaluate_hint(runs_dir: Path, what: str) -> str:
    return page.note(f"No {what} evaluations under {runs_dir}: `msa-cache evaluate {runs_dir} --corrupt text=drop "
                     "--corrupt image=drop --corrupt image=shuffle` scores every cached run with a side missing "
                     "or shuffled; `--manifest OTHER` scores it on another dataset.")


def _markdown_tables(md: str) -> str:
    """The evaluation tables (study/eval_table.py, the same markdown `msa-cache evaluate` prints) as HTML."""
    out = []
    for block in md.strip().split("\n\n"):
        if block.lstrip().startswith("|"):
            header, rows, _ = page.parse_markdown_table(block)
            out.append(page.table(header, rows, cls="evaluations"))
        elif block.strip():
            out.append(page.note(block.strip().replace("**", "")))
    return "\n".join(out)


def _robustness(runs_dir: Path, evaluations: list[Evaluation]) -> str:
    corrupted = [e for e in evaluations if e.data["kind"] != "transfer"]
    if not any(e.data["corruption"] is not None for e in corrupted):
        return _evaluate_hint(runs_dir, "corruption")
    rows = robustness_rows(corrupted)
    chart = page.figure(figures.robustness_png(rows), "score per corruption and family",
                        "the monitor on dev (test where a family has no dev rows) per evaluation: dot = mean over "
                        "seeds, bar = ± std over seeds; clean first")
    return (page.note("Each run scored again from its cache with one side dropped (the head's own missing input, "
                      "docs/methods.md), replaced by another row's (shuffled) or with Gaussian noise scaled to the "
                      "features' std (`msa-cache evaluate`).") + _markdown_tables(robustness_markdown(rows)) + chart)


def _transfer(runs_dir: Path, evaluations: list[Evaluation]) -> str:
    cells = transfer_matrix(evaluations)
    md = transfer_markdown(cells)
    if not md.strip():
        return _evaluate_hint(runs_dir, "transfer")
    return (page.note("Runs trained on one manifest scored on another one's labeled rows (`msa-cache evaluate "
                      "--manifest OTHER`, caches extracted with the same encoders and settings); the diagonal is "
                      "the in-domain score. A matrix fills in as the report's folder holds runs of several "
                      "manifests, or `msa-cache evaluate` is given all of them.") + _markdown_tables(md))


def _examples(ex: Examples) -> str:
    out = [page.note(n) for n in ex.notes]
    if ex.run is not None:
        out.append(page.note(f"Run {ex.run} ({ex.family}, its best seed on dev): dev examples drawn with RNG seed "
                             "0, half it gets right and half wrong; msa-cache explain draws each."))
    out += [page.figure(png, f"explain picture of example {row_id}",
                        f"dev id {row_id}: the run gets it {'right' if right else 'wrong'}")
            for row_id, right, png in ex.pictures]
    return "\n".join(out)
